"""Retention cohorts, and value segmentation with historic LTV.

A cohort is the profiles whose *first* event of a kind (first purchase, sign-up, app
install, or any event named) fell in one day, week or month. Period k of a cohort is the
k-th bucket after that one; a profile is retained in period k when it did the *return*
event then (an order by default). Counts, shares of the cohort and revenue (order
totals) are given per period, and revenue retention as revenue in k over revenue in 0.

``compare`` splits every cohort in two — members of a segment vs the rest, or profiles
whose first event fell inside a window (customers acquired during a sale) vs the rest —
and gives both side by side with their size-weighted retention curves.

One query per engine does the work: first times per profile (over all history: "first"
means first ever), joined to the return events, grouped by (cohort, period[, group]).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.analytics.params import Period, ReportError
from opencdp.analytics.sql import (
    ORDER_EVENTS,
    Engine,
    bucket_start,
    col,
    events_of,
    in_range,
    lit,
    order_lines,
    orders,
)
from opencdp.storage.base import Backend
from opencdp.storage.schema import SEGMENT_MEMBERS

ANCHORS = {
    "first_purchase": ORDER_EVENTS,
    "signup": ("Signed Up",),
    "install": ("Application Installed",),
}
"""Named cohort events; any other value of ``cohort_event`` is taken as an event name."""


@dataclass(frozen=True)
class Split:
    """How to cut cohorts in two: by segment membership, or by a first-event window."""

    segment: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def labels(self) -> tuple[str, str]:
        if self.segment:
            return (f"in {self.segment}", f"not in {self.segment}")
        return ("acquired in window", "the rest")


def anchor_events(name: str) -> Sequence[str]:
    if not name:
        raise ReportError("`cohort_event` must not be empty", field="cohort_event")
    return ANCHORS.get(name, (name,))


# Cohort queries never return a profile: they group and join on ``Engine.key`` of the canonical id.


def _firsts(engine: Engine, names: Sequence[str]) -> exp.Select:
    source = events_of(engine, names, keyed=True)
    return (
        exp.select(col("profile_id"), exp.alias_(exp.Min(this=col("ts")), "first"))
        .from_(exp.alias_(exp.Subquery(this=source), "a", table=True))
        .where(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())))
        .group_by(col("profile_id"))
    )


def _returns(engine: Engine, names: Sequence[str], start: dt.datetime, end: dt.datetime) -> exp.Select:
    if tuple(names) == ORDER_EVENTS:
        source = orders(engine, start, end, keyed=True)
        return exp.select("profile_id", "ts", "amount").from_(exp.alias_(exp.Subquery(this=source), "o", table=True))
    return events_of(engine, names, start, end, extra=[exp.alias_(lit(0.0), "amount")], keyed=True)


def _group(engine: Engine, split: Split | None) -> exp.Expr:
    """1 for the first group of the split, 0 for the rest (0 for everyone without a split)."""
    if split is None:
        return lit(0)
    if split.segment:
        member = (
            exp.select(engine.key(col("profile_id")))
            .from_(engine.backend.table_ref(SEGMENT_MEMBERS))
            .where(exp.and_(col("segment_id").eq(lit(split.segment)), col("member").eq(exp.true())))
        )
        test: exp.Expr = exp.In(this=col("profile_id", "f"), query=member)
    else:
        test = exp.and_(*in_range(engine, col("first", "f"), split.start, split.end))
    return exp.Case().when(test, lit(1)).else_(lit(0))


def retention(
    backend: Backend,
    period: Period,
    *,
    cohort_event: str = "first_purchase",
    return_event: str = "first_purchase",
    periods: int = 12,
    split: Split | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Cohorts of ``period`` (by its interval) and their retention for ``periods`` periods after,
    counting return events up to ``now`` (default: the period's end)."""
    engine = Engine(backend)
    until = max(now or period.end, period.end)
    interval = period.interval
    if tuple(anchor_events(cohort_event)) == tuple(anchor_events(return_event)):
        query = _same_event_query(engine, anchor_events(cohort_event), period, until, split)
    else:
        query = _query(engine, cohort_event, return_event, period, until, split)
    sizes: dict[tuple[int, int], int] = {}
    active: dict[tuple[int, int], dict[int, tuple[int, float]]] = {}
    for row in backend.rows(query):
        key = (int(row["cohort"]), int(row["grp"]))
        if int(row["k"]) == -1:
            sizes[key] = int(row["active"])
        elif int(row["k"]) <= periods:
            active.setdefault(key, {})[int(row["k"])] = (int(row["active"]), float(row["revenue"] or 0.0))
    groups = (1, 0) if split is not None else (0,)
    labels = split.labels if split is not None else ("all",)
    out_groups = []
    for grp, label in zip(groups, labels, strict=True):
        cohorts = []
        for cohort in sorted(c for c, g in sizes if g == grp):
            size = sizes[(cohort, grp)]
            cells = active.get((cohort, grp), {})
            base_revenue = cells.get(0, (0, 0.0))[1]
            rows = []
            for i in range(periods + 1):
                start = bucket_start(cohort + i, interval)
                if dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC) >= until and i not in cells:
                    break  # that period has not happened yet
                n, revenue = cells.get(i, (0, 0.0))
                rows.append({
                    "period": i, "active": n, "percent": round(100 * n / size, 2) if size else 0.0,
                    "revenue": round(revenue, 2),
                    "revenue_retention": round(100 * revenue / base_revenue, 2) if base_revenue else None,
                })  # fmt: skip
            cohorts.append({"cohort": bucket_start(cohort, interval).isoformat(), "size": size, "periods": rows})
        out_groups.append({"group": label, "cohorts": cohorts, "curve": _curve(cohorts, periods)})
    return {"groups": out_groups, "interval": interval, "cohort_event": cohort_event, "return_event": return_event}


def _query(engine: Engine, cohort_event: str, return_event: str, period: Period, until: dt.datetime, split: Split | None) -> exp.Select:
    """Rows ``cohort, grp, k, active, revenue``; ``k = -1`` rows hold the cohort sizes."""
    interval = period.interval
    # the cohort's members, each with its cohort bucket: computed once (a CTE read twice)
    firsts = exp.alias_(exp.Subquery(this=_firsts(engine, anchor_events(cohort_event))), "f", table=True)
    members = (
        exp.select(
            col("profile_id", "f"), col("first", "f"),
            exp.alias_(engine.bucket(col("first", "f"), interval), "cohort"), exp.alias_(_group(engine, split), "grp"),
        )
        .from_(firsts)
        .where(exp.and_(*in_range(engine, col("first", "f"), period.start, period.end)))
    )  # fmt: skip
    sizes_part = (
        exp.select(col("cohort"), col("grp"), exp.alias_(lit(-1), "k"), exp.alias_(exp.Count(this=exp.Star()), "active"),
                   exp.alias_(lit(0.0), "revenue"))
        .from_("cohort_members")
        .group_by(col("cohort"), col("grp"))
    )  # fmt: skip
    returns = exp.alias_(exp.Subquery(this=_returns(engine, anchor_events(return_event), period.start, until)), "r", table=True)
    # per (profile, period) first, then count rows: cheaper than COUNT(DISTINCT) over every return event
    per_profile = (
        exp.select(
            col("profile_id", "c"), col("cohort", "c"), col("grp", "c"),
            exp.alias_(exp.Sub(this=engine.bucket(col("ts", "r"), interval), expression=col("cohort", "c")), "k"),
            exp.alias_(exp.Sum(this=col("amount", "r")), "spent"),
        )
        .from_(exp.alias_(exp.to_table("cohort_members"), "c", table=True))
        .join(returns, on=exp.EQ(this=col("profile_id", "r"), expression=col("profile_id", "c")))
        .where(exp.GTE(this=col("ts", "r"), expression=col("first", "c")))
        .group_by(col("profile_id", "c"), col("cohort", "c"), col("grp", "c"), exp.column("k"))
    )  # fmt: skip
    activity_part = (
        exp.select(col("cohort"), col("grp"), col("k"), exp.alias_(exp.Count(this=exp.Star()), "active"),
                   exp.alias_(exp.Sum(this=col("spent")), "revenue"))
        .from_(exp.alias_(exp.Subquery(this=per_profile), "p", table=True))
        .group_by(col("cohort"), col("grp"), col("k"))
    )  # fmt: skip
    union = exp.union(sizes_part, activity_part, distinct=False)
    query = engine.with_shared(exp.select("*").from_(exp.alias_(exp.Subquery(this=union), "u", table=True)), [("cohort_members", members)])
    return query


def _same_event_query(engine: Engine, names: Sequence[str], period: Period, until: dt.datetime, split: Split | None) -> exp.Select:
    """``_query`` when the cohort event is also the return event (first purchase, then purchases):
    one pass over the events, reduced to (profile, bucket) before anything is joined."""
    interval = period.interval
    if tuple(names) == ORDER_EVENTS:
        source: exp.Select = exp.select("profile_id", "ts", "amount").from_(exp.alias_(exp.Subquery(this=orders(engine, None, until, keyed=True)), "o", table=True))
    else:
        source = events_of(engine, names, None, until, extra=[exp.alias_(lit(0.0), "amount")], keyed=True)
    per_bucket = (
        exp.select(col("profile_id"), exp.alias_(engine.bucket(col("ts"), interval), "b"), exp.alias_(exp.Min(this=col("ts")), "first_in"),
                   exp.alias_(exp.Sum(this=col("amount")), "spent"))
        .from_(exp.alias_(exp.Subquery(this=source), "s", table=True))
        .where(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())))
        .group_by(col("profile_id"), exp.column("b"))
    )  # fmt: skip
    firsts = (
        exp.select(col("profile_id"), exp.alias_(exp.Min(this=col("first_in")), "first"), exp.alias_(exp.Min(this=col("b")), "cohort"))
        .from_("profile_buckets")
        .group_by(col("profile_id"))
    )
    members = (
        exp.select(col("profile_id", "f"), col("cohort", "f"), exp.alias_(_group(engine, split), "grp"))
        .from_(exp.alias_(exp.Subquery(this=firsts), "f", table=True))
        .where(exp.and_(*in_range(engine, col("first", "f"), period.start, period.end)))
    )
    sizes_part = (
        exp.select(col("cohort"), col("grp"), exp.alias_(lit(-1), "k"), exp.alias_(exp.Count(this=exp.Star()), "active"),
                   exp.alias_(lit(0.0), "revenue"))
        .from_("cohort_members")
        .group_by(col("cohort"), col("grp"))
    )  # fmt: skip
    activity_part = (
        exp.select(
            col("cohort", "c"), col("grp", "c"), exp.alias_(exp.Sub(this=col("b", "p"), expression=col("cohort", "c")), "k"),
            exp.alias_(exp.Count(this=exp.Star()), "active"), exp.alias_(exp.Sum(this=col("spent", "p")), "revenue"),
        )
        .from_(exp.alias_(exp.to_table("cohort_members"), "c", table=True))
        .join(exp.alias_(exp.to_table("profile_buckets"), "p", table=True), on=exp.EQ(this=col("profile_id", "p"), expression=col("profile_id", "c")))
        .group_by(col("cohort", "c"), col("grp", "c"), exp.column("k"))
    )  # fmt: skip
    union = exp.union(sizes_part, activity_part, distinct=False)
    return engine.with_shared(
        exp.select("*").from_(exp.alias_(exp.Subquery(this=union), "u", table=True)),
        [("profile_buckets", per_bucket), ("cohort_members", members)],
    )


def _curve(cohorts: list[dict[str, Any]], periods: int) -> list[dict[str, Any]]:
    """Retention per period over all cohorts that reached it, weighted by cohort size."""
    curve = []
    for i in range(periods + 1):
        reached = [(c["size"], c["periods"][i]["active"]) for c in cohorts if len(c["periods"]) > i]
        total = sum(s for s, _ in reached)
        if not total:
            break
        curve.append({"period": i, "percent": round(100 * sum(a for _, a in reached) / total, 2), "cohort_profiles": total})
    return curve


# -- value segmentation -------------------------------------------------------------------------------

ORDER_BANDS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 10, "6-10"), (11, None, "11+"))


def per_profile(backend: Backend, start: dt.datetime | None, end: dt.datetime | None) -> pa.Table:
    """``profile_id, orders, total, first, last`` (epoch ms) per buyer, from orders in the range."""
    engine = Engine(backend)
    query = (
        exp.select(
            col("profile_id"),
            exp.alias_(exp.Count(this=exp.Star()), "orders"),
            exp.alias_(exp.Sum(this=col("amount")), "total"),
            exp.alias_(engine.epoch_ms(exp.Min(this=col("ts"))), "first_ms"),
        )
        .from_(exp.alias_(exp.Subquery(this=orders(engine, start, end)), "o", table=True))
        .where(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())))
        .group_by(col("profile_id"))
    )
    return backend.select(query)


def _lines(engine: Engine, start: dt.datetime | None, end: dt.datetime | None) -> exp.Expr:
    return exp.alias_(exp.Subquery(this=order_lines(engine, start, end)), "l", table=True)


def room_mix(backend: Backend, start: dt.datetime | None, end: dt.datetime | None) -> list[dict[str, Any]]:
    """``room, revenue, buyers`` of order lines in the range, by room (the category's first level)."""
    engine = Engine(backend)
    # (category, buyer) first, then (room, buyer), then rooms: no COUNT(DISTINCT) over every line
    per_category = (
        exp.select(col("category"), col("profile_id"), exp.alias_(exp.Sum(this=col("line_amount")), "spent"))
        .from_(_lines(engine, start, end))
        .group_by(col("category"), col("profile_id"))
    )
    per_room = (
        exp.select(exp.alias_(engine.room(col("category")), "line_room"), col("profile_id"), exp.alias_(exp.Sum(this=col("spent")), "spent"))
        .from_(exp.alias_(exp.Subquery(this=per_category), "c", table=True))
        .group_by(exp.column("line_room"), col("profile_id"))
    )
    buyer = exp.Case().when(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())), lit(1)).else_(lit(0))
    query = (
        exp.select(exp.alias_(col("line_room"), "room"), exp.alias_(exp.Sum(this=col("spent")), "revenue"),
                   exp.alias_(exp.Sum(this=buyer), "buyers"))
        .from_(exp.alias_(exp.Subquery(this=per_room), "r", table=True))
        .group_by(col("line_room"))
    )  # fmt: skip
    return backend.rows(query)


def top_rooms(backend: Backend, end: dt.datetime) -> pa.Table:
    """``profile_id, room`` of the room each buyer spent most on (on a tie, either)."""
    engine = Engine(backend)
    per_room = (
        exp.select(col("profile_id"), exp.alias_(engine.room(col("category")), "line_room"), exp.alias_(exp.Sum(this=col("line_amount")), "spent"))
        .from_(_lines(engine, None, end))
        .where(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())))
        .group_by(col("profile_id"), exp.column("line_room"))
    )  # (ClickHouse would read an output alias equal to a column's name as the alias)
    query = (
        exp.select(col("profile_id"), exp.alias_(exp.ArgMax(this=col("line_room"), expression=col("spent")), "room"))
        .from_(exp.alias_(exp.Subquery(this=per_room), "r", table=True))
        .where(exp.Not(this=exp.Is(this=col("line_room"), expression=exp.Null())))
        .group_by(col("profile_id"))
    )
    return backend.select(query)


def value(backend: Backend, start: dt.datetime | None, end: dt.datetime | None, *, top: int = 10) -> dict[str, Any]:
    """Buyers by order count band, average check and total spent, product mix by room, historic LTV."""
    import numpy as np

    table = per_profile(backend, start, end)
    n = table.num_rows
    count = np.asarray(table.column("orders").to_numpy(zero_copy_only=False), dtype=np.float64) if n else np.zeros(0)
    total = np.asarray(table.column("total").to_numpy(zero_copy_only=False), dtype=np.float64) if n else np.zeros(0)
    check = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    bands = []
    for low, high, label in ORDER_BANDS:
        mask = (count >= low) & ((count <= high) if high is not None else True)
        bands.append({"orders": label, "profiles": int(mask.sum()), "revenue": round(float(total[mask].sum()), 2),
                      "avg_check": round(float(total[mask].sum() / count[mask].sum()), 2) if mask.any() else None})  # fmt: skip

    def quantile_bands(values: Any, name: str) -> list[dict[str, Any]]:
        if not n:
            return []
        cuts = np.unique(np.quantile(values, [0.25, 0.5, 0.75, 0.9]))
        index = np.searchsorted(cuts, values, side="left")
        edges = [None, *cuts.tolist(), None]
        return [{"band": i + 1, "from": edges[i], "to": edges[i + 1], "profiles": int((index == i).sum()),
                 "revenue": round(float(total[index == i].sum()), 2), f"avg_{name}": round(float(values[index == i].mean()), 2)}
                for i in range(len(cuts) + 1) if (index == i).any()]  # fmt: skip

    rooms = room_mix(backend, start, end)
    line_total = sum(float(r["revenue"] or 0) for r in rooms) or 1.0
    mix = sorted(
        ({"room": r["room"] or "(none)", "revenue": round(float(r["revenue"] or 0), 2),
          "share": round(float(r["revenue"] or 0) / line_total, 4), "buyers": int(r["buyers"])} for r in rooms),
        key=lambda r: (-float(r["revenue"]), str(r["room"])),
    )  # fmt: skip
    return {
        "buyers": n,
        "revenue": round(float(total.sum()), 2),
        "orders": int(count.sum()),
        "avg_check": round(float(total.sum() / count.sum()), 2) if n else None,
        "historic_ltv": round(float(total.mean()), 2) if n else None,
        "by_orders": bands,
        "by_avg_check": quantile_bands(check, "check"),
        "by_total": quantile_bands(total, "total"),
        "product_mix": mix,
    }


def store_value_scores(backend: Backend, now: dt.datetime) -> dict[str, int]:
    """Per-profile value as scores: ``value_orders``, ``value_avg_check``, ``historic_ltv`` (total spent),
    ``value_top_room`` (the room with most of the profile's spending)."""
    from opencdp.profiles.scores import write_scores

    table = per_profile(backend, None, now)
    ids = table.column("profile_id")
    count = table.column("orders").cast(pa.float64())
    total = table.column("total").cast(pa.float64())
    import pyarrow.compute as pc

    check = pc.divide(total, count)
    version = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-value"
    write_scores(backend, "value_orders", ids, count, model_version=version, description="orders ever placed", at=now)
    write_scores(backend, "value_avg_check", ids, check, model_version=version, description="average order value", at=now)
    write_scores(backend, "historic_ltv", ids, total, model_version=version, description="total spent so far (historic LTV)", at=now)
    best = top_rooms(backend, now)
    write_scores(backend, "value_top_room", best.column("profile_id"), best.column("room"), model_version=version,
                 description="the room (top category) the profile spent most on", at=now)  # fmt: skip
    return {"profiles": len(ids), "with_room": best.num_rows}
