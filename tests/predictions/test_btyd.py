"""BG/NBD and Gamma-Gamma reproduce the published CDNOW fits (pure numpy, no store).

Published figures: Fader, Hardie & Lee (2005), "Counting your customers the easy way":
r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, log-likelihood -9582.4, and a customer
with x = 2, t_x = 30.43, T = 38.86 (weeks) expects 1.226 purchases in the next 39 weeks.
Gamma-Gamma on the same sample (Fader & Hardie, "The Gamma-Gamma model of monetary value",
2013; the ``lifetimes`` docs): p = 6.25, q = 3.74, gamma = 15.44; the ``lifetimes`` docs
quote 24.66 as the conditional expected average order value of customer 1, and 35.17 for a
customer with no repeat purchase.

Which summary gives the published numbers: the committed summary (``cdnow_customers_summary.csv``)
and our own summary of the transaction log with purchases counted per *day* (several
transactions of one day are one purchase — what ``summary_data_from_transaction_data`` does)
both do. Counting every transaction line instead (177 same-day repeats in the sample) gives
r = 0.218, alpha = 3.27: not the paper's fit.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from opencdp.predictions.btyd import (
    BetaGeo,
    NotEnoughHistory,
    customer_lifetime_value,
    fit_bgnbd,
    fit_gamma_gamma,
)
from opencdp.predictions.history import DAY_MS, orders_from_table, summarise

DATA = Path(__file__).resolve().parent.parent / "data" / "cdnow"
CALIBRATION_END = dt.date(1997, 9, 30)
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def close(found: dict[str, float], published: dict[str, float], within: float = 0.01) -> None:
    for name, value in published.items():
        assert found[name] == pytest.approx(value, rel=within), (name, found[name], value)


def published_summary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with open(DATA / "cdnow_customers_summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    return tuple(np.array([float(r[k]) for r in rows]) for k in ("frequency", "recency", "T"))  # type: ignore[return-value]


def transaction_log() -> pa.Table:
    """The calibration period of the CDNOW sample as orders (customer id, epoch ms, spend)."""
    customer, at_ms, value = [], [], []
    epoch = dt.date(1970, 1, 1)
    for line in (DATA / "CDNOW_sample.txt").read_text().splitlines():
        _, cid, day, _, spend = line.split()
        date = dt.date(int(day[:4]), int(day[4:6]), int(day[6:]))
        if date <= CALIBRATION_END:
            customer.append(cid)
            at_ms.append((date - epoch).days * DAY_MS)
            value.append(float(spend))
    return pa.table({"customer": customer, "at_ms": at_ms, "value": value})


def log_summary():  # type: ignore[no-untyped-def]
    orders = orders_from_table(transaction_log())
    end_ms = ((CALIBRATION_END - dt.date(1970, 1, 1)).days) * DAY_MS
    return orders, summarise(orders, end_ms, unit_days=7.0)


def test_bgnbd_reproduces_the_published_fit_from_the_published_summary() -> None:
    x, t_x, T = published_summary()
    model = fit_bgnbd(x, t_x, T)
    assert model.fit is not None
    close(model.fit.params, PUBLISHED_BGNBD)
    assert model.fit.log_likelihood == pytest.approx(-9582.4, abs=0.5)
    assert model.fit.customers == 2357


def test_bgnbd_reproduces_the_published_fit_from_the_transaction_log_counted_per_day() -> None:
    orders, summary = log_summary()
    assert len(summary.customer) == 2357
    x, _, T = published_summary()
    ids = [int(i) for i in orders.ids.to_pylist()]
    order = np.argsort([ids[c] for c in summary.customer])
    assert np.array_equal(summary.frequency[order], x)
    assert np.abs(summary.T[order] - T).max() < 0.005  # the published summary rounds weeks to two decimals
    model = fit_bgnbd(summary.frequency, summary.recency, summary.T)
    assert model.fit is not None
    close(model.fit.params, PUBLISHED_BGNBD)


def test_counting_every_transaction_line_does_not_give_the_published_fit() -> None:
    log = transaction_log()
    per_customer: dict[str, list[int]] = defaultdict(list)
    for cid, at in zip(log.column("customer").to_pylist(), log.column("at_ms").to_pylist(), strict=True):
        per_customer[cid].append(at // DAY_MS)
    end = (CALIBRATION_END - dt.date(1970, 1, 1)).days
    x = np.array([len(d) - 1 for d in per_customer.values()], dtype=float)
    t_x = np.array([(max(d) - min(d)) / 7 for d in per_customer.values()])
    T = np.array([(end - min(d)) / 7 for d in per_customer.values()])
    model = fit_bgnbd(x, t_x, T)
    assert model.r == pytest.approx(0.218, abs=0.005) and abs(model.r / PUBLISHED_BGNBD["r"] - 1) > 0.05


def test_conditional_expectation_of_the_papers_example_customer() -> None:
    model = BetaGeo(**PUBLISHED_BGNBD)
    expected = model.conditional_expected_purchases(39, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert expected[0] == pytest.approx(1.226, abs=0.002)


def test_gamma_gamma_reproduces_the_published_fit_from_the_transaction_log() -> None:
    _, summary = log_summary()
    model = fit_gamma_gamma(summary.frequency, summary.monetary)
    assert model.fit is not None and model.fit.customers == 946  # the sample's customers with a repeat purchase
    close(model.fit.params, PUBLISHED_GG)
    value = model.conditional_expected_value(np.array([2.0, 0.0]), np.array([summary.monetary[0], 0.0]))
    assert value[0] == pytest.approx(24.66, rel=0.002)  # customer 1 (lifetimes docs: 24.658619)
    assert value[1] == pytest.approx(35.17, rel=0.002) == model.population_mean


def test_probability_alive_properties() -> None:
    model = BetaGeo(**PUBLISHED_BGNBD)
    x, t_x, T = published_summary()
    alive = model.probability_alive(x, t_x, T)
    assert np.all((alive > 0) & (alive <= 1))
    assert np.all(alive[x == 0] == 1)  # no repeat purchase: no chance to have dropped out yet under BG/NBD
    # for the same history, the longer the silence since the last purchase, the less likely alive
    later = model.probability_alive(np.full(5, 3.0), np.full(5, 10.0), np.array([12.0, 20, 30, 40, 50]))
    assert np.all(np.diff(later) < 0)
    # a more recent last purchase: more likely alive
    recent = model.probability_alive(np.full(4, 3.0), np.array([5.0, 10, 20, 30]), np.full(4, 30.0))
    assert np.all(np.diff(recent) > 0) and recent[-1] == 1 / (1 + model.a / (model.b + 2))


def test_expectations_grow_with_time_and_frequency() -> None:
    model = BetaGeo(**PUBLISHED_BGNBD)
    horizons = np.array([1.0, 4, 13, 26, 52, 104])
    assert np.all(np.diff(model.expected_purchases(horizons)) > 0)
    one = np.ones(1)
    cond = [model.conditional_expected_purchases(t, one * 4, one * 30, one * 38)[0] for t in horizons]
    assert np.all(np.diff(cond) > 0)
    more = [model.conditional_expected_purchases(13, one * f, one * 30, one * 38)[0] for f in (1, 2, 4, 8)]
    assert np.all(np.diff(more) > 0)
    assert model.conditional_expected_purchases(0.0, one * 4, one * 30, one * 38)[0] == pytest.approx(0.0, abs=1e-12)


def test_clv_is_the_discounted_sum_of_monthly_expected_value() -> None:
    model = BetaGeo(**PUBLISHED_BGNBD)
    x, t_x, T = np.array([0.0, 2, 6]), np.array([0.0, 30.43, 35]), np.array([38.86, 38.86, 38.86])
    value = np.array([30.0, 25, 40])
    month = customer_lifetime_value(model, x, t_x, T, value, months=1, monthly_discount=0.0)
    assert np.allclose(month, value * model.conditional_expected_purchases(30 / 7, x, t_x, T))
    undiscounted = customer_lifetime_value(model, x, t_x, T, value, months=12, monthly_discount=0.0)
    assert np.allclose(undiscounted, value * model.conditional_expected_purchases(12 * 30 / 7, x, t_x, T))
    discounted = customer_lifetime_value(model, x, t_x, T, value, months=12, monthly_discount=0.01)
    assert np.all(discounted < undiscounted) and np.all(discounted > undiscounted / 1.01**12)
    longer = customer_lifetime_value(model, x, t_x, T, value, months=24, monthly_discount=0.01)
    assert np.all(longer > discounted)


def test_too_little_history_is_refused_not_fitted() -> None:
    with pytest.raises(NotEnoughHistory) as few:
        fit_bgnbd([1, 0, 2], [3.0, 0, 5], [10.0, 10, 10])
    assert few.value.field == "history" and "at least 100" in few.value.detail
    with pytest.raises(NotEnoughHistory, match="no customer has a repeat order"):
        fit_bgnbd(np.zeros(500), np.zeros(500), np.full(500, 20.0))
    with pytest.raises(NotEnoughHistory, match="at least 30"):
        fit_gamma_gamma([1, 2, 0], [10.0, 12.0, 0])
    with pytest.raises(NotEnoughHistory, match="same value"):
        fit_gamma_gamma(np.ones(50), np.full(50, 10.0))
