"""Stable SQL views for BI tools, on the DuckDB file or on ClickHouse directly.

The tables of the store are an implementation detail (columns come and go, merged
profiles are redirected through ``profile_map``, current-state tables need ``FINAL``
on ClickHouse). The ``bi_*`` views are the contract: their names and columns only grow,
and ``docs/bi-views.md`` documents every column. Each view is a sqlglot query rendered
for the engine, so both engines get the same definitions.

Every view is already resolved to canonical profiles: a person merged from several
profile ids appears once, with all their history.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from opencdp.analytics.sql import Engine, canonical, col, lit, order_lines, orders
from opencdp.storage.base import Backend
from opencdp.storage.schema import (
    EVENTS,
    PROFILE_SCORES,
    SCORE_MODELS,
    SEGMENT_MEMBERS,
    SEGMENTS,
)

DATE = exp.DataType.build("DATE")


def _date(ts: exp.Expr) -> exp.Expr:
    return exp.alias_(exp.cast(ts, DATE), "date")


def bi_events(engine: Engine) -> exp.Select:
    names = ("message_id", "type", "event", "name", "timestamp", "received_at", "user_id", "anonymous_id", "source", "channel",
             "order_id", "revenue", "total", "currency", "product_id", "category", "price", "quantity", "store_id",
             "properties", "context")  # fmt: skip
    return (
        exp.select(
            *(col(n, "e") for n in names),
            _date(col("timestamp", "e")),
            exp.alias_(canonical(), "profile_id"),
            exp.alias_(col("profile_id", "e"), "original_profile_id"),
        )
        .from_(engine.table(EVENTS, "e"))
        .join(engine.redirects("m"), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "e")), join_type="LEFT")
    )


def bi_orders(engine: Engine) -> exp.Select:
    source = orders(engine)
    source.select(exp.alias_(col("order_id", "e"), "order_id"), exp.alias_(col("channel", "e"), "channel"),
                  exp.alias_(col("currency", "e"), "currency"), copy=False)  # fmt: skip
    return exp.select("*", _date(col("ts"))).from_(exp.alias_(exp.Subquery(this=source), "o", table=True))


def bi_order_lines(engine: Engine) -> exp.Select:
    source = order_lines(engine)
    source.select(
        exp.alias_(col("order_id", "l"), "order_id"), exp.alias_(col("line_no", "l"), "line_no"),
        exp.alias_(col("price", "l"), "price"), exp.alias_(col("quantity", "l"), "quantity"),
        exp.alias_(col("discount", "l"), "discount"), exp.alias_(col("brand", "l"), "brand"),
        exp.alias_(col("channel", "l"), "channel"), exp.alias_(engine.room(col("category", "l")), "room"),
        copy=False,
    )  # fmt: skip
    return exp.select("*", _date(col("ts"))).from_(exp.alias_(exp.Subquery(this=source), "l", table=True))


def bi_profiles(engine: Engine) -> exp.Select:
    """One row per canonical profile with any event: first and last seen, counts, orders and revenue."""
    is_order = exp.EQ(this=col("event", "e"), expression=lit("Order Completed"))
    amount = exp.Coalesce(this=col("total", "e"), expressions=[col("revenue", "e"), lit(0.0)])
    return (
        exp.select(
            exp.alias_(canonical(), "profile_id"),
            exp.alias_(exp.Max(this=col("user_id", "e")), "user_id"),
            exp.alias_(exp.Min(this=col("timestamp", "e")), "first_seen"),
            exp.alias_(exp.Max(this=col("timestamp", "e")), "last_seen"),
            exp.alias_(exp.Count(this=exp.Star()), "events"),
            exp.alias_(exp.Sum(this=exp.Case().when(is_order, lit(1)).else_(lit(0))), "orders"),
            exp.alias_(exp.Sum(this=exp.Case().when(is_order.copy(), amount).else_(lit(0.0))), "revenue"),
            exp.alias_(exp.Max(this=exp.Case().when(is_order.copy(), col("timestamp", "e")).else_(exp.Null())), "last_order_at"),
        )
        .from_(engine.table(EVENTS, "e"))
        .join(engine.redirects("m"), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "e")), join_type="LEFT")
        .where(exp.Not(this=exp.Is(this=col("profile_id", "e"), expression=exp.Null())))
        .group_by(canonical())
    )


def bi_segment_members(engine: Engine) -> exp.Select:
    return (
        exp.select(col("segment_id", "sm"), exp.alias_(col("name", "s"), "segment_name"), col("profile_id", "sm"), col("since", "sm"))
        .from_(engine.table(SEGMENT_MEMBERS, "sm"))
        .join(engine.table(SEGMENTS, "s"), on=exp.EQ(this=col("segment_id", "s"), expression=col("segment_id", "sm")), join_type="LEFT")
        .where(col("member", "sm").eq(exp.true()))
    )


def bi_scores(engine: Engine) -> exp.Select:
    """Current version of every score (computed traits stored by RFM, interest, predictions ...)."""
    return (
        exp.select(
            exp.alias_(col("name", "p"), "name"), col("profile_id", "p"), exp.alias_(col("number", "p"), "number_value"),
            exp.alias_(col("text", "p"), "text_value"), col("kind", "r"), col("model_version", "p"), col("computed_at", "r"),
        )
        .from_(engine.table(PROFILE_SCORES, "p"))
        .join(engine.table(SCORE_MODELS, "r"), on=exp.and_(
            exp.EQ(this=col("name", "r"), expression=col("name", "p")),
            exp.EQ(this=col("model_version", "r"), expression=col("model_version", "p")),
        ))
    )  # fmt: skip


VIEWS: dict[str, Callable[[Engine], exp.Select]] = {
    "bi_events": bi_events,
    "bi_orders": bi_orders,
    "bi_order_lines": bi_order_lines,
    "bi_profiles": bi_profiles,
    "bi_segment_members": bi_segment_members,
    "bi_scores": bi_scores,
}


def view_sql(backend: Backend, name: str) -> str:
    engine = Engine(backend)
    create = exp.Create(this=exp.to_table(name), kind="VIEW", replace=True, expression=VIEWS[name](engine))
    return backend.render(create)


def create_views(backend: Backend) -> list[str]:
    """Create (or replace) every ``bi_*`` view; returns their names."""
    for name in VIEWS:
        backend.execute(view_sql(backend, name))
    return list(VIEWS)
