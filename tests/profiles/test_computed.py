"""Computed traits, run on every engine against one small hand-built store.

Expected values are worked out by hand from the data below (the comments show the
sums), never by asking an engine.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from opencdp.profiles import computed
from opencdp.profiles.computed import (
    BUILTIN,
    Aggregation,
    ComputedTrait,
    TraitError,
    Window,
    compile_trait,
    evaluate,
    load_traits,
    parse_traits,
)
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINE_EVENT_COLUMNS, ORDER_LINES, PROFILE_MAP

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
ANNA, ANNA_OLD, BORIS = "p-anna", "p-anna-old", "p-boris"
"""ANNA_OLD was merged into ANNA: its events count for ANNA."""


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


# -- the data set ----------------------------------------------------------------------------


def event(
    message_id: str, profile_id: str | None, at: dt.datetime, event_name: str, **fields: Any
) -> dict[str, Any]:
    """A track event; dict ``properties``/``context`` are stored as JSON text."""
    row: dict[str, Any] = {
        "message_id": message_id,
        "type": "track",
        "event": event_name,
        "timestamp": at,
        "received_at": at,
        "source": "web-site",
        "channel": "web",
        "lsn": 1,
        "profile_id": profile_id,
    }
    row.update(fields)
    for column in ("properties", "context"):
        if isinstance(row.get(column), dict):
            row[column] = json.dumps(row[column], ensure_ascii=False)
    return row


def order(
    message_id: str,
    profile_id: str | None,
    at: dt.datetime,
    lines: list[tuple[str, float]],
    **fields: Any,
) -> dict[str, Any]:
    """An Order Completed event with its lines (category, quantity) under ``_lines``."""
    row = event(message_id, profile_id, at, "Order Completed", **fields)
    row["_lines"] = [
        {"line_no": n, "category": category, "quantity": quantity, "price": 10.0}
        for n, (category, quantity) in enumerate(lines)
    ]
    return row


def view(
    message_id: str, profile_id: str, at: dt.datetime, properties: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    return event(message_id, profile_id, at, "Product Viewed", properties=properties, **fields)


MOBILE = {"device": {"type": "mobile"}, "os": {"name": "iOS"}}
DESKTOP = {"device": {"type": "desktop"}, "os": {"name": "Windows"}}

ROWS = [
    order(
        "a-order-1",
        ANNA,
        ago(days=40),
        [("Cosmetics", 2.0), ("Furniture", 1.0)],
        revenue=100.0,
        total=110.0,
    ),
    # No revenue: its total counts instead.
    order("a-order-2", ANNA, ago(days=10), [("Cosmetics", 3.0)], total=50.0),
    order(
        "o-order-1",
        ANNA_OLD,
        ago(days=20),
        [("Toys", 1.0), ("Cosmetics", 1.0)],
        revenue=30.0,
        channel="pos",
    ),
    event("o-page-1", ANNA_OLD, ago(days=100), "", type="page", name="Home", channel="email"),
    view(
        "a-view-1",
        ANNA,
        ago(days=5),
        {"color": "red", "size": 3, "price": "12.5", "in_stock": True},
        channel="app",
        context=MOBILE,
    ),
    view(
        "a-view-2",
        ANNA,
        ago(hours=1),
        {"color": "blue", "size": 5, "coupon": "SPRING"},
        context=DESKTOP,
    ),
    order("b-order-1", BORIS, ago(days=2), [("Furniture", 1.0), ("Cosmetics", 1.0)], revenue=200.0),
    # Two views at the same moment: first/last break the tie by message id.
    view("b-view-2", BORIS, ago(days=3), {"color": "red", "size": 3}),
    view("b-view-1", BORIS, ago(days=3), {"color": "green", "coupon": None}),
    view("b-view-3", BORIS, ago(days=4), {"size": 7}),
    # Ignored everywhere: no profile, and after NOW.
    order("x-order-1", None, ago(days=1), [("Cosmetics", 5.0)], revenue=1000.0),
    order("a-order-future", ANNA, NOW + dt.timedelta(days=1), [("Cosmetics", 9.0)], revenue=500.0),
]


def load(backend: Backend, rows: list[dict[str, Any]]) -> None:
    lines = [
        {**line, **{name: row.get(name) for name in ORDER_LINE_EVENT_COLUMNS}}
        for row in rows
        for line in row.get("_lines", ())
    ]
    backend.load(
        LoadBatch(table_of(EVENTS.arrow_schema, rows), table_of(ORDER_LINES.arrow_schema, lines))
    )


def table_of(schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


def map_profiles(backend: Backend, pairs: list[tuple[str, str]], version: dt.datetime) -> None:
    rows = [{"profile_id": p, "canonical_id": c, "updated_at": version} for p, c in pairs]
    backend.upsert(PROFILE_MAP, table_of(PROFILE_MAP.arrow_schema, rows))


@pytest.fixture
def store(backend: Backend) -> Backend:
    load(backend, ROWS)
    # ANNA_OLD first stood alone, then was merged: only the newest mapping may count
    # (on ClickHouse both versions are stored until a merge, and FINAL picks one).
    map_profiles(backend, [(ANNA_OLD, ANNA_OLD), (ANNA, ANNA)], ago(days=30))
    map_profiles(backend, [(ANNA_OLD, ANNA)], ago(days=29))
    return backend


def values(backend: Backend, definition: dict[str, Any], now: dt.datetime = NOW) -> dict[str, Any]:
    """profile -> value of one trait, from its compiled query."""
    trait = ComputedTrait.from_dict({"name": "t", **definition})
    rows = backend.select(compile_trait(trait, backend, now)).to_pylist()
    assert len({r["profile_id"] for r in rows}) == len(rows), rows
    return {r["profile_id"]: r["value"] for r in rows}


VIEWED = {"event": "Product Viewed"}
ORDERS = {"event": "Order Completed"}


# -- aggregations ----------------------------------------------------------------------------


def test_count_counts_matching_events_of_merged_profiles_together(store: Backend) -> None:
    # ANNA: a-order-1, a-order-2, and ANNA_OLD's o-order-1. Not: x-order-1 (no
    # profile), a-order-future (after NOW).
    assert values(store, {"aggregation": "count", **ORDERS}) == {ANNA: 3, BORIS: 1}


def test_count_of_a_value_counts_rows_where_it_is_present(store: Backend) -> None:
    # Only a-view-2 has a coupon; b-view-1's is JSON null. BORIS still gets a row.
    assert values(store, {"aggregation": "count", "value": "properties.coupon", **VIEWED}) == {
        ANNA: 1,
        BORIS: 0,
    }


def test_sum_falls_back_to_the_next_field(store: Backend) -> None:
    # ANNA: 100 (revenue) + 50 (no revenue: total) + 30 = 180.
    definition = {"aggregation": "sum", "value": ["revenue", "total"], **ORDERS}
    assert values(store, definition) == {ANNA: 180.0, BORIS: 200.0}


def test_sum_of_a_json_property_reads_numbers_and_numeric_text(store: Backend) -> None:
    assert values(store, {"aggregation": "sum", "value": "properties.size", **VIEWED}) == {
        ANNA: 3 + 5,
        BORIS: 3 + 7,
    }
    # "12.5" is text in the JSON; BORIS has views but no price: 0, not missing.
    assert values(store, {"aggregation": "sum", "value": "properties.price", **VIEWED}) == {
        ANNA: 12.5,
        BORIS: 0.0,
    }


def test_avg(store: Backend) -> None:
    assert values(store, {"aggregation": "avg", "value": ["revenue", "total"], **ORDERS}) == {
        ANNA: 180 / 3,
        BORIS: 200.0,
    }
    assert values(store, {"aggregation": "avg", "value": "properties.price", **VIEWED}) == {
        ANNA: 12.5,
        BORIS: None,
    }


def test_min_and_max_of_times_numbers_and_text(store: Backend) -> None:
    assert values(store, {"aggregation": "min", "value": "timestamp"}) == {
        ANNA: ago(days=100),
        BORIS: ago(days=4),
    }
    assert values(store, {"aggregation": "max", "value": "timestamp"}) == {
        ANNA: ago(hours=1),
        BORIS: ago(days=2),
    }
    assert values(store, {"aggregation": "max", "value": "properties.size"}) == {
        ANNA: 5.0,
        BORIS: 7.0,
    }
    text = {"value": "properties.color", "value_type": "text", **VIEWED}
    assert values(store, {"aggregation": "min", **text}) == {ANNA: "blue", BORIS: "green"}
    assert values(store, {"aggregation": "max", **text}) == {ANNA: "red", BORIS: "red"}


def test_first_and_last_by_event_time_skip_missing_values_and_break_ties_by_message_id(
    store: Backend,
) -> None:
    # BORIS: b-view-3 (4 days ago) has no color; b-view-1 and b-view-2 share a time;
    # b-order-1 (2 days ago) has no color either.
    assert values(store, {"aggregation": "first", "value": "properties.color"}) == {
        ANNA: "red",
        BORIS: "green",
    }
    assert values(store, {"aggregation": "last", "value": "properties.color"}) == {
        ANNA: "blue",
        BORIS: "red",
    }
    assert values(store, {"aggregation": "first", "value": "channel"}) == {
        ANNA: "email",
        BORIS: "web",
    }
    assert values(
        store, {"aggregation": "last", "value": "properties.size", "value_type": "number"}
    ) == {ANNA: 5.0, BORIS: 3.0}


def test_first_and_last_of_order_lines_break_ties_by_line_number(store: Backend) -> None:
    lines = {"source": "order_lines", "value": "category"}
    # b-order-1's two lines share a time: Furniture is line 0.
    assert values(store, {"aggregation": "first", **lines}) == {
        ANNA: "Cosmetics",
        BORIS: "Furniture",
    }
    assert values(store, {"aggregation": "last", **lines}) == {
        ANNA: "Cosmetics",
        BORIS: "Cosmetics",
    }


def test_most_frequent_breaks_ties_by_the_smallest_value(store: Backend) -> None:
    # ANNA's lines: Cosmetics x3, Furniture, Toys. BORIS's: Furniture, Cosmetics (a tie).
    definition = {"aggregation": "most_frequent", "source": "order_lines", "value": "category"}
    assert values(store, definition) == {ANNA: "Cosmetics", BORIS: "Cosmetics"}
    # Colors: ANNA red, blue; BORIS red, green (b-view-3 has none): ties.
    assert values(
        store, {"aggregation": "most_frequent", "value": "properties.color", **VIEWED}
    ) == {
        ANNA: "blue",
        BORIS: "green",
    }
    # Sizes: ANNA 3, 5; BORIS 3, 7: the smallest number, not the smallest text ("3" < "7" either way).
    numbers = {
        "aggregation": "most_frequent",
        "value": "properties.size",
        "value_type": "number",
        **VIEWED,
    }
    assert values(store, numbers) == {ANNA: 3.0, BORIS: 3.0}


@pytest.mark.parametrize("aggregation", ["min", "max", "first", "last", "most_frequent"])
def test_a_value_over_rows_without_values_is_missing(store: Backend, aggregation: str) -> None:
    definition = {"aggregation": aggregation, "value": "properties.coupon", "value_type": "text"}
    assert values(store, {**definition, **ORDERS}) == {ANNA: None, BORIS: None}


def test_unique_list_is_sorted_and_capped(store: Backend) -> None:
    assert values(store, {"aggregation": "unique_list", "value": "channel"}) == {
        ANNA: ["app", "email", "pos", "web"],
        BORIS: ["web"],
    }
    assert values(store, {"aggregation": "unique_list", "value": "channel", "limit": 2}) == {
        ANNA: ["app", "email"],
        BORIS: ["web"],
    }
    # BORIS's events have no context: an empty list, not missing.
    assert values(store, {"aggregation": "unique_list", "value": "context.device.type"}) == {
        ANNA: ["desktop", "mobile"],
        BORIS: [],
    }


def test_unique_count(store: Backend) -> None:
    assert values(store, {"aggregation": "unique_count", "value": "channel"}) == {ANNA: 4, BORIS: 1}
    assert values(store, {"aggregation": "unique_count", "value": "properties.coupon"}) == {
        ANNA: 1,
        BORIS: 0,
    }


# -- filters ------------------------------------------------------------------------------------

# Product views: ANNA  a-view-1 {color red, size 3, price "12.5", in_stock true}, channel app
#                      a-view-2 {color blue, size 5, coupon SPRING}
#                BORIS b-view-2 {color red, size 3}, b-view-1 {color green, coupon null}, b-view-3 {size 7}
FILTERS: list[tuple[dict[str, Any], dict[str, int]]] = [
    ({"field": "properties.color", "op": "=", "value": "red"}, {ANNA: 1, BORIS: 1}),
    # != and not in also match b-view-3, which has no color.
    ({"field": "properties.color", "op": "!=", "value": "red"}, {ANNA: 1, BORIS: 2}),
    ({"field": "properties.size", "op": ">", "value": 3}, {ANNA: 1, BORIS: 1}),
    ({"field": "properties.size", "op": ">=", "value": 3}, {ANNA: 2, BORIS: 2}),
    ({"field": "properties.size", "op": "<", "value": 5}, {ANNA: 1, BORIS: 1}),
    ({"field": "properties.size", "op": "<=", "value": 5}, {ANNA: 2, BORIS: 1}),
    ({"field": "properties.color", "op": "in", "value": ["red", "green"]}, {ANNA: 1, BORIS: 2}),
    ({"field": "properties.color", "op": "not in", "value": ["red", "green"]}, {ANNA: 1, BORIS: 1}),
    ({"field": "properties.size", "op": "in", "value": [5, 7]}, {ANNA: 1, BORIS: 1}),
    ({"field": "properties.color", "op": "contains", "value": "re"}, {ANNA: 1, BORIS: 2}),
    # A JSON null is no value.
    ({"field": "properties.coupon", "op": "exists"}, {ANNA: 1}),
    # Numeric text compares as a number when the literal is a number.
    ({"field": "properties.price", "op": ">", "value": 10}, {ANNA: 1}),
    ({"field": "properties.in_stock", "op": "=", "value": True}, {ANNA: 1}),
    ({"field": "channel", "op": "=", "value": "app"}, {ANNA: 1}),
    ({"field": "channel", "op": "!=", "value": "app"}, {ANNA: 1, BORIS: 3}),
    ({"field": "timestamp", "op": "<", "value": "2024-05-29"}, {ANNA: 1, BORIS: 1}),
    (
        {"field": "timestamp", "op": ">=", "value": dt.datetime(2024, 5, 29, tzinfo=dt.UTC)},
        {ANNA: 1, BORIS: 2},
    ),
]


@pytest.mark.parametrize(
    ("condition", "expected"), FILTERS, ids=[f"{f['field']} {f['op']}" for f, _ in FILTERS]
)
def test_filter_operators(
    store: Backend, condition: dict[str, Any], expected: dict[str, int]
) -> None:
    assert values(store, {"aggregation": "count", "where": [condition], **VIEWED}) == expected


def test_filters_on_typed_number_columns(store: Backend) -> None:
    # Orders: ANNA revenue 100, (none: total 50), 30; BORIS 200.
    assert values(
        store,
        {"aggregation": "count", "where": [{"field": "revenue", "op": ">", "value": 50}], **ORDERS},
    ) == {
        ANNA: 1,
        BORIS: 1,
    }
    assert values(
        store, {"aggregation": "count", "where": [{"field": "revenue", "op": "exists"}], **ORDERS}
    ) == {
        ANNA: 2,
        BORIS: 1,
    }


def test_all_filters_must_pass(store: Backend) -> None:
    where = [
        {"field": "properties.size", "op": "=", "value": 3},
        {"field": "channel", "op": "=", "value": "web"},
    ]
    assert values(store, {"aggregation": "count", "where": where, **VIEWED}) == {BORIS: 1}


def test_several_event_names(store: Backend) -> None:
    assert values(
        store, {"aggregation": "count", "event": ["Product Viewed", "Order Completed"]}
    ) == {ANNA: 5, BORIS: 4}


# -- windows -------------------------------------------------------------------------------------

# Orders: ANNA 40, 10 and (merged) 20 days ago, plus one a day after NOW; BORIS 2 days ago.
WINDOWS = [
    ("all", {ANNA: 3, BORIS: 1}),
    ("30d", {ANNA: 2, BORIS: 1}),
    ("12h", {}),
    ({"since": "2024-05-15"}, {ANNA: 1, BORIS: 1}),
    ({"since": dt.date(2024, 4, 22)}, {ANNA: 3, BORIS: 1}),  # a-order-1 is at noon that day
    # Dates are whole days: o-order-1 at noon on 2024-05-12 is inside.
    ({"between": ["2024-04-01", "2024-05-12"]}, {ANNA: 2}),
    ({"between": [dt.date(2024, 4, 1), dt.date(2024, 5, 11)]}, {ANNA: 1}),
    # A date-time end is exclusive: o-order-1 at exactly 12:00 is outside.
    ({"between": ["2024-04-01T00:00:00Z", "2024-05-12T12:00:00Z"]}, {ANNA: 1}),
    ({"between": ["2024-04-01T00:00:00Z", "2024-05-12T12:00:00.001Z"]}, {ANNA: 2}),
]


@pytest.mark.parametrize(("window", "expected"), WINDOWS, ids=[str(w) for w, _ in WINDOWS])
def test_windows(store: Backend, window: Any, expected: dict[str, int]) -> None:
    assert values(store, {"aggregation": "count", "window": window, **ORDERS}) == expected


def test_relative_windows_follow_now(store: Backend) -> None:
    assert values(store, {"aggregation": "count", "window": "12h"}) == {
        ANNA: 1
    }  # a-view-2, an hour ago
    # A day later, a-order-future has happened and a-view-2 is 25 hours old.
    later = NOW + dt.timedelta(days=1)
    assert values(store, {"aggregation": "count", "window": "12h"}, now=later) == {ANNA: 1}
    assert values(
        store, {"aggregation": "sum", "value": "revenue", "window": "2h", **ORDERS}, now=later
    ) == {ANNA: 500.0}
    assert values(store, {"aggregation": "count", "window": "15m"}, now=ago(minutes=50)) == {
        ANNA: 1
    }
    assert values(store, {"aggregation": "count", "window": "5m"}, now=ago(minutes=50)) == {}


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compile_trait(BUILTIN[0], "duckdb", dt.datetime(2024, 6, 1))


# -- sources, identity ------------------------------------------------------------------------


def test_order_lines_source(store: Backend) -> None:
    # Units of Cosmetics lines of completed orders in the last 30 days:
    # ANNA a-order-2 (3) + o-order-1 (1); a-order-1 is 40 days old. BORIS b-order-1 (1).
    definition = {
        "aggregation": "sum",
        "source": "order_lines",
        "value": "quantity",
        "window": "30d",
        "where": [{"field": "category", "op": "=", "value": "Cosmetics"}],
        **ORDERS,
    }
    assert values(store, definition) == {ANNA: 4.0, BORIS: 1.0}


def test_the_newest_profile_mapping_wins(store: Backend) -> None:
    # Unmerge: ANNA_OLD is its own profile again (a newer version of its mapping).
    map_profiles(store, [(ANNA_OLD, ANNA_OLD)], ago(days=1))
    assert values(store, {"aggregation": "count", **ORDERS}) == {ANNA: 2, ANNA_OLD: 1, BORIS: 1}


def test_events_without_a_profile_are_ignored(store: Backend) -> None:
    # x-order-1 (1000, no profile) is the only order of the last 3 days besides BORIS's.
    assert values(store, {"aggregation": "sum", "value": "revenue", "window": "3d", **ORDERS}) == {
        BORIS: 200.0
    }


def test_user_values_are_literals_not_sql(backend: Backend) -> None:
    name = "x'); DROP TABLE events; --"
    properties = {'it\'s "quoted"': "Диван «Уют»", "*": {"a/b~c": "star"}, "[0]": "bracket"}
    load(backend, [event("m1", ANNA, ago(days=1), name, properties=properties)])

    assert values(backend, {"aggregation": "count", "event": name}) == {ANNA: 1}
    where = [{"field": 'properties.it\'s "quoted"', "op": "=", "value": "Диван «Уют»"}]
    assert values(backend, {"aggregation": "count", "where": where}) == {ANNA: 1}
    # JSON keys are keys, not patterns: "*" is no wildcard, "/" and "~" need no escaping.
    assert values(backend, {"aggregation": "first", "value": "properties.*.a/b~c"}) == {
        ANNA: "star"
    }
    assert values(backend, {"aggregation": "first", "value": "properties.[0]"}) == {ANNA: "bracket"}
    assert values(backend, {"aggregation": "count", "event": "x'"}) == {}
    assert backend.count(EVENTS) == 1


# -- evaluate and the built-in traits ------------------------------------------------------------


def test_builtin_traits(store: Backend) -> None:
    result = evaluate(store, BUILTIN, NOW)

    assert result.to_pylist() == [
        {
            "profile_id": ANNA,
            "first_seen": ago(days=100),
            "last_seen": ago(hours=1),
            "orders": 3,
            "revenue": 180.0,
            "average_check": 60.0,
            "last_order_at": ago(days=10),
            "favourite_category": "Cosmetics",
            "channels": ["app", "email", "pos", "web"],
            "devices": ["desktop", "mobile"],
            "operating_systems": ["Windows", "iOS"],
        },
        {
            "profile_id": BORIS,
            "first_seen": ago(days=4),
            "last_seen": ago(days=2),
            "orders": 1,
            "revenue": 200.0,
            "average_check": 200.0,
            "last_order_at": ago(days=2),
            "favourite_category": "Cosmetics",
            "channels": ["web"],
            "devices": [],
            "operating_systems": [],
        },
    ]
    assert result.schema == pa.schema(
        [("profile_id", pa.string())] + [(t.name, t.result_type()) for t in BUILTIN]
    )


def test_evaluate_gives_empty_values_to_profiles_only_other_traits_found(store: Backend) -> None:
    traits = parse_traits(
        [
            {
                "name": "coupon_views",
                "aggregation": "count",
                "where": [{"field": "properties.coupon", "op": "exists"}],
            },
            {
                "name": "big_spend",
                "aggregation": "sum",
                "value": "revenue",
                "where": [{"field": "revenue", "op": ">", "value": 150}],
            },
            {
                "name": "big_categories",
                "aggregation": "unique_list",
                "source": "order_lines",
                "value": "category",
                "where": [{"field": "quantity", "op": ">=", "value": 3}],
            },
            {
                "name": "first_big_order",
                "aggregation": "first",
                "value": "message_id",
                "where": [{"field": "revenue", "op": ">", "value": 150}],
            },
        ]
    )

    assert evaluate(store, traits, NOW).to_pylist() == [
        {
            "profile_id": ANNA,
            "coupon_views": 1,
            "big_spend": 0.0,
            "big_categories": ["Cosmetics"],
            "first_big_order": None,
        },
        {
            "profile_id": BORIS,
            "coupon_views": 0,
            "big_spend": 200.0,
            "big_categories": [],
            "first_big_order": "b-order-1",
        },
    ]


def test_evaluate_of_an_empty_store(backend: Backend) -> None:
    result = evaluate(backend, BUILTIN, NOW)
    assert result.num_rows == 0
    assert result.column_names == ["profile_id", *(t.name for t in BUILTIN)]


def test_compiled_sql_per_engine() -> None:
    trait = ComputedTrait.from_dict(
        {
            "name": "cosmetics_units_30d",
            "aggregation": "sum",
            "source": "order_lines",
            "event": "Order Completed",
            "value": "quantity",
            "window": "30d",
            "where": [{"field": "category", "op": "=", "value": "Cosmetics"}],
        }
    )
    rows = (
        "FROM order_lines AS s LEFT JOIN profile_map AS pm{final} ON pm.profile_id = s.profile_id "
        "WHERE NOT {not_null} AND s.event = 'Order Completed' AND s.category = 'Cosmetics' "
        "AND s.timestamp <= {now} AND s.timestamp >= {since}) AS m GROUP BY _profile"
    )
    head = (
        "SELECT _profile AS profile_id, COALESCE(SUM(_value), 0) AS value FROM (SELECT "
        "COALESCE(pm.canonical_id, s.profile_id) AS _profile, s.quantity AS _value "
    )
    assert compile_trait(trait, "duckdb", NOW).sql("duckdb") == head + rows.format(
        final="",
        not_null="s.profile_id IS NULL",
        now="CAST('2024-06-01T12:00:00+00:00' AS TIMESTAMPTZ)",
        since="CAST('2024-05-02T12:00:00+00:00' AS TIMESTAMPTZ)",
    )
    assert compile_trait(trait, "clickhouse", NOW).sql("clickhouse") == head + rows.format(
        final=" FINAL",
        not_null="(s.profile_id IS NULL)",
        now="CAST('2024-06-01 12:00:00.000000' AS DateTime64(6, 'UTC'))",
        since="CAST('2024-05-02 12:00:00.000000' AS DateTime64(6, 'UTC'))",
    )


# -- definitions ----------------------------------------------------------------------------------


def test_definitions_round_trip_through_dicts() -> None:
    for trait in BUILTIN:
        assert ComputedTrait.from_dict(trait.to_dict()) == trait
    custom = {
        "name": "red_views",
        "description": "Red things viewed lately",
        "aggregation": "unique_list",
        "event": ["Product Viewed", "Product Clicked"],
        "where": [
            {"field": "properties.color", "op": "in", "value": ["red", "crimson"]},
            {"field": "total", "op": "exists"},
        ],
        "value": "properties.name",
        "window": {"between": ["2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"]},
        "limit": 5,
    }
    assert ComputedTrait.from_dict(custom).to_dict() == custom
    assert Window.parse("2w").to_config() == "14d"
    assert Window.parse("90m").to_config() == "90m"
    assert Window.parse({"since": "2024-01-01"}).to_config() == {
        "since": "2024-01-01T00:00:00+00:00"
    }


def test_traits_load_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "traits.toml"
    toml.write_text(
        """
[[traits]]
name = "cosmetics_units_30d"
aggregation = "sum"
source = "order_lines"
event = "Order Completed"
value = "quantity"
window = "30d"
where = [{ field = "category", op = "=", value = "Cosmetics" }]

[[traits]]
name = "spring_orders"
aggregation = "count"
event = "Order Completed"
window = { between = [2024-03-01, 2024-05-31] }
""",
        encoding="utf-8",
    )
    traits = load_traits(toml)

    assert [t.name for t in traits] == ["cosmetics_units_30d", "spring_orders"]
    assert traits[1].window == Window(
        start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC), end=dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    )
    as_json = tmp_path / "traits.json"
    as_json.write_text(json.dumps({"traits": [t.to_dict() for t in traits]}), encoding="utf-8")
    assert load_traits(as_json) == traits


def test_the_documented_example_is_a_valid_definition() -> None:
    doc = computed.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n\n", 1)[1].split("\n\n", 1)[0])

    (trait,) = parse_traits(tomllib.loads(example))

    assert trait.to_dict()["where"] == [{"field": "category", "op": "=", "value": "Cosmetics"}]


def test_python_definitions_are_validated_too() -> None:
    with pytest.raises(TraitError, match="`value`"):
        ComputedTrait("spend", "sum", value="category")
    with pytest.raises(TraitError, match=r"`where\[0\]` is \{'field'"):
        ComputedTrait("red", Aggregation.COUNT, where=({"field": "properties.color"},))


INVALID = [
    ({"aggregation": "median", "value": "total"}, "aggregation", "'median'; use one of 'count'"),
    (
        {"aggregation": "count", "window": "30x"},
        "window",
        '\'30x\'; use "all", a duration such as "30d"',
    ),
    ({"aggregation": "count", "window": "0d"}, "window", "empty window"),
    (
        {"aggregation": "count", "window": {"since": "last week"}},
        "window.since",
        "not an ISO 8601 date",
    ),
    (
        {"aggregation": "count", "window": {"between": ["2024-05-01", "2024-04-01"]}},
        "window",
        "ends before it starts",
    ),
    ({"aggregation": "sum", "value": "category"}, "value", "is text, but sum needs numbers"),
    (
        {"aggregation": "avg", "value": "properties.plan", "value_type": "text"},
        "value",
        "avg needs numbers",
    ),
    ({"aggregation": "max"}, "value", "is missing; max needs a field"),
    ({"aggregation": "max", "value": "colour"}, "value", "'colour', not a field of events"),
    ({"aggregation": "max", "value": "properties."}, "value", "not a field of events"),
    (
        {"aggregation": "max", "value": "properties.x", "source": "order_lines"},
        "value",
        "not a field of order_lines",
    ),
    ({"aggregation": "max", "value": ["total", "category"]}, "value", "mixes number and text"),
    (
        {"aggregation": "max", "value": "total", "value_type": "text"},
        "value_type",
        "remove value_type",
    ),
    (
        {"aggregation": "max", "value": "properties.x", "value_type": "date"},
        "value_type",
        '\'date\'; use "number" or "text"',
    ),
    (
        {"aggregation": "count", "source": "orders"},
        "source",
        "'orders'; use one of 'events', 'order_lines'",
    ),
    ({"aggregation": "count", "event": ""}, "event", "give an event name"),
    ({"aggregation": "count", "limit": 5}, "limit", "unique_list only"),
    ({"aggregation": "unique_list", "value": "channel", "limit": 0}, "limit", "at least 1"),
    ({"aggregation": "count", "agg": "sum"}, "agg", "is not a trait field"),
    ({"aggregation": "count", "where": {"field": "total"}}, "where", "give a list of filters"),
    (
        {"aggregation": "count", "where": [{"field": "total", "op": "like", "value": 1}]},
        "where[0].op",
        "'like'; use one of",
    ),
    (
        {"aggregation": "count", "where": [{"field": "total", "op": "=", "value": "100"}]},
        "where[0].value",
        "`total` is a number column",
    ),
    (
        {"aggregation": "count", "where": [{"field": "channel", "op": "=", "value": 1}]},
        "where[0].value",
        "`channel` is a text column",
    ),
    (
        {"aggregation": "count", "where": [{"field": "channel", "op": "in", "value": "web"}]},
        "where[0].value",
        "in takes a non-empty list",
    ),
    (
        {"aggregation": "count", "where": [{"field": "channel", "op": "=", "value": ["web"]}]},
        "where[0].value",
        "one value, not a list",
    ),
    (
        {
            "aggregation": "count",
            "where": [{"field": "properties.x", "op": "in", "value": [1, "a"]}],
        },
        "where[0].value",
        "mixes numbers and text",
    ),
    (
        {"aggregation": "count", "where": [{"field": "channel", "op": "exists", "value": 1}]},
        "where[0].value",
        "exists takes no value",
    ),
    (
        {"aggregation": "count", "where": [{"field": "total", "op": "contains", "value": "1"}]},
        "where[0].value",
        "number column",
    ),
    (
        {
            "aggregation": "count",
            "where": [{"field": "properties.x", "op": "contains", "value": 1}],
        },
        "where[0].value",
        "contains looks for text",
    ),
    (
        {"aggregation": "count", "where": [{"field": "properties.x", "op": ">", "value": True}]},
        "where[0].op",
        "compare true/false with =",
    ),
    (
        {"aggregation": "count", "where": [{"field": "timestamp", "op": ">", "value": "soon"}]},
        "where[0].value",
        "not an ISO 8601 date",
    ),
    (
        {"aggregation": "count", "where": [{"field": "nope", "op": "exists"}]},
        "where[0].field",
        "'nope', not a field of events",
    ),
    (
        {"aggregation": "count", "where": [{"field": "total", "op": ">", "value": float("inf")}]},
        "where[0].value",
        "a finite number",
    ),
]


@pytest.mark.parametrize(
    ("definition", "field", "message"), INVALID, ids=[f"{f}: {m}" for _, f, m in INVALID]
)
def test_invalid_definitions_name_the_field_and_the_fix(
    definition: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(TraitError) as raised:
        ComputedTrait.from_dict({"name": "my_trait", **definition})

    error = raised.value
    assert error.field == field
    assert error.detail.startswith(f"trait 'my_trait': `{field}` "), error.detail
    assert message in error.detail, error.detail
    assert error.code == "invalid_trait"


def test_invalid_names_and_duplicates() -> None:
    with pytest.raises(TraitError, match="`name` is '1st'; use letters, digits and underscores"):
        ComputedTrait.from_dict({"name": "1st", "aggregation": "count"})
    with pytest.raises(TraitError, match="not profile_id"):
        ComputedTrait.from_dict({"name": "profile_id", "aggregation": "count"})
    with pytest.raises(TraitError, match="trait 'orders': `name` is used by two traits"):
        parse_traits(
            {
                "traits": [
                    {"name": "orders", "aggregation": "count"},
                    {"name": "orders", "aggregation": "count"},
                ]
            }
        )
    with pytest.raises(TraitError, match="expected a list of traits"):
        parse_traits({"trait": []})
