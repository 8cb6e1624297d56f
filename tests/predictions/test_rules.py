"""Next order date, replenishment and classifier guards on hand-made histories (pure numpy)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from opencdp.predictions.btyd import NotEnoughHistory
from opencdp.predictions.classifiers import check_labels, top_decile_precision
from opencdp.predictions.features import bought_between, customer_features
from opencdp.predictions.history import DAY_MS, Lines, orders_from_table
from opencdp.predictions.nextorder import PRIOR_WEIGHT, NextOrder, iso_dates
from opencdp.predictions.replenishment import MIN_REPEATS, Replenishment, learned_lifetimes

TODAY = 20_000  # days since the epoch: 2024-10-04


def orders(rows: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    return orders_from_table(
        pa.table({"customer": [c for c, _ in rows], "at_ms": [d * DAY_MS for _, d in rows], "value": [10.0] * len(rows)})
    )


def test_next_order_follows_the_customers_rhythm_shrunk_to_the_population() -> None:
    history = orders([("a", TODAY - 30), ("a", TODAY - 20), ("a", TODAY - 10), ("b", TODAY - 5), ("c", TODAY - 100), ("c", TODAY - 90)])
    model = NextOrder(population_gap_days=40.0)
    customer, day = model.predict(history, TODAY * DAY_MS)
    ids = history.ids.to_pylist()
    found = {ids[c]: d for c, d in zip(customer, day, strict=True)}
    assert "b" not in found  # one purchase day: no rhythm yet
    gap_a = (2 * 10 + PRIOR_WEIGHT * 40) / (2 + PRIOR_WEIGHT)  # two intervals of 10 days, shrunk toward 40
    assert found["a"] == round(TODAY - 10 + gap_a)
    gap_c = (1 * 10 + PRIOR_WEIGHT * 40) / (1 + PRIOR_WEIGHT)
    assert found["c"] >= TODAY and (found["c"] - (TODAY - 90)) % gap_c == pytest.approx(0, abs=0.5)  # overdue: next cycle
    assert iso_dates(np.array([TODAY])).to_pylist() == ["2024-10-04"]


def _lines(rows: list[tuple[int, int, int, float]], lifetimes: list[float]) -> Lines:
    customer, product, day, quantity = (np.array(c) for c in zip(*rows, strict=True))
    return Lines(
        customer=customer.astype(np.int64), at_ms=(day * DAY_MS).astype(np.int64), product=product.astype(np.int64),
        quantity=quantity.astype(np.float64), room=np.zeros(len(rows), np.int64),
        products=pa.array([f"p{i}" for i in range(len(lifetimes))]), consumption_days=np.array(lifetimes),
    )


def test_replenishment_is_due_at_last_purchase_plus_lifetime_times_quantity() -> None:
    lines = _lines(
        [
            (0, 0, TODAY - 50, 1), (0, 0, TODAY - 10, 2), (0, 0, TODAY - 10, 1),  # 3 units 10 days ago, 30 days each
            (0, 1, TODAY - 5, 1),  # a durable good: no lifetime
            (1, 0, TODAY - 200, 1),  # lapsed long ago
            (2, 2, TODAY - 20, 1), (2, 0, TODAY - 40, 1),  # p2 due in 5 days, p0 in -10 days: p0 is earlier
        ],
        [30.0, np.nan, 25.0],
    )
    model = Replenishment({"p0": 30.0, "p2": 25.0}, lapse_days=30)
    customer, day, product = model.due(lines, model.lifetime_array(lines), TODAY * DAY_MS)
    assert dict(zip(customer.tolist(), zip(day.tolist(), product.tolist(), strict=True), strict=True)) == {
        0: (TODAY - 10 + 90, 0),
        2: (TODAY - 10, 0),
    }


def test_lifetimes_are_learned_from_enough_repeat_purchases_per_unit() -> None:
    rows = []
    for c in range(MIN_REPEATS):
        rows += [(c, 0, TODAY - 100, 2), (c, 0, TODAY - 60, 1)]  # 2 units lasted 40 days: 20 days a unit
    rows += [(0, 1, TODAY - 30, 1), (0, 1, TODAY - 20, 1)]  # one repeat only: not enough to learn from
    learned = learned_lifetimes(_lines(rows, [np.nan, np.nan]), TODAY * DAY_MS)
    assert learned[0] == 20.0 and np.isnan(learned[1])


def test_features_see_only_the_past_and_labels_only_the_window() -> None:
    history = orders([("a", 100), ("a", 130), ("a", 170), ("b", 120)])
    features = customer_features(history, 150 * DAY_MS)
    ids = history.ids.to_pylist()
    row = {ids[c]: i for i, c in enumerate(features.customer)}
    assert features.column("orders")[row["a"]] == 2 and features.column("recency_days")[row["a"]] == 20
    assert np.isnan(features.column("mean_interval_days")[row["b"]])
    label = bought_between(history, features.customer, 150 * DAY_MS, 180 * DAY_MS)
    assert label[row["a"]] and not label[row["b"]]


def test_classifier_guards_and_top_decile_precision() -> None:
    with pytest.raises(NotEnoughHistory, match="each class"):
        check_labels(np.array([True] * 500), "churn in 90 days", 100)
    with pytest.raises(NotEnoughHistory, match="at least 100"):
        check_labels(np.array([True, False] * 20), "churn in 90 days", 100)
    score = np.linspace(0, 1, 100)
    assert top_decile_precision(score, score > 0.95) == 0.5
