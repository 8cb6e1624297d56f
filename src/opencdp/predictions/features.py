"""Per-customer features as of a cutoff, for the classifiers (propensity, churn, VIP).

Everything is computed from the history arrays (``history``) looking only at what happened
at or before the cutoff, so the same function builds the training snapshot of a backtest
(cutoff ``T - N``, label in ``(T - N, T]``) and the scoring snapshot (cutoff ``T``) without
leaking the future into the past. Missing values (no repeat order: no interval) stay NaN;
gradient boosting handles them natively.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from opencdp.predictions.history import (
    DAY_MS,
    ENGAGEMENT_EVENTS,
    Engagement,
    History,
    Lines,
    Orders,
    summarise,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ORDER_WINDOWS = (30, 90, 180)
ENGAGEMENT_WINDOWS = (7, 30, 90)
RFM_FEATURES = ("recency_days", "orders", "spend")
"""The baseline's features: recency, frequency, monetary — what an RFM segmentation knows."""


@dataclass(frozen=True)
class Features:
    """A feature matrix: row ``i`` describes customer ``customer[i]`` (an index into ``Orders.ids``)."""

    customer: IntArray
    names: tuple[str, ...]
    matrix: FloatArray

    def column(self, name: str) -> FloatArray:
        return self.matrix[:, self.names.index(name)]

    def rfm(self) -> FloatArray:
        """The RFM-only baseline's inputs, log-scaled (a logistic model wants them roughly symmetric)."""
        return np.log1p(np.maximum(np.column_stack([self.column(n) for n in RFM_FEATURES]), 0))


def _counts(customer: IntArray, keep: npt.NDArray[np.bool_], size: int, weights: FloatArray | None = None) -> FloatArray:
    w = None if weights is None else weights[keep]
    return np.bincount(customer[keep], weights=w, minlength=size).astype(np.float64)


def customer_features(
    orders: Orders, cutoff_ms: int, lines: Lines | None = None, engagement: Engagement | None = None
) -> Features:
    """Features of every customer with an order at or before ``cutoff_ms``."""
    summary = summarise(orders, cutoff_ms, unit_days=1.0)
    past = orders.before(cutoff_ms)
    n = orders.customers
    who = summary.customer
    columns: dict[str, FloatArray] = {
        "recency_days": (cutoff_ms - summary.last_ms) / DAY_MS,
        "tenure_days": (cutoff_ms - summary.first_ms) / DAY_MS,
        "orders": summary.orders.astype(np.float64),
        "purchase_days": summary.frequency + 1,
        "spend": summary.spend,
        "mean_order_value": summary.spend / np.maximum(summary.orders, 1),
        "mean_repeat_value": np.where(summary.frequency > 0, summary.monetary, np.nan),
        "mean_interval_days": np.where(summary.frequency > 0, summary.recency / np.maximum(summary.frequency, 1), np.nan),
        "pos_share": _counts(past.customer, past.pos, n)[who] / np.maximum(summary.orders, 1),
    }
    columns["overdue_ratio"] = columns["recency_days"] / columns["mean_interval_days"]
    for days in ORDER_WINDOWS:
        recent = past.at_ms > cutoff_ms - days * DAY_MS
        columns[f"orders_{days}d"] = _counts(past.customer, recent, n)[who]
        columns[f"spend_{days}d"] = _counts(past.customer, recent, n, past.value)[who]
    if lines is not None:
        seen = lines.at_ms <= cutoff_ms
        columns["items"] = _counts(lines.customer, seen, n, lines.quantity)[who]
        columns["categories"] = _distinct_categories(lines, seen, n)[who]
    if engagement is not None:
        _engagement_columns(columns, engagement, cutoff_ms, n, who)
    names = tuple(columns)
    return Features(who, names, _matrix([columns[c] for c in names]))


def _matrix(columns: list[FloatArray]) -> FloatArray:
    """The feature matrix in column-major order: filled a column at a time, and the trees read it faster too."""
    matrix = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=np.float64, order="F")
    for i, column in enumerate(columns):
        matrix[:, i] = column
    return matrix


def _distinct_categories(lines: Lines, keep: npt.NDArray[np.bool_], size: int) -> FloatArray:
    """How many top-level categories (rooms) each customer bought from."""
    rooms = int(lines.room.max(initial=0)) + 1
    pairs = lines.customer[keep] * rooms + lines.room[keep]
    if size * rooms <= 1 << 27:  # a customer x room table of flags, no sort (shops have some dozen rooms)
        bought = np.bincount(pairs, minlength=size * rooms).reshape(size, rooms) > 0
        return bought.sum(axis=1).astype(np.float64)
    owner = np.unique(pairs) // rooms
    return np.bincount(owner, minlength=size).astype(np.float64)


def _engagement_columns(
    columns: dict[str, FloatArray], engagement: Engagement, cutoff_ms: int, size: int, who: IntArray
) -> None:
    past = engagement.at_ms <= cutoff_ms
    for days in ENGAGEMENT_WINDOWS:
        recent = past & (engagement.at_ms > cutoff_ms - days * DAY_MS)
        for kind, event in enumerate(ENGAGEMENT_EVENTS):
            name = event.lower().replace(" ", "_")
            columns[f"{name}_{days}d"] = _counts(engagement.customer, recent & (engagement.kind == kind), size)[who]
    last = np.full(size, np.nan)
    if past.any():
        latest = np.full(size, -1, dtype=np.int64)
        np.maximum.at(latest, engagement.customer[past], engagement.at_ms[past])
        last = np.where(latest >= 0, (cutoff_ms - latest) / DAY_MS, np.nan)
    columns["days_since_engagement"] = last[who]


def bought_between(orders: Orders, customer: IntArray, start_ms: int, end_ms: int) -> npt.NDArray[np.bool_]:
    """Whether each of ``customer`` ordered in ``(start_ms, end_ms]``: the propensity label."""
    window = orders.between(start_ms, end_ms)
    any_order = np.zeros(orders.customers, dtype=bool)
    any_order[window.customer] = True
    return np.asarray(any_order[customer], dtype=bool)


def snapshot(history: History, cutoff_ms: int) -> Features:
    """``customer_features`` of a history at a cutoff, with its lines and engagement.

    The snapshot at the history's end (what propensity and churn both score) is computed once.
    """
    if cutoff_ms != history.now_ms:
        return customer_features(history.orders, cutoff_ms, history.lines, history.engagement)
    cached = history.cache.get("features_now")
    if not isinstance(cached, Features):
        cached = history.cache["features_now"] = customer_features(
            history.orders, cutoff_ms, history.lines, history.engagement
        )
    return cached
