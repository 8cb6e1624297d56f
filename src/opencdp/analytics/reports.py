"""Ready reports: named, parameterised, answered as chart-ready JSON.

Every report answers ``{"report", "params", "series": [{"name", "points": [[x, y], ...]}],
"table": [...]}``: ``series`` is what a chart draws (x is an ISO date for time series,
a label otherwise), ``table`` the same figures (and more) as rows. ``REPORTS`` maps a
name to its function, the parameters it takes and a description; ``run_report`` checks
the parameters (unknown or bad ones are a ``ReportError`` naming them) and runs it.

A range with no data gives series whose points are all zero for time buckets, or empty
lists — never an error. All SQL is built with sqlglot (``analytics.sql``) and runs on
DuckDB and ClickHouse alike; what is small (buckets, shaping) is done in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlglot import exp

from opencdp.analytics import cohorts, interest, rfm
from opencdp.analytics.params import (
    Period,
    ReportError,
    choice,
    integer,
    names,
    number,
    period,
    unknown,
)
from opencdp.analytics.sql import (
    Engine,
    bucket_start,
    buckets,
    canonical,
    col,
    events_of,
    in_range,
    lit,
    order_lines,
    orders,
)
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, IDENTITIES, SEGMENT_MEMBERS, SEGMENTS

Raw = Mapping[str, Any]
PERIOD = ("from", "to", "interval")
# events the platform writes itself, or that a message's delivery writes: not a person's activity
SYSTEM_EVENTS = (
    "Segment Entered", "Segment Exited", "RFM Cell Changed", "Engagement Cell Changed",
    "Email Delivered", "Email Sent", "Email Bounced", "SMS Delivered", "SMS Sent", "Push Delivered",
)  # fmt: skip
OPEN_EVENTS = ("Email Opened", "Push Opened")
CLICK_EVENTS = ("Email Link Clicked", "SMS Link Clicked")
UNSUBSCRIBE_EVENTS = ("Unsubscribed",)
SESSION_GAP_MS = 30 * 60 * 1000
REACH = {"email": "email", "sms": "phone", "push": "device_token"}
"""Channel -> the identifier kind that makes a profile reachable on it."""


@dataclass(frozen=True)
class ReportSpec:
    run: Callable[[Backend, Raw, dt.datetime], dict[str, Any]]
    params: tuple[str, ...]
    description: str


def _sub(query: exp.Query, alias: str) -> exp.Expr:
    return exp.alias_(exp.Subquery(this=query), alias, table=True)


def _not_null(name: str, table: str | None = None) -> exp.Expr:
    return exp.Not(this=exp.Is(this=col(name, table), expression=exp.Null()))


def _time_series(rows: list[dict[str, Any]], period: Period, value: str, name: str | None = None) -> dict[str, Any]:
    """Points for every bucket of the period (0 where there were no rows)."""
    by_bucket = {int(r["b"]): float(r[value] or 0) for r in rows if r.get("b") is not None}
    points = [[bucket_start(b, period.interval).isoformat(), _round(by_bucket.get(b, 0.0))] for b in buckets(period.start, period.end, period.interval)]
    return {"name": name or value, "points": points}


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 2)


def _answer(name: str, params: dict[str, Any], series: list[dict[str, Any]], table: Any, **extra: Any) -> dict[str, Any]:
    return {"report": name, "params": params, "series": series, "table": table, **extra}


def _table_from_series(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for s in series:
        for x, y in s["points"]:
            rows.setdefault(x, {"x": x})[s["name"]] = y
    return [rows[k] for k in sorted(rows)]


# -- base dynamics -----------------------------------------------------------------------------------


def base(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Total, new, identified and reachable-per-channel profiles over time."""
    unknown(raw, PERIOD)
    p = period(raw, now)
    engine = Engine(backend)
    people = exp.and_(
        exp.In(this=col("type", "e"), expressions=[lit(t) for t in ("track", "page", "screen", "identify")]),
        exp.Not(this=exp.In(this=col("event", "e"), expressions=[lit(n) for n in SYSTEM_EVENTS])),
    )
    identified = exp.Case().when(_not_null("user_id", "e"), col("timestamp", "e")).else_(exp.Null())
    # people are counted, never listed: stored ids are grouped as keys (``Engine.key``) first,
    # then the few merged ones resolved, then grouped again per canonical key
    raw_firsts = (
        exp.select(
            exp.alias_(engine.key(col("profile_id", "e")), "profile_id"),
            exp.alias_(exp.Min(this=col("timestamp", "e")), "first"),
            exp.alias_(exp.Min(this=identified), "known"),
        )
        .from_(engine.table(EVENTS, "e"))
        .where(exp.and_(people, _not_null("profile_id", "e"), *in_range(engine, col("timestamp", "e"), None, p.end)))
        .group_by(engine.key(col("profile_id", "e")))
    )
    resolved = exp.Coalesce(this=col("canonical_id", "m"), expressions=[col("profile_id", "r")])
    firsts = (
        exp.select(
            exp.alias_(resolved, "profile_id"),
            exp.alias_(exp.Min(this=col("first", "r")), "first"),
            exp.alias_(exp.Min(this=col("known", "r")), "known"),
        )
        .from_(_sub(raw_firsts, "r"))
        .join(engine.redirects("m", keyed=True), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "r")), join_type="LEFT")
        .group_by(resolved.copy())
    )
    # one query: per-profile first times (a CTE), counted per bucket in the range and before it
    parts: list[exp.Select] = []
    sources: list[tuple[str, str, exp.Select]] = [("new", "first", firsts), ("identified", "known", firsts)]
    for channel, kind in REACH.items():
        reach = (
            exp.select(
                exp.alias_(engine.key(exp.Coalesce(this=col("canonical_id", "m"), expressions=[col("profile_id", "i")])), "profile_id"),
                exp.alias_(exp.Min(this=col("first_seen", "i")), "first"),
            )
            .from_(engine.table(IDENTITIES, "i"))
            .join(engine.redirects("m"), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "i")), join_type="LEFT")
            .where(exp.and_(col("kind", "i").eq(lit(kind)), col("deleted", "i").eq(exp.false())))
            .group_by(engine.key(exp.Coalesce(this=col("canonical_id", "m"), expressions=[col("profile_id", "i")])))
        )
        sources.append((f"reachable_{channel}", "first", reach))
    for name, column, source in sources:
        table = exp.to_table("profile_firsts") if source is firsts else exp.Subquery(this=source)
        bucket = exp.Case().when(exp.LT(this=col(column), expression=engine.time(p.start)), lit(-1)).else_(
            engine.bucket(col(column), p.interval)
        )
        parts.append(
            exp.select(exp.alias_(lit(name), "series"), exp.alias_(bucket, "b"), exp.alias_(exp.Count(this=exp.Star()), "n"))
            .from_(exp.alias_(table, "f", table=True))
            .where(exp.and_(*in_range(engine, col(column), None, p.end)))
            .group_by(exp.column("series"), exp.column("b"))
        )
    union: exp.Query = parts[0]
    for part in parts[1:]:
        union = exp.union(union, part, distinct=False)
    query = engine.with_shared(exp.select("*").from_(exp.alias_(exp.Subquery(this=union), "u", table=True)), [("profile_firsts", firsts)])
    rows = backend.rows(query)
    out = []
    for name, _, _ in sources:
        mine = [r for r in rows if r["series"] == name]
        before = sum(int(r["n"]) for r in mine if int(r["b"]) == -1)
        per_bucket = _time_series([r for r in mine if int(r["b"]) != -1], p, "n", name)
        if name == "new":
            out.append(per_bucket)
            out.append(_cumulative(per_bucket, before, "total"))
        else:
            out.append(_cumulative(per_bucket, before, name))
    return _answer("base", p.to_dict(), out, _table_from_series(out))


def _cumulative(series: dict[str, Any], start: int, name: str) -> dict[str, Any]:
    total = start
    points = []
    for x, y in series["points"]:
        total += int(y)
        points.append([x, total])
    return {"name": name, "points": points}


# -- activity ----------------------------------------------------------------------------------------------


def _activity_events(engine: Engine, p: Period, *, resolve: bool = True, keyed: bool = False) -> exp.Select:
    """Canonical profile (``resolve``, else the stored one; ``keyed``: as ``Engine.key``) and time of
    every event a person did (not the platform's own events)."""
    profile = canonical() if resolve else col("profile_id", "e")
    query = (
        exp.select(exp.alias_(engine.key(profile) if keyed else profile, "profile_id"), exp.alias_(col("timestamp", "e"), "ts"))
        .from_(engine.table(EVENTS, "e"))
        .where(exp.and_(
            exp.In(this=col("type", "e"), expressions=[lit(t) for t in ("track", "page", "screen")]),
            exp.Not(this=exp.In(this=col("event", "e"), expressions=[lit(n) for n in SYSTEM_EVENTS])),
            _not_null("profile_id", "e"),
            *in_range(engine, col("timestamp", "e"), p.start, p.end),
        ))
    )  # fmt: skip
    if resolve:
        query = query.join(
            engine.redirects("m"), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "e")), join_type="LEFT"
        )
    return query


def activity(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """DAU, WAU and MAU, active buyers and sessions (30 minutes without an event end one)."""
    unknown(raw, PERIOD)
    p = period(raw, now)
    engine = Engine(backend)
    series = []
    # each profile once per active day (a CTE), then distinct profiles per day, week and month from it
    # stored profile ids are reduced to profile-days first, and only those few rows are resolved
    raw_days = (
        exp.select(col("profile_id"), exp.alias_(engine.day_number(col("ts")), "d"), exp.alias_(exp.Min(this=col("ts")), "first_ts"))
        .from_(_sub(_activity_events(engine, p, resolve=False, keyed=True), "a"))
        .group_by(col("profile_id"), exp.column("d"))
    )
    resolved = exp.Coalesce(this=col("canonical_id", "m"), expressions=[col("profile_id", "r")])
    days = (
        exp.select(exp.alias_(resolved, "profile_id"), col("d", "r"), exp.alias_(exp.Min(this=col("first_ts", "r")), "day_ts"))
        .from_(_sub(raw_days, "r"))
        .join(engine.redirects("m", keyed=True), on=exp.EQ(this=col("profile_id", "m"), expression=col("profile_id", "r")), join_type="LEFT")
        .group_by(resolved.copy(), col("d", "r"))
    )
    parts: list[exp.Select] = []
    for name, interval in (("dau", "day"), ("wau", "week"), ("mau", "month")):
        count = exp.Count(this=exp.Star()) if interval == "day" else exp.Count(this=exp.Distinct(expressions=[col("profile_id")]))
        parts.append(
            exp.select(exp.alias_(lit(name), "series"), exp.alias_(engine.bucket(col("day_ts"), interval), "b"), exp.alias_(count, "n"))
            .from_("active_days")
            .group_by(exp.column("series"), exp.column("b"))
        )
    union = exp.union(exp.union(parts[0], parts[1], distinct=False), parts[2], distinct=False)
    rows = backend.rows(engine.with_shared(exp.select("*").from_(_sub(union, "u")), [("active_days", days)]))
    for name, interval in (("dau", "day"), ("wau", "week"), ("mau", "month")):
        series.append(_time_series([r for r in rows if r["series"] == name], Period(p.start, p.end, interval), "n", name))
    buyers = (
        exp.select(exp.alias_(engine.bucket(col("ts"), p.interval), "b"), exp.alias_(exp.Count(this=exp.Distinct(expressions=[col("profile_id")])), "n"))
        .from_(_sub(orders(engine, p.start, p.end, keyed=True), "o"))
        .where(_not_null("profile_id"))
        .group_by(exp.column("b"))
    )
    series.append(_time_series(backend.rows(buyers), p, "n", "active_buyers"))
    ms = engine.epoch_ms(col("ts"))
    previous = exp.Window(this=exp.Anonymous(this="lag", expressions=[ms.copy()]), partition_by=[col("profile_id")], order=exp.Order(expressions=[exp.Ordered(this=col("ts"))]))
    with_prev = exp.select(col("profile_id"), col("ts"), exp.alias_(ms, "ms"), exp.alias_(previous, "prev")).from_(_sub(_activity_events(engine, p, keyed=True), "a"))
    starts = exp.or_(exp.Is(this=col("prev"), expression=exp.Null()), exp.GT(this=exp.Sub(this=col("ms"), expression=col("prev")), expression=lit(SESSION_GAP_MS)))
    sessions = (
        exp.select(exp.alias_(engine.bucket(col("ts"), p.interval), "b"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(_sub(with_prev, "w"))
        .where(starts)
        .group_by(exp.column("b"))
    )
    series.append(_time_series(backend.rows(sessions), p, "n", "sessions"))
    table = _table_from_series([s for s in series if s["name"] in ("active_buyers", "sessions")])
    return _answer("activity", p.to_dict(), series, table)


# -- sales -----------------------------------------------------------------------------------------------------


def sales(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Revenue, orders and average check per bucket, online vs offline, by room/category and by store."""
    unknown(raw, (*PERIOD, "by", "top"))
    p = period(raw, now)
    by = choice(str(raw.get("by") or "room"), ("room", "category"), "by")
    top = integer(raw, "top", 20, high=1000)
    engine = Engine(backend)
    query = (
        exp.select(
            exp.alias_(engine.bucket(col("ts"), p.interval), "b"), col("kind"),
            exp.alias_(exp.Count(this=exp.Star()), "orders"), exp.alias_(exp.Sum(this=col("amount")), "revenue"),
        )
        .from_(_sub(orders(engine, p.start, p.end, resolve=False), "o"))
        .group_by(exp.column("b"), col("kind"))
    )  # fmt: skip
    rows = backend.rows(query)
    totals: dict[int, list[float]] = {}
    for r in rows:
        entry = totals.setdefault(int(r["b"]), [0.0, 0.0])
        entry[0] += float(r["revenue"] or 0)
        entry[1] += int(r["orders"])
    merged = [{"b": b, "revenue": v[0], "orders": v[1], "avg_check": v[0] / v[1] if v[1] else 0.0} for b, v in totals.items()]
    series = [
        _time_series(merged, p, "revenue"),
        _time_series(merged, p, "orders"),
        _time_series(merged, p, "avg_check"),
        _time_series([r for r in rows if r["kind"] == "online"], p, "revenue", "revenue_online"),
        _time_series([r for r in rows if r["kind"] == "offline"], p, "revenue", "revenue_offline"),
    ]
    # revenue per room (or category), and the orders holding it: per (group, order) first, then counted
    key = engine.room(col("category")) if by == "room" else col("category")
    per_order = (
        exp.select(exp.alias_(key, "grp"), col("message_id"), exp.alias_(exp.Sum(this=col("line_amount")), "spent"))
        .from_(_sub(order_lines(engine, p.start, p.end, resolve=False), "l"))
        .group_by(exp.column("grp"), col("message_id"))
    )
    lines = (
        exp.select(col("grp"), exp.alias_(exp.Sum(this=col("spent")), "revenue"), exp.alias_(exp.Count(this=exp.Star()), "orders"))
        .from_(_sub(per_order, "g"))
        .group_by(col("grp"))
    )
    ranked = sorted(backend.rows(lines), key=lambda r: (-float(r["revenue"] or 0), str(r["grp"])))[:top]
    by_group = [{by: r["grp"] or "(none)", "revenue": round(float(r["revenue"] or 0), 2), "orders": int(r["orders"])} for r in ranked]
    stores = (
        exp.select(col("store_id"), exp.alias_(exp.Count(this=exp.Star()), "orders"), exp.alias_(exp.Sum(this=col("amount")), "revenue"))
        .from_(_sub(orders(engine, p.start, p.end, resolve=False), "o"))
        .where(col("kind").eq(lit("offline")))
        .group_by(col("store_id"))
    )
    store_rows = sorted(backend.rows(stores), key=lambda r: (-float(r["revenue"] or 0), str(r["store_id"])))[:top]
    by_store = [
        {"store_id": r["store_id"] or "(unknown)", "orders": int(r["orders"]), "revenue": round(float(r["revenue"] or 0), 2),
         "avg_check": round(float(r["revenue"] or 0) / int(r["orders"]), 2)} for r in store_rows
    ]  # fmt: skip
    total_revenue = sum(v[0] for v in totals.values())
    total_orders = int(sum(v[1] for v in totals.values()))
    summary = {"revenue": round(total_revenue, 2), "orders": total_orders,
               "avg_check": round(total_revenue / total_orders, 2) if total_orders else None}  # fmt: skip
    return _answer("sales", {**p.to_dict(), "by": by, "top": top}, series, _table_from_series(series[:3]),
                   summary=summary, **{f"by_{by}": by_group}, by_store=by_store)  # fmt: skip


# -- customers by value --------------------------------------------------------------------------------------------


def customers(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Top and bottom buyers by revenue in the period (orders, average check, last order)."""
    unknown(raw, ("from", "to", "limit"))
    p = period(raw, now, default_days=365)
    limit = integer(raw, "limit", 20, high=1000)
    engine = Engine(backend)
    base_query = (
        exp.select(
            col("profile_id"), exp.alias_(exp.Sum(this=col("amount")), "revenue"), exp.alias_(exp.Count(this=exp.Star()), "orders"),
            exp.alias_(engine.epoch_ms(exp.Max(this=col("ts"))), "last_ms"),
        )
        .from_(_sub(orders(engine, p.start, p.end), "o"))
        .where(_not_null("profile_id"))
        .group_by(col("profile_id"))
    )  # fmt: skip

    # both ends from one pass: the per-buyer totals are a CTE read by two ordered, limited selects
    def end(side: str, descending: bool) -> exp.Expr:
        ordered = (
            exp.select(exp.alias_(lit(side), "side"), "*").from_("buyer_totals")
            .order_by(exp.Ordered(this=exp.column("revenue"), desc=descending), exp.Ordered(this=exp.column("profile_id")))
            .limit(limit)
        )  # fmt: skip
        return exp.select("*").from_(_sub(ordered, side))

    both = exp.union(end("top", True), end("bottom", False), distinct=False)
    query = exp.select("*").from_(_sub(both, "u")).with_("buyer_totals", as_=base_query)
    rows = backend.rows(query)

    def shaped(side: str, descending: bool) -> list[dict[str, Any]]:
        mine = sorted((r for r in rows if r["side"] == side), key=lambda r: ((-1 if descending else 1) * float(r["revenue"] or 0), r["profile_id"]))
        return [{
            "profile_id": r["profile_id"], "revenue": round(float(r["revenue"] or 0), 2), "orders": int(r["orders"]),
            "avg_check": round(float(r["revenue"] or 0) / int(r["orders"]), 2),
            "last_order": dt.datetime.fromtimestamp(int(r["last_ms"]) / 1000, dt.UTC).isoformat(),
        } for r in mine]  # fmt: skip

    top, bottom = shaped("top", True), shaped("bottom", False)
    series = [{"name": "top_revenue", "points": [[r["profile_id"], r["revenue"]] for r in top]},
              {"name": "bottom_revenue", "points": [[r["profile_id"], r["revenue"]] for r in bottom]}]  # fmt: skip
    return _answer("customers", {"from": p.start.isoformat(), "to": p.end.isoformat(), "limit": limit}, series, top, bottom=bottom)


# -- segment KPIs -------------------------------------------------------------------------------------------------------


def _costs(raw: Raw) -> dict[str, float]:
    """``costs=seg_a:1200,seg_b:300``: what was spent on each segment in the period."""
    found: dict[str, float] = {}
    for item in names(raw, "costs"):
        segment, _, amount = item.partition(":")
        try:
            found[segment.strip()] = float(amount)
        except ValueError:
            raise ReportError(f"`costs` items are segment:amount (vip:1200), not {item!r}", field="costs") from None
    return found


def segment_kpis(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Per segment over the period: size, conversion, revenue, average check, retention, LTV,
    opens and clicks, churn, unsubscribes, and profit when costs (and a margin) are given."""
    unknown(raw, ("from", "to", "segments", "costs", "margin"))
    p = period(raw, now, default_days=30)
    wanted = names(raw, "segments")
    costs = _costs(raw)
    margin = number(raw, "margin", None)
    if margin is not None and not 0 <= margin <= 1:
        raise ReportError(f"`margin` is a share of revenue between 0 and 1, not {margin}", field="margin")
    engine = Engine(backend)
    known = {r["segment_id"]: r["name"] for r in backend.rows(
        exp.select("segment_id", "name").from_(backend.table_ref(SEGMENTS)).where(col("deleted").eq(exp.false())))}  # fmt: skip
    for segment in wanted:
        if segment not in known:
            raise ReportError(f"no segment `{segment}`; known: {', '.join(sorted(known)) or 'none'}", field="segments")
    for segment in costs:
        if segment not in known:
            raise ReportError(f"`costs` names segment `{segment}`, which does not exist", field="costs")
    chosen = wanted or sorted(known)
    if not chosen:
        return _answer("segment_kpis", p.to_dict(), [], [])
    in_p = exp.and_(*in_range(engine, col("ts"), p.start, p.end))
    before = exp.and_(*in_range(engine, col("ts"), None, p.start))

    def when(condition: exp.Expr, value: exp.Expr) -> exp.Expr:
        return exp.Case().when(condition, value).else_(lit(0.0))

    ords = _sub(orders(engine, None, p.end), "o")
    per_order = (
        exp.select(
            col("profile_id"),
            exp.alias_(exp.Sum(this=when(in_p, lit(1.0))), "orders_in"),
            exp.alias_(exp.Sum(this=when(in_p.copy(), col("amount"))), "revenue_in"),
            exp.alias_(exp.Sum(this=when(before, lit(1.0))), "orders_before"),
            exp.alias_(exp.Sum(this=col("amount")), "revenue_all"),
        ).from_(ords).where(_not_null("profile_id")).group_by(col("profile_id"))
    )  # fmt: skip
    kind = exp.Case()
    for label, group in (("open", OPEN_EVENTS), ("click", CLICK_EVENTS), ("unsub", UNSUBSCRIBE_EVENTS)):
        kind = kind.when(exp.In(this=col("event", "e"), expressions=[lit(n) for n in group]), lit(label))
    engagement = events_of(engine, (*OPEN_EVENTS, *CLICK_EVENTS, *UNSUBSCRIBE_EVENTS), p.start, p.end,
                           extra=[exp.alias_(kind.else_(lit("")), "kind")])  # fmt: skip
    per_engagement = (
        exp.select(
            col("profile_id"),
            *(exp.alias_(exp.Sum(this=when(col("kind").eq(lit(k)), lit(1.0))), f"{k}s_in") for k in ("open", "click", "unsub")),
        ).from_(_sub(engagement, "g")).where(_not_null("profile_id")).group_by(col("profile_id"))
    )  # fmt: skip
    members = (
        exp.select("segment_id", "profile_id")
        .from_(backend.table_ref(SEGMENT_MEMBERS))
        .where(exp.and_(col("member").eq(exp.true()), exp.In(this=col("segment_id"), expressions=[lit(s) for s in chosen])))
    )

    def total(expression: exp.Expr, name: str) -> exp.Expr:
        return exp.alias_(exp.Coalesce(this=exp.Sum(this=expression), expressions=[lit(0.0)]), name)

    def positive(name: str) -> exp.Expr:
        return exp.Case().when(exp.GT(this=exp.Coalesce(this=col(name), expressions=[lit(0.0)]), expression=lit(0.0)), lit(1.0)).else_(lit(0.0))

    query = (
        exp.select(
            col("segment_id", "s"),
            exp.alias_(exp.Count(this=exp.Star()), "size"),
            total(positive("orders_in"), "buyers"),
            total(col("orders_in"), "orders"),
            total(col("revenue_in"), "revenue"),
            total(col("revenue_all"), "revenue_all"),
            total(positive("orders_before"), "earlier_buyers"),
            total(exp.Mul(this=positive("orders_before"), expression=positive("orders_in")), "retained"),
            total(col("opens_in"), "opens"), total(col("clicks_in"), "clicks"), total(col("unsubs_in"), "unsubscribes"),
            total(positive("opens_in"), "openers"), total(positive("clicks_in"), "clickers"),
        )
        .from_(_sub(members, "s"))
        .join(_sub(per_order, "po"), on=exp.EQ(this=col("profile_id", "po"), expression=col("profile_id", "s")), join_type="LEFT")
        .join(_sub(per_engagement, "pe"), on=exp.EQ(this=col("profile_id", "pe"), expression=col("profile_id", "s")), join_type="LEFT")
        .group_by(col("segment_id", "s"))
    )  # fmt: skip
    found = {r["segment_id"]: r for r in backend.rows(query)}
    table = []
    for segment in chosen:
        r = found.get(segment, {})
        size = int(r.get("size") or 0)
        revenue = float(r.get("revenue") or 0)
        orders_n = int(r.get("orders") or 0)
        earlier = int(r.get("earlier_buyers") or 0)
        retained = int(r.get("retained") or 0)
        row: dict[str, Any] = {
            "segment_id": segment, "name": known[segment], "size": size,
            "buyers": int(r.get("buyers") or 0),
            "conversion_rate": _share(int(r.get("buyers") or 0), size),
            "revenue": round(revenue, 2), "orders": orders_n,
            "avg_check": round(revenue / orders_n, 2) if orders_n else None,
            "retention_rate": _share(retained, earlier),
            "churn_rate": _share(earlier - retained, earlier),
            "ltv": round(float(r.get("revenue_all") or 0) / size, 2) if size else None,
            "opens": int(r.get("opens") or 0), "clicks": int(r.get("clicks") or 0),
            "open_rate": _share(int(r.get("openers") or 0), size), "click_rate": _share(int(r.get("clickers") or 0), size),
            "unsubscribes": int(r.get("unsubscribes") or 0),
        }  # fmt: skip
        if segment in costs or margin is not None:
            cost = costs.get(segment, 0.0)
            gross = revenue * (margin if margin is not None else 1.0)
            row.update({"cost": cost, "profit": round(gross - cost, 2), "roi": round((gross - cost) / cost, 4) if cost else None})
        table.append(row)
    series = [{"name": metric, "points": [[row["segment_id"], row[metric]] for row in table]}
              for metric in ("size", "revenue", "conversion_rate", "churn_rate")]  # fmt: skip
    params = {**p.to_dict(), "segments": chosen, "costs": costs, "margin": margin}
    params.pop("interval")
    return _answer("segment_kpis", params, series, table)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- funnels ------------------------------------------------------------------------------------------------------------


def funnel(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Profiles reaching each step in order (each within ``within_days`` of the first step),
    conversion from the first and from the previous step, and the median time between steps."""
    unknown(raw, ("from", "to", "steps", "within_days"))
    p = period(raw, now, default_days=30)
    steps = names(raw, "steps", required=True, minimum=2)
    if len(steps) > 10:
        raise ReportError(f"`steps` takes at most 10 events, not {len(steps)}", field="steps")
    within = integer(raw, "within_days", 30, high=365)
    engine = Engine(backend)
    first = (
        exp.select(col("profile_id"), exp.alias_(engine.epoch_ms(exp.Min(this=col("ts"))), "t0"))
        .from_(_sub(events_of(engine, [steps[0]], p.start, p.end), "s"))
        .where(_not_null("profile_id"))
        .group_by(col("profile_id"))
    )
    query: exp.Select = first
    for i, step in enumerate(steps[1:], start=1):
        later = _sub(events_of(engine, [step], p.start, p.end + dt.timedelta(days=within)), "e")
        ms = engine.epoch_ms(col("ts", "e"))
        reached = exp.and_(
            exp.GTE(this=ms, expression=col(f"t{i - 1}", "q")),
            exp.LT(this=ms.copy(), expression=exp.Add(this=col("t0", "q"), expression=lit(within * 86_400_000))),
        )
        step_time = exp.Min(this=exp.Case().when(reached, ms.copy()).else_(exp.Null()))
        query = (
            exp.select(col("profile_id", "q"), *(col(f"t{k}", "q") for k in range(i)), exp.alias_(step_time, f"t{i}"))
            .from_(_sub(query, "q"))
            .join(later, on=exp.EQ(this=col("profile_id", "e"), expression=col("profile_id", "q")), join_type="LEFT")
            .group_by(col("profile_id", "q"), *(col(f"t{k}", "q") for k in range(i)))
        )
    rows = backend.select(query)
    times = [np.asarray(rows.column(f"t{i}").to_numpy(zero_copy_only=False), dtype=np.float64) for i in range(len(steps))] if rows.num_rows else []
    table: list[dict[str, Any]] = []
    reached_before: int | None = None
    for i, step in enumerate(steps):
        if times:
            done = ~np.isnan(times[i])
            if engine.clickhouse and i:  # ClickHouse's min over no row is null here too, but guard a 0 default
                done &= times[i] > 0
            count = int(done.sum())
            gaps = (times[i][done] - times[i - 1][done]) / 1000 if i else np.zeros(0)
        else:
            count, gaps = 0, np.zeros(0)
        table.append({
            "step": i + 1, "event": step, "profiles": count,
            "conversion_from_first": _share(count, table[0]["profiles"]) if table else (1.0 if count else None),
            "conversion_from_previous": _share(count, reached_before) if reached_before is not None else None,
            "median_seconds_from_previous": float(np.median(gaps)) if len(gaps) else None,
        })  # fmt: skip
        reached_before = count
    series = [{"name": "profiles", "points": [[row["event"], row["profiles"]] for row in table]}]
    return _answer("funnel", {**p.to_dict(), "steps": steps, "within_days": within}, series, table)


# -- RFM, cohorts, value, interest ------------------------------------------------------------------------------------------


def rfm_matrix(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """The R x F grid: profiles and value per cell and per named lifecycle cell, computed as of ``to``."""
    unknown(raw, ("to", "kind", "method", "window_days"))
    as_of = period(raw, now).end
    kind = str(raw.get("kind") or "orders")
    rfm.kind_of(kind)
    window = integer(raw, "window_days", 0, low=0, high=36500) or None
    scoring = rfm.Scoring.from_settings(backend.settings, method=raw.get("method") or None, window_days=window)
    found = rfm.matrix(backend, as_of, kind=kind, scoring=scoring)
    series = [
        {"name": "profiles", "points": [[c["cell"], c["profiles"]] for c in found["cells"]]},
        {"name": found["value_name"], "points": [[c["cell"], c["value"]] for c in found["cells"]]},
    ]
    params = {"to": as_of.isoformat(), "kind": kind, "method": scoring.method, "window_days": scoring.window_days}
    runs = rfm.history(backend, kind)  # the stored runs: how the cells grew and shrank, and who moved where
    return _answer("rfm", params, series, found["cells"], grid=found["grid"], cuts=found["cuts"], profiles=found["profiles"],
                   history=runs)  # fmt: skip


def cohort_report(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Retention by cohort; ``segment=`` or ``split_from``/``split_to`` compare two groups side by side."""
    unknown(raw, (*PERIOD, "cohort_event", "return_event", "periods", "segment", "split_from", "split_to"))
    p = period(raw, now, default_days=365, interval="month")
    periods_n = integer(raw, "periods", 12, low=1, high=400)
    split = None
    if raw.get("segment"):
        split = cohorts.Split(segment=str(raw["segment"]))
    elif raw.get("split_from") or raw.get("split_to"):
        from opencdp.analytics.params import parse_time

        if not (raw.get("split_from") and raw.get("split_to")):
            missing = "split_to" if raw.get("split_from") else "split_from"
            raise ReportError(f"`{missing}` is needed with the other end of the split window", field=missing)
        split = cohorts.Split(start=parse_time(raw["split_from"], "split_from"), end=parse_time(raw["split_to"], "split_to", end_of_day=True))
    found = cohorts.retention(
        backend, p, cohort_event=str(raw.get("cohort_event") or "first_purchase"),
        return_event=str(raw.get("return_event") or "first_purchase"), periods=periods_n, split=split, now=now,
    )  # fmt: skip
    series = [{"name": g["group"], "points": [[c["period"], c["percent"]] for c in g["curve"]]} for g in found["groups"]]
    table = [
        {"group": g["group"], "cohort": c["cohort"], "size": c["size"], **{f"p{r['period']}": r["percent"] for r in c["periods"]}}
        for g in found["groups"] for c in g["cohorts"]
    ]
    params = {**p.to_dict(), "cohort_event": found["cohort_event"], "return_event": found["return_event"], "periods": periods_n}
    return _answer("cohorts", params, series, table, groups=found["groups"])


def value_report(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Buyers by order count, average check and total spent; product mix by room; historic LTV."""
    unknown(raw, ("from", "to"))
    p = period(raw, now, default_days=365)
    found = cohorts.value(backend, p.start, p.end)
    series = [
        {"name": "profiles_by_orders", "points": [[b["orders"], b["profiles"]] for b in found["by_orders"]]},
        {"name": "revenue_by_room", "points": [[m["room"], m["revenue"]] for m in found["product_mix"]]},
    ]
    return _answer("value", {"from": p.start.isoformat(), "to": p.end.isoformat()}, series, found["by_orders"], **found)


def interest_report(backend: Backend, raw: Raw, now: dt.datetime) -> dict[str, Any]:
    """Profiles per current room, how many finished it, where they go next; ``profile=`` shows one profile's rooms."""
    unknown(raw, ("to", "profile"))
    as_of = period(raw, now).end
    if raw.get("profile"):
        from opencdp.segments.membership import canonical as canonical_of

        pid = canonical_of(backend, [str(raw["profile"])])[str(raw["profile"])]
        rows = interest.profile_interest(backend, [pid], as_of)
        return _answer("interest", {"to": as_of.isoformat(), "profile": pid},
                       [{"name": "interest", "points": [[r["room"], r["interest"]] for r in rows]}], rows)  # fmt: skip
    found = interest.compute(backend, as_of, keyed=True)  # counted, never listed: profiles as keys
    rooms: dict[str, dict[str, int]] = {}
    per_room = Counter(found.room)
    finished_per_room = Counter(room for room, finished in zip(found.room, found.finished, strict=True) if finished)
    for room, n in per_room.items():
        rooms[room] = {"profiles": n, "finished": finished_per_room.get(room, 0)}
    for (room, nxt), n in Counter(zip(found.room, found.next_room, strict=True)).items():
        if nxt:
            rooms[room][f"next:{nxt}"] = n
    table = []
    for room, entry in sorted(rooms.items(), key=lambda kv: -kv[1]["profiles"]):
        nexts = sorted(((k[5:], v) for k, v in entry.items() if k.startswith("next:")), key=lambda kv: -kv[1])
        table.append({"room": room, "profiles": entry["profiles"], "finished": entry["finished"], "next_rooms": dict(nexts[:3])})
    series = [{"name": "profiles", "points": [[r["room"], r["profiles"]] for r in table]},
              {"name": "finished", "points": [[r["room"], r["finished"]] for r in table]}]  # fmt: skip
    return _answer("interest", {"to": as_of.isoformat()}, series, table, transitions=found.transitions, core=found.core)


REPORTS: dict[str, ReportSpec] = {
    "base": ReportSpec(base, PERIOD, "Total, new, identified and reachable (email, sms, push) profiles over time"),
    "activity": ReportSpec(activity, PERIOD, "DAU, WAU, MAU, active buyers and sessions"),
    "sales": ReportSpec(sales, (*PERIOD, "by", "top"), "Revenue, orders, average check; online vs offline; by room or category and store"),
    "customers": ReportSpec(customers, ("from", "to", "limit"), "Top and bottom customers by revenue"),
    "segment_kpis": ReportSpec(segment_kpis, ("from", "to", "segments", "costs", "margin"),
                               "Per segment: size, conversion, revenue, check, retention, LTV, engagement, churn, unsubscribes, profit"),
    "funnel": ReportSpec(funnel, ("from", "to", "steps", "within_days"), "Conversion through ordered steps, median time between"),
    "rfm": ReportSpec(rfm_matrix, ("to", "kind", "method", "window_days"), "R x F matrix with profiles and value per cell"),
    "cohorts": ReportSpec(cohort_report, (*PERIOD, "cohort_event", "return_event", "periods", "segment", "split_from", "split_to"),
                          "Retention cohorts (counts, percent, revenue), optionally two groups side by side"),
    "value": ReportSpec(value_report, ("from", "to"), "Value segmentation: order count, check, total spent, product mix, LTV"),
    "interest": ReportSpec(interest_report, ("to", "profile"), "Current room per profile, finished rooms, next likely room"),
}  # fmt: skip


def run_report(backend: Backend, name: str, raw: Raw, now: dt.datetime | None = None) -> dict[str, Any]:
    spec = REPORTS.get(name)
    if spec is None:
        raise ReportError(f"no report `{name}`; reports: {', '.join(REPORTS)}", field="name")
    return spec.run(backend, raw, now or dt.datetime.now(dt.UTC))


def catalogue() -> list[dict[str, Any]]:
    return [{"name": n, "params": list(s.params), "description": s.description} for n, s in REPORTS.items()]
