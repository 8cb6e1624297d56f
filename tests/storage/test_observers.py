"""Events a stage writes itself (``record_events``) reach the observers, once, as loader batches do."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


def events(*ids: str) -> pa.Table:
    rows = [
        {"message_id": i, "type": "track", "event": "RFM Cell Changed", "timestamp": NOW, "received_at": NOW,
         "source": "analytics", "channel": "system", "lsn": 0, "profile_id": "p1"}
        for i in ids
    ]
    return pa.Table.from_pylist([{c: r.get(c) for c in EVENTS.arrow_schema.names} for r in rows], schema=EVENTS.arrow_schema)


def test_record_events_passes_the_stored_ones_to_observers(backend: Backend) -> None:
    seen: list[list[str]] = []
    backend.observers = [lambda table: seen.append(table.column("message_id").to_pylist())]
    try:
        backend.record_events(LoadBatch(events("a", "b"), ORDER_LINES.empty()))
        result = backend.record_events(LoadBatch(events("b", "c"), ORDER_LINES.empty()))  # b is a repeat
        assert result.inserted == 1
        assert [sorted(batch) for batch in seen] == [["a", "b"], ["c"]]
        backend.observers = [lambda table: 1 / 0, lambda table: seen.append(["after a failing one"])]
        backend.record_events(LoadBatch(events("d"), ORDER_LINES.empty()))  # a failing observer stops nothing
        assert seen[-1] == ["after a failing one"]
        assert backend.scalar("SELECT count(*) FROM events") == 4
    finally:
        backend.observers = None
