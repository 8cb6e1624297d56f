"""The storage contract, run unchanged on every engine (see the ``backend`` fixture).

Every assertion is made on plain Python values, so each engine must give the same
answers: what differs between engines is only how a query parameter is spelled.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from sqlglot import exp

from opencdp.storage.base import Backend, LoadBatch, LoadResult
from opencdp.storage.schema import (
    CHECKPOINTS,
    EVENTS,
    ORDER_LINES,
    PRODUCTS,
    QUARANTINE,
    SEGMENT_MEMBERS,
    TABLES,
)

T0 = dt.datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=dt.UTC)
RECEIVED = T0 + dt.timedelta(seconds=2)


# -- data builders ---------------------------------------------------------------------


def event(message_id: str, *, lsn: int = 1, **fields: Any) -> dict[str, Any]:
    """An ``Order Completed`` track event; ``fields`` override any column."""
    row: dict[str, Any] = {
        "message_id": message_id,
        "type": "track",
        "event": "Order Completed",
        "timestamp": T0,
        "received_at": RECEIVED,
        "user_id": "u1",
        "source": "web-site",
        "channel": "web",
        "order_id": f"o-{message_id}",
        "revenue": 99.5,
        "currency": "RUB",
        "lsn": lsn,
    }
    row.update(fields)
    return row


def line(message_id: str, line_no: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "message_id": message_id,
        "line_no": line_no,
        "order_id": f"o-{message_id}",
        "timestamp": T0,
        "user_id": "u1",
        "event": "Order Completed",
        "channel": "web",
        "product_id": f"p{line_no}",
        "price": 10.0 + line_no,
        "quantity": 1.0,
        "currency": "RUB",
    }
    row.update(fields)
    return row


def quarantined(position: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "received_at": RECEIVED,
        "source": "api:web-site",
        "error": "invalid_timestamp",
        "detail": "timestamp is not an ISO 8601 date",
        "field": "timestamp",
        "position": position,
        "payload": '{"timestamp": "yesterday"}',
    }
    row.update(fields)
    return row


def product(product_id: str, version: dt.datetime, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "product_id": product_id,
        "name": f"Product {product_id}",
        "updated_at": version,
    }
    row.update(fields)
    return row


def table_of(schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of ``schema``; columns a row leaves out are null."""
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


def batch(
    events: list[dict[str, Any]],
    lines: list[dict[str, Any]] | None = None,
    quarantine: list[dict[str, Any]] | None = None,
) -> LoadBatch:
    return LoadBatch(
        events=table_of(EVENTS.arrow_schema, events),
        order_lines=table_of(ORDER_LINES.arrow_schema, lines or []),
        quarantine=table_of(QUARANTINE.arrow_schema, quarantine)
        if quarantine is not None
        else None,
    )


def placeholder(backend: Backend, name: str, clickhouse_type: str) -> str:
    """A query parameter as the engine spells it: ``$name`` or ``{name:Type}``."""
    return (
        f"{{{name}:{clickhouse_type}}}"
        if backend.capabilities.dialect == "clickhouse"
        else f"${name}"
    )


def stored_events(backend: Backend, columns: str = "*") -> list[dict[str, Any]]:
    return backend.rows(f"SELECT {columns} FROM events ORDER BY message_id")


def stored_lines(backend: Backend) -> list[tuple[str, int]]:
    rows = backend.rows("SELECT message_id, line_no FROM order_lines ORDER BY message_id, line_no")
    return [(r["message_id"], r["line_no"]) for r in rows]


# -- schema ------------------------------------------------------------------------------


def test_schema_creation_is_idempotent(backend: Backend) -> None:
    backend.load(batch([event("m1")], [line("m1", 0)]))
    backend.create_schema()
    backend.create_schema()
    counts = {t.name: backend.count(t) for t in TABLES}
    assert counts == {**dict.fromkeys(counts, 0), "events": 1, "order_lines": 1}


def test_schema_upgrade_adds_declared_columns_to_existing_tables(backend: Backend) -> None:
    backend.load(batch([event("m1")], [line("m1", 0)]))
    # a store from before the column (and so its index) was declared
    backend.execute("DROP INDEX order_lines_profile_id" if backend.name == "duckdb" else "ALTER TABLE order_lines DROP INDEX order_lines_profile_id")
    backend.execute("ALTER TABLE order_lines DROP COLUMN profile_id")
    assert "profile_id" not in backend.column_names("order_lines")
    backend.create_schema()
    assert "profile_id" in backend.column_names("order_lines")
    assert backend.rows("SELECT message_id, profile_id FROM order_lines") == [{"message_id": "m1", "profile_id": None}]


def test_every_table_reads_back_its_declared_columns(backend: Backend) -> None:
    for table in TABLES:
        assert backend.current(table).column_names == table.column_names, table.name


# -- load ----------------------------------------------------------------------------------


def test_load_inserts_events_and_order_lines(backend: Backend) -> None:
    result = backend.load(
        batch(
            [
                event("m1", lsn=1),
                event("m2", lsn=2, type="page", event="", name="Home", order_id=None),
            ],
            [line("m1", 0), line("m1", 1, product_id="sofa", price=49990.0, quantity=2.0)],
        )
    )

    assert (result.inserted, result.duplicates, result.order_lines, result.quarantined) == (
        2,
        0,
        2,
        0,
    )
    assert sorted(result.new_message_ids) == ["m1", "m2"]
    assert stored_events(backend, "message_id, type, event, name, order_id, lsn") == [
        {
            "message_id": "m1",
            "type": "track",
            "event": "Order Completed",
            "name": None,
            "order_id": "o-m1",
            "lsn": 1,
        },
        {
            "message_id": "m2",
            "type": "page",
            "event": "",
            "name": "Home",
            "order_id": None,
            "lsn": 2,
        },
    ]
    lines = backend.rows(
        "SELECT line_no, product_id, price, quantity FROM order_lines ORDER BY line_no"
    )
    assert lines == [
        {"line_no": 0, "product_id": "p0", "price": 10.0, "quantity": 1.0},
        {"line_no": 1, "product_id": "sofa", "price": 49990.0, "quantity": 2.0},
    ]


def test_reloading_the_same_batch_inserts_nothing(backend: Backend) -> None:
    same = batch(
        [event("m1", lsn=1), event("m2", lsn=2)], [line("m1", 0), line("m2", 0), line("m2", 1)]
    )
    backend.load(same)

    again = backend.load(same)

    assert again == LoadResult(
        inserted=0, duplicates=2, order_lines=0, quarantined=0, new_message_ids=[]
    )
    assert backend.count(EVENTS) == 2
    assert stored_lines(backend) == [("m1", 0), ("m2", 0), ("m2", 1)]


def test_duplicates_within_a_batch_keep_the_lowest_lsn(backend: Backend) -> None:
    result = backend.load(
        batch(
            [
                event("m1", lsn=7, user_id="from-7"),
                event("m2", lsn=4),
                event("m1", lsn=3, user_id="from-3"),
                event("m1", lsn=5, user_id="from-5"),
            ]
        )
    )

    assert (result.inserted, result.duplicates) == (2, 2)
    assert sorted(result.new_message_ids) == ["m1", "m2"]
    assert stored_events(backend, "message_id, lsn, user_id") == [
        {"message_id": "m1", "lsn": 3, "user_id": "from-3"},
        {"message_id": "m2", "lsn": 4, "user_id": "u1"},
    ]


def test_events_already_stored_are_duplicates_in_a_later_batch(backend: Backend) -> None:
    backend.load(batch([event("m1", lsn=1)], [line("m1", 0)]))

    result = backend.load(
        batch(
            [event("m1", lsn=9), event("m3", lsn=10)], [line("m1", 0), line("m1", 1), line("m3", 0)]
        )
    )

    assert (result.inserted, result.duplicates, result.order_lines) == (1, 1, 1)
    assert result.new_message_ids == ["m3"]
    assert stored_events(backend, "message_id, lsn") == [
        {"message_id": "m1", "lsn": 1},
        {"message_id": "m3", "lsn": 10},
    ]
    assert stored_lines(backend) == [("m1", 0), ("m3", 0)]


def test_dedupe_window_bounds_the_duplicate_check(backend: Backend) -> None:
    old = RECEIVED - dt.timedelta(days=30)
    backend.load(batch([event("old", received_at=old), event("recent")]))
    window = batch([event("old", lsn=5), event("recent", lsn=6), event("new", lsn=7)])
    window.dedupe_since = RECEIVED - dt.timedelta(days=7)

    result = backend.load(window)

    # Only "recent" was first received inside the window; "old" is outside it, so a
    # retry that late counts as a new event, as with Segment's own dedupe window.
    assert sorted(result.new_message_ids) == ["new", "old"]
    full_history = batch([event("recent", lsn=8), event("old", lsn=9)])
    assert backend.load(full_history).inserted == 0


def test_order_lines_of_duplicate_events_are_not_doubled(backend: Backend) -> None:
    result = backend.load(
        batch(
            [event("m1", lsn=1), event("m1", lsn=2)],
            [line("m1", 0), line("m1", 1), line("m1", 0), line("m1", 1)],
        )
    )

    assert (result.inserted, result.duplicates, result.order_lines) == (1, 1, 2)
    assert stored_lines(backend) == [("m1", 0), ("m1", 1)]


def test_replay_after_a_crash_between_lines_and_events_stores_lines_once(backend: Backend) -> None:
    if backend.capabilities.transactions:
        pytest.skip(
            reason="lines and events commit together: no state between the two inserts to replay from"
        )
    lines = [line("m1", 0), line("m1", 1)]
    # The crash: the lines of m1 are stored, m1 itself and the checkpoint are not.
    backend.insert(ORDER_LINES.name, table_of(ORDER_LINES.arrow_schema, lines))

    result = backend.load(batch([event("m1", lsn=1)], lines), checkpoint=("loader", 1))

    assert (result.inserted, result.order_lines) == (1, 0)
    assert stored_lines(backend) == [("m1", 0), ("m1", 1)]
    assert backend.get_checkpoint("loader") == 1


def test_checkpoint_advances_with_the_load(backend: Backend) -> None:
    assert backend.get_checkpoint("loader") == 0

    backend.load(batch([event("m1")]), checkpoint=("loader", 10))
    assert backend.get_checkpoint("loader") == 10

    backend.load(batch([event("m2")]), checkpoint=("loader", 25))
    backend.load(batch([]), checkpoint=("importer", 3))
    assert backend.get_checkpoint("loader") == 25
    assert backend.get_checkpoint("importer") == 3
    assert backend.count(CHECKPOINTS) == 2


def test_quarantined_rows_are_kept(backend: Backend) -> None:
    result = backend.load(
        batch(
            [event("m1")],
            quarantine=[quarantined(0), quarantined(3, field=None, payload="{not json")],
        )
    )

    assert (result.inserted, result.quarantined) == (1, 2)
    rows = backend.rows("SELECT * FROM quarantine ORDER BY position")
    assert rows == [quarantined(0), quarantined(3, field=None, payload="{not json")]


def test_an_empty_batch_with_only_a_checkpoint(backend: Backend) -> None:
    result = backend.load(
        LoadBatch(EVENTS.empty(), ORDER_LINES.empty(), QUARANTINE.empty()), ("loader", 42)
    )

    assert result == LoadResult()
    assert backend.get_checkpoint("loader") == 42
    assert backend.count(EVENTS) == 0


# -- current-state tables ---------------------------------------------------------------------


def test_upsert_newest_version_wins(backend: Backend) -> None:
    v1, v2, v3 = (T0 + dt.timedelta(hours=h) for h in (1, 2, 3))
    backend.upsert(
        PRODUCTS,
        table_of(
            PRODUCTS.arrow_schema, [product("p1", v1, price=10.0), product("p2", v1, price=5.0)]
        ),
    )
    backend.upsert(PRODUCTS, table_of(PRODUCTS.arrow_schema, [product("p1", v2, price=12.0)]))
    # An older version arriving later does not overwrite, nor does an older row of the same batch.
    backend.upsert(PRODUCTS, table_of(PRODUCTS.arrow_schema, [product("p1", v1, price=99.0)]))
    backend.upsert(
        PRODUCTS,
        table_of(
            PRODUCTS.arrow_schema, [product("p2", v3, price=7.0), product("p2", v2, price=6.0)]
        ),
    )

    current = sorted(backend.current(PRODUCTS).to_pylist(), key=lambda r: r["product_id"])
    assert [(r["product_id"], r["price"], r["updated_at"]) for r in current] == [
        ("p1", 12.0, v2),
        ("p2", 7.0, v3),
    ]
    assert backend.count(PRODUCTS) == 2


def test_upsert_of_new_and_stored_keys_in_one_batch(backend: Backend) -> None:
    """segment_members: new keys are inserted, stored ones updated only by a newer version."""
    v1, v2 = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)

    def rows(*members: tuple[str, str, bool, dt.datetime]) -> pa.Table:
        return table_of(SEGMENT_MEMBERS.arrow_schema, [
            {"segment_id": s, "profile_id": p, "member": m, "since": at, "updated_at": at} for s, p, m, at in members
        ])

    backend.upsert(SEGMENT_MEMBERS, rows(("vip", "a", True, v2), ("vip", "b", True, v1)))
    backend.upsert(SEGMENT_MEMBERS, rows(
        ("vip", "a", False, v1),  # older than what is stored: ignored
        ("vip", "b", False, v2),  # newer: b left
        ("vip", "c", True, v1), ("vip", "c", True, v2),  # new, twice in the batch: the newest kept
        ("new", "a", True, v1),  # a stored profile, a new key
    ))
    current = sorted((r["segment_id"], r["profile_id"], r["member"], r["updated_at"]) for r in backend.current(SEGMENT_MEMBERS).to_pylist())
    assert current == [("new", "a", True, v1), ("vip", "a", True, v2), ("vip", "b", False, v2), ("vip", "c", True, v2)]


def test_current_filters_with_a_where_clause(backend: Backend) -> None:
    backend.upsert(
        PRODUCTS,
        table_of(
            PRODUCTS.arrow_schema, [product("p1", T0, price=1.0), product("p2", T0, price=2.0)]
        ),
    )
    backend.upsert(PRODUCTS, table_of(PRODUCTS.arrow_schema, [product("p1", RECEIVED, price=3.0)]))

    found = backend.current(PRODUCTS, where=exp.column("product_id").eq(exp.Literal.string("p1")))

    assert [(r["product_id"], r["price"]) for r in found.to_pylist()] == [("p1", 3.0)]
    assert backend.count(EVENTS) == 0


# -- stats -----------------------------------------------------------------------------------------


def test_stats_of_an_empty_store(backend: Backend) -> None:
    stats = backend.stats()

    assert stats.rows == {t.name: 0 for t in TABLES}
    assert stats.last_event_at is None
    assert stats.last_received_at is None
    assert isinstance(stats.size_bytes, int) and stats.size_bytes >= 0


def test_stats_after_a_load(backend: Backend) -> None:
    later = T0 + dt.timedelta(days=40)  # another month: another partition where engines partition
    backend.load(
        batch(
            [
                event("m1"),
                event("m2", timestamp=later, received_at=later + dt.timedelta(seconds=1)),
            ],
            [line("m1", 0)],
        ),
        checkpoint=("loader", 2),
    )

    stats = backend.stats()

    assert stats.rows["events"] == 2
    assert stats.rows["order_lines"] == 1
    assert stats.rows["checkpoints"] == 1
    assert stats.last_event_at == later
    assert stats.last_received_at == later + dt.timedelta(seconds=1)
    assert stats.size_bytes >= 0


# -- values round-trip -------------------------------------------------------------------------


def test_timestamps_round_trip_as_utc(backend: Backend) -> None:
    moscow = dt.timezone(dt.timedelta(hours=3))
    local = dt.datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=moscow)
    backend.load(batch([event("m1", timestamp=local, original_timestamp=local, sent_at=None)]))

    row = stored_events(backend, "timestamp, original_timestamp, sent_at, received_at")[0]

    assert row["timestamp"] == dt.datetime(2024, 12, 31, 20, 59, 59, 999000, tzinfo=dt.UTC)
    assert row["original_timestamp"] == local
    assert row["sent_at"] is None
    assert row["received_at"] == RECEIVED
    for name in ("timestamp", "original_timestamp", "received_at"):
        assert row[name].utcoffset() == dt.timedelta(0), (
            f"{name} is not returned in UTC: {row[name]!r}"
        )


def test_nulls_round_trip(backend: Backend) -> None:
    backend.load(
        batch(
            [
                event(
                    "m1",
                    name=None,
                    user_id=None,
                    anonymous_id="anon-1",
                    properties=None,
                    order_id=None,
                    revenue=None,
                    currency=None,
                    quantity=0.0,
                ),
            ],
            [line("m1", 0, price=None, sku=None, currency=None, discount=0.0)],
        )
    )

    row = stored_events(
        backend,
        "name, user_id, anonymous_id, properties, order_id, revenue, currency, quantity, total",
    )[0]
    assert row == {
        "name": None,
        "user_id": None,
        "anonymous_id": "anon-1",
        "properties": None,
        "order_id": None,
        "revenue": None,
        "currency": None,
        "quantity": 0.0,
        "total": None,
    }
    assert backend.rows("SELECT price, sku, currency, discount FROM order_lines") == [
        {"price": None, "sku": None, "currency": None, "discount": 0.0}
    ]
    assert backend.scalar("SELECT count(*) FROM events WHERE user_id IS NULL") == 1


def test_a_null_in_a_required_column_is_refused(backend: Backend) -> None:
    # Engines raise their own error types; none stores an empty string or a zero date instead.
    with pytest.raises((duckdb.Error, RuntimeError)):
        backend.load(batch([event("m1"), event("m2", source=None)]))
    with pytest.raises((duckdb.Error, RuntimeError)):
        backend.insert(
            QUARANTINE.name, table_of(QUARANTINE.arrow_schema, [quarantined(0, detail=None)])
        )

    assert backend.count(EVENTS) == 0
    assert backend.count(QUARANTINE) == 0


def test_values_come_back_as_python_types(backend: Backend) -> None:
    backend.load(batch([event("m1", lsn=2**40, revenue=1234.5, quantity=3.0)]))

    row = stored_events(backend, "message_id, lsn, revenue, quantity, timestamp")[0]

    assert row == {
        "message_id": "m1",
        "lsn": 2**40,
        "revenue": 1234.5,
        "quantity": 3.0,
        "timestamp": T0,
    }
    assert [type(row[k]) for k in ("message_id", "lsn", "revenue", "timestamp")] == [
        str,
        int,
        float,
        dt.datetime,
    ]


def test_cyrillic_strings_round_trip(backend: Backend) -> None:
    name = "Диван «Уют» — серый, 3-местный"
    properties = '{"название": "Диван «Уют»", "категория": "Гостиная > Диваны"}'
    backend.load(
        batch(
            [event("сообщение-1", user_id="Иван Петров", properties=properties)],
            [line("сообщение-1", 0, name=name)],
        )
    )

    row = stored_events(backend, "message_id, user_id, properties")[0]
    assert row == {"message_id": "сообщение-1", "user_id": "Иван Петров", "properties": properties}
    assert backend.scalar("SELECT name FROM order_lines") == name
    found = backend.scalar(
        f"SELECT count(*) FROM events WHERE user_id = {placeholder(backend, 'user', 'String')}",
        {"user": "Иван Петров"},
    )
    assert found == 1


TRICKY_IDS = [
    "x'); DROP TABLE events; --",
    'x"); DROP TABLE events; --',
    "back\\slash\\",
    "\\'; SELECT 1; --",
    "`backquoted`",
    "tab\tand\nnewline",
    "{id:String}",
    "$1 ? %s",
]


def test_message_ids_that_look_like_sql_are_stored_verbatim(backend: Backend) -> None:
    events = [event(m, lsn=i) for i, m in enumerate(TRICKY_IDS)]
    lines = [line(m, 0) for m in TRICKY_IDS]

    result = backend.load(batch(events, lines), checkpoint=("loader'; --", 7))

    assert sorted(result.new_message_ids) == sorted(TRICKY_IDS)
    assert [r["message_id"] for r in stored_events(backend, "message_id")] == sorted(TRICKY_IDS)
    assert [m for m, _ in stored_lines(backend)] == sorted(TRICKY_IDS)
    assert backend.get_checkpoint("loader'; --") == 7
    # The tables survive and the ids still deduplicate.
    again = backend.load(batch(events, lines))
    assert (again.inserted, again.duplicates, again.order_lines) == (0, len(TRICKY_IDS), 0)
    assert {t.name: backend.count(t) for t in (EVENTS, ORDER_LINES)} == {
        "events": len(TRICKY_IDS),
        "order_lines": len(TRICKY_IDS),
    }
    for message_id in TRICKY_IDS:
        sql = f"SELECT lsn FROM events WHERE message_id = {placeholder(backend, 'id', 'String')}"
        assert backend.scalar(sql, {"id": message_id}) == TRICKY_IDS.index(message_id), message_id


def test_query_parameters_of_each_type(backend: Backend) -> None:
    backend.load(
        batch(
            [event("m1", lsn=5, revenue=10.5), event("m2", lsn=6, revenue=None, timestamp=RECEIVED)]
        )
    )

    def ids(where: str, params: dict[str, Any]) -> list[str]:
        return [
            r["message_id"]
            for r in backend.rows(
                f"SELECT message_id FROM events WHERE {where} ORDER BY message_id", params
            )
        ]

    lsn, low, source = (
        placeholder(backend, n, t)
        for n, t in (("lsn", "Int64"), ("min", "Float64"), ("source", "String"))
    )
    at = placeholder(backend, "at", "DateTime64(3, 'UTC')")
    assert ids(f"lsn = {lsn}", {"lsn": 6}) == ["m2"]
    assert ids(f"revenue > {low}", {"min": 10.25}) == ["m1"]
    assert ids(f"timestamp >= {at}", {"at": RECEIVED}) == ["m2"]
    assert ids(f"timestamp < {at}", {"at": RECEIVED}) == ["m1"]
    assert ids(f"source = {source} AND lsn >= {lsn}", {"source": "web-site", "lsn": 0}) == [
        "m1",
        "m2",
    ]


def test_insert_appends_rows_by_column_name(backend: Backend) -> None:
    # Columns in another order than the table's, and some left out (null).
    data = pa.table(
        {
            "position": pa.array([1], pa.int64()),
            "detail": ["bad"],
            "error": ["invalid_json"],
            "source": ["import:file.csv"],
            "received_at": pa.array([T0], pa.timestamp("ms", tz="UTC")),
        }
    )

    backend.insert(QUARANTINE.name, data)

    assert backend.rows("SELECT * FROM quarantine") == [
        {
            "received_at": T0,
            "source": "import:file.csv",
            "error": "invalid_json",
            "detail": "bad",
            "field": None,
            "position": 1,
            "payload": None,
        }
    ]
