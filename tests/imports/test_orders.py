"""Orders: one Order Completed event per order from line rows or nested JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opencdp.errors import TerminalError
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from tests.imports.conftest import Store, iso_ms, ms, write

HEADER = "order_id,loyalty_card,phone,store_id,channel,ordered_at,product_id,quantity,price,discount,total,currency"


def pos_csv(directory: Path) -> Path:
    return write(
        directory / "pos_orders.csv",
        f"""
        {HEADER}
        R1,2000000000017,,store-01,pos,2024-05-01T10:00:00Z,P1,2,1990.50,0,4281,RUB
        R1,2000000000017,,store-01,pos,2024-05-01T10:00:00Z,P2,1,300,0,4281,RUB
        R2,,8 (912) 345-67-89,store-02,POS,2024-05-02T11:00:00Z,P3,1,500,50,450,RUB
        R3,,,store-03,,2024-05-03T12:00:00Z,P1,1,1000,,,
        R4,,,store-03,pos,2024-05-04T12:00:00Z,P1,0,1000,0,1000,RUB
        R4,,,store-03,pos,2024-05-04T12:00:00Z,P2,1,abc,0,1000,RUB
        R4,,,store-03,pos,2024-05-04T12:00:00Z,P3,1,700,0,1000,RUB
        R5,,,store-03,pos,not a date,P1,1,1000,0,1000,RUB
        """,
    )


def test_lines_become_one_order_event_per_order(store: Store) -> None:
    report = store.run(pos_csv(store.dir), "orders")

    assert (report.rows_read, report.events_written, report.order_lines, report.rejected) == (8, 4, 5, 3)
    orders = {e["order_id"]: e for e in store.events()}
    assert set(orders) == {"R1", "R2", "R3", "R4"}  # R5's only line is unusable
    r1 = orders["R1"]
    assert (r1["type"], r1["event"], r1["channel"], r1["source"]) == ("track", "Order Completed", "pos", "import:orders")
    assert ms(r1["timestamp"]) == iso_ms("2024-05-01T10:00:00Z")
    assert (r1["user_id"], r1["anonymous_id"]) == (None, "loyalty:2000000000017")
    assert (r1["total"], r1["revenue"], r1["currency"], r1["store_id"]) == (4281.0, 4281.0, "RUB", "store-01")
    assert r1["properties"] == {
        "order_id": "R1",
        "total": 4281.0,
        "revenue": 4281.0,
        "discount": 0.0,
        "currency": "RUB",
        "store_id": "store-01",
        "products": [
            {"product_id": "P1", "price": 1990.5, "quantity": 2, "discount": 0.0},
            {"product_id": "P2", "price": 300.0, "quantity": 1, "discount": 0.0},
        ],
    }
    assert r1["traits"] == {"loyalty_card": "2000000000017"}
    assert r1["context"] == {
        "externalIds": [{"id": "2000000000017", "type": "loyalty_card", "collection": "users", "encoding": "none"}]
    }
    r2 = orders["R2"]
    assert (r2["anonymous_id"], r2["channel"]) == ("phone:+79123456789", "pos")
    assert r2["traits"] == {"phone": "+79123456789"}
    assert r2["properties"]["discount"] == 50.0 and r2["total"] == 450.0
    r3 = orders["R3"]  # no identifier, no total, currency and channel defaulted
    assert (r3["anonymous_id"], r3["channel"], r3["currency"], r3["total"]) == ("pos-anon:R3", "pos", "RUB", 1000.0)
    assert r3["traits"] is None and r3["context"] is None
    r4 = orders["R4"]  # two bad lines rejected, the order kept with its good line
    assert [p["product_id"] for p in r4["properties"]["products"]] == ["P3"]
    assert r4["total"] == 1000.0  # as written in the file

    lines = [(x["order_id"], x["line_no"], x["product_id"], x["price"], x["quantity"]) for x in store.lines()]
    assert lines == [
        ("R1", 0, "P1", 1990.5, 2.0),
        ("R1", 1, "P2", 300.0, 1.0),
        ("R2", 0, "P3", 500.0, 1.0),
        ("R3", 0, "P1", 1000.0, 1.0),
        ("R4", 0, "P3", 700.0, 1.0),
    ]
    line = store.lines()[0]
    assert (line["message_id"], line["anonymous_id"], line["store_id"], line["currency"], line["event"]) == (
        r1["message_id"], "loyalty:2000000000017", "store-01", "RUB", "Order Completed"
    )

    rejects = [(q["position"], q["field"], q["error"]) for q in store.quarantine()]
    assert rejects == [(6, "quantity", "invalid_number"), (7, "price", "invalid_number"), (9, "ordered_at", "invalid_timestamp")]
    details = [q["detail"] for q in store.quarantine()]
    assert details[0] == "column `quantity`: '0' must be more than 0 (returns are not imported as orders)"
    assert details[1].startswith("column `price`: 'abc' is not a number")


def test_reimport_is_idempotent(store: Store) -> None:
    path = pos_csv(store.dir)
    store.run(path, "orders")
    again = store.run(path, "orders")
    assert (again.events_written, again.duplicates, again.order_lines) == (0, 4, 0)
    assert store.count("events") == 4 and store.count("order_lines") == 5


def test_identity_prefers_customer_id_then_card_phone_email(store: Store) -> None:
    path = write(
        store.dir / "web.csv",
        """
        order_id,customer_id,loyalty_card,phone,email,channel,ordered_at,product_id,quantity,price
        W1,C9,2000000000017,,a@b.ru,web,2024-01-01T00:00:00Z,P1,1,10
        W2,,,,Mail@Example.COM,app,2024-01-01T00:00:00Z,P1,1,10
        """,
    )
    store.run(path, "orders")
    by_order = {e["order_id"]: e for e in store.events()}
    w1, w2 = by_order["W1"], by_order["W2"]
    assert (w1["user_id"], w1["anonymous_id"], w1["channel"]) == ("C9", None, "web")
    assert w1["traits"] == {"loyalty_card": "2000000000017", "email": "a@b.ru"}
    assert [x["type"] for x in w1["context"]["externalIds"]] == ["loyalty_card", "email"]
    assert (w2["user_id"], w2["anonymous_id"], w2["channel"]) == (None, "email:mail@example.com", "app")


def test_orders_spanning_batches_stay_one_event(store: Store, small_batches: int) -> None:
    rows = [f"R{n},,,s1,pos,2024-05-01T10:00:00Z,P{k},1,{k}00,0,,RUB" for n, k in ((1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (3, 1))]
    path = write(store.dir / "orders.csv", "\n".join([HEADER, *rows]) + "\n")
    report = store.run(path, "orders")
    assert (report.events_written, report.order_lines, report.rejected) == (3, 8, 0)
    products = {e["order_id"]: [p["product_id"] for p in e["properties"]["products"]] for e in store.events()}
    assert products == {"R1": ["P1", "P2"], "R2": ["P1", "P2", "P3", "P4", "P5"], "R3": ["P1"]}
    assert {e["order_id"]: e["total"] for e in store.events()} == {"R1": 300.0, "R2": 1500.0, "R3": 100.0}


def test_lines_of_an_order_written_earlier_are_rejected_with_the_fix(store: Store, small_batches: int) -> None:
    rows = [f"R{n},,,s1,pos,2024-05-01T10:00:00Z,P{k},1,100,0,,RUB" for n, k in ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (1, 2))]
    path = write(store.dir / "orders.csv", "\n".join([HEADER, *rows]) + "\n")
    report = store.run(path, "orders")
    assert (report.events_written, report.rejected) == (3, 1)
    [reject] = store.quarantine()
    assert (reject["position"], reject["error"], reject["field"]) == (7, "order_split", "order_id")
    assert "keep the lines of one order together" in reject["detail"]


def test_nested_json_orders(store: Store) -> None:
    orders = [
        {"order_id": "J1", "customer_id": "C1", "ordered_at": "2024-05-01T10:00:00+03:00", "channel": "web",
         "discount": 100, "currency": "rub",
         "products": [{"id": "P1", "price": 1000, "quantity": 1, "name": "Кресло", "category": "Мебель>Кресла"},
                      {"product_id": "P2", "price": 250.5, "quantity": 2}]},
        {"order_id": "J2", "phone": "+7 912 345-67-89", "ordered_at": "2024-05-02T10:00:00Z",
         "lines": [{"product_id": "P3", "price": 10, "quantity": -1}, {"product_id": "P4", "price": 5, "quantity": 1}]},
    ]
    path = store.dir / "orders.jsonl"
    path.write_text("\n".join(json.dumps(o, ensure_ascii=False) for o in orders) + "\n\n", encoding="utf-8")
    report = store.run(path, "orders")
    assert (report.rows_read, report.events_written, report.rejected) == (2, 2, 1)
    by_order = {e["order_id"]: e for e in store.events()}
    j1 = by_order["J1"]
    assert ms(j1["timestamp"]) == iso_ms("2024-05-01T07:00:00Z")
    assert j1["properties"]["products"][0] == {
        "product_id": "P1", "name": "Кресло", "category": "Мебель > Кресла", "price": 1000.0, "quantity": 1
    }
    assert (j1["properties"]["discount"], j1["currency"], j1["total"]) == (100.0, "RUB", 1501.0 - 100.0)
    assert [q["position"] for q in store.quarantine()] == [2]  # the JSON line number


def test_missing_required_column_names_it_and_lists_the_file_columns(store: Store) -> None:
    path = write(store.dir / "o.csv", "order_id,product_id,qty,price\nR1,P1,1,10\n")
    with pytest.raises(TerminalError) as error:
        store.run(path, "orders")
    assert "`ordered_at`" in error.value.detail and "`quantity`" in error.value.detail
    assert "The file has: `order_id`, `product_id`, `qty`, `price`" in error.value.detail


def test_matches_what_normalize_makes_of_the_same_message(store: Store) -> None:
    store.run(pos_csv(store.dir), "orders")
    stored_lines = store.lines()
    for stored in store.events():
        message = {
            "type": "track",
            "event": "Order Completed",
            "messageId": stored["message_id"],
            "anonymousId": stored["anonymous_id"],
            "timestamp": stored["timestamp"],
            "channel": stored["channel"],
            "properties": stored["properties"],
            "traits": stored["traits"],
            "context": stored["context"],
        }
        row = normalize(message, Envelope(received_at_ms=ms(stored["received_at"]) or 0, source="import:orders"))
        for column in ("order_id", "revenue", "total", "currency", "store_id", "product_id", "price", "quantity", "category"):
            assert stored[column] == row[column], column
        raw = store.backend.rows(f"SELECT properties, traits, context FROM events WHERE message_id = '{stored['message_id']}'")[0]
        assert (raw["properties"], raw["traits"], raw["context"]) == (row["properties"], row["traits"], row["context"])
        row["lsn"] = 0
        _, expected_lines = events_and_lines([row])
        mine = [x for x in stored_lines if x["message_id"] == stored["message_id"]]
        theirs = expected_lines.to_pylist()
        for column in ("line_no", "product_id", "price", "quantity", "discount", "order_id", "store_id", "currency", "channel"):
            assert [x[column] for x in mine] == [x[column] for x in theirs], column
