"""Business rules: which scored products may be shown, and in what order.

``Rules`` is validated when a block is saved (``Rules.parse`` raises ``RuleError`` naming
the field), then ``select`` turns a score vector into the products served:

1. eligible: in stock, with an image and a URL, within the price range and categories,
   not the context products, and not bought within the repurchase window — per category
   (longest matching prefix of ``repurchase_days``), or a replenishment product's own
   consumption time (``products.consumption_days``), else ``default_repurchase_days``;
2. boosted products' scores multiplied; pinned products first;
3. at most ``max_per_category`` per category (diversity);
4. what the algorithm could not fill, filled from popularity (marked ``fallback``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from opencdp.errors import TerminalError
from opencdp.recommendations.data import Catalogue


class RuleError(TerminalError):
    """A block or rule definition that cannot be saved."""

    code = "invalid_block"
    status = 422


_NUMBER_FIELDS = ("min_price", "max_price", "min_support", "min_confidence", "min_lift")


@dataclass(frozen=True)
class Rules:
    in_stock: bool = True
    require_image: bool = True
    require_url: bool = True
    exclude_purchased: bool = True
    repurchase_days: dict[str, int] = field(default_factory=dict)
    """Category prefix -> days a bought product is not offered again (e.g. {"Living room": 365})."""
    default_repurchase_days: int | None = None
    """For categories not listed: None never offers a durable product again to its buyer."""
    min_price: float | None = None
    max_price: float | None = None
    categories: tuple[str, ...] = ()
    """Only products under these category prefixes (empty: all)."""
    exclude_categories: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()
    """Product ids always shown first (if eligible), in this order."""
    boosted: dict[str, float] = field(default_factory=dict)
    """Product id or category prefix -> score multiplier (> 0)."""
    max_per_category: int | None = None
    min_support: float = 0.0
    min_confidence: float = 0.0
    min_lift: float = 1.0
    fill_with_popular: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, where: str = "rules") -> Rules:
        """Rules from their JSON form; anything unknown or out of range is a ``RuleError``."""
        raw = dict(raw or {})
        known = {f for f in cls.__dataclass_fields__}
        for name in raw:
            if name not in known:
                raise RuleError(f"unknown rule `{name}`; rules are: {', '.join(sorted(known))}", field=f"{where}.{name}")
        values: dict[str, Any] = {}
        for name in ("in_stock", "require_image", "require_url", "exclude_purchased", "fill_with_popular"):
            if name in raw:
                if not isinstance(raw[name], bool):
                    raise RuleError(f"`{name}` must be true or false, not {raw[name]!r}", field=f"{where}.{name}")
                values[name] = raw[name]
        for name in _NUMBER_FIELDS:
            if raw.get(name) is not None:
                value = raw[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or math.isnan(value):
                    raise RuleError(f"`{name}` must be a number >= 0, not {value!r}", field=f"{where}.{name}")
                values[name] = float(value)
        for name in ("min_support", "min_confidence"):
            if values.get(name, 0.0) > 1:
                raise RuleError(f"`{name}` is a share between 0 and 1, not {values[name]}", field=f"{where}.{name}")
        if values.get("min_price") is not None and values.get("max_price") is not None and values["min_price"] > values["max_price"]:
            raise RuleError(f"`min_price` ({values['min_price']}) is above `max_price` ({values['max_price']})",
                            field=f"{where}.min_price")
        windows = raw.get("repurchase_days", {})
        if not isinstance(windows, dict):
            raise RuleError('`repurchase_days` maps category prefixes to days, e.g. {"Living room": 365}',
                            field=f"{where}.repurchase_days")
        for category, days in windows.items():
            if not category or isinstance(days, bool) or not isinstance(days, int) or days < 0:
                raise RuleError(f"repurchase window of {category!r} must be a whole number of days >= 0, not {days!r}",
                                field=f"{where}.repurchase_days.{category}")
        values["repurchase_days"] = dict(windows)
        default = raw.get("default_repurchase_days")
        if default is not None and (isinstance(default, bool) or not isinstance(default, int) or default < 0):
            raise RuleError(f"`default_repurchase_days` must be a whole number of days >= 0 or null, not {default!r}",
                            field=f"{where}.default_repurchase_days")
        values["default_repurchase_days"] = default
        for name in ("categories", "exclude_categories", "pinned"):
            items = raw.get(name, [])
            if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
                raise RuleError(f"`{name}` must be a list of non-empty strings", field=f"{where}.{name}")
            values[name] = tuple(items)
        boosted = raw.get("boosted", {})
        if not isinstance(boosted, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in boosted.values()
        ):
            raise RuleError('`boosted` maps product ids or category prefixes to multipliers > 0, e.g. {"P1": 2}',
                            field=f"{where}.boosted")
        values["boosted"] = {str(k): float(v) for k, v in boosted.items()}
        most = raw.get("max_per_category")
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise RuleError(f"`max_per_category` must be a whole number >= 1 or null, not {most!r}",
                            field=f"{where}.max_per_category")
        values["max_per_category"] = most
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("categories", "exclude_categories", "pinned"):
            out[name] = list(out[name])
        return out

    # -- serving -----------------------------------------------------------------------
    def eligible(self, catalogue: Catalogue) -> np.ndarray:
        """Products these rules allow for anyone (cached per catalogue)."""
        cache: dict[int, np.ndarray] = self.__dict__.setdefault("_eligible", {})  # frozen, but a cache is not state
        mask = cache.get(id(catalogue))
        if mask is None:
            mask = np.ones(len(catalogue), bool)
            if self.in_stock:
                mask &= ~(catalogue.stock <= 0)  # unknown stock (NaN) is not "out of stock"
            if self.require_image:
                mask &= np.asarray([bool(v) for v in catalogue.image_url], bool)
            if self.require_url:
                mask &= np.asarray([bool(v) for v in catalogue.url], bool)
            if self.min_price is not None:
                mask &= catalogue.price >= self.min_price
            if self.max_price is not None:
                mask &= catalogue.price <= self.max_price
            if self.categories:
                mask &= under(catalogue, self.categories)
            if self.exclude_categories:
                mask &= ~under(catalogue, self.exclude_categories)
            cache.clear()
            cache[id(catalogue)] = mask
        return mask

    def repurchase_window_days(self, catalogue: Catalogue, i: int) -> float | None:
        """Days after a purchase of product ``i`` before it may be offered again; None: never."""
        days = catalogue.consumption_days[i]
        if not math.isnan(days):
            return float(days)
        category = str(catalogue.category[i] or "")
        matches = [p for p in self.repurchase_days if category.startswith(p)]
        if matches:
            return float(self.repurchase_days[max(matches, key=len)])
        return None if self.default_repurchase_days is None else float(self.default_repurchase_days)

    def select(
        self, scores: np.ndarray, catalogue: Catalogue, size: int, *, fallback: np.ndarray | None = None,
        exclude: Sequence[int] = (), bought: Mapping[int, float] | None = None, now_s: float = 0.0,
        index: Mapping[str, int] | None = None,
    ) -> list[tuple[int, float, bool]]:
        """The served products as (position, score, from_fallback), best first."""
        mask = self.eligible(catalogue).copy()
        if exclude:
            mask[list(exclude)] = False
        if self.exclude_purchased and bought:
            for i, at in bought.items():
                window = self.repurchase_window_days(catalogue, i)
                if window is None or now_s - at < window * 86_400:
                    mask[i] = False
        scores = scores.astype(np.float64)
        if self.boosted:
            for key, factor in self.boosted.items():
                position = index.get(key) if index is not None else None
                if position is not None:
                    scores[position] *= factor
                else:
                    scores[under(catalogue, (key,))] *= factor
        chosen: list[tuple[int, float, bool]] = []
        taken: set[int] = set()
        per_category: dict[str, int] = {}

        def take(i: int, score: float, filled: bool) -> bool:
            if i in taken or not mask[i]:
                return False
            category = str(catalogue.category[i] or "")
            if self.max_per_category is not None and per_category.get(category, 0) >= self.max_per_category:
                return False
            taken.add(i)
            per_category[category] = per_category.get(category, 0) + 1
            chosen.append((i, score, filled))
            return len(chosen) >= size

        for product in self.pinned:
            position = index.get(product) if index is not None else None
            if position is not None and take(position, float(scores[position]), False):
                return chosen
        for candidates, filled in ((scores, False), (fallback if self.fill_with_popular else None, True)):
            if candidates is None or len(chosen) >= size:
                continue
            values = np.where(mask & (candidates > 0), candidates, -np.inf)
            count = int(np.isfinite(values).sum())
            if not count:
                continue
            # look at enough candidates to satisfy diversity, without sorting the whole catalogue
            want = min(count, size * 4 if self.max_per_category else size + len(chosen))
            while True:
                top = np.argpartition(-values, want - 1)[:want] if want < len(values) else np.arange(len(values))
                top = top[np.argsort(-values[top], kind="stable")]
                for i in top.tolist():
                    if not np.isfinite(values[i]):
                        break
                    if take(i, float(candidates[i]), filled):
                        return chosen
                if want >= count:
                    break
                want = min(count, want * 4)
        return chosen


def under(catalogue: Catalogue, prefixes: Sequence[str]) -> np.ndarray:
    """Products whose category path starts with one of ``prefixes``."""
    return np.asarray([any(str(c or "").startswith(p) for p in prefixes) for c in catalogue.category], bool)
