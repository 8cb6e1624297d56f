"""Potential VIPs among newcomers: soon after a first order, will this customer be top-decile?

The label: a customer is a VIP when their spend in the ``horizon_days`` from their first
order is in the top tenth of their cohort (customers whose first order is at least
``horizon_days`` old, so that every one of them had the whole horizon). The features are
what is known ``window_days`` (7) after the first order: orders, spend, items and rooms of
that week, the first order's value and channel, and engagement (views, carts, searches,
e-mail) from 30 days before to ``window_days`` after it.

Backtest: cohorts ordered by first-order date, the earliest three quarters train, the
latest quarter tests (out of time); the baseline is a logistic model of the first order's
value alone. Scored: customers whose first order is at most ``window_days`` old.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from opencdp.predictions.classifiers import (
    CalibratedBoosting,
    Evaluation,
    check_labels,
    fit_baseline,
    fit_calibrated,
)
from opencdp.predictions.history import DAY_MS, ENGAGEMENT_EVENTS, History
from opencdp.predictions.model import FitResult, ScoreSet

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
LOOKBACK_DAYS = 30


def _count(index: IntArray, size: int, weights: FloatArray | None = None) -> FloatArray:
    return np.asarray(np.bincount(index, weights=weights, minlength=size), dtype=np.float64)


def first_orders(history: History) -> tuple[IntArray, IntArray]:
    """Customers with an order and the time of their first (orders are sorted by customer, time)."""
    o = history.orders
    head = np.r_[True, o.customer[1:] != o.customer[:-1]] if len(o.customer) else np.zeros(0, bool)
    return o.customer[head], o.at_ms[head]


def newcomer_features(
    history: History, customer: IntArray, first_ms: IntArray, window_days: int, until_ms: int
) -> tuple[tuple[str, ...], FloatArray]:
    """Features of ``customer`` from their first order to ``window_days`` later (or ``until_ms``, if sooner)."""
    n = history.orders.customers
    first = np.full(n, 2**62, dtype=np.int64)
    first[customer] = first_ms
    end = np.minimum(first + window_days * DAY_MS, until_ms)
    o = history.orders
    week = (o.at_ms >= first[o.customer]) & (o.at_ms <= end[o.customer])
    columns: dict[str, FloatArray] = {
        "orders": _count(o.customer[week], n),
        "spend": _count(o.customer[week], n, o.value[week]),
        "pos_orders": _count(o.customer[week & o.pos], n),
    }
    first_value = np.zeros(n)
    head = np.r_[True, o.customer[1:] != o.customer[:-1]] if len(o.customer) else np.zeros(0, bool)
    first_value[o.customer[head]] = o.value[head]
    columns["first_order_value"] = first_value
    lines = history.lines
    in_week = (lines.at_ms >= first[lines.customer]) & (lines.at_ms <= end[lines.customer])
    columns["items"] = _count(lines.customer[in_week], n, lines.quantity[in_week])
    columns["lines"] = _count(lines.customer[in_week], n)
    span = int(lines.room.max(initial=0)) + 1
    pairs = np.unique(lines.customer[in_week] * span + lines.room[in_week])
    columns["rooms"] = _count(pairs // span, n)
    e = history.engagement
    near = (e.at_ms >= first[e.customer] - LOOKBACK_DAYS * DAY_MS) & (e.at_ms <= end[e.customer])
    for kind, event in enumerate(ENGAGEMENT_EVENTS):
        chosen = near & (e.kind == kind)
        columns[event.lower().replace(" ", "_")] = _count(e.customer[chosen], n)
    names = tuple(columns)
    return names, np.column_stack([columns[c][customer] for c in names])


@dataclass
class PotentialVip:
    window_days: int
    horizon_days: int
    model: CalibratedBoosting

    def score(self, history: History) -> list[ScoreSet]:
        customer, first_ms = first_orders(history)
        new = first_ms > history.now_ms - self.window_days * DAY_MS
        if not new.any():
            return []
        _, matrix = newcomer_features(history, customer[new], first_ms[new], self.window_days, history.now_ms)
        return [
            ScoreSet(
                "vip_probability", customer[new], self.model.predict(matrix),
                f"probability a newcomer is a top-decile customer by spend {self.horizon_days} days after the first order",
            )
        ]


def fit_vip(
    history: History, *, window_days: int = 7, horizon_days: int = 90, min_customers: int = 200, seed: int = 0
) -> FitResult:
    customer, first_ms = first_orders(history)
    cohort = first_ms <= history.now_ms - horizon_days * DAY_MS
    customer, first_ms = customer[cohort], first_ms[cohort]
    o = history.orders
    first = np.full(o.customers, 2**62, dtype=np.int64)
    first[customer] = first_ms
    within = (o.at_ms >= first[o.customer]) & (o.at_ms <= first[o.customer] + horizon_days * DAY_MS)
    spend = np.bincount(o.customer[within], weights=o.value[within], minlength=o.customers)[customer]
    threshold = float(np.quantile(spend, 0.9)) if len(spend) else 0.0
    label = spend > threshold
    check_labels(label, f"potential VIP ({horizon_days}-day spend)", min_customers)
    names, matrix = newcomer_features(history, customer, first_ms, window_days, history.now_ms)
    order = np.argsort(first_ms, kind="stable")
    split = int(len(order) * 0.75)
    train, test = order[:split], order[split:]
    check_labels(label[train], "potential VIP (backtest training cohorts)", min_customers)
    model = fit_calibrated(matrix[train], label[train], seed=seed, feature_names=names)
    first_value = np.log1p(np.maximum(matrix[:, names.index("first_order_value")], 0))[:, None]
    baseline = fit_baseline(first_value[train], label[train])
    evaluation = Evaluation.of(model.predict(matrix[test]), baseline.predict_proba(first_value[test])[:, 1], label[test])
    final = fit_calibrated(matrix, label, seed=seed, feature_names=names)
    metrics: dict[str, Any] = {
        **evaluation.summary(),
        "cohort_customers": len(label),
        "vip_spend_threshold": round(threshold, 2),
        "train_customers": len(train),
        "baseline": "logistic regression on the first order's value",
    }
    params = {"window_days": window_days, "horizon_days": horizon_days, "features": list(names)}
    return FitResult(PotentialVip(window_days, horizon_days, final), params, metrics)
