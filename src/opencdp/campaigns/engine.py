"""The scenario engine: enters profiles into active scenarios and moves them through the steps.

Entries come from four places:

* ``observe`` (a loader listener: it sees every stored batch of tracked events): event
  triggers and goal events, queued and handled by the engine's thread at once, so a trigger
  reaches the outbox within one tick (``interval_s``);
* ``Segment Entered`` / ``Segment Exited`` events, read from the store since the last tick
  (the segment evaluator writes them directly, not through the loader);
* date traits (birthdays, bonus expiry), scanned at most hourly: a profile enters once per date
  (the run key is the date), ``days_before`` it;
* catalogue changes (``product_changes``): back in stock (stock from 0 to more) and price drops,
  for profiles that had an ``interest`` event on the product within ``within_days``.

A journey is a ``journeys`` row; each advance runs steps until a wait (``wake_at``) or the end.
A send step plans an outbox row (campaign = scenario id, step = step id, ``~run`` for
re-entries), so delivery policy, consent and exactly-once are the sender's, as for broadcasts.
Before each step the goal event is looked for since entry: an order placed meanwhile ends the
abandoned-cart journey even if its event arrived out of order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
from sqlglot import exp

from opencdp.campaigns import outbox, store
from opencdp.campaigns.channels import urlguard
from opencdp.campaigns.experiments import CONTROL, assign
from opencdp.campaigns.policy import next_local_window, zone_of
from opencdp.campaigns.recipients import load as load_recipients
from opencdp.campaigns.scenarios import duration, successors
from opencdp.campaigns.tracking import SOURCE
from opencdp.identity.profiles import canonical_ids, members_of
from opencdp.segments import store as segment_store
from opencdp.segments.membership import ENTERED, EXITED
from opencdp.segments.sql import ClickHouse, DuckDB, members
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, JOURNEYS, ORDER_LINES, PRODUCT_CHANGES

log = logging.getLogger(__name__)
ACTIVE, DONE, EXITED_STATE = "active", "done", "exited"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_MAX_STEPS = 100  # per advance: definitions have no cycles, this only bounds a bug


@dataclass
class Entry:
    scenario_id: str
    profile_id: str
    params: dict[str, Any]
    message_id: str | None = None
    run_key: str | None = None
    """For date triggers: the date, so a profile enters once per anniversary."""
    at: dt.datetime | None = None


@dataclass
class EngineStats:
    entered: int = 0
    skipped_reentry: int = 0
    exited_goal: int = 0
    planned: int = 0
    errors: int = 0
    last_error: str | None = None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _path(row: Mapping[str, Any], dotted: str) -> Any:
    head, _, rest = dotted.partition(".")
    value: Any = row.get(head)
    if head in ("properties", "traits", "context") and isinstance(value, str):
        try:
            value = _decode(value)
        except msgspec.DecodeError:
            return None
    for key in rest.split(".") if rest else []:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _compare(op: str, value: Any, target: Any) -> bool:
    if op == "=":
        return bool(value == target)
    if op == "!=":
        return bool(value != target)
    if op == "in":
        return isinstance(target, list) and value in target
    if op == "exists":
        return (value is not None) == bool(target)
    if value is None:
        return False
    a, b = float(value), float(target)
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def matches(value: Any, expected: Any) -> bool:
    """A filter: a plain value is equality (also across text and numbers), ``{op: value}`` compares."""
    if not isinstance(expected, dict):
        return bool(value == expected or (value is not None and str(value) == str(expected)))
    try:
        return all(_compare(op, value, target) for op, target in expected.items())
    except (TypeError, ValueError, KeyError):
        return False


def params_from(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a template and a parametric segment may use from the entering event."""
    properties = _path(row, "properties") or {}
    params: dict[str, Any] = dict(properties) if isinstance(properties, dict) else {}
    params["event"] = {"name": row.get("event"), "properties": properties, "message_id": row.get("message_id")}
    for column in ("product_id", "category", "order_id", "revenue", "price"):
        if row.get(column) is not None:
            params.setdefault(column, row[column])
    return params


class Engine:
    def __init__(
        self,
        backend: Backend,
        *,
        default_zone: str = "Europe/Moscow",
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_planned: Callable[[], None] | None = None,
        post: Callable[[str, dict[str, Any]], None] | None = None,
        allowed_networks: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.default_zone = default_zone
        self.clock = clock
        self.on_planned = on_planned or (lambda: None)
        self.allowed = urlguard.networks(allowed_networks)
        self.post = post or (lambda url, body: _post(url, body, self.allowed))
        self.stats = EngineStats()
        self._queue: list[Entry] = []
        self._goals: list[tuple[str, str, dt.datetime]] = []
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self._scenarios: dict[str, dict[str, Any]] = {}
        self._loaded_at = 0.0
        self._segment_mark = self.clock()
        self._catalogue_mark = self.clock()
        self._dates_at: dt.datetime | None = None

    # -- active definitions -----------------------------------------------------------------
    def scenarios(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        import time

        if refresh or time.monotonic() - self._loaded_at > 2.0:
            self._scenarios = {s.id: s.definition for s in store.list_all(self.backend, store.SCENARIO) if s.status == store.ACTIVE}
            self._loaded_at = time.monotonic()
        return self._scenarios

    # -- loader listener ----------------------------------------------------------------------
    def observe(self, events: pa.Table) -> None:
        """Queue entries and goal exits for a stored batch (called on the loader's thread: cheap)."""
        active = self.scenarios()
        if not active or events.num_rows == 0:
            return
        wanted = {d["trigger"].get("event") for d in active.values() if d["trigger"]["type"] == "event"}
        goals = {d["goal"]["event"] for d in active.values() if d.get("goal")}
        names = events.column("event").to_pylist()
        hits = [i for i, name in enumerate(names) if name in wanted or name in goals]
        if not hits:
            return
        rows = events.take(pa.array(hits)).to_pylist()
        entries: list[Entry] = []
        exits: list[tuple[str, str, dt.datetime]] = []
        for row in rows:
            profile = row.get("profile_id")
            if profile is None:
                continue
            for scenario_id, d in active.items():
                if d.get("goal") and d["goal"]["event"] == row["event"]:
                    exits.append((scenario_id, profile, _utc(row["timestamp"])))
                trigger = d["trigger"]
                if trigger["type"] == "event" and trigger["event"] == row["event"] and all(
                    matches(_path(row, k), v) for k, v in (trigger.get("where") or {}).items()
                ):
                    entries.append(Entry(scenario_id, profile, params_from(row), row.get("message_id")))
        with self._lock:
            self._queue += entries
            self._goals += exits
        if entries or exits:
            self.wake.set()

    # -- one tick -------------------------------------------------------------------------------
    def tick(self) -> int:
        """Handle queued entries and exits, segment and catalogue triggers, dates, and due journeys."""
        now = self.clock()
        with self._lock:
            queue, self._queue = self._queue, []
            goals, self._goals = self._goals, []
        active = self.scenarios()
        if not active and not queue and not goals:
            return 0
        for scenario_id, profile, _ in goals:
            self._exit(scenario_id, profile, "goal", now)
        if active:
            queue += self._segment_entries(active, now)
            queue += self._catalogue_entries(active, now)
            if self._dates_at is None or now - self._dates_at >= dt.timedelta(hours=1):
                queue += self._date_entries(active, now)
                self._dates_at = now
        planned_before = self.stats.planned
        for entry in queue:
            if entry.scenario_id in active:
                try:
                    self.enter(entry, active[entry.scenario_id], now)
                except Exception as error:
                    self.stats.errors += 1
                    self.stats.last_error = f"{type(error).__name__}: {error}"
                    log.exception("scenario %s: entering %s failed", entry.scenario_id, entry.profile_id)
        advanced = self._advance_due(active, now)
        if self.stats.planned > planned_before:
            self.on_planned()
        return len(queue) + advanced

    # -- entering ---------------------------------------------------------------------------------
    def _runs(self, scenario_id: str, profile_id: str) -> list[dict[str, Any]]:
        query = exp.select("*").from_(self.backend.table_ref(JOURNEYS)).where(
            exp.and_(exp.column("scenario_id").eq(exp.Literal.string(scenario_id)),
                     exp.column("profile_id").eq(exp.Literal.string(profile_id)))
        ).order_by("run")
        return self.backend.select(query).to_pylist()

    def enter(self, entry: Entry, definition: Mapping[str, Any], now: dt.datetime) -> bool:
        profile = canonical_ids(self.backend, [entry.profile_id]).get(entry.profile_id, entry.profile_id)
        runs = self._runs(entry.scenario_id, profile)
        reentry = definition.get("reentry") or {"policy": "after_exit"}
        if entry.run_key is not None and any((_decode(r["params"] or "{}")).get("_run_key") == entry.run_key for r in runs):
            self.stats.skipped_reentry += 1
            return False
        if runs:
            last = runs[-1]
            cooldown = dt.timedelta(hours=float(reentry.get("cooldown_hours", 0)))
            if reentry["policy"] == "never" or (reentry["policy"] == "after_exit" and last["state"] == ACTIVE) or (
                now - _utc(last["entered_at"]) < cooldown
            ):
                self.stats.skipped_reentry += 1
                return False
        audience = definition.get("audience")
        if audience is not None and not self._in_audience(audience, profile, entry.params, now):
            return False
        params = dict(entry.params)
        if entry.run_key is not None:
            params["_run_key"] = entry.run_key
        run = (runs[-1]["run"] + 1) if runs else 1
        steps = definition["steps"]
        journey = {
            "scenario_id": entry.scenario_id, "profile_id": profile, "run": run, "state": ACTIVE,
            "step_id": steps[0]["id"], "wake_at": now, "entered_at": entry.at or now,
            "trigger_message_id": entry.message_id, "params": _encode(params).decode(), "path": "{}",
            "reason": None, "updated_at": now,
        }
        self.stats.entered += 1
        self.advance(journey, definition, now)
        return True

    def _in_audience(self, audience: Mapping[str, Any], profile: str, params: Mapping[str, Any], now: dt.datetime) -> bool:
        segment = segment_store.get(self.backend, audience["segment"])
        if segment is None or segment.tree is None:
            return False
        bound = {name: _path({"properties": params, **params}, str(source)) for name, source in (audience.get("params") or {}).items()}
        ids = list(members_of(self.backend, [profile]))
        found = members(self.backend, segment.tree, now, params=bound, profiles=ids, catalogue=segment_store.catalogue(self.backend))
        return profile in found

    # -- moving through steps -----------------------------------------------------------------------
    def advance(self, journey: dict[str, Any], definition: Mapping[str, Any], now: dt.datetime) -> None:
        steps: list[dict[str, Any]] = definition["steps"]
        index = {s["id"]: i for i, s in enumerate(steps)}
        params = _decode(journey["params"] or "{}")
        path = _decode(journey["path"] or "{}")
        goal = (definition.get("goal") or {}).get("event")
        current: str | None = journey["step_id"]
        for _ in range(_MAX_STEPS):
            if current is None:
                self._save({**journey, "state": DONE, "step_id": None, "reason": "done", "path": _encode(path).decode()}, now)
                return
            if goal and self._goal_reached(journey, goal):
                self._save({**journey, "state": EXITED_STATE, "reason": f"goal: {goal}", "path": _encode(path).decode()}, now)
                self.stats.exited_goal += 1
                return
            i = index[current]
            step = steps[i]
            nexts = dict(successors(step, i, steps))
            kind = step["type"]
            if kind == "exit":
                current = None
                continue
            if kind == "wait":
                if journey.get("_waited") == current:
                    journey.pop("_waited")
                    current = nexts["next"]
                    continue
                wake = self._wake_time(step, journey["profile_id"], now)
                if wake > now:
                    self._save({**journey, "step_id": current, "wake_at": wake, "path": _encode(path).decode()}, now)
                    return
                current = nexts["next"]
            elif kind == "send":
                variant = path.get("_variant", "A")
                if variant != CONTROL:
                    step_key = current if journey["run"] == 1 else f"{current}~{journey['run']}"
                    added = outbox.plan(
                        self.backend, campaign_id=journey["scenario_id"], step_id=step_key,
                        profile_ids=[journey["profile_id"]], variants=[variant], channels=[step["channel"]],
                        templates=[step["template"]], not_before=[now], topic=step["topic"],
                        transactional=step["transactional"], params=[journey["params"]], now=now,
                    )
                    self.stats.planned += added
                current = nexts["next"]
            elif kind == "condition":
                current = nexts["then"] if self._condition(step, journey, params, now) else nexts["else"]
            elif kind == "split":
                branches = step["branches"]
                name = assign(f"{journey['scenario_id']}:{current}:{journey['run']}", journey["profile_id"],
                              [(b["name"], float(b.get("weight", 1))) for b in branches])
                path[current] = name
                path["_variant"] = name
                current = dict(successors(step, i, steps))[f"branches[{[b['name'] for b in branches].index(name)}].next"]
            elif kind == "update_trait":
                self._update_trait(journey["profile_id"], step["trait"], step.get("value"), now)
                current = nexts["next"]
            elif kind == "webhook":
                body = {"scenario_id": journey["scenario_id"], "profile_id": journey["profile_id"], "run": journey["run"],
                        "step_id": current, "params": params, **(step.get("body") or {})}
                try:
                    urlguard.check(step["url"], self.allowed)  # again at run time: DNS may answer differently now
                    self.post(step["url"], body)
                except Exception as error:  # a webhook that is down (or refused) must not stop the journey
                    log.warning("scenario %s webhook %s failed: %s", journey["scenario_id"], step["url"], error)
                current = nexts["next"]
        raise RuntimeError(f"scenario {journey['scenario_id']}: more than {_MAX_STEPS} steps without a wait")

    def _wake_time(self, step: Mapping[str, Any], profile: str, now: dt.datetime) -> dt.datetime:
        if step.get("until"):
            person = load_recipients(self.backend, [profile], scores=False)[profile]
            hours, minutes = (int(x) for x in step["until"].split(":"))
            start = now + dt.timedelta(minutes=1)
            return next_local_window(start, zone_of(person, self.default_zone), step["until"], f"{hours:02d}:{min(59, minutes + 1):02d}")
        return now + duration(step["duration"], "duration")

    def _goal_reached(self, journey: Mapping[str, Any], goal: str) -> bool:
        ids = list(members_of(self.backend, [journey["profile_id"]]))
        return self._has_event(ids, goal, _utc(journey["entered_at"]))

    def _has_event(self, ids: Sequence[str], name: str, since: dt.datetime) -> bool:
        query = exp.select(exp.func("count", exp.Star())).from_(exp.to_table(EVENTS.name)).where(
            exp.and_(
                exp.column("event").eq(exp.Literal.string(name)),
                exp.column("profile_id").isin(*(exp.Literal.string(i) for i in ids)),
                exp.column("timestamp") >= outbox.time_literal(self.backend, since),
            )
        )
        return bool(self.backend.scalar(query))

    def _condition(self, step: Mapping[str, Any], journey: Mapping[str, Any], params: Mapping[str, Any], now: dt.datetime) -> bool:
        profile = journey["profile_id"]
        if step.get("segment"):
            return self._in_audience({"segment": step["segment"], "params": step.get("params") or {}}, profile, params, now)
        if step.get("event"):
            ids = list(members_of(self.backend, [profile]))
            return self._has_event(ids, step["event"], _utc(journey["entered_at"]))
        person = load_recipients(self.backend, [profile])[profile]
        trait = str(step["trait"])
        value = person.scores.get(trait[9:]) if trait.startswith("computed.") else _path({"t": person.traits}, "t." + trait)
        op = step.get("op", "=")
        return matches(value, {op: step.get("value", True)})

    def _update_trait(self, profile: str, trait: str, value: Any, now: dt.datetime) -> None:
        columns: dict[str, Any] = {
            "message_id": f"journey-trait:{profile}:{trait}:{now.timestamp()}", "type": "identify", "event": "",
            "timestamp": now, "received_at": now, "source": SOURCE, "channel": "system", "lsn": 0,
            "profile_id": profile, "traits": json.dumps({trait: value}),
        }
        table = pa.Table.from_pylist([columns], schema=EVENTS.arrow_schema)
        self.backend.record_events(LoadBatch(table, ORDER_LINES.empty(), dedupe_since=now - dt.timedelta(minutes=5)))

    def _save(self, journey: Mapping[str, Any], now: dt.datetime) -> None:
        row = {k: journey.get(k) for k in JOURNEYS.column_names}
        row["updated_at"] = outbox._after(journey.get("updated_at"), now)
        self.backend.upsert(JOURNEYS, pa.Table.from_pylist([row], schema=JOURNEYS.arrow_schema))

    def _exit(self, scenario_id: str, profile: str, reason: str, now: dt.datetime) -> None:
        canonical = canonical_ids(self.backend, [profile]).get(profile, profile)
        for run in self._runs(scenario_id, canonical):
            if run["state"] == ACTIVE:
                self._save({**run, "state": EXITED_STATE, "reason": reason}, now)
                self.stats.exited_goal += 1

    def _advance_due(self, active: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> int:
        query = exp.select("*").from_(self.backend.table_ref(JOURNEYS)).where(
            exp.and_(exp.column("state").eq(exp.Literal.string(ACTIVE)),
                     exp.column("wake_at") <= outbox.time_literal(self.backend, now))
        ).limit(5000)
        rows = self.backend.select(query).to_pylist()
        for row in rows:
            definition = active.get(row["scenario_id"])
            if definition is None:
                continue  # paused: the journey waits
            try:
                self.advance({**row, "_waited": row["step_id"]}, definition, now)
            except Exception as error:
                self.stats.errors += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("scenario %s: advancing %s failed", row["scenario_id"], row["profile_id"])
        return len(rows)

    # -- segment, catalogue and date triggers ----------------------------------------------------------
    def _segment_entries(self, active: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> list[Entry]:
        wanted = {(ENTERED if d["trigger"]["type"] == "segment_entered" else EXITED, d["trigger"]["segment"]): sid
                  for sid, d in active.items() if d["trigger"]["type"] in ("segment_entered", "segment_exited")}
        since, self._segment_mark = self._segment_mark, now
        if not wanted:
            return []
        dialect = ClickHouse() if self.backend.capabilities.dialect == "clickhouse" else DuckDB()
        segment = dialect.json_text(exp.column("properties"), ("segment_id",))
        query = exp.select("event", "profile_id", "message_id", "timestamp", exp.alias_(segment, "segment_id")).from_(
            exp.to_table(EVENTS.name)
        ).where(
            exp.and_(
                exp.column("event").isin(exp.Literal.string(ENTERED), exp.Literal.string(EXITED)),
                exp.column("received_at") > outbox.time_literal(self.backend, since),
                exp.column("received_at") <= outbox.time_literal(self.backend, now),
            )
        )
        entries = []
        for row in self.backend.select(query).to_pylist():
            scenario = wanted.get((row["event"], row["segment_id"]))
            if scenario is not None:
                entries.append(Entry(scenario, row["profile_id"], {"segment_id": row["segment_id"]}, row["message_id"]))
        return entries

    def _catalogue_entries(self, active: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> list[Entry]:
        wanted = {sid: d["trigger"] for sid, d in active.items() if d["trigger"]["type"] in ("back_in_stock", "price_drop")}
        since, self._catalogue_mark = self._catalogue_mark, now
        if not wanted:
            return []
        query = exp.select("product_id", "field", "old_value", "new_value", "changed_at").from_(
            exp.to_table(PRODUCT_CHANGES.name)
        ).where(
            exp.and_(exp.column("changed_at") > outbox.time_literal(self.backend, since),
                     exp.column("changed_at") <= outbox.time_literal(self.backend, now))
        )
        changes = self.backend.select(query).to_pylist()
        entries: list[Entry] = []
        for scenario_id, trigger in wanted.items():
            for change in changes:
                old, new = change["old_value"], change["new_value"]
                if trigger["type"] == "back_in_stock":
                    hit = change["field"] == "stock" and (old or 0) <= 0 < (new or 0)
                else:
                    drop = float(trigger.get("min_drop_percent", 5)) / 100
                    hit = change["field"] == "price" and old is not None and new is not None and old > 0 and new <= old * (1 - drop)
                if not hit:
                    continue
                interested = self._interested(change["product_id"], trigger, now)
                params = {"product_id": change["product_id"], "product_ids": [change["product_id"]],
                          "old_value": old, "new_value": new}
                entries += [Entry(scenario_id, p, params, run_key=f"{change['product_id']}:{change['changed_at']}") for p in interested]
        return entries

    def _interested(self, product_id: str, trigger: Mapping[str, Any], now: dt.datetime) -> list[str]:
        names = trigger.get("interest", ["Product Viewed", "Product Added to Wishlist"])
        since = now - dt.timedelta(days=float(trigger.get("within_days", 30)))
        query = exp.select("profile_id").distinct().from_(exp.to_table(EVENTS.name)).where(
            exp.and_(
                exp.column("event").isin(*(exp.Literal.string(n) for n in names)),
                exp.column("product_id").eq(exp.Literal.string(product_id)),
                exp.column("timestamp") >= outbox.time_literal(self.backend, since),
                exp.column("profile_id").is_(exp.null()).not_(),
            )
        )
        ids = self.backend.select(query).column(0).to_pylist()
        return sorted(set(canonical_ids(self.backend, ids).values()) | {i for i in ids if i not in canonical_ids(self.backend, ids)})

    def _date_entries(self, active: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> list[Entry]:
        wanted = {sid: d["trigger"] for sid, d in active.items() if d["trigger"]["type"] == "date"}
        entries: list[Entry] = []
        for scenario_id, trigger in wanted.items():
            trait = trigger["trait"]
            query = exp.select("profile_id").distinct().from_(exp.to_table(EVENTS.name)).where(
                exp.and_(exp.column("traits").is_(exp.null()).not_(),
                         exp.Like(this=exp.column("traits"), expression=exp.Literal.string(f'%"{trait}"%')))
            )
            ids = self.backend.select(query).column(0).to_pylist()
            canonical = sorted(set(canonical_ids(self.backend, ids).get(i, i) for i in ids))
            for start in range(0, len(canonical), 2000):
                people = load_recipients(self.backend, canonical[start : start + 2000], scores=False)
                for profile, person in people.items():
                    due = _due_date(person.traits.get(trait), now, int(trigger.get("days_before", 0)),
                                    bool(trigger.get("annual", trait in ("birthday", "birth_date"))),
                                    zone_of(person, self.default_zone))
                    if due is not None:
                        entries.append(Entry(scenario_id, profile, {"date": due.isoformat(), "trait": trait}, run_key=due.isoformat()))
        return entries


def _due_date(value: Any, now: dt.datetime, days_before: int, annual: bool, zone: Any) -> dt.date | None:
    """The date (this year's anniversary when annual) if it is ``days_before`` days from today there."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        day = dt.date.fromisoformat(value[:10])
    except ValueError:
        return None
    today = now.astimezone(zone).date()
    target = today + dt.timedelta(days=days_before)
    if annual:
        try:
            day = day.replace(year=target.year)
        except ValueError:
            day = dt.date(target.year, 3, 1)
    return day if day == target else None


def _post(url: str, body: dict[str, Any], allowed: Sequence[urlguard.Network] = ()) -> None:
    """POST the step's JSON to the address the guard checked (pinned: no second DNS lookup)."""
    import httpx

    target = urlguard.pin(url, allowed)
    extensions = {"sni_hostname": target.sni} if url.startswith("https://") else {}
    with httpx.Client(timeout=5) as client:
        response = client.post(target.url, content=json.dumps(body, default=str).encode(), extensions=extensions,
                               headers={"Content-Type": "application/json", "Host": target.host_header})
    response.raise_for_status()
