"""Replenishment: when a consumable a customer bought runs out.

Each product's consumption lifetime (days one unit lasts) is the catalogue's
``consumption_days`` where it gives one, else learned from repeat purchases of that product
by the same customer: the median of (days between two purchases / units bought at the
first), over at least ``MIN_REPEATS`` such pairs. Durable goods (no catalogue lifetime and
few repeats) get none.

A customer is due for a product at ``last purchase + lifetime x quantity bought then``.
Their ``replenishment_due`` score is the earliest due date (ISO date text, as
``next_order_date``) among products not lapsed — due no more than ``lapse_days`` ago;
``replenishment_product`` names that product, for the message that reminds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.predictions.btyd import NotEnoughHistory
from opencdp.predictions.history import DAY_MS, History, Lines
from opencdp.predictions.model import FitResult, ScoreSet
from opencdp.predictions.nextorder import iso_dates

MIN_REPEATS = 10
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class Replenishment:
    lifetimes: dict[str, float]
    """Days one unit lasts, by product id."""
    lapse_days: int = 30
    sources: dict[str, str] = field(default_factory=dict)

    def due(self, lines: Lines, products_lifetime: FloatArray, now_ms: int) -> tuple[IntArray, FloatArray, IntArray]:
        """Customers with a due consumable, the earliest due day (since the epoch) and the product's index."""
        seen = lines.at_ms <= now_ms
        customer, product, at, quantity = lines.customer[seen], lines.product[seen], lines.at_ms[seen], lines.quantity[seen]
        life = products_lifetime[product]
        keep = np.isfinite(life)
        customer, product, at, quantity, life = customer[keep], product[keep], at[keep], quantity[keep], life[keep]
        if len(customer) == 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        # units bought per (customer, product, day), then the last such day of each (customer, product)
        day = at // DAY_MS
        order = np.lexsort((day, product, customer))
        customer, product, day, quantity, life = customer[order], product[order], day[order], quantity[order], life[order]
        group = np.flatnonzero(np.r_[True, (customer[1:] != customer[:-1]) | (product[1:] != product[:-1]) | (day[1:] != day[:-1])])
        units = np.add.reduceat(np.maximum(quantity, 1), group)
        customer, product, day, life = customer[group], product[group], day[group], life[group]
        last = np.r_[(customer[1:] != customer[:-1]) | (product[1:] != product[:-1]), True]
        pair_customer, pair_product = customer[last], product[last]
        due_day = day[last] + life[last] * units[last]
        active = due_day >= now_ms // DAY_MS - self.lapse_days
        pair_customer, pair_product, due_day = pair_customer[active], pair_product[active], due_day[active]
        first = np.lexsort((due_day, pair_customer))
        pair_customer, pair_product, due_day = pair_customer[first], pair_product[first], due_day[first]
        head = np.r_[True, pair_customer[1:] != pair_customer[:-1]] if len(pair_customer) else np.zeros(0, bool)
        return pair_customer[head], np.floor(due_day[head]), pair_product[head]

    def lifetime_array(self, lines: Lines) -> FloatArray:
        return np.array([self.lifetimes.get(str(p), np.nan) for p in lines.products.to_pylist()], dtype=np.float64)

    def score(self, history: History) -> list[ScoreSet]:
        customer, day, product = self.due(history.lines, self.lifetime_array(history.lines), history.now_ms)
        names = history.lines.products.take(pa.array(product, pa.int64())).cast(pa.string())
        return [
            ScoreSet("replenishment_due", customer, iso_dates(day), "date the customer's consumable runs out (ISO date)"),
            ScoreSet("replenishment_product", customer, names, "the product due for replenishment"),
        ]


def learned_lifetimes(lines: Lines, now_ms: int) -> FloatArray:
    """Days per unit learned from repeat purchases of the same product by the same customer (NaN: too few)."""
    seen = lines.at_ms <= now_ms
    customer, product, day, quantity = lines.customer[seen], lines.product[seen], lines.at_ms[seen] // DAY_MS, lines.quantity[seen]
    order = np.lexsort((day, product, customer))
    customer, product, day, quantity = customer[order], product[order], day[order], quantity[order]
    follows = (customer[1:] == customer[:-1]) & (product[1:] == product[:-1]) & (day[1:] > day[:-1])
    per_unit = (day[1:] - day[:-1])[follows] / np.maximum(quantity[:-1][follows], 1)
    which = product[1:][follows]
    result = np.full(len(lines.products), np.nan)
    if len(which) == 0:
        return result
    order = np.argsort(which, kind="stable")
    which, per_unit = which[order], per_unit[order]
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    counts = np.diff(np.r_[starts, len(which)])
    for start, count in zip(starts[counts >= MIN_REPEATS], counts[counts >= MIN_REPEATS], strict=True):
        result[which[start]] = float(np.median(per_unit[start : start + count]))
    return result


def fit_replenishment(history: History, *, lapse_days: int = 30) -> FitResult:
    lines = history.lines
    learned = learned_lifetimes(lines, history.now_ms)
    catalogue = lines.consumption_days
    lifetime = np.where(np.isfinite(catalogue), catalogue, learned)
    ids = [str(p) for p in lines.products.to_pylist()]
    lifetimes = {ids[i]: float(lifetime[i]) for i in np.flatnonzero(np.isfinite(lifetime))}
    sources = {ids[i]: ("catalogue" if np.isfinite(catalogue[i]) else "learned") for i in np.flatnonzero(np.isfinite(lifetime))}
    if not lifetimes:
        raise NotEnoughHistory(
            "no product has a consumption lifetime: set `consumption_days` in the catalogue for consumables, or wait "
            f"until products have {MIN_REPEATS} repeat purchases by the same customers to learn it from",
            field="history",
        )
    model = Replenishment(lifetimes, lapse_days, sources)
    customer, _, _ = model.due(lines, lifetime, history.now_ms)
    metrics: dict[str, Any] = {
        "products_with_catalogue_lifetime": int(np.isfinite(catalogue).sum()),
        "products_with_learned_lifetime": int((np.isfinite(learned) & ~np.isfinite(catalogue)).sum()),
        "customers_due": len(customer),
    }
    return FitResult(model, {"lapse_days": lapse_days, "min_repeats": MIN_REPEATS, "lifetimes": len(lifetimes)}, metrics)
