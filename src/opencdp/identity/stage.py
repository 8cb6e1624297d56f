"""The identity stage of the pipeline: give each event its profile before it is stored.

The loader and the importers call ``IdentityStage.resolve(events, lines)`` on a batch
on its way to the store. It reads each event's identifiers, resolves them in the
identity graph, fills ``profile_id`` in events and order lines, and writes what
the graph learned (identifier owners, profile redirects, merges, conflicts) to the
store before the events themselves, so a crash in between is replayed safely
(identifier owners and redirects are upserts).

One stage per store (``stage_for``): the tracking loader and imports share it.
On start it restores the graph from the ``identities``, ``profile_map`` and
``identity_conflicts`` tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import re
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.identity.graph import Changes, IdentityGraph, Key, Profile
from opencdp.identity.identifiers import CLICK_PARAMETER, USER_ID, Rules, extract, kind_of, value_of
from opencdp.storage.base import Backend
from opencdp.storage.schema import IDENTITIES, IDENTITY_CONFLICTS, PROFILE_MAP, PROFILE_MERGES

_EXTRACTED = ("type", "user_id", "anonymous_id", "previous_id", "traits", "context", "properties")
_MAY_IDENTIFY = "|".join(re.escape(m) for m in ("externalIds", "token", CLICK_PARAMETER))
"""In context or properties JSON: the row may carry identifiers beyond its pair and traits."""
_encode = msgspec.json.Encoder().encode


@dataclass
class StageStats:
    events: int = 0
    resolved: int = 0
    merges: int = 0
    conflicts: int = 0
    unusable: int = 0
    recomputed: int = 0
    erased: int = 0
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection while a batch is resolved.

    A batch allocates tens of thousands of containers that live until it ends (its
    observations) or for good (the graph's new profiles). They outlive young
    collections, and every promotion brings a full collection nearer, which walks the
    whole graph: a fifth of the stage's time on the merge-heavy benchmark. The batch's
    own objects hold no cycles (reference counting frees them); collection resumes
    after it. Left off if something else turned it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _first_key(unit: list[Any]) -> Key:
    return unit[0]


class IdentityStage:
    def __init__(self, backend: Backend, rules: Rules | None = None) -> None:
        self.backend = backend
        self.graph = IdentityGraph(rules)
        self.stats = StageStats()
        self._lock = threading.Lock()
        self._members: dict[str, set[str]] = {}  # canonical profile -> every id redirected to it
        self._first_seen: dict[str, Key] = {}
        # Identifiers as tuples: the graph keys observations by them (no copy per event).
        self._simple: dict[tuple[str | None, str | None], tuple[str, ...]] = {}
        self._traits: dict[str, tuple[tuple[str, ...], int]] = {}  # traits JSON -> its identifiers, unusable count
        self._salt: str | None = None
        self._restore()

    # -- the pipeline step -------------------------------------------------------
    def resolve(self, events: pa.Table, lines: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Events and lines with ``profile_id`` filled; the graph's changes are written first."""
        if events.num_rows == 0:
            return events, lines
        events, lines = self._without_erased(events, lines)
        with self._lock:
            with _collector_paused():
                profile_ids = self._observe(events)
            self._write(self.graph.take_changes())
        column = pa.array(profile_ids, pa.string())
        events = events.set_column(events.schema.get_field_index("profile_id"), "profile_id", column)
        if lines.num_rows:
            owners = pc.index_in(lines.column("message_id"), value_set=events.column("message_id"))
            lines = lines.set_column(lines.schema.get_field_index("profile_id"), "profile_id", pc.take(column, owners))
        return events, lines

    def _without_erased(self, events: pa.Table, lines: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Drop (or anonymise) events of erased people, so that they are not created again."""
        settings = self.backend.settings
        if settings is None:
            return events, lines
        from opencdp.privacy.erasure import (
            apply_to_events,
            apply_to_lines,
            erased_for,
            privacy_salt,
        )

        if self._salt is None:
            self._salt = privacy_salt(settings.data_dir)
        erased = erased_for(self.backend, self._salt)
        if not len(erased):
            return events, lines
        events, count = apply_to_events(events, erased, self.graph.rules, settings.erased_events)
        self.stats.erased += count
        return events, apply_to_lines(lines, events) if count else lines

    def _observe(self, events: pa.Table) -> list[str | None]:
        """Resolve a batch: each distinct observation once, in event-time order.

        Most events carry only a userId / anonymousId pair, repeated through a session:
        the events of one pair are one observation at its earliest time (a later
        identical observation changes nothing in the graph but the profile's last-seen
        time). Events with traits, external ids or tokens are observed one by one.
        """
        millis = events.column("timestamp").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
        message_ids = events.column("message_id").to_pylist()
        users, anonymous = events.column("user_id").to_pylist(), events.column("anonymous_id").to_pylist()
        traits = events.column("traits").to_pylist()
        full = self._rows_to_extract(events)
        rules, graph, stats = self.graph.rules, self.graph, self.stats
        # unit: [first key, identifiers, event indexes]
        pairs: dict[tuple[str | None, str | None], list[Any]] = {}
        units: list[list[Any]] = []
        for index, message_id in enumerate(message_ids):
            key = (millis[index], message_id)
            row = full.get(index) if full else None
            if row is not None:
                found = extract(row, rules)
                stats.unusable += len(found.unusable)
                units.append([key, found.identifiers, [index]])
                continue
            pair = (users[index], anonymous[index])
            text = traits[index]
            if text is not None:
                units.append([key, self._with_traits(pair, text), [index]])
                continue
            unit = pairs.get(pair)
            if unit is None:
                pairs[pair] = unit = [key, self._pair_identifiers(pair), [index]]
                units.append(unit)
            else:
                if key < unit[0]:
                    unit[0] = key
                unit[2].append(index)
        result: list[str | None] = [None] * len(message_ids)
        first_seen = self._first_seen
        units.sort(key=_first_key)
        for first, identifiers, indexes in units:
            for identifier in identifiers:
                if identifier not in first_seen:
                    first_seen[identifier] = first
            profile_id = graph.observe(identifiers, first)
            for index in indexes:
                result[index] = profile_id
            stats.resolved += len(indexes) if profile_id is not None else 0
        # Events keep the profile they resolved to (profile_map follows later merges). A replay
        # (a late event in a contested part of the graph) may have retired an id without a
        # redirect: such events take their identifier's current profile.
        for _first, identifiers, indexes in units:
            profile_id = result[indexes[0]]
            if profile_id is not None and profile_id not in graph.profiles and profile_id not in graph.redirect:
                current = next((graph.owner[i] for i in identifiers if i in graph.owner), None)
                for index in indexes:
                    result[index] = current
        stats.events += len(result)
        return result

    @staticmethod
    def _rows_to_extract(events: pa.Table) -> dict[int, dict[str, Any]]:
        """Rows ``extract`` must read whole (aliases, JSON that may hold identifiers), by index.

        Found by Arrow over the columns, so the others' context and properties text (most of
        an event's bytes) is never copied into Python: their identifiers are their userId /
        anonymousId pair and their traits.
        """
        mask = pc.equal(events.column("type"), "alias")
        for name in ("context", "properties"):
            mask = pc.or_kleene(mask, pc.match_substring_regex(events.column(name), _MAY_IDENTIFY))
        indexes = pc.indices_nonzero(mask.fill_null(False))
        if not len(indexes):
            return {}
        rows = events.select(_EXTRACTED).take(indexes).to_pylist()
        return dict(zip(indexes.to_pylist(), rows, strict=True))

    def _pair_identifiers(self, pair: tuple[str | None, str | None]) -> tuple[str, ...]:
        identifiers = self._simple.get(pair)
        if identifiers is None:
            found = extract({"user_id": pair[0], "anonymous_id": pair[1]}, self.graph.rules)
            self.stats.unusable += len(found.unusable)
            if len(self._simple) > 500_000:
                self._simple.clear()
            identifiers = self._simple[pair] = tuple(found.identifiers)
        return identifiers

    def _with_traits(self, pair: tuple[str | None, str | None], text: str) -> tuple[str, ...]:
        """``extract`` of a row holding a userId / anonymousId pair and traits, from caches of both parts.

        Identify calls repeat the same traits (an app sends them at every start): parsing the
        JSON, matching the blocked patterns and parsing a phone number cost ~15 µs an event.
        Both parts come in priority order; a stable sort of the two keeps extract's order.
        """
        cached = self._traits.get(text)
        if cached is None:
            found = extract({"traits": text}, self.graph.rules)
            if len(self._traits) > 200_000:
                self._traits.clear()
            cached = self._traits[text] = (tuple(found.identifiers), len(found.unusable))
        from_traits, unusable = cached
        self.stats.unusable += unusable
        from_pair = self._pair_identifiers(pair)
        if not from_pair or not from_traits:
            return from_pair or from_traits
        return tuple(sorted(from_pair + from_traits, key=self.graph.rules.rank))

    # -- persistence -------------------------------------------------------------
    def link(self, one: str, other: str, *, reason: str, details: dict[str, object] | None = None) -> str:
        """Merge two profiles on an outside decision; the survivor. ValueError if merge protection refuses."""
        with self._lock:
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            survivor = self.graph.link(one, other, (now, f"{reason}:{one}:{other}"), reason)
            self._write(self.graph.take_changes(), details)
            return survivor

    def _write(self, changes: Changes, details: dict[str, object] | None = None) -> None:
        if not changes:
            return
        now = dt.datetime.now(dt.UTC)
        self.stats.merges += len(changes.merges)
        self.stats.conflicts += len(changes.conflicts)
        self.stats.recomputed += len(changes.recomputed)
        mapping: dict[str, str] = {}
        for profile_id in set(changes.owners.values()) - {None}:
            assert profile_id is not None
            if profile_id not in self._members:
                self._members[profile_id] = {profile_id}
                mapping[profile_id] = profile_id
        for split_id in changes.split_ids:
            for members in self._members.values():
                members.discard(split_id)
            self._members[split_id] = {split_id}
            mapping[split_id] = split_id
        for old, new in changes.redirects.items():
            survivor = self.graph.canonical(new)
            moved = self._members.pop(old, {old})
            self._members.setdefault(survivor, {survivor}).update(moved)
            for member in moved:
                mapping[member] = survivor
        if changes.owners:
            identifiers = list(changes.owners)
            firsts = [self._first_seen.get(i, (0, "")) for i in identifiers]
            self.backend.upsert(
                IDENTITIES,
                pa.table(
                    {
                        "identifier": identifiers,
                        "kind": [kind_of(i) for i in identifiers],
                        "value": [value_of(i) for i in identifiers],
                        "profile_id": [changes.owners[i] or "" for i in identifiers],
                        "first_seen": pa.array([f[0] for f in firsts], pa.timestamp("ms", tz="UTC")),
                        "message_id": [f[1] for f in firsts],
                        "updated_at": pa.array([now] * len(identifiers), pa.timestamp("ms", tz="UTC")),
                        "deleted": [changes.owners[i] is None for i in identifiers],
                    },
                    schema=IDENTITIES.arrow_schema,
                ),
            )
        if mapping:
            self.backend.upsert(
                PROFILE_MAP,
                pa.table(
                    {
                        "profile_id": list(mapping),
                        "canonical_id": list(mapping.values()),
                        "updated_at": pa.array([now] * len(mapping), pa.timestamp("ms", tz="UTC")),
                    },
                    schema=PROFILE_MAP.arrow_schema,
                ),
            )
        if changes.merges:
            merges = changes.merges
            self.backend.insert(
                PROFILE_MERGES.name,
                pa.table(
                    {
                        "merged_id": [m.merged_id for m in merges],
                        "into_id": [self.graph.canonical(m.into_id) for m in merges],
                        "at": pa.array([now] * len(merges), pa.timestamp("ms", tz="UTC")),
                        "event_time": pa.array([m.key[0] if m.key else None for m in merges], pa.timestamp("ms", tz="UTC")),
                        "message_id": [m.key[1] if m.key else None for m in merges],
                        "reason": [m.reason for m in merges],
                        "evidence": [
                            _encode(
                                {"identifiers": list(m.evidence), "absorbed": list(m.absorbed), **({"details": details} if details else {})}
                            ).decode()
                            for m in merges
                        ],
                    },
                    schema=PROFILE_MERGES.arrow_schema,
                ),
            )
        if changes.conflicts:
            conflicts = changes.conflicts
            self.backend.insert(
                IDENTITY_CONFLICTS.name,
                pa.table(
                    {
                        "message_id": [c.key[1] for c in conflicts],
                        "event_time": pa.array([c.key[0] for c in conflicts], pa.timestamp("ms", tz="UTC")),
                        "identifier": [c.identifier for c in conflicts],
                        "profile_id": [c.profile_id for c in conflicts],
                        "other_profile_id": [c.other_profile_id for c in conflicts],
                        "reason": [c.reason for c in conflicts],
                        "recorded_at": pa.array([now] * len(conflicts), pa.timestamp("ms", tz="UTC")),
                    },
                    schema=IDENTITY_CONFLICTS.arrow_schema,
                ),
            )

    def unmerge(self, profile_id: str, merged_id: str) -> list[str]:
        """Split ``merged_id`` back out of the profile it was merged into; the identifiers moved.

        The identifiers ``merged_id`` held when it was merged go back to it; the ones that
        linked the two stay with the survivor. The two are never merged again. Events keep
        the profile they were loaded with (those of ``merged_id`` are its own again).
        """
        with self._lock:
            canonical = self.graph.canonical(profile_id)
            if canonical not in self.graph.profiles:
                raise KeyError(profile_id)
            if merged_id == canonical or self.graph.canonical(merged_id) != canonical:
                raise ValueError(f"{merged_id} is not merged into {canonical}")
            moving = self._absorbed(merged_id) & set(self.graph.profiles[canonical].identifiers)
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            self.graph.split(canonical, moving, merged_id, (now, f"unmerge:{merged_id}"))
            self._write(self.graph.take_changes())
            return sorted(moving)

    def _absorbed(self, merged_id: str) -> set[str]:
        rows = self.backend.select(
            exp.select("evidence")
            .from_(PROFILE_MERGES.name)
            .where(exp.column("merged_id").eq(exp.Literal.string(merged_id)))
            .order_by(exp.column("at").desc())
            .limit(1)
        )
        if not rows.num_rows:
            return set()
        evidence = msgspec.json.decode(rows.column(0)[0].as_py() or "{}")
        return set(evidence.get("absorbed", ())) if isinstance(evidence, dict) else set()

    def _restore(self) -> None:
        """Rebuild the graph from the store (identifier owners, redirects, contested profiles).

        One observation of all a profile's identifiers, at its first event, stands in for
        the observations that shaped it, so a replay after a restart keeps it whole.
        """
        graph = self.graph
        rows = self.backend.select(
            exp.select("identifier", "profile_id", "first_seen", "message_id")
            .from_(self.backend.table_ref(IDENTITIES))
            .where(exp.column("deleted").not_())
        )
        if rows.num_rows:
            millis = rows.column("first_seen").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
            for identifier, profile_id, ms, message_id in zip(
                rows.column("identifier").to_pylist(),
                rows.column("profile_id").to_pylist(),
                millis,
                rows.column("message_id").to_pylist(),
                strict=True,
            ):
                key: Key = (ms, message_id)
                profile = graph.profiles.get(profile_id)
                if profile is None:
                    profile = graph.profiles[profile_id] = Profile(id=profile_id, first=key, last=key)
                graph.owner[identifier] = profile_id
                profile.identifiers.append(identifier)
                kind = kind_of(identifier)
                profile.kinds[kind] = profile.kinds.get(kind, 0) + 1
                if kind == USER_ID:
                    profile.user_id = identifier
                profile.first, profile.last = min(profile.first, key), max(profile.last, key)
                self._first_seen[identifier] = key
            # What observations made each profile is not stored: one observation of all its
            # identifiers at its first time stands for them, so a replay keeps it whole.
            for profile in graph.profiles.values():
                ordered = tuple(sorted(profile.identifiers, key=graph.rules.rank))
                profile.observations = {ordered: profile.first}
        redirects = self.backend.select(
            exp.select("profile_id", "canonical_id").from_(self.backend.table_ref(PROFILE_MAP))
        )
        for old, new in zip(redirects.column(0).to_pylist(), redirects.column(1).to_pylist(), strict=True):
            self._members.setdefault(new, {new}).add(old)
            if old != new:
                graph.redirect[old] = new
        splits = self.backend.select(
            exp.select("merged_id", "into_id").from_(PROFILE_MERGES.name).where(exp.column("reason").eq(exp.Literal.string("unmerge")))
        )
        for merged, into in zip(splits.column(0).to_pylist(), splits.column(1).to_pylist(), strict=True):
            apart = [graph.profiles.get(graph.canonical(p)) for p in (merged, into)]
            if apart[0] is not None and apart[1] is not None:
                graph.apart.append((frozenset(apart[0].identifiers), frozenset(apart[1].identifiers)))
        contested = self.backend.select(
            exp.select("profile_id", "other_profile_id").distinct().from_(IDENTITY_CONFLICTS.name)
        )
        for pair in contested.to_pylist():
            ids = [graph.canonical(p) for p in pair.values() if p is not None]
            for profile_id in ids:
                if profile_id in graph.profiles:
                    graph.profiles[profile_id].contested = True
            if len(ids) == 2 and ids[0] != ids[1]:
                graph._contests.setdefault(ids[0], set()).add(ids[1])
                graph._contests.setdefault(ids[1], set()).add(ids[0])

    # -- erasure -----------------------------------------------------------------
    def forget(self, identifiers: set[str], profile_ids: set[str]) -> None:
        """Remove an erased person from the in-memory graph (``opencdp.privacy.erasure``).

        Their rows are already gone from the store; this makes the graph agree, so an
        event carrying one of the identifiers no longer joins the erased profile and no
        replay of a contested profile brings an erased identifier back.
        """
        with self._lock:
            graph = self.graph
            for identifier in identifiers:
                graph.owner.pop(identifier, None)
                graph._dropped_unowned.pop(identifier, None)
                self._first_seen.pop(identifier, None)
            for profile_id in profile_ids:
                graph.profiles.pop(profile_id, None)
                graph.redirect.pop(profile_id, None)
                self._members.pop(profile_id, None)
                for partner in graph._contests.pop(profile_id, set()):
                    graph._contests.get(partner, set()).discard(profile_id)
            for old, new in list(graph.redirect.items()):
                if new in profile_ids:
                    del graph.redirect[old]
            for members in self._members.values():
                members -= profile_ids
            for unowned in graph._dropped_unowned.values():
                unowned -= profile_ids
            graph._recorded = {r for r in graph._recorded if r[1] not in identifiers}
            graph.apart = [
                (a - identifiers, b - identifiers) for a, b in graph.apart if a - identifiers and b - identifiers
            ]
            # Another profile's event that had to drop one of the identifiers still lists it
            # in its observations (only contested profiles have such); a replay would attach it.
            for profile in graph.profiles.values():
                if profile.contested and any(identifiers.intersection(seen) for seen in profile.observations):
                    observations: dict[tuple[str, ...], Key] = {}
                    for seen, key in profile.observations.items():
                        kept = tuple(i for i in seen if i not in identifiers)
                        if kept and (kept not in observations or key < observations[kept]):
                            observations[kept] = key
                    profile.observations = observations
            self._simple.clear()  # caches of identifiers per (userId, anonymousId) pair and per traits text
            self._traits.clear()


_stages: weakref.WeakKeyDictionary[Backend, IdentityStage] = weakref.WeakKeyDictionary()
_stages_lock = threading.Lock()


def stage_for(backend: Backend, rules: Rules | None = None) -> IdentityStage:
    """The store's identity stage, shared by everything that loads events into it."""
    with _stages_lock:
        stage = _stages.get(backend)
        if stage is None:
            stage = _stages[backend] = IdentityStage(backend, rules)
        return stage

