"""One semantics: memberships kept up to date event by event equal the batch result.

Random segment trees (the differential test's strategy) and random arrival orders of
the hand-built shop's events: events are loaded in random chunks, each chunk is
observed by ``RealtimeSegments`` and evaluated the way the server does (dependent
segments only, on an in-memory copy of the touched profiles), and profiles appear in
``profile_map`` only with their first event. At the end the stored memberships must
equal ``members`` over the whole store, on both engines.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from opencdp.segments import membership, store
from opencdp.segments.ast import Condition, InSegment, Not
from opencdp.segments.realtime import RealtimeSegments, dependencies
from opencdp.segments.sql import Catalogue, members
from opencdp.segments.text import parse, to_text
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import (
    EVENTS,
    ORDER_LINES,
    PRODUCT_CHANGES,
    PRODUCTS,
    PROFILE_MAP,
    SEGMENT_MEMBERS,
)
from tests.conftest import BACKENDS, close_test_backend, open_test_backend
from tests.segments import dataset
from tests.segments.dataset import NOW
from tests.segments.test_differential import SEGMENTS, conditions

_EMPTY_TABLES = ("events", "order_lines", "profile_map", "segments", "segment_members", "segment_sizes")


@pytest.fixture(scope="module", params=BACKENDS)
def empty(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chdb_data_dir: Path) -> Iterator[Backend]:
    backend = open_test_backend(request.param, tmp_path_factory.mktemp(request.param), chdb_data_dir)
    rows = dataset.as_data()
    backend.upsert(PRODUCTS, dataset._table(PRODUCTS, rows.products))
    backend.insert(PRODUCT_CHANGES.name, dataset._table(PRODUCT_CHANGES, rows.product_changes))
    try:
        yield backend
    finally:
        close_test_backend(backend)


def _reset(backend: Backend) -> None:
    for name in _EMPTY_TABLES:
        if backend.capabilities.dialect == "clickhouse":
            backend.execute(f'TRUNCATE TABLE "{name}"')
        else:
            backend.execute(f'DELETE FROM "{name}"')


def _stream(backend: Backend, engine: RealtimeSegments, order: list[int], cuts: list[int]) -> None:
    rows = dataset.EVENT_ROWS
    redirects = dataset.profile_map_rows()
    lines = dataset._lines()
    seen: set[str] = set()
    bounds = sorted({0, len(order), *[c % (len(order) + 1) for c in cuts]})
    for start, end in itertools.pairwise(bounds):
        chunk = [rows[i] for i in order[start:end]]
        profiles = {r["profile_id"] for r in chunk if r["profile_id"]} - seen
        if profiles:  # a profile (and, merged, its survivor's map) exists from its first event
            seen |= profiles
            mine = [r for r in redirects if r["profile_id"] in seen]
            for version in sorted({r["updated_at"] for r in mine}):
                backend.upsert(PROFILE_MAP, dataset._table(PROFILE_MAP, [r for r in mine if r["updated_at"] == version]))
        ids = {r["message_id"] for r in chunk}
        events = dataset._table(EVENTS, [{k: v for k, v in r.items() if k != "_lines"} for r in chunk])
        backend.load(LoadBatch(events, dataset._table(ORDER_LINES, [line for line in lines if line["message_id"] in ids])))
        engine.observe(events)
        engine.tick(NOW, scheduled=False)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=conditions(), data=st.data())
def test_realtime_membership_equals_batch(empty: Backend, tree: Condition, data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(dataset.EVENT_ROWS))))
    cuts = data.draw(st.lists(st.integers(0, len(order)), max_size=12))
    _reset(empty)
    note(to_text(tree))
    for segment_id, other in SEGMENTS.items():
        store.save(empty, segment_id, definition=to_text(other), now=NOW)
    store.save(empty, "s", definition=to_text(tree), now=NOW)
    engine = RealtimeSegments(empty)
    _stream(empty, engine, list(order), cuts)
    batch = members(empty, tree, NOW, catalogue=store.catalogue(empty))
    kept = membership.stored_members(empty, "s")
    assert kept == batch, f"real time kept {sorted(kept - batch)} too many, lacks {sorted(batch - kept)}"


def test_an_event_writes_segment_entered_with_the_reason(backend: Backend) -> None:
    dataset.load(backend)
    segment, _ = store.save(backend, "kitchen_chairs", definition='count("Order Completed", where: line.category = "Kitchen > Chairs") >= 1', now=NOW)
    membership.refresh(backend, segment, NOW, reason="created")
    before = membership.stored_members(backend, "kitchen_chairs")
    newcomer = next(p for p in sorted(dataset.ids(*dataset.PEOPLE)) if p not in before)
    engine = RealtimeSegments(backend)
    row = dataset.order(newcomer.removeprefix("p-"), NOW - dt.timedelta(minutes=5), 900.0, "k-chair-1")
    row["message_id"] = "rt-1"
    events = dataset._table(EVENTS, [{k: v for k, v in row.items() if k != "_lines"}])
    line_rows = [{**line, **{c: row.get(c) for c in ("message_id", "order_id", "timestamp", "event", "channel", "profile_id")}} for line in row["_lines"]]
    backend.load(LoadBatch(events, dataset._table(ORDER_LINES, line_rows)))
    engine.observe(events)
    changes = engine.tick(NOW, scheduled=False)
    assert [c.entered for c in changes if c.segment_id == "kitchen_chairs"] == [[newcomer]]
    written = backend.rows(f"SELECT event, profile_id, properties FROM events WHERE source = 'segments' AND profile_id = '{newcomer}'")
    assert [w["event"] for w in written] == ["Segment Entered"]
    assert '"reason": "event: Order Completed"' in written[0]["properties"]
    assert membership.stored_members(backend, "kitchen_chairs") == before | {newcomer}
    assert backend.count(SEGMENT_MEMBERS) >= len(before) + 1


def test_dependencies_follow_referenced_segments() -> None:
    vip = parse('sum("Order Completed", total) > 1000')
    known = Catalogue(segments={"vip": vip})
    assert dependencies(Not(this=InSegment(segment="vip")), known) == {"Order Completed"}
    assert dependencies(parse('traits.city = "Kazan"'), known) is None
