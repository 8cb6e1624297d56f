"""Reading the purchase history from the store, on every engine: orders resolved to canonical
profiles, value = total (revenue when there is none), POS orders included, anonymous orders
left out; order lines with the catalogue's consumption lifetime; summaries counted per day."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from opencdp.predictions.history import (
    DAY_MS,
    orders_from_table,
    read_history,
    read_orders,
    summarise,
    to_ms,
)
from opencdp.storage.base import Backend
from tests.predictions import shop

D = dt.timedelta(days=1)


def _orders_by_customer(backend: Backend) -> dict[str, list[tuple[int, float, bool]]]:
    orders = read_orders(backend)
    ids = orders.ids.to_pylist()
    found: dict[str, list[tuple[int, float, bool]]] = {}
    for c, at, value, pos in zip(orders.customer, orders.at_ms, orders.value, orders.pos, strict=True):
        found.setdefault(ids[c], []).append((int(at), float(value), bool(pos)))
    return found


def test_orders_are_read_per_canonical_profile_with_total_or_revenue(backend: Backend) -> None:
    events, _, _ = shop.simulate(40)
    shop.load(backend, 40)
    found = _orders_by_customer(backend)
    expected: dict[str, list[tuple[int, float, bool]]] = {}
    for e in events:
        if e["event"] != "Order Completed" or e["profile_id"] is None:
            continue
        owner = "c0" if e["profile_id"] == "c0-old" else e["profile_id"]
        value = e.get("total") if e.get("total") is not None else e.get("revenue")
        expected.setdefault(owner, []).append((to_ms(e["timestamp"]), float(value), e["channel"] == "pos"))
    assert "c0-old" not in found and None not in found  # merged away; the anonymous order has no buyer
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in expected.items()}
    assert any(pos for rows in found.values() for _, _, pos in rows)
    assert any(e.get("total") is None for e in events if e["event"] == "Order Completed" and e["profile_id"])


def test_history_stops_at_now_and_lines_carry_consumption_lifetimes(backend: Backend) -> None:
    shop.load(backend, 60)
    now = shop.NOW - 100 * D
    history = read_history(backend, now)
    assert history.orders.at_ms.max() <= to_ms(now) and history.lines.at_ms.max() <= to_ms(now)
    assert history.engagement.at_ms.max() <= to_ms(now)
    lifetimes = dict(zip(history.lines.products.to_pylist(), history.lines.consumption_days, strict=True))
    for product, days in shop.CONSUMABLES.items():
        if product in lifetimes:
            assert lifetimes[product] == days
    assert np.isnan(lifetimes["P-D1"]) and (shop.REFILL not in lifetimes or np.isnan(lifetimes[shop.REFILL]))
    assert set(np.unique(history.lines.customer)) <= set(np.unique(history.orders.customer))


@pytest.mark.parametrize("unit", [1.0, 7.0])
def test_summary_counts_purchase_days_as_lifetimes_does(unit: float) -> None:
    day = lambda n, h=0: n * DAY_MS + h * 3_600_000  # noqa: E731
    table = pa.table({
        "customer": ["a", "a", "a", "a", "b", "c", "c"],
        "at_ms": [day(0, 9), day(0, 18), day(7), day(14), day(3), day(10), day(10, 5)],
        "value": [10.0, 5.0, 20.0, 40.0, 99.0, 1.0, 2.0],
    })  # fmt: skip
    orders = orders_from_table(table)
    s = summarise(orders, day(28), unit_days=unit)
    ids = orders.ids.to_pylist()
    by = {ids[c]: i for i, c in enumerate(s.customer)}
    a, b, c = by["a"], by["b"], by["c"]
    assert (s.frequency[a], s.frequency[b], s.frequency[c]) == (2.0, 0.0, 0.0)  # the two orders of day 0 are one
    assert s.recency[a] == 14 / unit and s.T[a] == 28 / unit and s.T[b] == 25 / unit
    assert s.monetary[a] == 30.0 and s.monetary[b] == 0.0 and s.monetary[c] == 0.0  # mean of the repeat days
    assert s.orders[a] == 4 and s.orders[c] == 2 and s.spend[c] == 3.0
    earlier = summarise(orders, day(8), unit_days=unit)
    assert len(earlier.customer) == 2  # c had not ordered yet
