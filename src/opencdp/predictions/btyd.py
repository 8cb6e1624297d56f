"""Buy-till-you-die models: BG/NBD (how often, and whether still alive) and Gamma-Gamma (how much).

Both are fitted by maximum likelihood on per-customer summaries, on numpy/scipy only:

- **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``; after
  every purchase they drop out with probability ``p ~ Beta(a, b)``. A customer is summarised
  by ``x`` (repeat purchases: purchase days after the first), ``t_x`` (time of the last
  purchase since the first) and ``T`` (time since the first purchase to the end of the
  observation), all in one time unit (the fits here use weeks, as the paper).
- **Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013 note): the
  average repeat order value ``m`` of a customer with ``x`` repeat orders is Gamma-distributed
  around their own mean, which varies as ``Gamma(q, gamma)`` over customers; fitted on the
  customers with at least one repeat order, assuming value independent of frequency.

Parameters are fitted on their logarithms (so they stay positive without bounds) with
L-BFGS-B; customers with the same summary are fitted once with a weight, so a million
customers with daily data cost about as much as their few hundred thousand distinct
summaries. The formulas for predictions are those of the papers, as implemented (and
cross-checked against the papers) by the ``lifetimes`` package, which is not a dependency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from opencdp.errors import TerminalError

Array = npt.NDArray[np.float64]


class NotEnoughHistory(TerminalError):
    """Too little or too uniform data to fit a model: nothing is fitted and nothing is written."""

    status = 422
    code = "not_enough_history"


@dataclass(frozen=True)
class Fit:
    """What a fit found: the parameters and how well they fit."""

    params: dict[str, float]
    log_likelihood: float
    """Total log-likelihood of the data at the parameters (comparable with the papers' figures)."""
    customers: int
    iterations: int
    converged: bool
    extra: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {**self.params, "log_likelihood": self.log_likelihood, "customers": float(self.customers), **self.extra}


def _as_arrays(*columns: npt.ArrayLike) -> list[Array]:
    arrays = [np.asarray(c, dtype=np.float64) for c in columns]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("summary columns must have the same length")
    return arrays


def _compress(*columns: Array) -> tuple[list[Array], Array]:
    """Distinct rows of the summary columns and how often each occurs (the likelihood's weights)."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(np.float64)


def distinct_rows(*columns: Array) -> tuple[list[Array], npt.NDArray[np.int64]]:
    """Distinct rows of summary columns, and the row of each input: a million customers have some
    hundred thousand distinct (x, t_x, T), so scoring computes each hypergeometric term once."""
    # one integer per row from each column's value codes (a row-wise np.unique sorts records: 10x slower)
    key = np.zeros(len(columns[0]) if columns else 0, dtype=np.int64)
    for column in columns:
        values, code = np.unique(column, return_inverse=True)
        key = key * len(values) + code.reshape(-1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return [np.asarray(column)[first] for column in columns], np.asarray(inverse, dtype=np.int64).reshape(-1)


def _maximise(
    negative_ll: Callable[[Array], float], start: Array, names: tuple[str, ...], customers: int
) -> tuple[Array, optimize.OptimizeResult]:
    """Minimise a negative log-likelihood over log-parameters; fail loudly when the optimum is not finite."""
    result = optimize.minimize(negative_ll, start, method="L-BFGS-B", options={"maxiter": 2000})
    if not result.success:  # L-BFGS-B may stop on precision loss near the optimum: polish with Nelder-Mead
        result = optimize.minimize(
            negative_ll, result.x, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10}
        )
    params = np.exp(result.x)
    if not np.all(np.isfinite(params)) or not np.isfinite(result.fun) or np.any(params > 1e8) or np.any(params < 1e-8):
        detail = ", ".join(f"{n}={v:.3g}" for n, v in zip(names, params, strict=True))
        raise NotEnoughHistory(
            f"the model did not converge on the history of {customers} customers ({detail}): the data do not "
            "identify its parameters; collect more history (more customers with repeat orders) before fitting",
            field="history",
        )
    return params, result


# -- BG/NBD ------------------------------------------------------------------------------------


def bgnbd_log_likelihood(params: Array, x: Array, t_x: Array, T: Array) -> Array:
    """Each customer's log-likelihood under BG/NBD parameters ``(r, alpha, a, b)`` (FHL 2005, eq. 6)."""
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.betaln(a, b + x) - special.betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(repeat, np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return np.asarray(a1 + a2 + np.logaddexp(a3, a4), dtype=np.float64)


@dataclass(frozen=True)
class BetaGeo:
    """A fitted BG/NBD model: predictions per customer summary, in the time unit it was fitted in."""

    r: float
    alpha: float
    a: float
    b: float
    fit: Fit | None = None

    @property
    def params(self) -> Array:
        return np.array([self.r, self.alpha, self.a, self.b])

    def expected_purchases(self, t: float | Array) -> Array:
        """E[X(t)]: purchases a new customer makes in their first ``t`` time units (FHL 2005, eq. 7)."""
        t = np.asarray(t, dtype=np.float64)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return np.asarray((a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp), dtype=np.float64)

    def conditional_expected_purchases(self, t: float | Array, x: Array, t_x: Array, T: Array) -> Array:
        """E[Y(t) | x, t_x, T]: purchases in the next ``t`` time units of a customer with this history (eq. 10)."""
        x, t_x, T = _as_arrays(x, t_x, T)
        t = np.asarray(t, dtype=np.float64)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        first = (a + b + x - 1) / (a - 1)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        second = 1 - hyp * ((alpha + T) / (alpha + T + t)) ** (r + x)
        return np.asarray(first * second * self.probability_alive(x, t_x, T), dtype=np.float64)

    def probability_alive(self, x: Array, t_x: Array, T: Array) -> Array:
        """P(alive | x, t_x, T): a customer with no repeat purchase is alive for sure under BG/NBD (eq. 11)."""
        x, t_x, T = _as_arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = np.where(x > 0, a / np.where(x > 0, b + x - 1, 1.0) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
        return np.asarray(1.0 / (1.0 + odds), dtype=np.float64)


def fit_bgnbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike, *, min_customers: int = 100) -> BetaGeo:
    """Fit BG/NBD by maximum likelihood on customer summaries (``x`` repeat purchases, ``t_x`` recency, ``T`` age).

    Refuses (``NotEnoughHistory``) fewer than ``min_customers`` customers, or histories without
    any repeat purchase, or without a customer who stopped buying: the likelihood then has
    no finite optimum and a "fitted" model would be garbage.
    """
    x_, t_x_, T_ = _as_arrays(x, t_x, T)
    _check_summary(x_, t_x_, T_, min_customers)
    (ux, ut, uT), weight = _compress(x_, t_x_, T_)

    def negative_ll(log_params: Array) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            value = -float(np.dot(weight, bgnbd_log_likelihood(np.exp(log_params), ux, ut, uT)))
        return value if np.isfinite(value) else 1e300

    names = ("r", "alpha", "a", "b")
    start = np.log([1.0, max(float(np.mean(T_)), 1e-3), 1.0, 1.0])
    params, result = _maximise(negative_ll, start, names, len(x_))
    fit = Fit(dict(zip(names, map(float, params), strict=True)), -float(result.fun), len(x_), int(result.nit), bool(result.success))
    r, alpha, a, b = map(float, params)
    return BetaGeo(r, alpha, a, b, fit=fit)


def _check_summary(x: Array, t_x: Array, T: Array, min_customers: int) -> None:
    if len(x) < min_customers:
        raise NotEnoughHistory(
            f"{len(x)} customers with orders; BG/NBD needs at least {min_customers} to fit — wait for more orders "
            "or lower predictions_min_customers",
            field="history",
        )
    bad = (x < 0) | (t_x < 0) | (t_x > T) | ~np.isfinite(x + t_x + T)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} summaries are inconsistent (need 0 <= recency <= T and frequency >= 0)")
    if not (x > 0).any():
        raise NotEnoughHistory(
            "no customer has a repeat order: purchase frequency cannot be fitted — wait until customers order again",
            field="history",
        )
    if np.all(T - t_x <= 0):
        raise NotEnoughHistory(
            "every customer ordered on the last day of the history, so none may have dropped out: extend the history",
            field="history",
        )


# -- Gamma-Gamma ---------------------------------------------------------------------------------


def gamma_gamma_log_likelihood(params: Array, x: Array, m: Array) -> Array:
    """Each customer's log-likelihood of their mean repeat order value ``m`` over ``x`` orders, parameters ``(p, q, gamma)``."""
    p, q, v = params
    px = p * x
    return np.asarray(
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
        + q * np.log(v) + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(x * m + v),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class GammaGamma:
    """A fitted Gamma-Gamma spend model."""

    p: float
    q: float
    gamma: float
    fit: Fit | None = None

    @property
    def population_mean(self) -> float:
        """Expected average order value of a customer about whom nothing is known: ``p * gamma / (q - 1)``."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else float("nan")

    def conditional_expected_value(self, x: npt.ArrayLike, m: npt.ArrayLike) -> Array:
        """E[M | x, m]: a weighted mean of the population mean and the customer's own mean repeat value.

        The weight of the customer's own mean grows with their number of repeat orders ``x``;
        with ``x = 0`` (no repeat order, ``m`` ignored) it is the population mean.
        """
        x_, m_ = _as_arrays(x, m)
        m_ = np.where(x_ > 0, m_, 0.0)
        px = self.p * x_
        weight = px / (px + self.q - 1)
        return np.asarray((1 - weight) * self.population_mean + weight * m_, dtype=np.float64)


def fit_gamma_gamma(x: npt.ArrayLike, m: npt.ArrayLike, *, min_customers: int = 30) -> GammaGamma:
    """Fit Gamma-Gamma on the customers with repeat orders (``x > 0``) and a positive mean repeat value ``m``."""
    x_, m_ = _as_arrays(x, m)
    keep = (x_ > 0) & (m_ > 0) & np.isfinite(m_)
    x_, m_ = x_[keep], m_[keep]
    if len(x_) < min_customers:
        raise NotEnoughHistory(
            f"{len(x_)} customers with a repeat order of positive value; Gamma-Gamma needs at least {min_customers} "
            "— wait for more repeat orders",
            field="history",
        )
    if np.ptp(m_) <= 0:
        raise NotEnoughHistory("every repeat order has the same value: order value cannot be modelled", field="history")
    (ux, um), weight = _compress(x_, m_)

    def negative_ll(log_params: Array) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            value = -float(np.dot(weight, gamma_gamma_log_likelihood(np.exp(log_params), ux, um)))
        return value if np.isfinite(value) else 1e300

    names = ("p", "q", "gamma")
    start = np.log([1.0, 2.0, float(np.mean(m_))])
    params, result = _maximise(negative_ll, start, names, len(x_))
    fit = Fit(dict(zip(names, map(float, params), strict=True)), -float(result.fun), len(x_), int(result.nit), bool(result.success))
    if params[1] <= 1:
        raise NotEnoughHistory(
            f"Gamma-Gamma fitted q={params[1]:.3g} <= 1: the average order value has no finite mean under these data "
            "(a few very large orders dominate); cap outliers or collect more history",
            field="history",
        )
    p, q, v = map(float, params)
    return GammaGamma(p, q, v, fit=fit)


# -- customer lifetime value -------------------------------------------------------------------


def customer_lifetime_value(
    model: BetaGeo,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    value: npt.ArrayLike,
    *,
    months: int = 12,
    monthly_discount: float = 0.01,
    units_per_month: float = 30.0 / 7.0,
) -> Array:
    """Discounted expected value over the next ``months``: Σ_i value · ΔE[purchases in month i] / (1+d)^i.

    As ``lifetimes.utils.customer_lifetime_value``: the expected purchases of each month
    (the difference of the cumulative conditional expectation) times the expected order
    value, discounted per month. ``units_per_month`` converts months to the model's time
    unit (weeks: 30/7; lifetimes' "W" uses 4.345, a 30.4-day month).
    """
    x_, t_x_, T_, value_ = _as_arrays(x, t_x, T, value)
    (ux, ut, uT), row = distinct_rows(x_, t_x_, T_)
    discounted = np.zeros_like(ux)  # Σ_i ΔE[purchases in month i] / (1+d)^i per distinct history
    previous = np.zeros_like(ux)
    for month in range(1, months + 1):
        cumulative = model.conditional_expected_purchases(month * units_per_month, ux, ut, uT)
        discounted += (cumulative - previous) / (1 + monthly_discount) ** month
        previous = cumulative
    return np.asarray(value_ * discounted[row], dtype=np.float64)
