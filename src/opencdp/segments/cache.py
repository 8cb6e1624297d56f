"""Every row of the recently active profiles, in memory, for the real-time evaluator.

Events are stored in time order, not by profile, so reading one profile's history means
scanning the whole ``profile_id`` column: about 0.5 s over 20M events on two cores, each
real-time tick. ``ProfileCache`` pays that once per profile: the first time a profile is
touched its rows (events, order lines, ids merged into it, segment memberships) are copied
into an in-memory store, and from then on the events the loader stores are added as they
are observed (their order lines read by message id from the recent end of ``order_lines``)
and the memberships as ``membership`` writes them (``membership.watch``). People who are
active now send many events in a row, so most events of a tick find their profile resident.

A resident profile is copied again after ``max_age_s`` (rows written around the loader:
imports, erasure, a merge, another process's writes) and when it is merged into another;
the least recently used are dropped beyond ``max_profiles``. ``extract`` fills the tick's
small evaluation store with just the touched profiles, so each segment is evaluated on a
few thousand rows.

Sets of ids travel as one list parameter (``among``), never as literals: an ``IN`` list of
thousands of ids took sqlglot longer to copy and render than the engine took to answer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.segments import membership
from opencdp.segments.sql import DIALECTS
from opencdp.storage.base import Backend, among, indexed
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP, SEGMENT_MEMBERS, Table

PER_PROFILE = (EVENTS, ORDER_LINES, PROFILE_MAP, SEGMENT_MEMBERS)
"""The tables whose rows belong to a profile (by the raw ``profile_id`` a canonical id maps from)."""


class ProfileCache:
    def __init__(self, backend: Backend, *, max_profiles: int = 200_000, max_age_s: float = 120.0) -> None:
        from opencdp.storage.duckdb import DuckDBBackend

        self.backend = backend
        self.max_profiles = max_profiles
        self.max_age_s = max_age_s
        self.store = DuckDBBackend(":memory:")
        for table in PER_PROFILE:
            self.store.execute(self.store.create_table_sql(table))
            self.store.create_indexes(dataclasses.replace(table, indexes=("profile_id",)))
        self.resident: OrderedDict[str, float] = OrderedDict()
        """Canonical id -> when its rows were copied, least recently used first."""
        self._raw: dict[str, str] = {}
        """Every id whose rows are resident (canonical ones too) -> its canonical id."""
        self._ids_of: dict[str, set[str]] = {}
        """Resident canonical id -> the ids in ``_raw`` mapped to it."""
        self._written: list[pa.Table] = []
        """Membership rows of resident profiles written since the last ``sync``."""
        self._lock = threading.Lock()
        self.copied = 0
        """Profiles copied from the store (the expensive path), for the stats."""
        membership.watch(backend, self._memberships_written)

    def sync(self, ids: dict[str, str], observed: list[pa.Table], need: set[str]) -> None:
        """Bring the rows of the canonical profiles ``need`` up to date, and add ``observed``
        (the events stored since the last sync) to the resident profiles they belong to.

        ``ids``: raw id -> canonical id for every ``profile_id`` in ``observed`` and for ``need``.
        """
        clock = time.monotonic()
        self._apply_written()
        merged = {raw for raw, c in ids.items() if raw != c and raw in self.resident}  # merged into c since copied
        old = {c for c in set(ids.values()) if c in self.resident and clock - self.resident[c] > self.max_age_s}
        now_of = self._members(self.backend, self.backend.table_ref(PROFILE_MAP), need)
        kept_of = self._members(self.store, PROFILE_MAP.name, need & set(self.resident))
        # copied again: new ones, old ones, and those an id was merged into since (their members differ)
        stale = {c for c in need if c not in self.resident or now_of.get(c, set()) != kept_of.get(c, set())}
        stale |= {ids[raw] for raw in merged} | (old & need)
        self.forget(merged | old | stale | {raw for c in stale for raw in now_of.get(c, ())})
        self._append(observed, {raw for raw, c in ids.items() if c in self.resident})
        if stale:
            self._copy({c: now_of.get(c, set()) | {c} for c in stale})
            self.copied += len(stale)
        for c in need:
            self.resident[c] = clock if c in stale else self.resident[c]
            self.resident.move_to_end(c)
        if len(self.resident) > self.max_profiles:
            self._drop(set(list(self.resident)[: len(self.resident) - self.max_profiles]))

    @staticmethod
    def _members(backend: Backend, profile_map: exp.Expr | str, canonical_ids: set[str]) -> dict[str, set[str]]:
        """Canonical id -> the ids mapped to it (an indexed read of ``profile_map.canonical_id``)."""
        if not canonical_ids:
            return {}
        query = exp.select("profile_id", "canonical_id").from_(profile_map).where(among("canonical_id", "ids", indexed=True))
        found: dict[str, set[str]] = {}
        for row in backend.rows(query, {"ids": sorted(canonical_ids)}):
            found.setdefault(row["canonical_id"], set()).add(row["profile_id"])
        return found

    def raw_ids(self, canonical_ids: Iterable[str]) -> set[str]:
        """Every id whose rows belong to these resident profiles (merged-away ids included)."""
        return {raw for c in canonical_ids for raw in self._ids_of.get(c, ())}

    def extract(self, canonical_ids: Iterable[str], into: Backend) -> None:
        """Replace ``into``'s per-profile tables with the rows of these (resident) profiles."""
        self._apply_written()
        raw = self.raw_ids(canonical_ids)
        for table in PER_PROFILE:
            rows = self.store.current(table, among("profile_id", "ids", indexed=True), {"ids": sorted(raw)}) if raw else table.empty()
            into.execute(f'DELETE FROM "{table.name}"')
            if rows.num_rows:
                into.insert(table.name, rows)

    def forget(self, raw_ids: Iterable[str]) -> None:
        """Drop every resident profile holding rows of these ids (raw or canonical)."""
        ids = set(raw_ids)
        if not ids or not self.resident:  # nothing resident: the store is empty
            return
        self._drop({self._raw[i] for i in ids if i in self._raw} | (ids & set(self.resident)))
        if self.resident:  # rows of an id whose profile_map row was not copied (none yet when it was)
            self._delete(ids)

    def _memberships_written(self, rows: pa.Table) -> None:
        """``membership.watch``: keep the rows of resident ids, added at the next ``sync``."""
        with self._lock:
            if not self._raw:
                return
            resident = pa.array(list(self._raw), pa.string())
        mine = rows.filter(pc.is_in(rows.column("profile_id"), value_set=resident))
        if mine.num_rows:
            with self._lock:
                self._written.append(mine)

    def _apply_written(self) -> None:
        with self._lock:
            written, self._written = self._written, []
            resident = pa.array(list(self._raw), pa.string()) if written else None
        if written:  # of the profiles still resident (one may have been dropped since)
            rows = pa.concat_tables(written)
            self.store.upsert(SEGMENT_MEMBERS, rows.filter(pc.is_in(rows.column("profile_id"), value_set=resident)))

    # ----------------------------------------------------------------------------------------
    def _delete(self, ids: set[str]) -> None:
        for table in PER_PROFILE:
            where = self.store.render(among("profile_id", "ids", indexed=True))
            self.store.execute(f'DELETE FROM "{table.name}" WHERE {where}', {"ids": sorted(ids)})

    def _drop(self, canonical_ids: set[str]) -> None:
        if not canonical_ids:
            return
        raw = self.raw_ids(canonical_ids) | canonical_ids
        self._delete(raw)
        with self._lock:
            for c in canonical_ids:
                self.resident.pop(c, None)
                self._ids_of.pop(c, None)
            for i in raw:
                self._raw.pop(i, None)

    def _append(self, observed: list[pa.Table], resident_raw: set[str]) -> None:
        """The observed events of resident profiles, each once, with their order lines."""
        if not observed or not resident_raw:
            return
        events = pa.concat_tables([t.select(EVENTS.column_names).cast(EVENTS.arrow_schema) for t in observed])
        events = events.filter(pc.is_in(events.column("profile_id"), value_set=pa.array(sorted(resident_raw), pa.string())))
        if not events.num_rows:
            return
        ids = events.column("message_id")
        where = among("message_id", "ids", indexed=indexed(EVENTS, "message_id"))
        have = self.store.current(EVENTS, where, {"ids": ids.to_pylist()}).column("message_id")
        events = events.filter(pc.invert(pc.is_in(ids, value_set=have.combine_chunks())))  # a copy already had it
        if not events.num_rows:
            return
        self.store.insert(EVENTS.name, events)
        orders = events.filter(pc.equal(events.column("event"), "Order Completed"))
        if orders.num_rows:
            dialect = DIALECTS[self.backend.capabilities.dialect]
            times = orders.column("timestamp")
            window = exp.and_(
                among("message_id", "ids", indexed=indexed(ORDER_LINES, "message_id")),
                exp.column("timestamp").between(dialect.timestamp(pc.min(times).as_py()), dialect.timestamp(pc.max(times).as_py())),
            )
            # zone maps skip all but the newest rows
            lines = self.backend.current(ORDER_LINES, window, {"ids": orders.column("message_id").to_pylist()})
            if lines.num_rows:
                self.store.insert(ORDER_LINES.name, lines)

    def _copy(self, raw_of: dict[str, set[str]]) -> None:
        """Copy the rows of these canonical profiles (-> every id mapped to them, themselves included)."""
        with self._lock:  # from now on, memberships written for these ids are kept for the next sync
            self._raw.update({raw: c for c, ids in raw_of.items() for raw in ids})
            for c, ids in raw_of.items():
                self._ids_of[c] = set(ids)
        raw = {i for ids in raw_of.values() for i in ids}
        for table in PER_PROFILE:
            rows = self.backend.current(table, among("profile_id", "ids", indexed=indexed(table, "profile_id")), {"ids": sorted(raw)})
            if rows.num_rows:
                self.store.insert(table.name, rows)


def copy_shared(backend: Backend, into: Backend, tables: Iterable[tuple[Table, exp.Expr | None]], ids: Iterable[str] = ()) -> None:
    """Replace ``into``'s rows of each table with the store's (optionally only those matching,
    ``among`` the list parameter ``ids``)."""
    for table, where in tables:
        rows = backend.current(table, where, {"ids": sorted(set(ids))} if where is not None else None)
        into.execute(f'DELETE FROM "{table.name}"')
        if rows.num_rows:
            into.insert(table.name, rows)
