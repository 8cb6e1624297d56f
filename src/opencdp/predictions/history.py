"""Purchase history read from the store: every order of every canonical profile, as arrays.

An order is an ``Order Completed`` event, online or at the till (imports and the POS feed
write the same event with ``channel = 'pos'``). Its buyer is the event's profile resolved
through ``profile_map`` to the canonical profile, so the orders of merged profiles count for
the survivor; orders without a profile (anonymous receipts) are left out. Its value is the
``total`` column, or ``revenue`` where an order has no total.

The models need the whole history of the buyers anyway, so it is read once with one
query per source (orders, order lines, engagement events) and everything else — summaries
at any cutoff, features, labels — is computed on the arrays. Times are epoch milliseconds
(UTC) so both engines hand over the same numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

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


def _ms(backend: Backend, column: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=_EPOCH_MS[backend.capabilities.dialect], expressions=[column])


def _canonical(alias: str) -> exp.Expression:
    return exp.Coalesce(this=exp.column("canonical_id", table="pm"), expressions=[exp.column("profile_id", table=alias)])


def _with_profiles(backend: Backend, table: exp.Expression, alias: str) -> exp.Select:
    return (
        exp.select()
        .from_(table)
        .join(
            backend.aliased_ref(PROFILE_MAP, "pm"),
            on=exp.column("profile_id", table="pm").eq(exp.column("profile_id", table=alias)),
            join_type="left",
        )
        .where(exp.column("profile_id", table=alias).is_(exp.null()).not_())
    )


def read_orders(backend: Backend, until: dt.datetime | None = None) -> Orders:
    """Every order with a buyer (up to ``until`` when given), resolved to canonical profiles."""
    e = lambda name: exp.column(name, table="e")  # noqa: E731
    value = exp.Coalesce(this=e("total"), expressions=[e("revenue"), exp.Literal.number(0)])
    query = _with_profiles(backend, backend.aliased_ref(EVENTS, "e"), "e").select(
        exp.alias_(_canonical("e"), "customer"),
        exp.alias_(_ms(backend, e("timestamp")), "at_ms"),
        exp.alias_(exp.cast(value, exp.DataType.build("DOUBLE")), "value"),
        exp.alias_(exp.cast(e("channel").eq(exp.Literal.string("pos")), exp.DataType.build("INT")), "pos"),
    )
    query = query.where(e("event").eq(exp.Literal.string(ORDER_EVENT)))
    if until is not None:
        query = query.where(_ms(backend, e("timestamp")) <= exp.Literal.number(to_ms(until)))
    table = backend.select(query)
    return orders_from_table(table)


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


def read_lines(backend: Backend, orders: Orders) -> Lines:
    """Order lines of the customers in ``orders``, with each product's catalogue consumption lifetime."""
    query = _with_profiles(backend, backend.aliased_ref(ORDER_LINES, "l"), "l").select(
        exp.alias_(_canonical("l"), "customer"),
        exp.alias_(_ms(backend, exp.column("timestamp", table="l")), "at_ms"),
        exp.alias_(exp.column("product_id", table="l"), "product_id"),
        exp.alias_(exp.Coalesce(this=exp.column("quantity", table="l"), expressions=[exp.Literal.number(1)]), "quantity"),
        exp.alias_(exp.column("category", table="l"), "category"),
    )
    query = query.where(exp.column("event", table="l").eq(exp.Literal.string(ORDER_EVENT)))
    query = query.where(exp.column("product_id", table="l").is_(exp.null()).not_())
    table = backend.select(query)
    customer = _index_of(orders.ids, table.column("customer"))
    keep = customer >= 0
    table = table.filter(pa.array(keep))
    products = pc.dictionary_encode(table.column("product_id")).combine_chunks()
    catalogue = backend.select(
        exp.select("product_id", "consumption_days").from_(backend.table_ref(PRODUCTS))
    )
    where = _index_of(catalogue.column("product_id").combine_chunks(), products.dictionary)
    days = np.asarray(catalogue.column("consumption_days").to_numpy(zero_copy_only=False), dtype=np.float64)
    consumption = np.where(where >= 0, days[np.maximum(where, 0)] if len(days) else np.nan, np.nan)
    consumption = np.where(consumption > 0, consumption, np.nan)
    return Lines(
        customer=customer[keep],
        at_ms=np.asarray(table.column("at_ms").to_numpy(), dtype=np.int64),
        product=np.asarray(products.indices.to_numpy(zero_copy_only=False), dtype=np.int64),
        quantity=np.asarray(table.column("quantity").to_numpy(zero_copy_only=False), dtype=np.float64),
        room=_top_level(table.column("category")),
        products=products.dictionary,
        consumption_days=consumption,
    )


def _top_level(category: pa.ChunkedArray) -> IntArray:
    room = pc.list_element(pc.split_pattern_regex(category.fill_null(""), pattern=r"/| > "), 0)
    encoded = pc.dictionary_encode(room.combine_chunks())
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def read_engagement(backend: Backend, orders: Orders, since: dt.datetime) -> Engagement:
    """Engagement events (``ENGAGEMENT_EVENTS``) of the customers in ``orders`` since ``since``."""
    e = lambda name: exp.column(name, table="e")  # noqa: E731
    query = _with_profiles(backend, backend.aliased_ref(EVENTS, "e"), "e").select(
        exp.alias_(_canonical("e"), "customer"),
        exp.alias_(e("event"), "event"),
        exp.alias_(_ms(backend, e("timestamp")), "at_ms"),
    )
    query = query.where(e("event").isin(*(exp.Literal.string(name) for name in ENGAGEMENT_EVENTS)))
    query = query.where(_ms(backend, e("timestamp")) > exp.Literal.number(to_ms(since)))
    table = backend.select(query)
    customer = _index_of(orders.ids, table.column("customer"))
    kind = _index_of(pa.array(ENGAGEMENT_EVENTS), table.column("event"))
    keep = (customer >= 0) & (kind >= 0)
    return Engagement(customer[keep], kind[keep], np.asarray(table.column("at_ms").to_numpy(), dtype=np.int64)[keep])


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
    """The history at ``now`` (later events are ignored), with engagement of the last ``engagement_days``."""
    orders = read_orders(backend, until=now)
    lines = read_lines(backend, orders)
    now_ms = to_ms(now)
    keep = lines.at_ms <= now_ms
    lines = Lines(
        lines.customer[keep], lines.at_ms[keep], lines.product[keep], lines.quantity[keep],
        lines.room[keep], lines.products, lines.consumption_days,
    )
    engagement = read_engagement(backend, orders, now - dt.timedelta(days=engagement_days))
    keep = engagement.at_ms <= now_ms
    engagement = Engagement(engagement.customer[keep], engagement.kind[keep], engagement.at_ms[keep])
    return History(orders, lines, engagement, now_ms)
