"""Broadcast campaigns: a segment, one or more variants, a schedule; planned into the outbox.

A definition (JSON)::

    {"segment": "newsletter", "channel": "email", "template": "spring_sale",
     "variants": [{"name": "A", "template": "sale_a"}, {"name": "B", "template": "sale_b", "subject_hour": ...}],
     "topic": "marketing", "transactional": false, "holdout_percent": 10,
     "schedule": {"at": "2026-06-01T09:00:00Z", "local_window": ["10:00", "20:00"]},
     "experiment": {"test_percent": 20, "metric": "clicked", "deadline_hours": 4, "alpha": 0.05}}

Variants may differ in template (content, subject), ``channel`` and ``local_time`` (send time:
the next such local time of each recipient). ``holdout_percent`` of the audience is the
campaign's control group (``held_out`` rows, never sent). With ``experiment``, only
``test_percent`` of the audience gets the variants first; ``decide`` sends the winner to the
rest once it is significantly better on ``metric`` or when ``deadline_hours`` have passed.

Activating is two steps so that an HTTP request never waits for a million outbox rows:
``begin`` validates (a bad definition is refused at once, naming the field) and stores the
campaign as ``planning``; ``run_planning`` (the server runs it on a background thread, and
resumes it after a restart: planning is idempotent) writes the rows in chunks, keeping
``definition["planning"]`` up to date (``audience``, ``planned``, ``state``), and makes the
campaign ``active`` when done. Rows planned so far are sent while the rest is planned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from opencdp.campaigns import outbox, recipients, reports, store, templates
from opencdp.campaigns.experiments import CONTROL, assign, unit, winner
from opencdp.campaigns.policy import next_local_window, zone_of
from opencdp.campaigns.registry import Channels
from opencdp.campaigns.store import DefinitionError
from opencdp.consent.model import TRANSACTIONAL, topic_of
from opencdp.segments import membership
from opencdp.segments import store as segment_store
from opencdp.segments.sql import members
from opencdp.storage.base import Backend

STEP = "send"
METRICS = ("opened", "clicked", "converted")
PLAN_CHUNK = 50_000
"""Profiles planned per write while activating: progress is saved after each."""


def _clock_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value.split(":")) != 2:
        raise DefinitionError(f"`{field}` {value!r} must be a local time HH:MM", field=field)
    hours, minutes = value.split(":")
    if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise DefinitionError(f"`{field}` {value!r} must be a local time HH:MM", field=field)
    return value


def check_template(backend: Backend, template_id: Any, kind: str, field: str) -> None:
    if not isinstance(template_id, str):
        raise DefinitionError(f"`{field}` is required: the id of a saved template", field=field)
    stored = store.get(backend, store.TEMPLATE, template_id)
    if stored is None:
        raise DefinitionError(f"`{field}` {template_id!r} is not a saved template", field=field)
    template = templates.Template.from_dict(stored.definition, template_id)
    if template.channel not in (kind, "any"):
        raise DefinitionError(
            f"`{field}` {template_id!r} is a {template.channel} template; this step sends on a {kind} channel", field=field
        )
    try:
        templates.validate(template)
    except templates.TemplateError as error:
        raise DefinitionError(f"`{field}` {template_id!r}: {error.detail}", field=field) from None


def check_segment(backend: Backend, segment_id: Any, field: str) -> None:
    if not isinstance(segment_id, str) or segment_store.get(backend, segment_id) is None:
        raise DefinitionError(f"`{field}` {segment_id!r} is not a saved segment", field=field)


def validate(backend: Backend, channels: Channels, definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition with defaults filled in, or a DefinitionError naming the field."""
    d = dict(definition)
    check_segment(backend, d.get("segment"), "segment")
    channel = d.get("channel")
    if not isinstance(channel, str):
        raise DefinitionError("`channel` is required: the name of a configured channel", field="channel")
    variants = d.get("variants") or [{"name": "A", "template": d.get("template")}]
    if not isinstance(variants, list):
        raise DefinitionError("`variants` must be a list of {name, template, weight?, channel?, local_time?}", field="variants")
    names: set[str] = set()
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict):
            raise DefinitionError(f"`variants[{i}]` must be an object", field=f"variants[{i}]")
        name = variant.get("name") or chr(ord("A") + i)
        if name == CONTROL or name in names:
            raise DefinitionError(f"`variants[{i}].name` {name!r} is reserved or repeated", field=f"variants[{i}].name")
        names.add(name)
        variant["name"] = name
        kind = channels.check(variant.get("channel") or channel, f"variants[{i}].channel" if variant.get("channel") else "channel")
        check_template(backend, variant.get("template"), kind, f"variants[{i}].template" if d.get("variants") else "template")
        if variant.get("local_time") is not None:
            _clock_text(variant["local_time"], f"variants[{i}].local_time")
        weight = variant.get("weight", 1)
        if not isinstance(weight, int | float) or weight <= 0:
            raise DefinitionError(f"`variants[{i}].weight` must be a positive number", field=f"variants[{i}].weight")
    d["variants"] = variants
    d["topic"] = topic_of(d.get("topic") or ("transactional" if d.get("transactional") else "marketing"))
    d["transactional"] = bool(d.get("transactional")) or d["topic"] == TRANSACTIONAL
    holdout = d.get("holdout_percent", 0)
    if not isinstance(holdout, int | float) or not 0 <= holdout < 100:
        raise DefinitionError("`holdout_percent` must be a number from 0 to 99", field="holdout_percent")
    schedule = d.get("schedule") or {}
    if schedule.get("at") is not None:
        try:
            at = dt.datetime.fromisoformat(str(schedule["at"]).replace("Z", "+00:00"))
        except ValueError:
            raise DefinitionError("`schedule.at` must be an ISO 8601 time", field="schedule.at") from None
        if at.tzinfo is None:
            raise DefinitionError("`schedule.at` needs a time zone (e.g. Z or +03:00)", field="schedule.at")
    window = schedule.get("local_window")
    if window is not None:
        if not isinstance(window, list) or len(window) != 2:
            raise DefinitionError("`schedule.local_window` must be [start, end] local times", field="schedule.local_window")
        for i, value in enumerate(window):
            _clock_text(value, f"schedule.local_window[{i}]")
    experiment = d.get("experiment")
    if experiment is not None:
        if len(variants) < 2:
            raise DefinitionError("`experiment` needs at least two variants", field="experiment")
        if experiment.get("metric", "clicked") not in METRICS:
            raise DefinitionError(f"`experiment.metric` must be one of {', '.join(METRICS)}", field="experiment.metric")
        share = experiment.get("test_percent", 20)
        if not isinstance(share, int | float) or not 0 < share < 100:
            raise DefinitionError("`experiment.test_percent` must be between 0 and 100", field="experiment.test_percent")
    return d


def audience(backend: Backend, segment_id: str, now: dt.datetime) -> list[str]:
    """The segment's members now: the stored membership, or an evaluation when none is stored."""
    stored = membership.stored_members(backend, segment_id)
    if stored:
        return sorted(stored)
    segment = segment_store.get(backend, segment_id)
    if segment is None or segment.tree is None:
        return []
    return sorted(members(backend, segment.tree, now, catalogue=segment_store.catalogue(backend)))


def _send_times(backend: Backend, definition: Mapping[str, Any], profiles: list[str], chosen: list[str],
                now: dt.datetime, default_zone: str) -> list[dt.datetime]:
    schedule = definition.get("schedule") or {}
    start = dt.datetime.fromisoformat(str(schedule["at"]).replace("Z", "+00:00")) if schedule.get("at") else now
    window = schedule.get("local_window")
    local_times = {v["name"]: v["local_time"] for v in definition["variants"] if v.get("local_time")}
    if not window and not local_times:
        return [start] * len(profiles)
    times: list[dt.datetime] = []
    for begin in range(0, len(profiles), 5000):
        chunk = profiles[begin : begin + 5000]
        people = recipients.load(backend, chunk, scores=False)
        for profile, variant in zip(chunk, chosen[begin : begin + 5000], strict=True):
            zone = zone_of(people[profile], default_zone)
            at = start
            if variant in local_times:
                hours, minutes = (int(x) for x in local_times[variant].split(":"))
                end = f"{(hours + 1) % 24:02d}:{minutes:02d}"
                at = next_local_window(at, zone, local_times[variant], end)
            elif window:
                at = next_local_window(at, zone, window[0], window[1])
            times.append(at)
    return times


def plan(backend: Backend, campaign_id: str, definition: Mapping[str, Any], now: dt.datetime, *,
         default_zone: str = "Europe/Moscow", only: list[str] | None = None, variant: str | None = None,
         progress: Callable[[int, int], None] | None = None) -> int:
    """Write the outbox rows of the campaign (idempotent: rows already planned are kept).

    ``progress(done, total)`` is called after each chunk of ``PLAN_CHUNK`` profiles.
    """
    profiles = only if only is not None else audience(backend, definition["segment"], now)
    variants = [(v["name"], float(v.get("weight", 1))) for v in definition["variants"]]
    holdout = float(definition.get("holdout_percent", 0))
    experiment = definition.get("experiment")
    if experiment is not None and only is None:  # the test share first; the rest waits for the winner
        share = float(experiment.get("test_percent", 20)) / 100
        profiles = [p for p in profiles if unit(f"{campaign_id}:test", p) < share]
    by_name = {v["name"]: v for v in definition["variants"]}
    channel_of = lambda name: by_name[name].get("channel") or definition["channel"]  # noqa: E731
    first = definition["variants"][0]["name"]
    planned = 0
    if progress is not None:
        progress(0, len(profiles))
    for start in range(0, len(profiles), PLAN_CHUNK):
        chunk = profiles[start : start + PLAN_CHUNK]
        chosen = [variant or assign(campaign_id, p, variants, holdout) for p in chunk]
        planned += outbox.plan(
            backend, campaign_id=campaign_id, step_id=STEP, profile_ids=chunk, variants=chosen,
            channels=[channel_of(v if v != CONTROL else first) for v in chosen],
            templates=[by_name[v if v != CONTROL else first]["template"] for v in chosen],
            not_before=_send_times(backend, definition, chunk, chosen, now, default_zone),
            topic=definition["topic"], transactional=definition["transactional"],
            held_out=[v == CONTROL for v in chosen], now=now,
        )
        if progress is not None:
            progress(start + len(chunk), len(profiles))
    return planned


def decide(backend: Backend, campaign_id: str, definition: Mapping[str, Any], now: dt.datetime, *,
           default_zone: str = "Europe/Moscow", attribution_hours: float = 72.0,
           conversion_event: str = "Order Completed") -> str | None:
    """For an experiment: pick the winner when it is clear (or at the deadline) and plan the rest with it."""
    experiment = definition.get("experiment")
    if experiment is None or definition.get("winner"):
        return definition.get("winner")
    rows = outbox.rows_of(backend, campaign_id, STEP)
    if not rows:
        return None
    started = min(r["created_at"] for r in rows)
    started = started if started.tzinfo else started.replace(tzinfo=dt.UTC)
    report = reports.campaign_report(backend, campaign_id, attribution_hours=attribution_hours,
                                     conversion_event=conversion_event)
    metric = experiment.get("metric", "clicked")
    results = {name: (v[metric], v["delivered"] or v["sent"]) for name, v in report["variants"].items() if name != CONTROL}
    deadline = started + dt.timedelta(hours=float(experiment.get("deadline_hours", 24)))
    best = winner(results, alpha=float(experiment.get("alpha", 0.05)), deadline_passed=now >= deadline)
    if best is None:
        return None
    everyone = audience(backend, definition["segment"], now)
    planned = {r["profile_id"] for r in rows}
    holdout = float(definition.get("holdout_percent", 0))
    rest = [p for p in everyone if p not in planned]
    control = [p for p in rest if assign(campaign_id, p, [(best, 1.0)], holdout) == CONTROL]
    senders = [p for p in rest if p not in set(control)]
    plan(backend, campaign_id, definition, now, default_zone=default_zone, only=senders, variant=best)
    if control:
        plan(backend, campaign_id, definition, now, default_zone=default_zone, only=control, variant=CONTROL)
    stored = store.require(backend, store.CAMPAIGN, campaign_id)
    store.save(backend, store.CAMPAIGN, campaign_id, stored.name, {**stored.definition, "winner": best})
    return best


def begin(backend: Backend, channels: Channels, campaign_id: str, now: dt.datetime) -> store.Stored:
    """Validate against the store as it is now and mark the campaign ``planning`` (nothing planned yet)."""
    stored = store.require(backend, store.CAMPAIGN, campaign_id)
    definition = validate(backend, channels, {k: v for k, v in stored.definition.items() if k != "planning"})
    progress = {"state": "running", "audience": None, "planned": 0, "started_at": now.isoformat(),
                "finished_at": None, "error": None}
    return store.save(backend, store.CAMPAIGN, campaign_id, stored.name, {**definition, "planning": progress},
                      status=store.PLANNING)


def run_planning(backend: Backend, campaign_id: str, now: dt.datetime, *, default_zone: str = "Europe/Moscow",
                 progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Plan a campaign ``begin`` marked, saving progress per chunk; ``active`` when done.

    ``progress`` is called after each chunk (the server wakes its sender: those rows can go).
    A failure leaves the campaign ``draft`` with ``planning.state = "failed"`` and the reason
    (rows planned before it stay: activating again adds only the missing ones). A campaign
    paused or deleted meanwhile keeps that status.
    """
    stored = store.require(backend, store.CAMPAIGN, campaign_id)
    definition = {k: v for k, v in stored.definition.items() if k != "planning"}
    state: dict[str, Any] = {"state": "running", "audience": None, "planned": 0, "started_at": now.isoformat(),
                                "finished_at": None, "error": None, **(stored.definition.get("planning") or {})}

    def save(status: str | None = None) -> store.Stored | None:
        current = store.get(backend, store.CAMPAIGN, campaign_id)
        if current is None:  # deleted while planning
            return None
        keep = current.status != store.PLANNING  # paused meanwhile: not made active behind the user's back
        return store.save(backend, store.CAMPAIGN, campaign_id, current.name, {**definition, "planning": state},
                          status=None if keep else status)

    def step(done: int, total: int) -> None:
        state.update(audience=total, planned=done)
        save()
        if progress is not None and done:
            progress()

    try:
        added = plan(backend, campaign_id, definition, now, default_zone=default_zone, progress=step)
    except Exception as error:
        state.update(state="failed", error=getattr(error, "detail", None) or f"{type(error).__name__}: {error}",
                        finished_at=dt.datetime.now(dt.UTC).isoformat())
        save(store.DRAFT)
        raise
    state.update(state="done", added=added, finished_at=dt.datetime.now(dt.UTC).isoformat())
    saved = save(store.ACTIVE)
    return {"id": campaign_id, "planned": added, "status": saved.status if saved else "deleted", "planning": state}


def activate(backend: Backend, channels: Channels, campaign_id: str, now: dt.datetime, *,
             default_zone: str = "Europe/Moscow") -> dict[str, Any]:
    """``begin`` then ``run_planning`` in the caller's thread (the CLI on a local store, tests)."""
    begin(backend, channels, campaign_id, now)
    return run_planning(backend, campaign_id, now, default_zone=default_zone)
