"""Purchase history read from the store: every order of every canonical profile, as arrays.

An order is an ``Order Completed`` event, online or at the till (imports and the POS feed
write the same event with ``channel = 'pos'``). Its buyer is the event's profile resolved
through ``profile_map`` to the canonical profile, so the orders of merged profiles count for
the survivor; orders without a profile (anonymous receipts) are left out. Its value is the
``total`` column, or ``revenue`` where an order has no total.

The models need the whole history of the buyers anyway, so it is read once — one scan of
events for orders and engagement together, one of order lines — and everything else
(summaries at any cutoff, features, labels) is computed on the arrays. Times are epoch milliseconds
(UTC) so both engines hand over the same numbers.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.segments.sql import DIALECTS
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES, PRODUCTS, PROFILE_MAP

ORDER_EVENT = "Order Completed"
DAY_MS = 86_400_000
ENGAGEMENT_EVENTS = (
    "Product Viewed", "Product Added", "Checkout Started", "Products Searched", "Email Opened", "Email Link Clicked",
)  # fmt: skip
"""Events counted as behaviour features (the demo shop's and the Segment e-commerce spec's names)."""

_EPOCH_MS = {"duckdb": "epoch_ms", "clickhouse": "toUnixTimestamp64Milli"}

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def to_ms(at: dt.datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware, e.g. datetime.now(datetime.UTC)")
    return int(at.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True)
class Orders:
    """All orders, sorted by customer then time. ``customer`` indexes ``ids`` (canonical profile ids)."""

    ids: pa.Array
    customer: IntArray
    at_ms: IntArray
    value: FloatArray
    pos: npt.NDArray[np.bool_]
    """Bought at a till (channel ``pos``) rather than online."""

    @property
    def customers(self) -> int:
        return len(self.ids)

    def before(self, cutoff_ms: int) -> Orders:
        """The orders at or before ``cutoff_ms`` (same customer numbering)."""
        keep = self.at_ms <= cutoff_ms
        return Orders(self.ids, self.customer[keep], self.at_ms[keep], self.value[keep], self.pos[keep])

    def between(self, start_ms: int, end_ms: int) -> Orders:
        """The orders in ``(start_ms, end_ms]``."""
        keep = (self.at_ms > start_ms) & (self.at_ms <= end_ms)
        return Orders(self.ids, self.customer[keep], self.at_ms[keep], self.value[keep], self.pos[keep])


@dataclass(frozen=True)
class Lines:
    """Order lines of customers' orders: what was bought, how many, when; numbered as ``Orders.ids``."""

    customer: IntArray
    at_ms: IntArray
    product: IntArray
    """Index into ``products``."""
    quantity: FloatArray
    room: IntArray
    """Code of the top level of the line's category (the text before the first '/' or ' > ')."""
    products: pa.Array
    consumption_days: FloatArray
    """Per entry of ``products``: the catalogue's consumption lifetime in days; NaN when it gives none."""


@dataclass(frozen=True)
class Engagement:
    """Timestamps of engagement events per customer and event kind (index into ``ENGAGEMENT_EVENTS``)."""

    customer: IntArray
    kind: IntArray
    at_ms: IntArray


# -- reading the store -------------------------------------------------------------------------------
#
# Ids travel as 64-bit hashes: joining 20M events with profile_map on text ids in SQL, and
# handing millions of id strings to Python, was most of the read's time. The store hashes the
# ids (``_key``), numpy and Arrow's hash lookups resolve merged profiles with the few redirecting rows of profile_map and
# numbers the customers; only the buyers' id strings are fetched, once. Two different ids with
# one hash (odds ~1e-7 at millions of ids) would merge two customers: ``_numbered`` checks the
# buyers and refuses the read rather than mix their histories.

_HASH = {"duckdb": "hash", "clickhouse": "cityHash64"}
ORDER_KIND = -1
"""``kind`` of an order row in the events scan (engagement rows carry their index in ``ENGAGEMENT_EVENTS``)."""

UIntArray = npt.NDArray[np.uint64]


def _ms(backend: Backend, column: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=_EPOCH_MS[backend.capabilities.dialect], expressions=[column])


def _key(backend: Backend, column: exp.Expression) -> exp.Expression:
    """A 64-bit hash of a text column (never NULL: NULL hashes as '')."""
    text = exp.Coalesce(this=column, expressions=[exp.Literal.string("")])
    return exp.Anonymous(this=_HASH[backend.capabilities.dialect], expressions=[text])


def _uint(table: pa.Table, name: str) -> UIntArray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.uint64)


def _int(table: pa.Table, name: str, fill: int = 0) -> IntArray:
    return np.asarray(table.column(name).fill_null(fill).to_numpy(), dtype=np.int64)


@dataclass(frozen=True)
class Redirects:
    """The profile_map rows that move an id to another canonical profile (merged profiles), as keys.

    An id without such a row is its own canonical profile, as in the analytics queries
    (``Engine.redirects``): the map's millions of identity rows are not read.
    """

    source: UIntArray
    """Sorted keys of the merged-away ids."""
    target: UIntArray
    target_id: pa.Array
    """The canonical id text of each row."""

    def resolve(self, keys: UIntArray) -> tuple[UIntArray, IntArray]:
        """The canonical key of each key, and the redirect row used (-1: none)."""
        if len(self.source) == 0:
            return keys, np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.source, keys), len(self.source) - 1)
        hit = self.source[at] == keys
        return np.where(hit, self.target[at], keys), np.where(hit, at, -1).astype(np.int64)


def read_redirects(backend: Backend) -> Redirects:
    moved = (
        exp.select(
            exp.alias_(_key(backend, exp.column("profile_id")), "source"),
            exp.alias_(_key(backend, exp.column("canonical_id")), "target"),
            exp.alias_(exp.column("canonical_id"), "target_id"),
        )
        .from_(backend.table_ref(PROFILE_MAP))
        .where(exp.column("profile_id").neq(exp.column("canonical_id")))
    )
    table = backend.select(moved)
    source = _uint(table, "source")
    order = np.argsort(source, kind="stable")
    target_id = table.column("target_id").combine_chunks().take(pa.array(order, pa.int64()))
    return Redirects(source[order], _uint(table, "target")[order], target_id)


def _time(backend: Backend, at: dt.datetime) -> exp.Expr:
    """A time literal the engine compares with ``timestamp`` directly, so it skips row groups by the sort key."""
    return DIALECTS[backend.capabilities.dialect].timestamp(at)


def _scan_events(backend: Backend, until: dt.datetime | None, engagement_since: dt.datetime | None) -> pa.Table:
    """Orders and (from ``engagement_since``) engagement events with a profile, in one scan of events.

    Columns: profile (key), kind (``ORDER_KIND`` or the index in ``ENGAGEMENT_EVENTS``), at_ms, and for
    orders value, pos and the profile id text (NULL on engagement rows: only buyers' ids are fetched).
    """
    e = lambda name: exp.column(name, table="e")  # noqa: E731
    order = e("event").eq(exp.Literal.string(ORDER_EVENT))
    kind = exp.Case().when(order, exp.Literal.number(ORDER_KIND))
    for index, name in enumerate(ENGAGEMENT_EVENTS):
        kind = kind.when(e("event").eq(exp.Literal.string(name)), exp.Literal.number(index))
    value = exp.cast(exp.Coalesce(this=e("total"), expressions=[e("revenue"), exp.Literal.number(0)]), exp.DataType.build("DOUBLE"))
    pos = exp.cast(e("channel").eq(exp.Literal.string("pos")), exp.DataType.build("INT"))
    only_orders = lambda x: exp.Case().when(order.copy(), x)  # noqa: E731
    wanted: exp.Expr = order.copy()
    if engagement_since is not None:
        engaged = exp.and_(
            e("event").isin(*(exp.Literal.string(name) for name in ENGAGEMENT_EVENTS)),
            exp.GT(this=e("timestamp"), expression=_time(backend, engagement_since)),
        )
        wanted = exp.or_(wanted, engaged)
    query = (
        exp.select(
            exp.alias_(_key(backend, e("profile_id")), "profile"),
            exp.alias_(kind, "kind"),
            exp.alias_(_ms(backend, e("timestamp")), "at_ms"),
            exp.alias_(only_orders(value), "value"),
            exp.alias_(only_orders(pos), "pos"),
            exp.alias_(only_orders(e("profile_id")), "profile_id"),
        )
        .from_(backend.aliased_ref(EVENTS, "e"))
        .where(e("profile_id").is_(exp.null()).not_())
        .where(exp.Paren(this=wanted))
    )
    if until is not None:
        query = query.where(exp.LTE(this=e("timestamp"), expression=_time(backend, until)))
    return backend.select(query)


def _codes(keys: UIntArray) -> tuple[UIntArray, IntArray]:
    """Hash-encode keys: (the distinct keys in order of first appearance, each key's code)."""
    encoded = pc.dictionary_encode(pa.array(keys, pa.uint64()))
    distinct = np.asarray(encoded.dictionary.to_numpy(), dtype=np.uint64)
    return distinct, np.asarray(encoded.indices.to_numpy(), dtype=np.int64)


def _numbered(rows: pa.Table, profile: UIntArray, redirects: Redirects) -> tuple[UIntArray, IntArray, pa.Array]:
    """Number the buyers of order ``rows``: (customer keys, each row's customer, the customers' ids)."""
    keys, via = redirects.resolve(profile)
    customers, customer = _codes(keys)
    texts = rows.column("profile_id").combine_chunks()
    if pc.count_distinct(texts).as_py() != pc.count_distinct(pa.array(profile, pa.uint64())).as_py():
        raise RuntimeError(
            "two profile ids of buyers share one 64-bit hash; the history cannot be read by keys"
        )  # pragma: no cover - odds ~1e-7 at millions of ids
    # codes are given in order of first appearance: a row is its customer's first where its code tops all before it
    first = np.flatnonzero(customer == np.maximum.accumulate(customer)) if len(customer) else customer
    first = first[np.r_[True, customer[first][1:] != customer[first][:-1]]] if len(first) else first
    ids = texts.take(pa.array(first, pa.int64()))
    moved = via[first]
    if (moved >= 0).any():
        canonical = redirects.target_id.take(pa.array(np.maximum(moved, 0), pa.int64()))
        ids = pc.if_else(pa.array(moved >= 0), canonical, ids)
    return customers, customer, ids


def _index_in(values: UIntArray, keys: UIntArray) -> IntArray:
    """Position of each value among ``keys`` (hash lookup); -1 when absent."""
    found = pc.index_in(pa.array(values, pa.uint64()), value_set=pa.array(keys, pa.uint64()))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _orders_of(rows: pa.Table, customer: IntArray, ids: pa.Array) -> Orders:
    at_ms = _int(rows, "at_ms")
    value = np.nan_to_num(np.asarray(rows.column("value").to_numpy(zero_copy_only=False), dtype=np.float64))
    pos = _int(rows, "pos") > 0
    order = np.lexsort((at_ms, customer))
    return Orders(ids, customer[order], at_ms[order], value[order], pos[order])


def read_orders(backend: Backend, until: dt.datetime | None = None) -> Orders:
    """Every order with a buyer (up to ``until`` when given), resolved to canonical profiles."""
    rows = _scan_events(backend, until, None)
    _, customer, ids = _numbered(rows, _uint(rows, "profile"), read_redirects(backend))
    return _orders_of(rows, customer, ids)


def orders_from_table(table: pa.Table) -> Orders:
    """``Orders`` from columns customer (id text), at_ms, value and optionally pos."""
    encoded = pc.dictionary_encode(table.column("customer")).combine_chunks()
    customer = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    at_ms = np.asarray(table.column("at_ms").to_numpy(), dtype=np.int64)
    value = np.nan_to_num(np.asarray(table.column("value").to_numpy(zero_copy_only=False), dtype=np.float64))
    if "pos" in table.column_names:
        pos = np.asarray(table.column("pos").to_numpy(zero_copy_only=False), dtype=np.int64) > 0
    else:
        pos = np.zeros(len(customer), dtype=bool)
    order = np.lexsort((at_ms, customer))
    return Orders(encoded.dictionary, customer[order], at_ms[order], value[order], pos[order])


def _index_of(ids: pa.Array, values: pa.Array | pa.ChunkedArray) -> IntArray:
    """Position of each value in ``ids``; -1 when absent."""
    found = pc.index_in(values, value_set=ids)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _texts(backend: Backend, column: str) -> tuple[UIntArray, pa.Array]:
    """The distinct values of an order_lines text column with their keys."""
    query = (
        exp.select(exp.alias_(_key(backend, exp.column(column)), "key"), exp.alias_(exp.column(column), "text"))
        .from_(backend.table_ref(ORDER_LINES))
        .group_by(exp.column(column))
    )
    table = backend.select(query)
    return _uint(table, "key"), table.column("text").combine_chunks()


def _dictionary(keys: UIntArray, known: UIntArray, texts: pa.Array) -> tuple[IntArray, pa.Array]:
    """Codes 0..k-1 for ``keys`` and the text of each code (``known``/``texts``: every key's text)."""
    distinct, code = _codes(keys)
    return code, texts.take(pa.array(np.maximum(_index_in(distinct, known), 0), pa.int64()))


def read_lines(backend: Backend, customers: UIntArray, redirects: Redirects) -> Lines:
    """Order lines of ``customers`` (sorted canonical keys), with each product's catalogue consumption lifetime."""
    line = lambda name: exp.column(name, table="l")  # noqa: E731
    query = (
        exp.select(
            exp.alias_(_key(backend, line("profile_id")), "profile"),
            exp.alias_(_ms(backend, line("timestamp")), "at_ms"),
            exp.alias_(_key(backend, line("product_id")), "product"),
            exp.alias_(exp.Coalesce(this=line("quantity"), expressions=[exp.Literal.number(1)]), "quantity"),
            exp.alias_(_key(backend, line("category")), "category"),
        )
        .from_(backend.aliased_ref(ORDER_LINES, "l"))
        .where(line("event").eq(exp.Literal.string(ORDER_EVENT)))
        .where(line("profile_id").is_(exp.null()).not_())
        .where(line("product_id").is_(exp.null()).not_())
    )
    table = backend.select(query)
    canonical, _ = redirects.resolve(_uint(table, "profile"))
    customer = _index_in(canonical, customers)
    keep = customer >= 0
    product, products = _dictionary(_uint(table, "product")[keep], *_texts(backend, "product_id"))
    category, categories = _dictionary(_uint(table, "category")[keep], *_texts(backend, "category"))
    catalogue = backend.select(exp.select("product_id", "consumption_days").from_(backend.table_ref(PRODUCTS)))
    where = _index_of(catalogue.column("product_id").combine_chunks(), products)
    days = np.asarray(catalogue.column("consumption_days").to_numpy(zero_copy_only=False), dtype=np.float64)
    consumption = np.where(where >= 0, days[np.maximum(where, 0)] if len(days) else np.nan, np.nan)
    consumption = np.where(consumption > 0, consumption, np.nan)
    return Lines(
        customer=customer[keep],
        at_ms=_int(table, "at_ms")[keep],
        product=product,
        quantity=np.asarray(table.column("quantity").to_numpy(zero_copy_only=False), dtype=np.float64)[keep],
        room=_top_level(categories)[category],
        products=products,
        consumption_days=consumption,
    )


def _top_level(category: pa.Array) -> IntArray:
    """A code per category for its top level (the text before the first '/' or ' > '); computed on the distinct texts."""
    room = pc.list_element(pc.split_pattern_regex(category.fill_null(""), pattern=r"/| > "), 0)
    encoded = pc.dictionary_encode(room)
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


# -- per-customer summaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The RFM summary BTYD models fit on, per customer with an order (index into ``Orders.ids``).

    As ``lifetimes.utils.summary_data_from_transaction_data``: purchases are counted per
    day (several orders on one day are one purchase, their values summed), ``frequency``
    is the number of purchase days after the first, ``recency`` the time from the first
    to the last, ``T`` from the first to the end of observation, in ``unit_days``;
    ``monetary`` is the mean value of the repeat purchase days (0 without one).
    """

    customer: IntArray
    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary: FloatArray
    first_ms: IntArray
    last_ms: IntArray
    orders: IntArray
    spend: FloatArray
    unit_days: float


def summarise(orders: Orders, end_ms: int, unit_days: float = 7.0) -> Summary:
    """Summaries of the customers with orders at or before ``end_ms`` (``orders`` sorted by customer, time)."""
    orders = orders.before(end_ms)
    if len(orders.customer) == 0:
        none, empty = np.zeros(0, np.int64), np.zeros(0)
        return Summary(none, empty, empty, empty, empty, none, none, none, empty, unit_days)
    day = orders.at_ms // DAY_MS
    end_day = end_ms // DAY_MS
    # one row per (customer, day): orders sorted by customer then time, so days are sorted within a customer
    new_day = np.ones(len(day), dtype=bool)
    new_day[1:] = (orders.customer[1:] != orders.customer[:-1]) | (day[1:] != day[:-1])
    day_start = np.flatnonzero(new_day)
    day_customer, day_of = orders.customer[day_start], day[day_start]
    day_value = np.add.reduceat(orders.value, day_start)
    first_row = np.ones(len(day_customer), dtype=bool)
    first_row[1:] = day_customer[1:] != day_customer[:-1]
    starts = np.flatnonzero(first_row)
    ends = np.append(starts[1:], len(day_customer)) - 1
    customer = day_customer[starts]
    days_count = ends - starts + 1
    first_day, last_day = day_of[starts], day_of[ends]
    repeat_value = np.add.reduceat(day_value, starts) - day_value[starts]
    frequency = (days_count - 1).astype(np.float64)
    monetary = np.divide(repeat_value, frequency, out=np.zeros_like(repeat_value), where=frequency > 0)
    order_start = np.flatnonzero(np.r_[True, orders.customer[1:] != orders.customer[:-1]])
    order_end = np.append(order_start[1:], len(orders.customer)) - 1
    return Summary(
        customer=customer,
        frequency=frequency,
        recency=(last_day - first_day) / unit_days,
        T=(end_day - first_day) / unit_days,
        monetary=monetary,
        first_ms=orders.at_ms[order_start],
        last_ms=orders.at_ms[order_end],
        orders=(order_end - order_start + 1).astype(np.int64),
        spend=np.add.reduceat(orders.value, order_start),
        unit_days=unit_days,
    )


@dataclass(frozen=True)
class History:
    """Everything the models read, up to ``now_ms``: orders, their lines, recent engagement."""

    orders: Orders
    lines: Lines
    engagement: Engagement
    now_ms: int
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Derived arrays several models share (the scoring snapshot of the features)."""

    @property
    def now(self) -> dt.datetime:
        return from_ms(self.now_ms)


def read_history(backend: Backend, now: dt.datetime, engagement_days: int = 400) -> History:
    """The history at ``now`` (later events are ignored), with engagement of the last ``engagement_days``.

    One scan of events (orders and engagement), one of order lines, and the few redirecting
    rows of profile_map; ``timings`` in the cache tells where the time went.
    """
    started = time.perf_counter()
    now_ms = to_ms(now)
    redirects = read_redirects(backend)
    rows = _scan_events(backend, now, now - dt.timedelta(days=engagement_days))
    profile = _uint(rows, "profile")
    kind = _int(rows, "kind", fill=-2)
    is_order = kind == ORDER_KIND
    order_rows = rows.filter(pa.array(is_order))
    customers, customer, ids = _numbered(order_rows, profile[is_order], redirects)
    orders = _orders_of(order_rows, customer, ids)
    engaged = kind >= 0
    canonical, _ = redirects.resolve(profile[engaged])
    who = _index_in(canonical, customers)
    at_ms = _int(rows, "at_ms")[engaged]
    keep = (who >= 0) & (at_ms <= now_ms)
    engagement = Engagement(who[keep], kind[engaged][keep], at_ms[keep])
    events_s = time.perf_counter() - started
    lines = read_lines(backend, customers, redirects)
    keep = lines.at_ms <= now_ms
    lines = Lines(
        lines.customer[keep], lines.at_ms[keep], lines.product[keep], lines.quantity[keep],
        lines.room[keep], lines.products, lines.consumption_days,
    )
    timings = {"read_events_s": events_s, "read_lines_s": time.perf_counter() - started - events_s}
    return History(orders, lines, engagement, now_ms, cache={"timings": timings})
