"""Write-ahead log records decode to exactly the tables the row-by-row path builds."""

from __future__ import annotations

import time
from typing import Any

from opencdp.ingest import records
from opencdp.ingest.decode import decode
from opencdp.ingest.rows import events_and_lines, quarantine_table
from opencdp.ingest.segment import Envelope, normalize

ENVELOPE = Envelope(received_at_ms=int(time.time() * 1000), source="web")
MESSAGES: list[dict[str, Any]] = [
    {"type": "identify", "userId": "u1", "traits": {"firstName": "Анна", "note": "line\nbreak"}},
    {"type": "page", "anonymousId": "a1", "name": "Каталог", "properties": {"path": "/"}},
    {
        "type": "track",
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "2024-02-03T04:05:06.789Z",
        "properties": {
            "order_id": "O-1",
            "total": 5990,
            "currency": "RUB",
            "store_id": "store-7",
            "products": [
                {"product_id": "P1", "name": "Стул", "price": 1500, "quantity": 2, "discount": 10.5},
                {"sku": "S-2", "price": "2990"},
            ],
        },
    },
    {"type": "track", "userId": "u2", "event": "Cart Viewed", "properties": {"products": []}},
    {"type": "alias", "userId": "u1", "previousId": "a1"},
]


def test_events_and_lines_round_trip() -> None:
    rows = [normalize(m, ENVELOPE) for m in MESSAGES]
    first, second = rows[:2], rows[2:]
    wal = [(100, records.encode(records.EVENTS_KIND, first)), (250, records.encode(records.EVENTS_KIND, second))]
    events, lines, quarantine = decode(wal)
    expected_rows = [{**r, "lsn": 100} for r in first] + [{**r, "lsn": 250} for r in second]
    expected_events, expected_lines = events_and_lines(expected_rows)
    assert events.equals(expected_events)
    assert lines.equals(expected_lines)
    assert lines.num_rows == 2 and lines.column("order_id").to_pylist() == ["O-1", "O-1"]
    assert quarantine is None


def test_arrow_records_round_trip_beside_json_records_in_log_order() -> None:
    """Arrow records (what validation writes) decode like JSON ones (older logs), in log order."""
    rows = [normalize(m, ENVELOPE) for m in MESSAGES]
    wal = [
        (100, records.encode_events(rows[:2])),
        (250, records.encode(records.EVENTS_KIND, rows[2:3])),
        (300, records.encode(records.EVENTS_KIND, rows[3:4])),
        (400, records.encode_events(rows[4:])),
    ]
    events, lines, quarantine = decode(wal)
    lsns = [100, 100, 250, 300, 400]
    expected_events, expected_lines = events_and_lines([{**r, "lsn": n} for r, n in zip(rows, lsns, strict=True)])
    assert events.equals(expected_events)
    assert lines.equals(expected_lines)
    assert quarantine is None


def test_rejects_round_trip_and_mix_with_events() -> None:
    reject = {
        "received_at": ENVELOPE.received_at_ms,
        "source": "api:web",
        "error": "invalid_json",
        "detail": "the body is not valid JSON",
        "field": None,
        "position": None,
        "payload": '{"a": "line\nbreak", ',
    }
    wal = [
        (10, records.encode(records.REJECTS_KIND, [reject])),
        (20, records.encode(records.EVENTS_KIND, [normalize(MESSAGES[0], ENVELOPE)])),
    ]
    events, lines, quarantine = decode(wal)
    assert events.num_rows == 1 and lines.num_rows == 0
    assert quarantine is not None and quarantine.equals(quarantine_table([reject]))


def test_nothing_decodes_to_empty_tables() -> None:
    events, lines, quarantine = decode([])
    assert events.num_rows == 0 and lines.num_rows == 0 and quarantine is None
