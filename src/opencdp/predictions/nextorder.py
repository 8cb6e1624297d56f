"""Next order date: when each repeat customer's own rhythm says they will order again.

A customer's typical gap is the mean interval between their purchase days, shrunk toward
the population's median gap by ``PRIOR_WEIGHT`` pseudo-intervals (two purchases say little
about a rhythm). The next date is the last purchase plus that gap; when that date has
passed, the next point of the same rhythm after now. Customers with a single purchase day
get no date: they have no rhythm yet (their P(alive) and propensity still describe them).

Stored as the ISO date text ``YYYY-MM-DD`` (UTC), so it does not drift between refits
and compares in segments as text: ``computed("next_order_date") <= "2026-12-31"``.
The fit reports a backtest: dates predicted at ``T - N`` against the first order the
customer actually placed in ``(T - N, T]``, beside the naive "population median gap".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.predictions.btyd import NotEnoughHistory
from opencdp.predictions.history import DAY_MS, History, Orders, summarise
from opencdp.predictions.model import FitResult, ScoreSet

PRIOR_WEIGHT = 2.0
FloatArray = npt.NDArray[np.float64]


def iso_dates(day_numbers: FloatArray) -> pa.Array:
    """ISO dates (text) of days since the Unix epoch."""
    days = np.asarray(day_numbers, dtype=np.int64).astype("datetime64[D]")
    return pa.array(days, pa.date32()).cast(pa.string())


@dataclass
class NextOrder:
    population_gap_days: float

    def predict(self, orders: Orders, now_ms: int, *, own: bool = True) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Repeat customers at ``now_ms`` and their next order day (days since the epoch).

        ``own=False`` gives everyone the population gap: the baseline the backtest compares with.
        """
        s = summarise(orders, now_ms, unit_days=1.0)
        repeat = s.frequency > 0
        f = s.frequency[repeat]
        mean_gap = s.recency[repeat] / f
        weight = f if own else np.zeros_like(f)
        gap = np.maximum((weight * mean_gap + PRIOR_WEIGHT * self.population_gap_days) / (weight + PRIOR_WEIGHT), 1.0)
        last_day = (s.last_ms[repeat] // DAY_MS).astype(np.float64)
        today = float(now_ms // DAY_MS)
        next_day = last_day + gap
        behind = next_day < today
        cycles = np.ceil((today - last_day[behind]) / gap[behind])
        next_day[behind] = last_day[behind] + cycles * gap[behind]
        return s.customer[repeat], np.round(next_day)

    def score(self, history: History) -> list[ScoreSet]:
        customer, day = self.predict(history.orders, history.now_ms)
        return [
            ScoreSet(
                "next_order_date", customer, iso_dates(day),
                "expected date of the next order (ISO date, UTC) from the customer's own purchase rhythm",
            )
        ]


def _population_gap(orders: Orders, now_ms: int, min_repeaters: int) -> float:
    s = summarise(orders, now_ms, unit_days=1.0)
    repeat = s.frequency > 0
    if repeat.sum() < min_repeaters:
        raise NotEnoughHistory(
            f"{int(repeat.sum())} customers ordered on more than one day; the next order date needs at least "
            f"{min_repeaters} — wait for more repeat orders",
            field="history",
        )
    return float(np.median(s.recency[repeat] / s.frequency[repeat]))


def fit_next_order(history: History, *, backtest_days: int = 90, min_customers: int = 200) -> FitResult:
    """The population's median gap (the prior), with a backtest of the dates at ``T - backtest_days``."""
    min_repeaters = max(20, min_customers // 10)
    cut = history.now_ms - backtest_days * DAY_MS
    metrics: dict[str, Any] = {}
    try:
        past = NextOrder(_population_gap(history.orders, cut, min_repeaters))
        customer, predicted = past.predict(history.orders, cut)
        later = history.orders.between(cut, history.now_ms)
        never = np.iinfo(np.int64).max
        first_after = np.full(history.orders.customers, never, dtype=np.int64)
        np.minimum.at(first_after, later.customer, later.at_ms // DAY_MS)
        actual = first_after[customer]
        came = actual < never
        if came.sum() >= 10:
            _, naive = past.predict(history.orders, cut, own=False)
            metrics = {
                "backtest_days": backtest_days,
                "backtest_customers": int(came.sum()),
                "backtest_mae_days": round(float(np.abs(predicted[came] - actual[came]).mean()), 2),
                "baseline_mae_days": round(float(np.abs(naive[came] - actual[came]).mean()), 2),
            }
    except NotEnoughHistory:
        metrics = {"backtest": "too little history before the backtest cutoff"}
    model = NextOrder(_population_gap(history.orders, history.now_ms, min_repeaters))
    metrics["population_gap_days"] = round(model.population_gap_days, 2)
    return FitResult(model, {"population_gap_days": model.population_gap_days, "prior_weight": PRIOR_WEIGHT}, metrics)
