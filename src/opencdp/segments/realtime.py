"""Real-time segment membership: every loaded event re-evaluates the segments it can change.

The loader hands each stored batch to ``RealtimeSegments.observe`` (cheap: it only notes
which profiles had which events). A background thread then, every ``interval_s``,
re-evaluates for just those profiles the segments that depend on those events (or on
traits, or on any event) and writes the changes through ``membership.refresh``.
Segments whose conditions are relative to now (``30d`` windows, ``ago``, sequences with
``within``) are also refreshed whole on a schedule, so people leave a "last 30 days"
segment when the window passes: every ``short_every`` for windows under a day,
every ``long_every`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from opencdp.segments.ast import (
    Bucket,
    Computed,
    Node,
    Not,
    events_used,
    segments_used,
    shortest_window,
)
from opencdp.segments.cache import PER_PROFILE, ProfileCache, copy_shared
from opencdp.segments.membership import (
    ENTERED,
    EXITED,
    Change,
    apply,
    canonical,
    diff,
    refresh,
    stored_for,
)
from opencdp.segments.sql import Catalogue, members
from opencdp.segments.store import ACTIVE, DYNAMIC, Segment, catalogue, list_segments
from opencdp.storage.base import Backend, among, indexed
from opencdp.storage.schema import (
    PRODUCT_CHANGES,
    PRODUCTS,
    PROFILE_MAP,
    PROFILE_SCORES,
    SCORE_MODELS,
)

log = logging.getLogger(__name__)
_OWN_EVENTS = {ENTERED, EXITED}
_SHARED = (PROFILE_SCORES, PRODUCTS, PRODUCT_CHANGES, SCORE_MODELS)
"""Copied into the evaluation store with the touched profiles' rows: their scores, and the catalogue."""


def dependencies(tree: Node, known: Catalogue, seen: frozenset[str] = frozenset()) -> set[str] | None:
    """Event names that can change the tree's value, through referenced segments too; None: any event."""
    names = events_used(tree)
    if names is None:
        return None
    for other in segments_used(tree) - seen:
        inner = known.segments.get(other)
        if inner is None:
            continue  # a static list changes only when it is edited
        found = dependencies(inner, known, seen | {other})
        if found is None:
            return None
        names |= found
    return names


def refresh_period(tree: Node, short_every: float, long_every: float, known: Catalogue) -> float | None:
    """Seconds between scheduled full refreshes; None: time alone never changes membership."""
    spans = [s for s in _spans(tree, known, frozenset()) if s is not None]
    if not spans:
        return None
    return short_every if min(spans) < dt.timedelta(days=1) else long_every


def _spans(tree: Node, known: Catalogue, seen: frozenset[str]) -> list[dt.timedelta | None]:
    spans = [shortest_window(tree)]
    for other in segments_used(tree) - seen:
        inner = known.segments.get(other)
        if inner is not None:
            spans += _spans(inner, known, seen | {other})
    return spans


def _score_versions(tree: Node, known: Catalogue) -> tuple[tuple[str, str], ...]:
    """The versions of the stored scores a tree names (a new version of one means a full refresh is due)."""
    names = sorted({n.name for n in tree.walk() if isinstance(n, Computed) and n.name in known.scores})
    return tuple((name, known.scores[name].model_version) for name in names)


def _bucket_variants(tree: Node) -> list[Node]:
    """The tree with every bucket always true, and with every bucket always false."""
    if not any(isinstance(n, Bucket) for n in tree.walk()):
        return [tree]
    always = Bucket(low=0, high=100)
    never = Not(this=always)

    def swap(node: Node, to: Node) -> Node:
        if isinstance(node, Bucket):
            return to
        changes: dict[str, object] = {}
        for name, value in node.items():
            if isinstance(value, Node):
                changes[name] = swap(value, to)
            elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                changes[name] = tuple(swap(v, to) for v in value)
        return node.replace(**changes) if changes else node

    return [swap(tree, always), swap(tree, never)]


@dataclass
class RealtimeStats:
    ticks: int = 0
    evaluations: int = 0
    entered: int = 0
    exited: int = 0
    scheduled: int = 0
    last_error: str | None = None
    copy_s: float = 0.0
    """Time spent copying the touched profiles' rows into the in-memory store."""
    lag_s: list[float] = field(default_factory=list)
    """Seconds from observing an event to its membership change being stored (the last 1000)."""


class RealtimeSegments:
    def __init__(
        self,
        backend: Backend,
        *,
        interval_s: float = 0.5,
        short_every: float = 300.0,
        long_every: float = 3600.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        threads: int = 2,
        cache_profiles: int = 200_000,
        cache_age_s: float = 120.0,
    ) -> None:
        self.backend = backend
        self.interval_s = interval_s
        self.short_every = short_every
        self.long_every = long_every
        self.clock = clock
        self.threads = threads
        self.stats = RealtimeStats()
        self._touched: dict[str, set[str]] = {}
        self._observed: list[pa.Table] = []
        """The observed events themselves, added to the resident profiles' rows at the next tick."""
        self.cache = ProfileCache(backend, max_profiles=cache_profiles, max_age_s=cache_age_s)
        self._observed_at: float | None = None
        self._lock = threading.Lock()
        self._last_full: dict[str, float] = {}
        self._scored: dict[str, tuple[tuple[str, str], ...]] = {}
        """Per segment, the score versions its last full evaluation read."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scratch: Backend | None = None
        self._empty_store: Backend | None = None
        self._empty: dict[tuple[Node, dt.date], bool] = {}

    # called by the loader, after each stored batch --------------------------------------
    def observe(self, events: pa.Table) -> None:
        if events.num_rows == 0 or "profile_id" not in events.column_names:
            return
        mine = pc.and_(pc.is_valid(events.column("profile_id")), pc.invert(pc.is_in(events.column("event"), value_set=pa.array(sorted(_OWN_EVENTS)))))
        events = events.filter(mine)
        if events.num_rows == 0:
            return
        profiles = events.column("profile_id").to_pylist()
        names = events.column("event").to_pylist()
        types = events.column("type").to_pylist()
        with self._lock:
            for profile, name, kind in zip(profiles, names, types, strict=True):
                self._touched.setdefault(profile, set()).add(name or f"<{kind}>")
            self._observed.append(events)
            if self._observed_at is None:
                self._observed_at = time.monotonic()

    # one pass ---------------------------------------------------------------------------
    def tick(self, now: dt.datetime | None = None, *, scheduled: bool = True) -> list[Change]:
        """Evaluate what the observed events may have changed, and the segments due a scheduled refresh."""
        with self._lock:
            touched, self._touched = self._touched, {}
            observed, self._observed = self._observed, []
            observed_at, self._observed_at = self._observed_at, None
        now = now or self.clock()
        try:
            segments = [s for s in list_segments(self.backend) if s.kind == DYNAMIC and s.status == ACTIVE and s.tree is not None]
            if not segments:
                self.cache.forget(touched)  # nothing kept them current: copied afresh when a segment needs them
                return []
            known = catalogue(self.backend)
            changes: list[Change] = []
            due = [(segment, self._affected(segment, touched, known, now)) for segment in segments]
            due = [(segment, profiles) for segment, profiles in due if profiles]
            started = time.monotonic()
            ids: dict[str, str] = {}
            if due or self.cache.resident:  # the observed rows of resident profiles are added either way
                ids = canonical(self.backend, touched)
                self.cache.sync(ids, observed, {ids[p] for _, profiles in due for p in profiles})
            if due:
                everyone = {p for _, profiles in due for p in profiles}
                mine_all = {p: ids[p] for p in everyone}
                scratch = self.copy_profiles(mine_all)
                self.stats.copy_s += time.monotonic() - started
                stored = stored_for(scratch, set(mine_all) | set(mine_all.values()))
                batch: list[tuple[Segment, Change, str]] = []

                def evaluate(item: tuple[Segment, list[str]]) -> Change:
                    segment, profiles = item
                    mine = {p: ids[p] for p in profiles}
                    before = stored.get(segment.segment_id, set()) & (set(mine) | set(mine.values()))
                    return diff(self.backend, segment, now, profiles=profiles, known=known, evaluate_on=scratch, before=before, ids=mine)

                # the engine runs each query outside the GIL: two at a time keep both cores busy
                with ThreadPoolExecutor(max_workers=self.threads) as pool:
                    results = list(pool.map(evaluate, due))
                for (segment, profiles), change in zip(due, results, strict=True):
                    if change.parametric:
                        continue
                    seen = sorted({n for p in profiles for n in touched[p]})
                    batch.append((segment, change, "event: " + ", ".join(seen[:5])))
                    changes.append(change)
                    self.stats.evaluations += 1
                    self.stats.entered += len(change.entered)
                    self.stats.exited += len(change.exited)
                apply(self.backend, batch, now, trigger="realtime")
        except Exception:
            with self._lock:  # evaluated again on the next tick (refresh is idempotent)
                for profile, names in touched.items():
                    self._touched.setdefault(profile, set()).update(names)
                self._observed = observed + self._observed
                if self._observed_at is None:
                    self._observed_at = observed_at
            self.cache.forget(touched)  # it may hold some of the observed rows: copy them afresh
            raise
        if observed_at is not None and any(c.entered or c.exited for c in changes):
            self.stats.lag_s = [*self.stats.lag_s[-999:], time.monotonic() - observed_at]
        if scheduled:
            changes += self.scheduled(now, known, segments)
        self.stats.ticks += 1
        return changes

    def scheduled(self, now: dt.datetime, known: Catalogue, segments: list[Segment]) -> list[Change]:
        changes: list[Change] = []
        clock = time.monotonic()
        for segment in segments:
            assert segment.tree is not None
            period = refresh_period(segment.tree, self.short_every, self.long_every, known)
            last = self._last_full.get(segment.segment_id)
            if last is None:
                self._last_full[segment.segment_id] = clock  # created or seen just now: its save evaluated it
                continue
            versions = _score_versions(segment.tree, known)
            rescored = versions != self._scored.setdefault(segment.segment_id, versions)
            if rescored or (period is not None and clock - last >= period):
                self._last_full[segment.segment_id] = clock
                self._scored[segment.segment_id] = versions
                self.stats.scheduled += 1
                reason = "new scores" if rescored else "time window"
                changes.append(self._refresh(segment, now, known, profiles=None, reason=reason))
        return changes

    def _affected(self, segment: Segment, touched: dict[str, set[str]], known: Catalogue, now: dt.datetime) -> list[str]:
        assert segment.tree is not None
        needs = dependencies(segment.tree, known)
        if needs is None or self._holds_when_empty(segment.tree, known, now):
            # a segment a profile without any event is in (``not count(...)``, buckets) takes in new profiles
            return sorted(touched)
        return sorted(p for p, names in touched.items() if names & needs)

    def _holds_when_empty(self, tree: Node, known: Catalogue, now: dt.datetime) -> bool:
        key = (tree, now.date())
        found = self._empty.get(key)
        if found is None:
            from opencdp.storage.duckdb import DuckDBBackend

            if self._empty_store is None:
                self._empty_store = DuckDBBackend(":memory:")
                self._empty_store.create_schema()
                row = {"profile_id": "\u0000empty", "canonical_id": "\u0000empty", "updated_at": now}
                self._empty_store.insert(PROFILE_MAP.name, pa.Table.from_pylist([row], schema=PROFILE_MAP.arrow_schema))
            # a bucket holds for some profiles and not others: try the empty profile both ways
            found = any(bool(members(self._empty_store, variant, now, catalogue=known)) for variant in _bucket_variants(tree))
            if len(self._empty) > 4096:
                self._empty.clear()
            self._empty[key] = found
        return found

    def copy_profiles(self, ids: dict[str, str]) -> Backend:
        """A small in-memory store with every row of these profiles (raw id -> canonical id;
        their rows and memberships from the resident ``cache``, synced first), their scores,
        and the catalogue: each segment is then evaluated on the copy in milliseconds."""
        from opencdp.storage.duckdb import DuckDBBackend

        if self._scratch is None:
            scratch = DuckDBBackend(":memory:")
            scratch.create_schema()
            for table in (*PER_PROFILE, *_SHARED):  # refilled on every tick: plain tables, no indexes to keep
                scratch.execute(f'DROP TABLE "{table.name}"')
                scratch.execute(scratch.create_table_sql(table, constraints=False))
            self._scratch = scratch
        current = set(ids.values())
        self.cache.extract(current, self._scratch)
        copy_shared(
            self.backend,
            self._scratch,
            [  # scores of merged-away ids too
                (table, among("profile_id", "ids", indexed=indexed(table, "profile_id")) if table is PROFILE_SCORES else None)
                for table in _SHARED
            ],
            self.cache.raw_ids(current) | current,
        )
        return self._scratch

    def _refresh(
        self,
        segment: Segment,
        now: dt.datetime,
        known: Catalogue,
        *,
        profiles: list[str] | None,
        reason: str,
        evaluate_on: Backend | None = None,
    ) -> Change:
        change = refresh(self.backend, segment, now, profiles=profiles, reason=reason, known=known, evaluate_on=evaluate_on)
        self.stats.evaluations += 1
        self.stats.entered += len(change.entered)
        self.stats.exited += len(change.exited)
        return change

    # background thread ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="segments", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
                self.stats.last_error = None
            except Exception as error:  # keep going: the next tick retries what is still touched
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("real-time segment evaluation failed")
