"""A small simulated shop for the prediction tests: customers who buy and drop out as BG/NBD says.

Each customer buys as a Poisson process (rate ~ Gamma) from a first order somewhere in the
history, drops out after a purchase with a probability ~ Beta, spends around their own mean
(~ Gamma), views products before buying, and shops online or at the till. Some products are
consumables with a catalogue lifetime; one (``P-REFILL``) has none but is bought again and
again, so its lifetime must be learned. ``c0`` has a merged-away profile ``c0-old`` whose
orders count for ``c0``; one order has no profile at all.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pyarrow as pa

from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, PRODUCTS, PROFILE_MAP, Table

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
START = NOW - dt.timedelta(days=365)
CONSUMABLES = {f"P-C{i}": 30 + 15 * i for i in range(4)}
DURABLES = [f"P-D{i}" for i in range(12)]
REFILL = "P-REFILL"
REFILL_DAYS = 20


def _table(table: Table, rows: list[dict[str, Any]]) -> pa.Table:
    schema = table.arrow_schema
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def simulate(customers: int = 600, seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Event rows, order-line rows and the customers' profile ids."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    days = (NOW - START).days
    rate = rng.gamma(0.9, 1 / 25.0, customers)  # purchases per day while alive: ~ one in four weeks on average
    dropout = rng.beta(1.0, 5.0, customers)
    mean_value = rng.gamma(4.0, 1500.0, customers)
    refiller = rng.random(customers) < 0.15
    ids = [f"c{i}" for i in range(customers)]
    n = 0

    def event(profile: str | None, name: str, at: dt.datetime, **extra: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {
            "message_id": f"m{n}", "type": "track", "event": name, "timestamp": at, "received_at": at,
            "source": "test", "channel": extra.pop("channel", "web"), "lsn": 0, "profile_id": profile,
            "properties": "{}", **extra,
        }

    for i, profile in enumerate(ids):
        t = rng.uniform(0, days - 1)
        alive = True
        while alive and t < days:
            at = START + dt.timedelta(days=float(t))
            value = round(float(rng.gamma(6.0, mean_value[i] / 6.0)), 2)
            owner = "c0-old" if i == 0 and t < days / 2 else profile
            channel = "pos" if rng.random() < 0.4 else "web"
            for k in range(int(rng.integers(0, 3))):
                events.append(event(owner, "Product Viewed", at - dt.timedelta(hours=1 + k)))
            order = event(owner, "Order Completed", at, channel=channel, order_id=f"o{n}", currency="RUB")
            if rng.random() < 0.1:
                order["revenue"] = value  # no total: the value falls back to revenue
            else:
                order["total"] = value
            events.append(order)
            products = [str(rng.choice(DURABLES))]
            if rng.random() < 0.3:
                products.append(str(rng.choice(list(CONSUMABLES))))
            if refiller[i]:
                products.append(REFILL)
            for line_no, product in enumerate(products):
                lines.append({
                    "message_id": order["message_id"], "line_no": line_no, "order_id": order["order_id"],
                    "timestamp": at, "event": "Order Completed", "channel": channel, "product_id": product,
                    "category": "Kitchen/Cups" if product.startswith("P-C") else "Living room/Sofas",
                    "price": value / len(products), "quantity": 1.0, "currency": "RUB", "profile_id": owner,
                })  # fmt: skip
            gap = REFILL_DAYS + rng.normal(0, 1.5) if refiller[i] else rng.exponential(1 / rate[i])
            t += max(gap, 0.5)
            alive = rng.random() >= dropout[i] or refiller[i]
    for _ in range(customers * 2):  # browsing without buying
        who = ids[int(rng.integers(customers))]
        events.append(event(who, "Product Viewed", START + dt.timedelta(days=float(rng.uniform(0, days)))))
    events.append(event(None, "Order Completed", NOW - dt.timedelta(days=3), order_id="anon", total=999.0))
    return events, lines, ids


def load(backend: Backend, customers: int = 600, seed: int = 7) -> list[str]:
    """Write the simulated shop into an empty store; the canonical profile ids of its customers."""
    events, lines, ids = simulate(customers, seed)
    backend.load(LoadBatch(_table(EVENTS, events), _table(ORDER_LINES, lines)))
    products = [
        {"product_id": p, "name": p, "consumption_days": CONSUMABLES.get(p), "updated_at": START, "price": 100.0,
         "attributes": json.dumps({})}
        for p in [*CONSUMABLES, *DURABLES, REFILL]
    ]
    backend.upsert(PRODUCTS, _table(PRODUCTS, products))
    mapping = [{"profile_id": p, "canonical_id": p, "updated_at": START} for p in ids]
    mapping.append({"profile_id": "c0-old", "canonical_id": "c0", "updated_at": START})
    backend.upsert(PROFILE_MAP, _table(PROFILE_MAP, mapping))
    return ids
