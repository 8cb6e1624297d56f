"""The product catalogue: generated once per run and kept in memory (it is small)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import reference as ref
from opencdp.demo import text
from opencdp.demo.taxonomy import CATEGORIES, ROOMS

IntArray = npt.NDArray[np.int64]

CATALOG_COLUMNS: tuple[str, ...] = (
    "product_id", "sku", "name", "category", "room", "brand", "price", "old_price", "stock",
    "url", "image_url", "consumption_days", "color", "material", "core", "updated_at",
)  # fmt: skip


@dataclass(frozen=True)
class Catalog:
    """Products indexed internally by category, then ascending price.

    ``cat_start[c]:cat_start[c] + cat_count[c]`` is the slice of category ``c``, so a
    price-tier quantile maps straight to a product index.
    """

    cat: IntArray
    price: IntArray
    stock: IntArray
    consumption: IntArray  # 0 for durable goods
    cat_start: IntArray
    cat_count: IntArray
    product_id: pa.Array
    fragment: pa.Array  # JSON members shared by all product payloads (no braces)
    name_json: pa.Array  # product names as JSON strings (for page titles)
    table: pa.Table  # catalog.csv, sorted by product_id

    @property
    def size(self) -> int:
        return len(self.price)

    def pick(self, cats: IntArray, quantile: npt.NDArray[np.float64]) -> IntArray:
        """Product of category ``cats`` at price quantile ``quantile`` (0 cheap, 1 dear)."""
        q = np.clip(quantile, 0.0, 0.999999)
        return self.cat_start[cats] + (q * self.cat_count[cats]).astype(np.int64)


def shop_price(raw: npt.NDArray[np.float64]) -> IntArray:
    """Round to retail-looking prices: 349, 1 290, 24 990."""
    small = np.ceil(raw / 10.0) * 10 - 1
    large = np.ceil(raw / 100.0) * 100 - 10
    return np.where(raw < 1000, small, large).astype(np.int64)


def _allocate(total: int, weights: npt.NDArray[np.float64]) -> IntArray:
    """Split ``total`` into integer shares, at least one per category."""
    rest = total - len(weights)
    share = weights / weights.sum() * rest
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: rest - int(counts.sum())]] += 1
    return counts + 1


def _brand_kind(room: int, material: str) -> str:
    if material in ("consumable", "textile"):
        return material
    if ROOMS[room] in ("kids", "office"):
        return ROOMS[room]
    return "durable"


def build_catalog(products: int, seed: int, end_ms: int) -> Catalog:
    if products < len(CATEGORIES):
        raise ValueError(f"need at least {len(CATEGORIES)} products, got {products}")
    rng = np.random.default_rng([seed, 1])
    counts = _allocate(products, np.array([c.weight for c in CATEGORIES]))
    cat = np.repeat(np.arange(len(CATEGORIES), dtype=np.int64), counts)
    lo = np.array([c.price[0] for c in CATEGORIES], dtype=np.float64)[cat]
    hi = np.array([c.price[1] for c in CATEGORIES], dtype=np.float64)[cat]
    raw = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    order = np.lexsort((raw, cat))
    raw = raw[order]
    price = shop_price(raw)
    discounted = rng.random(products) < 0.15
    old_price = np.where(discounted, shop_price(raw * rng.uniform(1.15, 1.6, products)), 0)
    old_price = np.where(old_price > price, old_price, 0)
    stock = 1 + rng.poisson(5 + 3000 / np.sqrt(price))
    stock[rng.random(products) < 0.05] = 0
    cons_lo = np.array([(c.consumption or (0, 0))[0] for c in CATEGORIES])[cat]
    cons_hi = np.array([(c.consumption or (0, 0))[1] for c in CATEGORIES])[cat]
    consumption = np.where(cons_hi > 0, rng.integers(cons_lo, cons_hi + 1), 0).astype(np.int64)
    number = rng.permutation(products) + 1  # product numbers are not ordered by category
    updated_ms = end_ms - rng.integers(3_600_000, 30 * 86_400_000, products)
    noun_pick = rng.integers(0, 1 << 30, products)
    series = rng.integers(0, len(ref.SERIES), products)
    brand_pick = rng.integers(0, 1 << 30, products)
    color_pick = rng.integers(0, 1 << 30, products)
    material = rng.integers(0, 1 << 30, products)

    ids: list[str] = []
    brands: list[str] = []
    names: list[str] = []
    colors: list[str | None] = []
    materials: list[str] = []
    skus: list[str] = []
    fragments: list[str] = []
    for i in range(products):
        c = CATEGORIES[cat[i]]
        pid = f"P{number[i]:05d}"
        noun = c.nouns[noun_pick[i] % len(c.nouns)]
        if c.material == "consumable":
            names.append(f"{noun} {ref.SERIES[series[i]].capitalize()}")
            colors.append(None)
            pool = ref.MATERIALS_CONSUMABLE
        else:
            textile = c.material == "textile"
            palette = ref.COLORS_TEXTILE if textile else ref.COLORS
            colors.append(palette[color_pick[i] % len(palette)])
            names.append(f"{noun} {ref.SERIES[series[i]]}, {colors[-1]}")
            pool = ref.MATERIALS_TEXTILE if textile else ref.MATERIALS_DURABLE
        materials.append(pool[material[i] % len(pool)])
        brand_pool = ref.BRANDS[_brand_kind(c.room, c.material)]
        brands.append(brand_pool[brand_pick[i] % len(brand_pool)])
        ids.append(pid)
        sku = f"{ROOMS[c.room][:3].upper()}-{int(cat[i]):02d}-{number[i]:05d}"
        skus.append(sku)
        fragments.append(
            f'"product_id":"{pid}","sku":"{sku}","name":{text.js(names[-1])},'
            f'"category":{text.js(c.path)},"brand":{text.js(brands[-1])},'
            f'"price":{int(price[i])}'
        )

    core = np.array([CATEGORIES[c].step >= 0 for c in cat])
    table = (
        pa.table(
            {
                "product_id": pa.array(ids, pa.string()),
                "sku": pa.array(skus, pa.string()),
                "name": pa.array(names, pa.string()),
                "category": text.lookup([c.path for c in CATEGORIES], cat),
                "room": text.lookup([ROOMS[c.room] for c in CATEGORIES], cat),
                "brand": pa.array(brands, pa.string()),
                "price": pa.array(price, pa.int64()),
                "old_price": pa.array(
                    np.where(old_price > 0, old_price, 0), pa.int64(), mask=old_price == 0
                ),
                "stock": pa.array(stock, pa.int64()),
                "url": pa.array([f"{ref.SITE}/p/{p}" for p in ids], pa.string()),
                "image_url": pa.array([f"{ref.SITE}/img/{p}.jpg" for p in ids], pa.string()),
                "consumption_days": pa.array(consumption, pa.int64(), mask=consumption == 0),
                "color": pa.array(colors, pa.string()),
                "material": pa.array(materials, pa.string()),
                "core": pa.array(core, pa.bool_()),
                "updated_at": text.iso_seconds(updated_ms),
            }
        )
        .take(pa.array(np.argsort(number)))
        .select(list(CATALOG_COLUMNS))
    )
    cat_start = np.zeros(len(CATEGORIES), dtype=np.int64)
    np.cumsum(counts[:-1], out=cat_start[1:])
    return Catalog(
        cat=cat,
        price=price,
        stock=stock,
        consumption=consumption,
        cat_start=cat_start,
        cat_count=counts,
        product_id=pa.array(ids, pa.string()),
        fragment=pa.array(fragments, pa.string()),
        name_json=pa.array([text.js(n) for n in names], pa.string()),
        table=table,
    )
