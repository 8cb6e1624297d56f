"""What the models learn from: weighted interactions and the catalogue, read from the store.

An interaction is a canonical profile touching a product: a view, a click in a message,
an add to cart, a purchase line (online or at the till). They are read with one sqlglot
query per source (events with a product id; order lines), resolved through
``profile_map`` so merged profiles pool their history, and dictionary-encoded into
integer arrays: everything downstream works on ``(user, item, kind, time, weight)``
vectors, never on rows. The same ``Interactions`` type holds any public data set
(``from_arrays``), so the offline evaluation runs one code path for the shop and for
MovieLens.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES, PRODUCTS, PROFILE_MAP

PURCHASE = "Order Completed"
"""Purchases are read from order lines (one per product), never from the order event."""

DEFAULT_WEIGHTS: dict[str, float] = {
    "Product Viewed": 1.0,
    "Product Clicked": 1.0,
    "Email Link Clicked": 1.5,
    "SMS Link Clicked": 1.5,
    "Product Added to Wishlist": 2.0,
    "Product Added": 3.0,
    PURCHASE: 5.0,
}
"""Interaction weights by event: view < click in a message < add to cart < purchase."""

VIEW, CART, PURCHASE_KIND, OTHER = 0, 1, 2, 3
_KIND_OF = {"Product Viewed": VIEW, "Product Added": CART, PURCHASE: PURCHASE_KIND}

_EPOCH_MS = {"duckdb": "epoch_ms", "clickhouse": "toUnixTimestamp64Milli"}


def epoch_ms(backend: Backend, column: exp.Expr) -> exp.Expr:
    """A timestamp column as epoch milliseconds (Python reads zoned times from DuckDB badly)."""
    return exp.Anonymous(this=_EPOCH_MS[backend.capabilities.dialect], expressions=[column])


@dataclass
class Interactions:
    """Interactions as parallel arrays; ``users[user[k]]`` touched ``items[item[k]]`` at ``ts[k]``."""

    users: np.ndarray
    """Canonical profile ids (str), indexed by the codes in ``user``."""
    items: np.ndarray
    """Product ids (str), indexed by the codes in ``item``."""
    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    """VIEW, CART, PURCHASE_KIND or OTHER (int8)."""
    ts: np.ndarray
    """Epoch milliseconds (int64)."""
    weight: np.ndarray
    """The event's weight before decay (float32)."""
    basket: np.ndarray
    """Purchases: an order code shared by the lines of one order; -1 for other interactions."""

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def subset(self, mask: np.ndarray) -> Interactions:
        """The interactions where ``mask`` holds, with the same user and item codes."""
        return Interactions(
            self.users, self.items, self.user[mask], self.item[mask], self.kind[mask], self.ts[mask],
            self.weight[mask], self.basket[mask],
        )

    def sample_users(self, share: float, seed: int = 7) -> Interactions:
        """The interactions of a random ``share`` of the profiles (whole histories: a smaller shop, same habits)."""
        if share >= 1:
            return self
        keep = np.random.default_rng(seed).random(len(self.users)) < share
        return self.subset(keep[self.user])

    def decayed(self, now_ms: int, half_life_days: float) -> np.ndarray:
        """Weights halved every ``half_life_days`` of age (0: no decay)."""
        if half_life_days <= 0:
            return self.weight.astype(np.float32)
        age_days = np.maximum(now_ms - self.ts, 0) / 86_400_000.0
        return (self.weight * np.power(0.5, age_days / half_life_days)).astype(np.float32)

    @classmethod
    def from_arrays(
        cls, users: Any, items: Any, ts_ms: Any, weights: Any | None = None, kinds: Any | None = None
    ) -> Interactions:
        """Interactions from plain columns (a public data set); every row a purchase-like event by default."""
        user_codes, user_ids = _encode(pa.array(users, pa.string()))
        item_codes, item_ids = _encode(pa.array(items, pa.string()))
        n = len(user_codes)
        weight = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
        kind = np.full(n, PURCHASE_KIND, np.int8) if kinds is None else np.asarray(kinds, np.int8)
        return cls(user_ids, item_ids, user_codes, item_codes, kind, np.asarray(ts_ms, np.int64), weight,
                   np.full(n, -1, np.int64))


def _encode(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and the distinct values (Arrow's hash encoding: no Python loop over rows)."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks() if encoded.num_chunks else pa.array([], pa.string()).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    return codes, np.asarray(python_values(encoded.dictionary), dtype=object)


PYTHON_SLICE = 16_384


def python_values(values: pa.Array | pa.ChunkedArray) -> list[Any]:
    """``values.to_pylist()``, a slice at a time.

    The server retrains and indexes while it answers requests: one ``to_pylist`` over the
    1.7M profile ids of the 1M shop is a single C call that holds the GIL 0.1-0.2 s, and
    every request waits that long. Between slices the request threads get the GIL.
    """
    out: list[Any] = []
    for start in range(0, len(values), PYTHON_SLICE):
        out.extend(values.slice(start, PYTHON_SLICE).to_pylist())
    return out


def _canonical(backend: Backend, alias: str) -> tuple[exp.Expr, exp.Expr]:
    """``coalesce(m.canonical_id, <alias>.profile_id)`` and the join condition on profile_map ``m``."""
    profile = exp.column("profile_id", alias)
    return (
        exp.func("coalesce", exp.column("canonical_id", "m"), profile),
        exp.column("profile_id", "m").eq(profile),
    )


def interactions_query(backend: Backend, weights: Mapping[str, float], since_ms: int | None = None) -> exp.Expression:
    """Events carrying a product id and purchase lines, each as (profile_id, product_id, event, ts, basket)."""
    names = [name for name in weights if name != PURCHASE]
    who, on = _canonical(backend, "e")
    events = (
        exp.select(
            who.as_("profile_id"), exp.column("product_id", "e"), exp.column("event", "e"),
            epoch_ms(backend, exp.column("timestamp", "e")).as_("ts"), exp.null().as_("basket"),
        )
        .from_(backend.aliased_ref(EVENTS, "e"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=on, join_type="left")
        .where(exp.column("product_id", "e").is_(exp.null()).not_())
        .where(exp.column("profile_id", "e").is_(exp.null()).not_())
        .where(exp.column("event", "e").isin(*(exp.Literal.string(n) for n in names)) if names else exp.false())
    )
    who, on = _canonical(backend, "l")
    lines = (
        exp.select(
            who.as_("profile_id"), exp.column("product_id", "l"), exp.Literal.string(PURCHASE).as_("event"),
            epoch_ms(backend, exp.column("timestamp", "l")).as_("ts"), exp.column("message_id", "l").as_("basket"),
        )
        .from_(backend.aliased_ref(ORDER_LINES, "l"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=on, join_type="left")
        .where(exp.column("product_id", "l").is_(exp.null()).not_())
        .where(exp.column("profile_id", "l").is_(exp.null()).not_())
        .where(exp.column("event", "l").eq(exp.Literal.string(PURCHASE)))
    )
    if since_ms is not None:
        since = exp.Literal.number(since_ms)
        events = events.where(epoch_ms(backend, exp.column("timestamp", "e")) >= since)
        lines = lines.where(epoch_ms(backend, exp.column("timestamp", "l")) >= since)
    if PURCHASE not in weights:
        return events
    return exp.union(events, lines, distinct=False)


def read_interactions(
    backend: Backend, weights: Mapping[str, float] = DEFAULT_WEIGHTS, since: dt.datetime | None = None
) -> Interactions:
    """All interactions of every canonical profile (optionally only those since ``since``)."""
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    table = backend.select(interactions_query(backend, weights, since_ms))
    user, users = _encode(table.column("profile_id"))
    item, items = _encode(table.column("product_id"))
    event_codes, event_names = _encode(table.column("event"))
    kind_of_name = np.array([_KIND_OF.get(n, OTHER) for n in event_names], np.int8)
    weight_of_name = np.array([float(weights.get(n, 0.0)) for n in event_names], np.float32)
    basket_column = table.column("basket")
    basket = np.full(table.num_rows, -1, np.int64)
    if table.num_rows:
        valid = pc.is_valid(basket_column).to_numpy(zero_copy_only=False)
        if valid.any():
            codes, _ = _encode(pc.fill_null(pc.cast(basket_column, pa.string()), ""))
            basket = np.where(valid, codes, -1).astype(np.int64)
    ts = table.column("ts").to_numpy().astype(np.int64) if table.num_rows else np.empty(0, np.int64)
    return Interactions(
        users, items, user, item,
        kind_of_name[event_codes] if table.num_rows else np.empty(0, np.int8),
        ts,
        weight_of_name[event_codes] if table.num_rows else np.empty(0, np.float32),
        basket,
    )


@dataclass
class Catalogue:
    """The catalogue's current state as arrays (index = item position)."""

    product_id: np.ndarray
    name: np.ndarray
    category: np.ndarray
    top_category: np.ndarray
    """The first level of the category path (a room in the demo shop): what diversity counts."""
    room: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    old_price: np.ndarray
    currency: np.ndarray
    stock: np.ndarray
    url: np.ndarray
    image_url: np.ndarray
    consumption_days: np.ndarray
    """Days a consumable lasts (replenishment goods); NaN for durable goods."""
    attributes: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.product_id.shape[0])

    def index(self) -> dict[str, int]:
        return {str(p): i for i, p in enumerate(self.product_id)}

    def product(self, i: int, score: float | None = None) -> dict[str, Any]:
        """The product as served: what a site, an app or a message needs to show it."""
        item: dict[str, Any] = {
            "product_id": str(self.product_id[i]),
            "name": _text(self.name[i]),
            "category": _text(self.category[i]),
            "brand": _text(self.brand[i]),
            "price": _number(self.price[i]),
            "old_price": _number(self.old_price[i]),
            "currency": _text(self.currency[i]),
            "url": _text(self.url[i]),
            "image_url": _text(self.image_url[i]),
        }
        if score is not None:
            item["score"] = round(float(score), 6)
        return item

    @classmethod
    def from_table(cls, table: pa.Table) -> Catalogue:
        rows = table.to_pydict()
        n = table.num_rows

        def strings(name: str) -> np.ndarray:
            return np.asarray([v if v is not None else None for v in rows.get(name, [None] * n)], dtype=object)

        def numbers(name: str) -> np.ndarray:
            return np.asarray([np.nan if v is None else float(v) for v in rows.get(name, [None] * n)], np.float64)

        category = strings("category")
        attributes = []
        for text in rows.get("attributes", [None] * n):
            try:
                value = json.loads(text) if text else {}
            except ValueError:
                value = {}
            attributes.append(value if isinstance(value, dict) else {})
        stock = numbers("stock")
        return cls(
            product_id=strings("product_id"), name=strings("name"), category=category,
            top_category=np.asarray([top_level(c) for c in category], dtype=object),
            room=strings("room"), brand=strings("brand"), price=numbers("price"), old_price=numbers("old_price"),
            currency=strings("currency"), stock=stock, url=strings("url"), image_url=strings("image_url"),
            consumption_days=numbers("consumption_days"), attributes=attributes,
        )


def top_level(category: str | None) -> str:
    """``"Kitchen > Cookware > Pans"`` -> ``"Kitchen"`` (also for ``/`` separated paths)."""
    if not category:
        return ""
    for separator in (" > ", "/", ">"):
        if separator in category:
            return category.split(separator, 1)[0].strip()
    return category.strip()


def read_catalogue(backend: Backend) -> Catalogue:
    query = exp.select(*(exp.column(c) for c in PRODUCTS.column_names if c != "updated_at")).from_(
        backend.table_ref(PRODUCTS)
    ).order_by("product_id")
    return Catalogue.from_table(backend.select(query))


def catalogue_version(backend: Backend) -> tuple[Any, ...]:
    """What changes whenever the catalogue does (rows and their newest update): a refresh skips an unchanged one."""
    query = exp.select(
        exp.func("count", exp.Star()), epoch_ms(backend, exp.func("max", exp.column("updated_at")))
    ).from_(backend.table_ref(PRODUCTS))
    rows = backend.select(query).to_pylist()
    return tuple(rows[0].values()) if rows else ()


def read_popularity_counts(backend: Backend) -> dict[str, float]:
    """Purchase lines per product (one aggregate): the popularity served before any model exists."""
    count = exp.func("count", exp.Star())
    query = (
        exp.select(exp.column("product_id"), count.as_("n")).from_(backend.table_ref(ORDER_LINES))
        .where(exp.column("product_id").is_(exp.null()).not_())
        .where(exp.column("event").eq(exp.Literal.string(PURCHASE)))
        .group_by(exp.column("product_id"))
    )
    table = backend.select(query)
    return dict(zip(table.column("product_id").to_pylist(), (float(n) for n in table.column("n").to_pylist()), strict=True))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def bare_catalogue(product_ids: Any) -> Catalogue:
    """A catalogue of ids only (public data sets): every product in stock, with no price or category."""
    ids = [str(p) for p in product_ids]
    n = len(ids)
    table = pa.table({"product_id": ids, "stock": pa.array([1] * n, pa.int64())})
    return Catalogue.from_table(table)


def read_regions(backend: Backend, users: np.ndarray) -> np.ndarray:
    """Each profile's region: the latest ``traits.city`` of its identify calls ('' if unknown)."""
    path = exp.JSONPath(expressions=[exp.JSONPathRoot(), exp.JSONPathKey(this="city")])
    city = exp.func("nullif", exp.JSONExtractScalar(this=exp.column("traits", "e"), expression=path), exp.Literal.string(""))
    who, on = _canonical(backend, "e")
    query = (
        exp.select(who.as_("profile_id"), exp.ArgMax(this=city, expression=exp.column("timestamp", "e")).as_("region"))
        .from_(backend.aliased_ref(EVENTS, "e"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=on, join_type="left")
        .where(exp.column("type", "e").eq(exp.Literal.string("identify")))
        .where(city.is_(exp.null()).not_())
        .where(exp.column("profile_id", "e").is_(exp.null()).not_())
        .group_by(who.copy())
    )
    table = backend.select(query)
    # a comprehension, not dict(zip(...)): that is one C call over a million rows, holding the GIL throughout
    found = {p: r for p, r in zip(python_values(table.column("profile_id")), python_values(table.column("region")),
                                  strict=True)}
    return np.asarray([found.get(str(u)) or "" for u in users], dtype=object)
