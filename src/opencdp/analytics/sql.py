"""The relations every report reads, built once as sqlglot expressions for both engines.

Reports never read ``events`` directly: they read *orders* (online ``Order Completed``
events and POS receipts, which the imports also write as ``Order Completed`` with
channel ``pos`` and a store id), *order lines* and *activity*, each already resolved to
the canonical profile through ``profile_map`` (a merged person is counted once, with
the history of all their ids). What differs between DuckDB and ClickHouse is kept in
``Engine``: epoch milliseconds, time literals and a few string functions.

Times are compared with literals built from Python datetimes (never from user text),
so DuckDB can skip row groups by the events' sort key (event, timestamp).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlglot import exp

from opencdp.segments.sql import DIALECTS, Dialect
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP, Table

ORDER_EVENTS: tuple[str, ...] = ("Order Completed",)
OFFLINE_CHANNELS: tuple[str, ...] = ("pos", "offline", "store")
"""Channels of orders placed in a shop; an order with a store id is offline too."""
DAY_MS = 86_400_000
ROOM_PATTERN = "^([^>/]+)"
"""A category path's first level: the text before the first '>' or '/'."""
INTERVALS = ("day", "week", "month")


def lit(value: str | float | int) -> exp.Expr:
    if isinstance(value, str):
        return exp.Literal.string(value)
    return exp.Literal.number(value)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


class Engine:
    """The engine-specific pieces of report SQL, for one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.capabilities.dialect
        self.dialect: Dialect = DIALECTS[self.name]

    @property
    def clickhouse(self) -> bool:
        return self.name == "clickhouse"

    def time(self, value: dt.datetime) -> exp.Expr:
        return self.dialect.timestamp(value)

    def epoch_ms(self, ts: exp.Expr) -> exp.Expr:
        if self.clickhouse:
            return exp.Anonymous(this="toUnixTimestamp64Milli", expressions=[ts])
        return exp.Anonymous(this="epoch_ms", expressions=[ts])

    def day_number(self, ts: exp.Expr) -> exp.Expr:
        """Days since 1970-01-01 (UTC) as an integer."""
        return self.int_div(self.epoch_ms(ts), DAY_MS)

    def int_div(self, value: exp.Expr, by: int) -> exp.Expr:
        if self.clickhouse:
            return exp.Anonymous(this="intDiv", expressions=[value, lit(by)])
        return exp.Paren(this=exp.IntDiv(this=exp.Paren(this=value), expression=lit(by)))

    def bucket(self, ts: exp.Expr, interval: str) -> exp.Expr:
        """An integer per day, ISO week (Monday first) or calendar month; ``bucket_start`` reads it back."""
        if interval == "day":
            return self.day_number(ts)
        if interval == "week":  # 1970-01-01 was a Thursday: day + 3 is a multiple of 7 on Mondays
            return self.int_div(exp.Add(this=self.day_number(ts), expression=lit(3)), 7)
        utc = self.utc(ts)
        return exp.Paren(
            this=exp.Add(
                this=exp.Mul(this=exp.Year(this=utc), expression=lit(12)),
                expression=exp.Sub(this=exp.Month(this=utc.copy()), expression=lit(1)),
            )
        )

    def utc(self, ts: exp.Expr) -> exp.Expr:
        """``ts`` as a UTC wall-clock time whose year and month are cheap to read.

        DuckDB reads the parts of a TIMESTAMPTZ through the ICU calendar of the session's
        zone, about 15x slower than from a plain TIMESTAMP: a year of monthly buckets over
        the orders spent most of its time there. ClickHouse's DateTime64(6, 'UTC') is one already.
        """
        if self.clickhouse:
            return ts
        return exp.Anonymous(this="make_timestamp", expressions=[exp.Anonymous(this="epoch_us", expressions=[ts])])

    def days_between(self, start: exp.Expr, end: exp.Expr) -> exp.Expr:
        """Fractional days from ``start`` to ``end``."""
        diff = exp.Sub(this=self.epoch_ms(end), expression=self.epoch_ms(start))
        return exp.Div(this=exp.cast(diff, exp.DataType.build("DOUBLE")), expression=lit(float(DAY_MS)))

    def json_text(self, column: exp.Expr, *path: str) -> exp.Expr:
        return self.dialect.json_text(column, tuple(path))

    def table(self, table: Table, alias: str) -> exp.Expr:
        return self.backend.aliased_ref(table, alias)

    def room(self, category: exp.Expr) -> exp.Expr:
        """The first level of a category path ("Kitchen > Chairs", "Kitchen/Chairs" -> "Kitchen"), as ``room_of``."""
        name = "extract" if self.clickhouse else "regexp_extract"
        first = exp.Anonymous(this=name, expressions=[category, lit(ROOM_PATTERN)])
        if not self.clickhouse:
            first.append("expressions", lit(1))
        return exp.Nullif(this=exp.Trim(this=first), expression=lit(""))

    def redirects(self, alias: str = "m", *, keyed: bool = False) -> exp.Expr:
        """The rows of profile_map that move a profile id elsewhere (merged profiles), under ``alias``.

        Joining these instead of the whole map gives the same canonical ids (an id without a
        row is its own canonical profile) while the join's hash table holds only the merged
        ids: at 1M customers the whole map made the join most of a report's time. On
        ClickHouse the filter applies after ``FINAL``, to each id's current row.
        """
        columns: list[exp.Expr] = [col("profile_id"), col("canonical_id")]
        if keyed:  # both ids as ``key``: to resolve rows that were already grouped by keys
            columns = [exp.alias_(self.key(c), c.name) for c in columns]
        moved = (
            exp.select(*columns)
            .from_(self.backend.table_ref(PROFILE_MAP))
            .where(exp.NEQ(this=col("profile_id"), expression=col("canonical_id")))
        )
        return exp.alias_(exp.Subquery(this=moved), alias, table=True)

    def key(self, text: exp.Expr) -> exp.Expr:
        """A 64-bit hash of an id (NULL stays NULL), for queries that only count or join profiles.

        Grouping and joining 20M events on text ids was most of the cohort, RFM and activity
        reports' time; on integers the engines hash and compare a word per row. Two ids with one
        hash would count as one person (odds ~1e-7 among millions of ids): harmless in a report,
        so scoring runs, which store per-profile values, keep the text ids.
        """
        if self.clickhouse:
            return exp.Anonymous(this="cityHash64", expressions=[text])
        hashed = exp.Anonymous(this="hash", expressions=[text])
        return exp.Case().when(exp.Is(this=text.copy(), expression=exp.Null()), exp.Null()).else_(hashed)

    def with_shared(self, query: exp.Select, ctes: Sequence[tuple[str, exp.Query]]) -> exp.Select:
        """``query`` with CTEs that it reads several times, computed once.

        DuckDB materialises such CTEs by itself; ClickHouse inlines every use (the cohort
        query read the orders three times) unless the CTE is ``MATERIALIZED`` and the query
        enables it.
        """
        for name, cte in ctes:
            query = query.with_(name, as_=cte, materialized=True)
        if self.clickhouse:
            query.set("settings", [exp.EQ(this=exp.column("enable_materialized_cte"), expression=lit(1))])
        return query

    def any_value(self, value: exp.Expr) -> exp.Expr:
        return exp.Anonymous(this="any" if self.clickhouse else "any_value", expressions=[value])


def bucket_start(index: int, interval: str) -> dt.date:
    """The first day of the bucket ``Engine.bucket`` numbered ``index``."""
    epoch = dt.date(1970, 1, 1)
    if interval == "day":
        return epoch + dt.timedelta(days=index)
    if interval == "week":
        return epoch + dt.timedelta(days=index * 7 - 3)
    return dt.date(index // 12, index % 12 + 1, 1)


def bucket_of(day: dt.date, interval: str) -> int:
    """The bucket of a date, as ``Engine.bucket`` numbers it."""
    days = (day - dt.date(1970, 1, 1)).days
    if interval == "day":
        return days
    if interval == "week":
        return (days + 3) // 7
    return day.year * 12 + day.month - 1


def buckets(start: dt.datetime, end: dt.datetime, interval: str) -> list[int]:
    """Every bucket touched by ``[start, end)``, in order (empty when the range is)."""
    if end <= start:
        return []
    first = bucket_of(start.astimezone(dt.UTC).date(), interval)
    last = bucket_of((end - dt.timedelta(milliseconds=1)).astimezone(dt.UTC).date(), interval)
    return list(range(first, last + 1))


def in_range(engine: Engine, ts: exp.Expr, start: dt.datetime | None, end: dt.datetime | None) -> list[exp.Expr]:
    conditions: list[exp.Expr] = []
    if start is not None:
        conditions.append(exp.GTE(this=ts, expression=engine.time(start)))
    if end is not None:
        conditions.append(exp.LT(this=ts.copy(), expression=engine.time(end)))
    return conditions


def canonical(alias: str = "m", events: str = "e") -> exp.Expr:
    """The canonical profile of an event row: its profile_map target, else its own profile id."""
    return exp.Coalesce(this=col("canonical_id", alias), expressions=[col("profile_id", events)])


def events_of(
    engine: Engine,
    names: Sequence[str],
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    extra: Sequence[exp.Expr] = (),
    where: Sequence[exp.Expr] = (),
    resolve: bool = True,
    keyed: bool = False,
) -> exp.Select:
    """``profile_id`` (canonical), ``ts`` and ``extra`` columns of the events named ``names`` in a range.

    ``resolve=False`` skips the join with profile_map, for totals that do not look at profiles;
    ``keyed=True`` gives ``profile_id`` as ``Engine.key`` of the canonical id (an integer).
    """
    conditions: list[exp.Expr] = [exp.In(this=col("event", "e"), expressions=[lit(n) for n in names])]
    conditions += in_range(engine, col("timestamp", "e"), start, end)
    conditions += list(where)
    profile = canonical() if resolve else col("profile_id", "e")
    if keyed:
        profile = engine.key(profile)
    query = exp.select(exp.alias_(profile, "profile_id"), exp.alias_(col("timestamp", "e"), "ts"), *extra).from_(engine.table(EVENTS, "e"))
    if resolve:
        query = query.join(
            engine.redirects("m"), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "e")), join_type="LEFT"
        )
    return query.where(exp.and_(*conditions))


def offline(channel: exp.Expr, store: exp.Expr) -> exp.Expr:
    return exp.or_(
        exp.In(this=channel, expressions=[lit(c) for c in OFFLINE_CHANNELS]),
        exp.Not(this=exp.Is(this=store, expression=exp.Null())),
    )


def orders(
    engine: Engine,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    names: Sequence[str] = ORDER_EVENTS,
    resolve: bool = True,
    keyed: bool = False,
) -> exp.Select:
    """One row per order: ``profile_id, ts, amount, kind (online|offline), store_id, message_id``.

    ``amount`` is the order's ``total``, else its ``revenue``, else 0 (an order without a
    sum still counts as an order).
    """
    amount = exp.Coalesce(this=col("total", "e"), expressions=[col("revenue", "e"), lit(0.0)])
    kind = exp.Case().when(offline(col("channel", "e"), col("store_id", "e")), lit("offline")).else_(lit("online"))
    return events_of(
        engine,
        names,
        start,
        end,
        extra=[
            exp.alias_(exp.cast(amount, exp.DataType.build("DOUBLE")), "amount"),
            exp.alias_(kind, "kind"),
            exp.alias_(col("store_id", "e"), "store_id"),
            exp.alias_(col("message_id", "e"), "message_id"),
        ],
        resolve=resolve,
        keyed=keyed,
    )


def order_lines(
    engine: Engine,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    resolve: bool = True,
    keyed: bool = False,
) -> exp.Select:
    """One row per order line: ``profile_id, ts, category, product_id, line_amount, kind, store_id, message_id``
    (``keyed``: ``profile_id`` as ``Engine.key``)."""
    price = exp.Coalesce(this=col("price", "l"), expressions=[lit(0.0)])
    quantity = exp.Coalesce(this=col("quantity", "l"), expressions=[lit(1.0)])
    discount = exp.Coalesce(this=col("discount", "l"), expressions=[lit(0.0)])
    amount = exp.Sub(this=exp.Mul(this=price, expression=quantity), expression=discount)
    conditions: list[exp.Expr] = [exp.In(this=col("event", "l"), expressions=[lit(n) for n in ORDER_EVENTS])]
    conditions += in_range(engine, col("timestamp", "l"), start, end)
    query = (
        exp.select(
            exp.alias_(_profile(engine, canonical("m", "l") if resolve else col("profile_id", "l"), keyed), "profile_id"),
            exp.alias_(col("timestamp", "l"), "ts"),
            exp.alias_(col("category", "l"), "category"),
            exp.alias_(col("product_id", "l"), "product_id"),
            exp.alias_(exp.cast(amount, exp.DataType.build("DOUBLE")), "line_amount"),
            exp.alias_(
                exp.Case().when(offline(col("channel", "l"), col("store_id", "l")), lit("offline")).else_(lit("online")),
                "kind",
            ),
            exp.alias_(col("store_id", "l"), "store_id"),
            exp.alias_(col("message_id", "l"), "message_id"),
        )
        .from_(engine.table(ORDER_LINES, "l"))
    )
    if resolve:
        query = query.join(
            engine.redirects("m"), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "l")), join_type="LEFT"
        )
    return query.where(exp.and_(*conditions))


def _profile(engine: Engine, profile: exp.Expr, keyed: bool) -> exp.Expr:
    return engine.key(profile) if keyed else profile


def room_of(category: str | None) -> str | None:
    """The room (or top category group) of a category path: its first level ("Kitchen > Chairs" -> "Kitchen")."""
    if not category:
        return None
    found = re.match(ROOM_PATTERN, category)
    return (found.group(1).strip() or None) if found else None
