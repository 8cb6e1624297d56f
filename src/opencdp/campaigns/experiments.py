"""Experiments: who gets which variant, control groups, and whether a difference is real.

Assignment is a hash of (salt, profile id) to [0, 1): deterministic, so a re-planned
campaign gives everyone the same variant, and independent between campaigns (the salt is the
campaign id). The **global control group** is the share of all profiles whose hash with the
current *draw* (days since 1970 // redraw period) falls under the percentage: it receives no
marketing message until the next draw. A campaign's **holdout** is drawn the same way with the
campaign's own salt and is recorded in the outbox as ``held_out`` (never sent), so its
conversions can be compared with those who received the message.

Statistics: two-proportion z-test and chi-square for rates, the Bayesian probability that a
variant beats control (Beta(1+x, 1+n-x) posteriors, Monte Carlo with a fixed seed), and uplift
(relative difference of rates against control).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONTROL = "control"


def unit(salt: str, profile_id: str) -> float:
    """A uniform number in [0, 1) fixed for (salt, profile)."""
    digest = hashlib.blake2b(f"{salt}|{profile_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def draw(now: dt.datetime, redraw_days: int) -> int:
    return (now.date() - dt.date(1970, 1, 1)).days // max(1, redraw_days)


def in_global_control(profile_id: str, percent: float, now: dt.datetime, redraw_days: int) -> bool:
    if percent <= 0:
        return False
    return unit(f"global-control:{draw(now, redraw_days)}", profile_id) < percent / 100.0


def assign(salt: str, profile_id: str, variants: Sequence[tuple[str, float]], holdout_percent: float = 0.0) -> str:
    """The variant of a profile: ``control`` for the holdout share, else by weight among variants."""
    u = unit(salt, profile_id)
    holdout = holdout_percent / 100.0
    if u < holdout:
        return CONTROL
    total = sum(w for _, w in variants) or 1.0
    position = (u - holdout) / (1 - holdout) * total if holdout < 1 else 0.0
    for name, weight in variants:
        if position < weight:
            return name
        position -= weight
    return variants[-1][0]


@dataclass(frozen=True)
class Comparison:
    variant: str
    baseline: str
    rate: float
    baseline_rate: float
    uplift: float | None
    """(rate - baseline) / baseline; None when the baseline rate is 0."""
    z: float | None
    p_value: float | None
    chi2_p_value: float | None
    probability_to_beat: float | None

    def to_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float | None, float | None]:
    """Two-proportion z-test (pooled): z of rate1 - rate2 and the two-sided p-value."""
    if n1 == 0 or n2 == 0:
        return None, None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def chi_square(counts: Sequence[tuple[int, int]]) -> float | None:
    """p-value of the chi-square test of independence on (successes, trials) per group."""
    table = np.array([[x, n - x] for x, n in counts], dtype=float)
    if table.shape[0] < 2 or (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return None
    return float(stats.chi2_contingency(table, correction=False)[1])


def probability_to_beat(x: int, n: int, x0: int, n0: int, samples: int = 40_000, seed: int = 7) -> float | None:
    """P(rate > baseline rate) under Beta(1+x, 1+n-x) posteriors."""
    if n == 0 or n0 == 0:
        return None
    rng = np.random.default_rng(seed)
    a = rng.beta(1 + x, 1 + n - x, samples)
    b = rng.beta(1 + x0, 1 + n0 - x0, samples)
    return float((a > b).mean())


def compare(variant: str, x: int, n: int, baseline: str, x0: int, n0: int) -> Comparison:
    rate = x / n if n else 0.0
    base = x0 / n0 if n0 else 0.0
    z, p = z_test(x, n, x0, n0)
    return Comparison(
        variant, baseline, rate, base, (rate - base) / base if base else None, z, p,
        chi_square([(x, n), (x0, n0)]), probability_to_beat(x, n, x0, n0),
    )


def winner(results: Mapping[str, tuple[int, int]], *, alpha: float = 0.05, deadline_passed: bool = False) -> str | None:
    """The variant to send to the rest: the best rate once it beats every other significantly
    (z-test at ``alpha``), or the best rate at the deadline; None while undecided."""
    candidates = {k: v for k, v in results.items() if k != CONTROL and v[1] > 0}
    if not candidates:
        return None
    best = max(sorted(candidates), key=lambda k: candidates[k][0] / candidates[k][1])
    if deadline_passed:
        return best
    bx, bn = candidates[best]
    for other, (x, n) in candidates.items():
        if other == best:
            continue
        z, p = z_test(bx, bn, x, n)
        if z is None or p is None or z <= 0 or p >= alpha:
            return None
    return best
