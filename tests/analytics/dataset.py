"""A small hand-built shop for the analytics tests, and plain-Python facts about it.

Orders are listed once as data (``ORDERS``); the store is loaded from that list and the
tests compute what they expect from the same list in Python (not with SQL), so a report
and its check cannot share a mistake. ``a2`` is an old profile id of ``a`` (merged):
its order must count as ``a``'s. One POS receipt has no profile at all.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa

from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP


def at(y: int, m: int, d: int, h: int = 12) -> dt.datetime:
    return dt.datetime(y, m, d, h, tzinfo=dt.UTC)


NOW = at(2026, 6, 1, 0)
LATER = at(2026, 9, 1, 0)
PEOPLE = ("a", "b", "c", "d", "e", "f")
MERGED = {"a2": "a"}

# (profile or None, time, total, channel, store_id, [(category, price, quantity)])
ORDERS: list[tuple[str | None, dt.datetime, float, str, str | None, list[tuple[str, float, int]]]] = [
    ("a", at(2026, 5, 25), 1000.0, "web", None, [("Kitchen > Kitchen sets", 1000.0, 1)]),
    ("a2", at(2026, 5, 20), 500.0, "pos", "S1", [("Kitchen > Tables", 300.0, 1), ("Kitchen > Chairs", 100.0, 2)]),
    ("a", at(2026, 3, 10), 2000.0, "app", None, [("Living room > Sofas", 2000.0, 1)]),
    ("b", at(2026, 1, 15), 300.0, "web", None, [("Bathroom > Towels", 150.0, 2)]),
    ("c", at(2026, 5, 30), 100.0, "pos", "S2", [("Kitchen > Cookware", 100.0, 1)]),
    ("c", at(2026, 4, 1), 200.0, "web", None, [("Kitchen > Cookware", 200.0, 1)]),
    ("c", at(2026, 2, 1), 300.0, "web", None, [("Kitchen > Cookware", 300.0, 1)]),
    ("c", at(2025, 12, 1), 400.0, "web", None, [("Kitchen > Tableware", 400.0, 1)]),
    ("c", at(2025, 10, 1), 500.0, "web", None, [("Kitchen > Tableware", 500.0, 1)]),
    ("d", at(2025, 7, 1), 5000.0, "web", None, [("Bedroom > Beds", 5000.0, 1)]),
    ("d", at(2025, 8, 1), 3000.0, "web", None, [("Bedroom > Mattresses", 3000.0, 1)]),
    ("d", at(2025, 9, 1), 4000.0, "web", None, [("Bedroom > Wardrobes", 4000.0, 1)]),
    ("e", at(2026, 5, 31), 50.0, "web", None, [("Kids room > Toys", 50.0, 1)]),
    ("f", at(2026, 1, 5), 800.0, "web", None, [("Kitchen > Chairs", 400.0, 2)]),
    ("f", at(2026, 2, 1), 600.0, "web", None, [("Living room > Decor", 600.0, 1)]),
    (None, at(2026, 5, 15), 700.0, "pos", "S1", [("Bathroom > Towels", 350.0, 2)]),
]

# (profile, time, event, category)
OTHER: list[tuple[str, dt.datetime, str, str | None]] = [
    ("a", at(2026, 5, 31, 10), "Product Viewed", "Living room > Sofas"),
    ("a", at(2026, 5, 31, 11), "Product Viewed", "Living room > Sofas"),
    ("a", at(2026, 5, 31, 12), "Product Viewed", "Living room > Sofas"),
    ("a", at(2026, 5, 31, 13), "Product Added", "Living room > Sofas"),
    ("b", at(2026, 5, 31, 10), "Product Viewed", "Bathroom > Towels"),
    ("a", at(2026, 5, 28, 9), "Email Opened", None),
    ("a", at(2026, 5, 28, 10), "Email Link Clicked", None),
    ("b", at(2026, 3, 1, 9), "Email Opened", None),
    ("b", at(2026, 5, 10, 9), "Unsubscribed", None),
    ("c", at(2026, 5, 29, 9), "Email Opened", None),
    ("c", at(2026, 5, 29, 9), "Email Delivered", None),
    ("e", at(2026, 5, 31, 11), "Checkout Started", None),
]
CORE = {"Kitchen": ["Kitchen > Kitchen sets", "Kitchen > Tables", "Kitchen > Chairs"], "Bedroom": ["Bedroom > Beds", "Bedroom > Mattresses"]}


def canonical(profile: str | None) -> str | None:
    return MERGED.get(profile, profile) if profile is not None else None


def load(backend: Backend) -> None:
    events: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for n, (profile, when, total, channel, store, items) in enumerate(ORDERS):
        mid = f"o{n:03d}"
        products = [{"category": c, "price": p, "quantity": q} for c, p, q in items]
        events.append({
            "message_id": mid, "type": "track", "event": "Order Completed", "timestamp": when, "received_at": when,
            "source": "test", "channel": channel, "lsn": 1, "profile_id": profile, "order_id": f"order-{n}",
            "total": total, "revenue": total, "currency": "RUB", "store_id": store,
            "properties": json.dumps({"order_id": f"order-{n}", "total": total, "products": products}),
        })  # fmt: skip
        for i, (category, price, quantity) in enumerate(items):
            lines.append({
                "message_id": mid, "line_no": i, "order_id": f"order-{n}", "timestamp": when, "event": "Order Completed",
                "channel": channel, "store_id": store, "product_id": f"p-{category}", "category": category,
                "price": price, "quantity": float(quantity), "currency": "RUB", "profile_id": profile,
            })  # fmt: skip
    for n, (profile, when, name, category) in enumerate(OTHER):
        events.append({
            "message_id": f"x{n:03d}", "type": "track", "event": name, "timestamp": when, "received_at": when,
            "source": "test", "channel": "web", "lsn": 1, "profile_id": profile, "category": category,
        })  # fmt: skip
    for n, person in enumerate(PEOPLE):
        events.append({
            "message_id": f"i{n:03d}", "type": "identify", "event": "", "timestamp": at(2025, 6, 1 + n), "received_at": at(2025, 6, 1),
            "source": "test", "channel": "crm", "lsn": 1, "profile_id": person, "user_id": person,
        })  # fmt: skip
    backend.load(LoadBatch(pa.Table.from_pylist(events, schema=EVENTS.arrow_schema), pa.Table.from_pylist(lines, schema=ORDER_LINES.arrow_schema)))
    now = at(2025, 1, 1)
    mapping = [{"profile_id": p, "canonical_id": p, "updated_at": now} for p in PEOPLE]
    mapping += [{"profile_id": old, "canonical_id": new, "updated_at": now} for old, new in MERGED.items()]
    backend.upsert(PROFILE_MAP, pa.Table.from_pylist(mapping, schema=PROFILE_MAP.arrow_schema))


def orders_of(person: str, until: dt.datetime = NOW) -> list[tuple[dt.datetime, float]]:
    return [(when, total) for p, when, total, *_ in ORDERS if canonical(p) == person and when < until]
