"""Events: Segment messages from flat Parquet/CSV rows or nested JSON lines, via normalize()."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from opencdp.demo import EVENT_SCHEMA
from tests.imports.conftest import Store, iso_ms, ms, write

SCHEMA = EVENT_SCHEMA  # the flat shape the demo shop writes
T1 = iso_ms("2024-05-01T10:00:00Z")


def demo_parquet(path: Path) -> Path:
    """Rows in the shape the demo generator writes."""
    order = {"order_id": "W1", "total": 1500, "currency": "RUB", "products": [{"product_id": "P1", "price": 1500, "quantity": 1}]}
    rows = [
        ("track", "m1", T1, "C1", "a1", "Order Completed", None, json.dumps(order), None, json.dumps({"library": {"name": "analytics.js"}})),
        ("page", "m2", T1 + 1000, None, "a1", None, "Каталог", json.dumps({"path": "/catalog"}), None, None),
        ("identify", "m3", T1 + 2000, "C1", None, None, None, None, json.dumps({"firstName": "Иван"}), None),
        ("track", "m4", T1 + 3000, "C1", None, None, None, None, None, None),
        ("track", "m5", T1 + 4000, "C1", None, "Product Viewed", None, "{not json", None, None),
    ]
    table = pa.Table.from_pylist([dict(zip(SCHEMA.names, r, strict=True)) for r in rows], schema=SCHEMA)
    pq.write_table(table, path)
    return path


def test_flat_parquet_rows_go_through_normalize(store: Store) -> None:
    report = store.run(demo_parquet(store.dir / "events-00000.parquet"), "events")
    assert (report.rows_read, report.events_written, report.order_lines, report.rejected) == (5, 3, 1, 2)
    events = {e["message_id"]: e for e in store.events()}
    order = events["m1"]
    assert (order["type"], order["event"], order["user_id"], order["anonymous_id"]) == ("track", "Order Completed", "C1", "a1")
    assert (order["order_id"], order["total"], order["currency"], order["channel"]) == ("W1", 1500.0, "RUB", "web")
    assert ms(order["timestamp"]) == T1 and order["source"] == "import:events"
    page = events["m2"]
    assert (page["type"], page["name"], page["properties"]) == ("page", "Каталог", {"path": "/catalog"})
    assert events["m3"]["traits"] == {"firstName": "Иван"}
    assert [(x["order_id"], x["product_id"], x["price"]) for x in store.lines()] == [("W1", "P1", 1500.0)]

    rejects = [(q["position"], q["field"], q["error"]) for q in store.quarantine()]
    assert rejects == [(4, "event", "invalid_event"), (5, "properties", "invalid_event")]
    details = [q["detail"] for q in store.quarantine()]
    assert details[0] == "`event` is required for track calls: a non-empty string such as 'Order Completed'"
    assert details[1].startswith("column `properties` is not valid JSON")

    assert store.run(store.dir / "events-00000.parquet", "events").duplicates == 3


def test_nested_json_lines_keep_their_timestamp_and_get_stable_ids(store: Store) -> None:
    messages = [
        {"type": "track", "event": "Product Viewed", "anonymousId": "a1", "properties": {"product_id": "P1"},
         "timestamp": "2024-05-01T10:00:00Z", "originalTimestamp": "2024-05-01T10:00:05Z", "sentAt": "2024-05-01T10:00:06Z",
         "context": {"library": {"name": "analytics-ios"}}},
        {"type": "identify", "userId": "C1", "traits": {"email": "a@b.ru"}, "timestamp": "2024-05-01T11:00:00Z"},
        {"type": "track", "userId": "C1"},
        "not an object",
    ]
    path = store.dir / "segment.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in messages) + "\n{broken\n", encoding="utf-8")
    report = store.run(path, "events")
    assert (report.rows_read, report.events_written, report.rejected) == (5, 2, 3)
    viewed, identify = store.events()
    assert ms(viewed["timestamp"]) == iso_ms("2024-05-01T10:00:00Z")  # not re-timed to the import
    assert ms(viewed["sent_at"]) == iso_ms("2024-05-01T10:00:06Z")
    assert (viewed["channel"], viewed["product_id"]) == ("app", "P1")
    assert viewed["message_id"].startswith("imp:events:") and identify["message_id"].startswith("imp:events:")
    assert [(q["position"], q["error"]) for q in store.quarantine()] == [(3, "invalid_event"), (4, "invalid_event"), (5, "invalid_json")]

    again = store.run(path, "events")
    assert (again.events_written, again.duplicates) == (0, 2)


def test_flat_csv_with_renamed_columns(store: Store) -> None:
    path = write(
        store.dir / "events.csv",
        """
        kind,id,ts,uid,event,properties
        track,e1,2024-05-01T10:00:00Z,C1,Product Viewed,"{""product_id"": ""P7""}"
        """,
    )
    from opencdp.ingest.imports import Mapping

    mapping = Mapping(columns={"type": "kind", "message_id": "id", "timestamp": "ts", "user_id": "uid"})
    report = store.run(path, "events", mapping=mapping)
    assert report.events_written == 1
    [event] = store.events()
    assert (event["message_id"], event["user_id"], event["product_id"], event["channel"]) == ("e1", "C1", "P7", "server")
