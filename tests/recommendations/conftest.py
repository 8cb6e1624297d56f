"""A small shop whose patterns each algorithm should find, on every engine.

* frying pan K1 and its lid K3 are bought in the same orders (bought together);
* people who view K1 also view the saucepan K2 (co-views; same category and brand: similar);
* shampoo B1 is followed by conditioner B2 a week later (complementary, another category);
* X1 is the most viewed product but out of stock; X2 has no image;
* kitchen people (k*) and living-room people (l*) browse their own rooms (personal).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest

from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, IDENTITIES, ORDER_LINES, PRODUCTS, PROFILE_MAP

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)

PRODUCTS_ROWS = [
    ("K1", "Frying pan", "Kitchen > Cookware", "Kitchen", "Tefal", 1000.0, 5, None),
    ("K2", "Saucepan", "Kitchen > Cookware", "Kitchen", "Tefal", 1200.0, 5, None),
    ("K3", "Pan lid", "Kitchen > Accessories", "Kitchen", "Tefal", 300.0, 5, None),
    ("K4", "Kitchen knife", "Kitchen > Knives", "Kitchen", "Zwilling", 800.0, 5, None),
    ("K5", "Cutting board", "Kitchen > Accessories", "Kitchen", "Zwilling", 400.0, 5, None),
    ("L1", "Sofa", "Living room > Sofas", "Living room", "Hoff", 50000.0, 5, None),
    ("L2", "Armchair", "Living room > Chairs", "Living room", "Hoff", 20000.0, 5, None),
    ("L3", "Coffee table", "Living room > Tables", "Living room", "Hoff", 15000.0, 5, None),
    ("B1", "Shampoo", "Bathroom > Hair > Shampoo", "Bathroom", "Natura", 500.0, 50, 30),
    ("B2", "Conditioner", "Bathroom > Hair > Conditioner", "Bathroom", "Natura", 550.0, 50, 30),
    ("B3", "Towel", "Bathroom > Textiles", "Bathroom", "Home", 900.0, 50, None),
    ("X1", "Famous pan", "Kitchen > Cookware", "Kitchen", "Tefal", 1100.0, 0, None),
    ("X2", "Pan without photo", "Kitchen > Cookware", "Kitchen", "Tefal", 1050.0, 5, None),
]


def table_of(schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def catalogue_rows() -> list[dict[str, Any]]:
    rows = []
    for pid, name, category, room, brand, price, stock, days in PRODUCTS_ROWS:
        rows.append({
            "product_id": pid, "sku": pid, "name": name, "category": category, "room": room, "brand": brand, "price": price,
            "currency": "RUB", "stock": stock, "url": f"https://shop.example/p/{pid}",
            "image_url": None if pid == "X2" else f"https://shop.example/i/{pid}.jpg", "consumption_days": days,
            "attributes": json.dumps({"colour": "black"} if pid in ("K1", "K2", "X1") else {}),
            "updated_at": NOW - dt.timedelta(days=60),
        })
    return rows


class ShopWriter:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.n = 0

    def event(self, profile: str, name: str, days_ago: float, product: str | None = None, **props: Any) -> None:
        self.n += 1
        at = NOW - dt.timedelta(days=days_ago)
        self.events.append({
            "message_id": f"m{self.n}", "type": "track", "event": name, "timestamp": at, "received_at": at,
            "source": "tests", "channel": "web", "lsn": 1, "profile_id": profile, "anonymous_id": f"anon-{profile}",
            "product_id": product, "properties": json.dumps({"product_id": product, **props} if product else props),
        })

    def order(self, profile: str, days_ago: float, *products: str, channel: str = "web") -> None:
        self.n += 1
        at = NOW - dt.timedelta(days=days_ago)
        message = f"o{self.n}"
        self.events.append({
            "message_id": message, "type": "track", "event": "Order Completed", "timestamp": at, "received_at": at,
            "source": "tests", "channel": channel, "lsn": 1, "profile_id": profile, "order_id": message,
            "properties": json.dumps({"order_id": message, "products": [{"product_id": p} for p in products]}),
        })
        prices = {r[0]: r[5] for r in PRODUCTS_ROWS}
        for n, product in enumerate(products):
            self.lines.append({
                "message_id": message, "line_no": n, "order_id": message, "timestamp": at, "event": "Order Completed",
                "channel": channel, "product_id": product, "price": prices[product], "quantity": 1.0, "profile_id": profile,
            })


def write_shop(backend: Backend) -> Backend:
    backend.upsert(PRODUCTS, table_of(PRODUCTS.arrow_schema, catalogue_rows()))
    w = ShopWriter()
    for n in range(12):  # kitchen people: view pans, buy pan + lid together
        who = f"k{n}"
        w.event(who, "Product Viewed", 20 + n, "K1")
        w.event(who, "Product Viewed", 20 + n, "K2")
        w.event(who, "Product Viewed", 19 + n, "X1")
        if n % 3 == 0:
            w.event(who, "Product Viewed", 18 + n, "K4")
        if n < 8:
            w.order(who, 15 + n, "K1", "K3")
        else:
            w.order(who, 15 + n, "K4")
    for n in range(8):  # living-room people
        who = f"l{n}"
        w.event(who, "Product Viewed", 30 + n, "L1")
        w.event(who, "Product Viewed", 30 + n, "L2")
        w.event(who, "Product Viewed", 29 + n, "L3")
        w.event(who, "Product Viewed", 29 + n, "X1")
        if n < 3:
            w.order(who, 25 + n, "L1", channel="pos")
    for n in range(8):  # shampoo, then conditioner a week later
        who = f"b{n}"
        w.order(who, 40 + n, "B1")
        if n < 6:
            w.order(who, 33 + n, "B2")
        w.event(who, "Product Viewed", 41 + n, "B3")
    for who in [f"k{n}" for n in range(12)] + [f"l{n}" for n in range(8)]:
        w.n += 1
        at = NOW - dt.timedelta(days=50)
        city = "Kazan" if who.startswith("l") else "Moscow"
        w.events.append({"message_id": f"i{w.n}", "type": "identify", "event": "", "timestamp": at, "received_at": at,
                         "source": "tests", "channel": "web", "lsn": 1, "profile_id": who,
                         "traits": json.dumps({"city": city})})
    backend.load(LoadBatch(table_of(EVENTS.arrow_schema, w.events), table_of(ORDER_LINES.arrow_schema, w.lines)))
    people = sorted({e["profile_id"] for e in w.events})
    stamp = NOW - dt.timedelta(days=60)
    mapping = [{"profile_id": p, "canonical_id": p, "updated_at": stamp} for p in people]
    mapping.append({"profile_id": "k0-old", "canonical_id": "k0", "updated_at": stamp})
    backend.upsert(PROFILE_MAP, table_of(PROFILE_MAP.arrow_schema, mapping))
    identities = [
        {"identifier": f"anonymous_id:anon-{p}", "kind": "anonymous_id", "value": f"anon-{p}", "profile_id": p,
         "first_seen": stamp, "message_id": "m", "updated_at": stamp, "deleted": False}
        for p in people
    ] + [{"identifier": "user_id:kitchen-fan", "kind": "user_id", "value": "kitchen-fan", "profile_id": "k1",
          "first_seen": stamp, "message_id": "m", "updated_at": stamp, "deleted": False}]
    backend.upsert(IDENTITIES, table_of(IDENTITIES.arrow_schema, identities))
    return backend


@pytest.fixture
def shop(backend: Backend) -> Backend:
    return write_shop(backend)


@pytest.fixture(scope="module", params=["duckdb", "chdb"])
def shared_shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chdb_data_dir: Any) -> Any:
    """The shop once per engine for a module's read-mostly tests (building a store costs seconds here)."""
    from tests.conftest import close_test_backend, open_test_backend

    store = open_test_backend(request.param, tmp_path_factory.mktemp("shop"), chdb_data_dir)
    try:
        yield write_shop(store)
    finally:
        close_test_backend(store)
