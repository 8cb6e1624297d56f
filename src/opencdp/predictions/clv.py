"""Customer value from BG/NBD + Gamma-Gamma: expected purchases, P(alive), order value, CLV.

Fitted on the daily purchase summary of every customer with an order (``history.summarise``,
weeks as the time unit, as Fader-Hardie-Lee). Before the fit used for scoring, the same
model is fitted on the history up to ``T - N`` and its predicted purchases in ``(T - N, T]``
compared with what happened, beside the naive forecast "the same rate as so far" — the
check a model of this kind should pass before anyone trusts its CLV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from opencdp.predictions.btyd import (
    BetaGeo,
    GammaGamma,
    customer_lifetime_value,
    distinct_rows,
    fit_bgnbd,
    fit_gamma_gamma,
)
from opencdp.predictions.history import DAY_MS, History, Summary, summarise
from opencdp.predictions.model import FitResult, ScoreSet

UNIT_DAYS = 7.0


@dataclass
class CustomerValue:
    """Fitted BG/NBD and Gamma-Gamma with the horizons their scores use."""

    purchases: BetaGeo
    spend: GammaGamma
    horizon_days: int
    clv_months: int
    monthly_discount: float

    def score(self, history: History) -> list[ScoreSet]:
        s = summarise(history.orders, history.now_ms, UNIT_DAYS)
        if len(s.customer) == 0:
            return []
        t = self.horizon_days / UNIT_DAYS
        (x, t_x, T), row = distinct_rows(s.frequency, s.recency, s.T)
        expected = self.purchases.conditional_expected_purchases(t, x, t_x, T)[row]
        alive = self.purchases.probability_alive(x, t_x, T)[row]
        value = self.spend.conditional_expected_value(s.frequency, s.monetary)
        clv = customer_lifetime_value(
            self.purchases, s.frequency, s.recency, s.T, value,
            months=self.clv_months, monthly_discount=self.monthly_discount, units_per_month=30.0 / UNIT_DAYS,
        )
        n = self.horizon_days
        return [
            ScoreSet(f"expected_purchases_{n}d", s.customer, expected, f"expected purchase days in the next {n} days (BG/NBD)"),
            ScoreSet("probability_alive", s.customer, alive, "probability the customer is still active (BG/NBD)"),
            ScoreSet("expected_order_value", s.customer, value, "expected average order value (Gamma-Gamma)"),
            ScoreSet(
                "clv", s.customer, clv,
                f"expected value of the next {self.clv_months} months, discounted {self.monthly_discount:.1%} a month "
                "(BG/NBD x Gamma-Gamma)",
            ),
        ]


def _holdout(history: History, horizon_days: int, min_customers: int) -> dict[str, Any]:
    """Fit up to ``T - N``, predict purchase days in ``(T - N, T]``, compare with the truth and a naive rate."""
    cut = history.now_ms - horizon_days * DAY_MS
    calibration = summarise(history.orders, cut, UNIT_DAYS)
    model = fit_bgnbd(calibration.frequency, calibration.recency, calibration.T, min_customers=min_customers)
    t = horizon_days / UNIT_DAYS
    predicted = model.conditional_expected_purchases(t, calibration.frequency, calibration.recency, calibration.T)
    actual = _purchase_days_between(history, calibration, cut)
    # the naive forecast: purchases continue at the rate observed so far (first purchase excluded, as BG/NBD)
    naive = calibration.frequency / np.maximum(calibration.T, 1.0 / UNIT_DAYS) * t
    return {
        "holdout_days": horizon_days,
        "holdout_customers": len(actual),
        "holdout_actual_purchases": float(actual.sum()),
        "holdout_predicted_purchases": round(float(predicted.sum()), 1),
        "holdout_mae": round(float(np.abs(predicted - actual).mean()), 4),
        "holdout_correlation": round(float(np.corrcoef(predicted, actual)[0, 1]), 4) if actual.std() > 0 else None,
        "baseline_holdout_predicted_purchases": round(float(naive.sum()), 1),
        "baseline_holdout_mae": round(float(np.abs(naive - actual).mean()), 4),
    }


def _purchase_days_between(history: History, calibration: Summary, cut_ms: int) -> np.ndarray:
    """Distinct purchase days in ``(cut_ms, T]`` of each calibration customer."""
    later = history.orders.between(cut_ms, history.now_ms)
    pairs = np.unique(np.column_stack([later.customer, later.at_ms // DAY_MS]), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=history.orders.customers) if len(pairs) else np.zeros(history.orders.customers)
    return np.asarray(counts[calibration.customer], dtype=np.float64)


def fit_customer_value(
    history: History,
    *,
    horizon_days: int = 30,
    clv_months: int = 12,
    monthly_discount: float = 0.01,
    min_customers: int = 200,
) -> FitResult:
    """Fit both models on the whole history (and validate BG/NBD on a holdout of ``horizon_days``)."""
    s = summarise(history.orders, history.now_ms, UNIT_DAYS)
    purchases = fit_bgnbd(s.frequency, s.recency, s.T, min_customers=min_customers)
    spend = fit_gamma_gamma(s.frequency, s.monetary, min_customers=max(30, min_customers // 10))
    metrics: dict[str, Any] = {
        "bgnbd_log_likelihood": round(purchases.fit.log_likelihood, 2) if purchases.fit else None,
        "gamma_gamma_log_likelihood": round(spend.fit.log_likelihood, 2) if spend.fit else None,
        "customers": len(s.customer),
        "repeat_customers": int((s.frequency > 0).sum()),
        "population_order_value": round(spend.population_mean, 2),
        "frequency_value_correlation": _value_correlation(s),
    }
    metrics.update(_holdout(history, horizon_days, min_customers))
    params = {
        "r": purchases.r, "alpha": purchases.alpha, "a": purchases.a, "b": purchases.b,
        "p": spend.p, "q": spend.q, "gamma": spend.gamma, "time_unit_days": UNIT_DAYS,
        "horizon_days": horizon_days, "clv_months": clv_months, "monthly_discount": monthly_discount,
    }
    return FitResult(CustomerValue(purchases, spend, horizon_days, clv_months, monthly_discount), params, metrics)


def _value_correlation(s: Summary) -> float | None:
    """Gamma-Gamma assumes order value independent of frequency: the correlation shows how far that holds."""
    repeat = s.frequency > 0
    if repeat.sum() < 3 or np.std(s.monetary[repeat]) == 0 or np.std(s.frequency[repeat]) == 0:
        return None
    return round(float(np.corrcoef(s.frequency[repeat], s.monetary[repeat])[0, 1]), 4)
