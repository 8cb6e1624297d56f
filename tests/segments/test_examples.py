"""The worked examples of the segmentation issue, and one small case per node and operator.

Each case is a tree, its text form, and the members expected on the hand-built data set
(``dataset.py``: the story of every person is in its docstring), worked out by hand with a
comment per person saying why they are in or out. Each is checked against the reference
interpreter and against the compiled SQL on every engine; the text form must parse to the
tree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opencdp.segments.ast import (
    Age,
    Aggregate,
    Ago,
    And,
    Bucket,
    Compare,
    Condition,
    DaysUntil,
    Duration,
    Field,
    Fn,
    InSegment,
    Node,
    Not,
    NotFollowed,
    Op,
    Or,
    Param,
    Sequence,
    Step,
    Trait,
    Window,
    bucket_of,
)
from opencdp.storage.base import Backend
from tests.conftest import BACKENDS, close_test_backend, open_test_backend
from tests.segments import dataset
from tests.segments.dataset import NOW, UNIVERSE, ids
from tests.segments.reference import reference_members

DATA = dataset.as_data()
ORDER, VIEWED, ADDED = ("Order Completed",), ("Product Viewed",), ("Product Added",)
OPENED, DELIVERED, CLICKED, NPS = ("Email Opened",), ("Email Delivered",), ("Email Link Clicked",), ("Survey Answered",)


# -- building trees ------------------------------------------------------------------------------


def d(text: str) -> Duration:
    return Duration.parse(text)


def last(text: str) -> Window:
    return Window(last=d(text))


def day(year: int, month: int, date: int) -> dt.datetime:
    return dt.datetime(year, month, date, tzinfo=dt.UTC)


def between(start: dt.datetime, end: dt.datetime) -> Window:
    """``between(start, end)``, both days included."""
    return Window(since=start, until=end + dt.timedelta(days=1))


def f(path: str, op: Op, value: Any = None, high: Any = None) -> Compare:
    """A condition on an event field (inside ``where``)."""
    return Compare(this=Field(path=path), op=op, value=value, high=high)


def trait(path: str, op: Op, value: Any = None, high: Any = None) -> Compare:
    return Compare(this=Trait(path=path), op=op, value=value, high=high)


def agg(fn: Fn, event: tuple[str, ...] | None = None, value: str | None = None, where: Condition | None = None,
        window: Window | None = None) -> Aggregate:
    return Aggregate(fn=fn, event=event, value=value, where=where, window=window)


def cmp(measure: Node, op: Op, value: Any = None, high: Any = None) -> Compare:
    return Compare(this=measure, op=op, value=value, high=high)


def count(event: tuple[str, ...] | None = None, where: Condition | None = None, window: Window | None = None) -> Aggregate:
    return agg(Fn.COUNT, event, where=where, window=window)


def and_(*conditions: Condition) -> And:
    return And(conditions=conditions)


def or_(*conditions: Condition) -> Or:
    return Or(conditions=conditions)


def not_(condition: Condition) -> Not:
    return Not(this=condition)


def step(event: tuple[str, ...], where: Condition | None = None) -> Step:
    return Step(event=event, where=where)


@dataclass
class Case:
    name: str
    tree: Condition
    expected: set[str]
    text: str | None = None
    params: Mapping[str, Any] | None = None
    segments: Mapping[str, Node] = field(default_factory=dict)
    engine_differs: str | None = None
    """Why the compiler gives other members (reported, not yet settled): the engine test is xfail."""

    def __str__(self) -> str:
        return self.name


def everyone_but(*names: str) -> set[str]:
    return set(UNIVERSE) - ids(*names)


# -- the worked examples (issue 4, section 2) -----------------------------------------------------

COSMETICS = f("line.category", Op.STARTS_WITH, "Cosmetics")
KITCHEN_SET = f("line.category", Op.EQ, "Kitchen > Kitchen sets")
TABLE_OR_CHAIRS = f("line.category", Op.IN, ("Kitchen > Tables", "Kitchen > Chairs"))

# Example 10: the lifecycle ladder, several segments referring to each other.
LIFECYCLE: dict[str, Condition] = {
    "new": cmp(agg(Fn.FIRST_TIME, ORDER), Op.GE, Ago(d("30d"))),
    "vip": cmp(agg(Fn.SUM, ORDER, "total", window=last("365d")), Op.GE, 8000),
    "regular": and_(
        cmp(count(ORDER, window=last("365d")), Op.GE, 2),
        cmp(agg(Fn.LAST_TIME, ORDER), Op.GE, Ago(d("90d"))),
        not_(InSegment(segment="new")),
        not_(InSegment(segment="vip")),
    ),
    "at_risk": and_(
        cmp(agg(Fn.LAST_TIME, ORDER), Op.LT, Ago(d("180d"))),
        cmp(agg(Fn.LAST_TIME, ORDER), Op.GE, Ago(d("365d"))),
    ),
    "lost": cmp(agg(Fn.LAST_TIME, ORDER), Op.LT, Ago(d("365d"))),
}

EXAMPLES = [
    Case(
        "1 three cosmetics orders in 30 days, average total at least 2000",
        and_(
            cmp(count(ORDER, COSMETICS, last("30d")), Op.GE, 3),
            cmp(agg(Fn.AVG, ORDER, "total", COSMETICS, last("30d")), Op.GE, 2000),
        ),
        # anna: 2100, 2500, 1400 -> avg 2000 exactly (each order once: her 1400 order has two
        #   cosmetics lines; folding lines would give 1850); her order after NOW is ignored.
        # dasha: 3000, 3000 and dasha-old's 3000 (merged). Out: boris (avg 1500), vera (28d and
        # 12d only: 40d is outside), gleb (2 cosmetics orders), p-ghost (not in profile_map).
        ids("anna", "dasha"),
        'count("Order Completed", where: line.category starts with "Cosmetics", window: 30d) >= 3\n'
        '  and avg("Order Completed", total, where: line.category starts with "Cosmetics", window: 30d) >= 2000',
    ),
    Case(
        "2 kitchen set in 60 days, no tables or chairs since",
        and_(
            cmp(count(ORDER, KITCHEN_SET, last("60d")), Op.GE, 1),
            not_(Sequence(steps=(step(ORDER, KITCHEN_SET), step(ORDER, TABLE_OR_CHAIRS)), window=last("60d"))),
        ),
        # egor: set 20d, nothing after. gleb: set 8d, then only a t-shirt. ilya: set 30d; his
        # table (40d) and chairs (100d) came before. zoya: chairs in the same order as the set
        # (not later). Out: fedor (chairs 10d after the set 50d), galina (set 90d), kirill (200d).
        ids("egor", "gleb", "ilya", "zoya"),
        'count("Order Completed", where: line.category = "Kitchen > Kitchen sets", window: 60d) >= 1\n'
        '  and not sequence(step("Order Completed", where: line.category = "Kitchen > Kitchen sets"), '
        'step("Order Completed", where: line.category in ["Kitchen > Tables", "Kitchen > Chairs"]), window: 60d)',
    ),
    Case(
        "3 finished the kitchen, nothing for the living room yet",
        and_(
            cmp(count(ORDER, KITCHEN_SET), Op.GE, 1),
            cmp(count(ORDER, f("line.category", Op.EQ, "Kitchen > Tables")), Op.GE, 1),
            cmp(count(ORDER, f("line.category", Op.EQ, "Kitchen > Chairs")), Op.GE, 1),
            cmp(count(ORDER, f("line.category", Op.STARTS_WITH, "Living room")), Op.EQ, 0),
        ),
        # ilya: chairs, table, set, no living room. zoya: table, then set and chairs.
        # Out: kirill (all three, then a sofa), fedor (no table), gleb/egor/galina (set only),
        # pavel (chairs only), boris (table only).
        ids("ilya", "zoya"),
        'count("Order Completed", where: line.category = "Kitchen > Kitchen sets") >= 1\n'
        '  and count("Order Completed", where: line.category = "Kitchen > Tables") >= 1\n'
        '  and count("Order Completed", where: line.category = "Kitchen > Chairs") >= 1\n'
        '  and count("Order Completed", where: line.category starts with "Living room") = 0',
    ),
    Case(
        "4 interested in the living room, without living-room furniture bought in 365 days",
        and_(
            cmp(count(VIEWED, f("product.room", Op.EQ, "Living room"), last("30d")), Op.GE, 2),
            not_(cmp(count(ORDER, f("line.category", Op.IN, ("Living room > Sofas", "Living room > Armchairs")),
                           last("365d")), Op.GE, 1)),
        ),
        # lena: 3 living-room views. mark: 2 views, bought only a floor lamp (lighting).
        # oleg: 2 views, his armchair was 400d ago. Out: kirill (2 views, bought a sofa 5d),
        # anna/boris/nina (one view), xenia (her sofa view is 42 days old).
        ids("lena", "mark", "oleg"),
        'count("Product Viewed", where: product.room = "Living room", window: 30d) >= 2\n'
        '  and not count("Order Completed", where: line.category in ["Living room > Sofas", '
        '"Living room > Armchairs"], window: 365d) >= 1',
    ),
    Case(
        "5 NPS 9-10, lives in Kazan, average check above 250, no marketing message in 7 days",
        and_(
            cmp(count(NPS, f("properties.score", Op.BETWEEN, 9, 10)), Op.GE, 1),
            trait("city", Op.EQ, "Kazan"),
            cmp(agg(Fn.AVG, ORDER, "total"), Op.GT, 250),
            not_(cmp(count(DELIVERED, window=last("7d")), Op.GE, 1)),
        ),
        # pavel: 10, Kazan, avg 350, e-mail 10d ago. vlad: 10, Kazan since 20d (was Moscow),
        # avg 260, e-mail 10d ago. Out: rita (e-mail 3d ago), sasha (8), taras (moved to
        # Moscow), ulyana (avg 200), semyon (Omsk), dasha (Samara now, no NPS).
        ids("pavel", "vlad"),
        'count("Survey Answered", where: properties.score between 9 and 10) >= 1\n'
        '  and traits.city = "Kazan"\n'
        '  and avg("Order Completed", total) > 250\n'
        '  and not count("Email Delivered", window: 7d) >= 1',
    ),
    Case(
        "6 viewed while out of stock, back in stock now",
        cmp(count(VIEWED, and_(f("product.stock_then", Op.EQ, 0), f("product.stock", Op.GT, 0))), Op.GE, 1),
        # anna: Sofa Grey on May 10th (out since May 1st), 2 in stock now. Out: boris and mark
        # (Sofa Green: still out), wanda (Kitchen set Loft: still out), lena/nina (Sofa Grey
        # after it came back), xenia (serum: no stock known before its view; Sofa Grey on
        # April 20th had 3), kirill/oleg (armchair: only a price change recorded).
        ids("anna"),
        'count("Product Viewed", where: product.stock_then = 0 and product.stock > 0) >= 1',
    ),
    Case(
        "7 opened only trigger messages in 90 days",
        and_(
            cmp(count(OPENED, f("properties.campaign_kind", Op.EQ, "trigger"), last("90d")), Op.GE, 1),
            cmp(count(OPENED, not_(f("properties.campaign_kind", Op.EQ, "trigger")), last("90d")), Op.EQ, 0),
        ),
        # anna: trigger 10d (her mass one is 100d old). lena: triggers 40d, 60d. Out: boris
        # (mass 30d), vera (mass only), gleb (an open without a kind 20d), egor/rita
        # (deliveries, no opens).
        ids("anna", "lena"),
        'count("Email Opened", where: properties.campaign_kind = "trigger", window: 90d) >= 1\n'
        '  and count("Email Opened", where: not properties.campaign_kind = "trigger", window: 90d) = 0',
    ),
    Case(
        "8 clicked the size-M button in a promo e-mail ($size)",
        cmp(count(CLICKED, and_(f("properties.campaign_kind", Op.EQ, "mass"),
                                f("properties.button", Op.EQ, Param(name="size"))), last("30d")), Op.GE, 1),
        # anna: size-M in a mass e-mail 5d. kirill: size-M 12d. Out: boris (size-L), vera
        # (size-M in a trigger e-mail), gleb (size-M 200d ago).
        ids("anna", "kirill"),
        'count("Email Link Clicked", where: properties.campaign_kind = "mass" and properties.button = $size, '
        "window: 30d) >= 1",
        params={"size": "size-M"},
    ),
    Case(
        "9 added to cart, no order within 1 hour",
        NotFollowed(first=step(ADDED), then=step(ORDER), within=d("1h"), window=last("7d")),
        # boris: added 3h ago, no order after. ilya: added 2d ago, ordered 2h later. nina: added
        # exactly 1h ago (the hour is over), no order. yana: her second add 2h ago has no order
        # (her first was followed after 20 min). Out: vera (ordered 30 min later), gleb
        # (ordered exactly 1h later: that counts), egor (added 30 min ago), fedor (10d ago).
        ids("boris", "ilya", "nina", "yana"),
        'not_followed(step("Product Added"), step("Order Completed"), within: 1h, window: 7d)',
    ),
]

LADDER = [
    Case(
        "10 lifecycle: new",
        InSegment(segment="new"),
        # First order in the last 30 days: anna 25d, gleb 20d, dasha 20d (dasha-old's is 15d),
        # egor 20d, mark 2d, yana today. Out: vera (first 40d), boris (200d), ...
        ids("anna", "gleb", "dasha", "egor", "mark", "yana"),
        'in_segment("new")',
        segments=LIFECYCLE,
    ),
    Case(
        "10 lifecycle: vip",
        InSegment(segment="vip"),
        # Spent 8000 or more in 365 days: vera 9150, gleb 10025, dasha 9000 (with dasha-old).
        # Out: anna 6000 (+5000 after NOW, ignored), boris 5000, kirill 3120.
        ids("vera", "gleb", "dasha"),
        'in_segment("vip")',
        segments=LIFECYCLE,
    ),
    Case(
        "10 lifecycle: regular",
        InSegment(segment="regular"),
        # 2+ orders in 365 days, last within 90 days, neither new nor vip: boris, fedor, ilya,
        # kirill (200d and 5d), pavel (last 60d), ulyana (last 70d), zoya. Out: anna, gleb,
        # dasha (new), vera (vip), oleg/rita/vlad (one old order), galina/sasha/taras (one).
        ids("boris", "fedor", "ilya", "kirill", "pavel", "ulyana", "zoya"),
        'in_segment("regular")',
        segments=LIFECYCLE,
    ),
    Case(
        "10 lifecycle: at risk",
        InSegment(segment="at_risk"),
        # Last order 180-365 days ago: rita 200d, vlad 300d. Out: oleg (400d), zoya and kirill
        # (200d, but also recent orders).
        ids("rita", "vlad"),
        'in_segment("at_risk")',
        segments=LIFECYCLE,
    ),
    Case(
        "10 lifecycle: lost",
        InSegment(segment="lost"),
        # No order for over a year: oleg (400d). Never ordered (lena, quiet ...) is not lost.
        ids("oleg"),
        'in_segment("lost")',
        segments=LIFECYCLE,
    ),
]

# -- one case per node and operator -----------------------------------------------------------------

KAZAN = ids("lena", "pavel", "rita", "sasha", "ulyana", "vlad")
"""Latest city Kazan: lena, pavel, rita, sasha, ulyana, vlad (taras moved away, vlad moved in,
boris's Kazan lost the tie by message id, dasha's Kazan came from dasha-old and was
overwritten by Samara, pyotr's was cleared by a null, p-ghost is nobody)."""

NODES = [
    # traits
    Case("trait =", trait("city", Op.EQ, "Kazan"), KAZAN, 'traits.city = "Kazan"'),
    Case(
        "trait != (missing is false)",
        trait("city", Op.NE, "Kazan"),
        # Everyone with a city that is not Kazan; pyotr (cleared) and people without traits are out.
        ids("anna", "boris", "vera", "gleb", "dasha", "mark", "nina", "taras", "semyon"),
        'traits.city != "Kazan"',
    ),
    Case("not trait = (complement)", not_(trait("city", Op.EQ, "Kazan")), set(UNIVERSE) - KAZAN,
         'not traits.city = "Kazan"'),
    Case("trait in", trait("city", Op.IN, ("Moscow", "Perm")), ids("anna", "vera", "mark", "taras", "nina"),
         'traits.city in ["Moscow", "Perm"]'),
    Case("trait not in", trait("city", Op.NOT_IN, ("Moscow", "Kazan")),
         ids("boris", "gleb", "dasha", "nina", "semyon"), 'traits.city not in ["Moscow", "Kazan"]'),
    Case("trait starts with", trait("city", Op.STARTS_WITH, "Sa"), ids("boris", "dasha"),
         'traits.city starts with "Sa"'),
    Case("trait contains", trait("city", Op.CONTAINS, "sk"), ids("gleb", "semyon"), 'traits.city contains "sk"'),
    Case("trait matches", trait("email", Op.MATCHES, r"@example\.ru$"), ids("anna", "vera", "pavel"),
         r'traits.email matches "@example\\.ru$"'),
    Case(
        "trait exists",
        trait("email", Op.EXISTS),
        # dasha's e-mail came from dasha-old's identify; pyotr's e-mail stays (only city was cleared).
        ids("anna", "boris", "vera", "dasha", "pavel", "pyotr"),
        "traits.email exists",
    ),
    Case("a null clears a trait", trait("city", Op.EXISTS), KAZAN | ids(
        "anna", "boris", "vera", "gleb", "dasha", "mark", "nina", "taras", "semyon"), "traits.city exists"),
    Case(
        "trait path: the latest object wins whole",
        and_(not_(trait("address.city", Op.EXISTS)), trait("address.street", Op.EQ, "Kremlyovskaya")),
        # rita's later address has a street and no city: her earlier address.city is gone.
        ids("rita"),
        'not traits.address.city exists and traits.address.street = "Kremlyovskaya"',
    ),
    Case("trait time vs ago", trait("created_at", Op.GT, Ago(d("30d"))), ids("boris", "lena", "mark"),
         "traits.created_at > ago(30d)"),
    Case(
        "trait time vs a date (the UTC day)",
        trait("created_at", Op.GT, dt.date(2024, 5, 25)),
        # mark: 2024-05-31T23:00+03:00 is May 31st in UTC; lena's 2024-05-25 is that day, not after.
        ids("mark"),
        "traits.created_at > 2024-05-25",
    ),
    Case("trait between dates", trait("created_at", Op.BETWEEN, dt.date(2024, 5, 20), dt.date(2024, 5, 25)),
         ids("boris", "lena"), "traits.created_at between 2024-05-20 and 2024-05-25"),
    Case(
        "a date literal is the whole UTC day",
        or_(trait("created_at", Op.EQ, dt.date(2024, 5, 20)),
            trait("created_at", Op.BETWEEN, dt.date(2024, 5, 30), dt.date(2024, 5, 31))),
        # boris signed up 2024-05-20T09:00Z (that day), mark 2024-05-31T20:00Z (the last day of between).
        ids("boris", "mark"),
        "traits.created_at = 2024-05-20 or traits.created_at between 2024-05-30 and 2024-05-31",
    ),
    # dates of traits
    Case(
        "age",
        cmp(Age(path="birthday"), Op.GE, 30),
        # anna 33 (birthday June 5th still to come), boris 39 (today), mark 53. Out: gleb 29,
        # vera 24, lena 13, nina (not a date).
        ids("anna", "boris", "mark"),
        "age(traits.birthday) >= 30",
    ),
    Case("age between", cmp(Age(path="birthday"), Op.BETWEEN, 20, 29), ids("vera", "gleb"),
         "age(traits.birthday) between 20 and 29"),
    Case(
        "days until the birthday",
        cmp(DaysUntil(path="birthday"), Op.LE, 7),
        # boris 0 (today), anna 4, lena 7 (lena-old's birthday). Out: gleb 364 (was yesterday),
        # vera 272 (to 2025-02-28).
        ids("anna", "boris", "lena"),
        "days_until(traits.birthday) <= 7",
    ),
    Case("days until, 29 February", cmp(DaysUntil(path="birthday"), Op.EQ, 272), ids("vera"),
         "days_until(traits.birthday) = 272"),
    # aggregates
    Case(
        "merged profiles count for the survivor",
        cmp(count(ORDER), Op.GE, 3),
        # dasha: 2 + dasha-old's 1. p-ghost's three orders are nobody's.
        ids("anna", "boris", "vera", "gleb", "dasha", "fedor", "ilya"),
        'count("Order Completed") >= 3',
    ),
    Case("count = 0 holds for people with no events", cmp(count(), Op.EQ, 0), ids("quiet"), "count() = 0"),
    Case(
        "sum of a line field",
        cmp(agg(Fn.SUM, ORDER, "line.quantity", f("line.category", Op.EQ, "Kitchen > Chairs")), Op.GE, 5),
        # pavel bought 5 chairs; fedor, ilya, kirill, zoya 4 each.
        ids("pavel"),
        'sum("Order Completed", line.quantity, where: line.category = "Kitchen > Chairs") >= 5',
    ),
    Case(
        "min and max",
        and_(cmp(agg(Fn.MIN, ORDER, "total"), Op.LT, 100), cmp(agg(Fn.MAX, ORDER, "total"), Op.GE, 1500)),
        # a t-shirt order of 25 and a big one: gleb (5000), fedor (2500), ilya (1500).
        ids("gleb", "fedor", "ilya"),
        'min("Order Completed", total) < 100 and max("Order Completed", total) >= 1500',
    ),
    Case(
        "avg missing is false, also under !=",
        cmp(agg(Fn.AVG, NPS, "properties.score"), Op.NE, 1),
        # Only people who answered have an average.
        ids("pavel", "rita", "sasha", "taras", "ulyana", "vlad", "semyon"),
        'avg("Survey Answered", properties.score) != 1',
    ),
    Case("distinct", cmp(agg(Fn.DISTINCT, VIEWED, "product_id"), Op.GE, 2), ids("lena", "xenia"),
         'distinct("Product Viewed", product_id) >= 2'),
    Case(
        "distinct of a line field",
        cmp(agg(Fn.DISTINCT, ORDER, "line.category"), Op.GE, 3),
        # dasha's three categories include dasha-old's lotion and lamp.
        ids("kirill", "ilya", "zoya", "dasha", "gleb", "boris", "vera", "fedor"),
        'distinct("Order Completed", line.category) >= 3',
    ),
    Case(
        "product field of a line",
        cmp(count(ORDER, and_(f("line.quantity", Op.GE, 1), f("product.room", Op.EQ, "Kitchen"))), Op.GE, 1),
        ids("boris", "gleb", "egor", "fedor", "galina", "ilya", "kirill", "pavel", "zoya"),
        'count("Order Completed", where: line.quantity >= 1 and product.room = "Kitchen") >= 1',
    ),
    Case(
        "catalogue price in the last 3 weeks",
        cmp(count(VIEWED, f("product.price", Op.GT, 1000), last("3w")), Op.GE, 1),
        # Sofa Green (1100): lena 05-29, mark 05-12; Kitchen set Loft (2500): wanda 05-15.
        # Out: boris (Sofa Green on 05-10, before the 3 weeks), xenia (serum on 05-10).
        ids("lena", "mark", "wanda"),
        'count("Product Viewed", where: product.price > 1000, window: 3w) >= 1',
    ),
    Case(
        "stock then exists only after a stock change",
        cmp(count(VIEWED, f("product.stock_then", Op.EXISTS)), Op.GE, 1),
        # Out: kirill/oleg (armchair: a price change only), gleb (table), the t-shirt and face
        # cream viewers; xenia is in by her Sofa Grey view (her serum view has none).
        ids("anna", "boris", "lena", "mark", "nina", "wanda", "xenia"),
        'count("Product Viewed", where: product.stock_then exists) >= 1',
    ),
    Case(
        "numeric text reads as a number",
        cmp(count(NPS, f("properties.score", Op.GE, 9)), Op.GE, 1),
        # semyon's "10" came as text.
        ids("pavel", "rita", "taras", "ulyana", "vlad", "semyon"),
        'count("Survey Answered", where: properties.score >= 9) >= 1',
    ),
    Case(
        "a JSON number reads as text for a text literal",
        cmp(count(NPS, f("properties.score", Op.EQ, "10")), Op.GE, 1),
        ids("pavel", "taras", "vlad", "semyon"),
        'count("Survey Answered", where: properties.score = "10") >= 1',
    ),
    # first and last time
    Case("first_time vs ago", cmp(agg(Fn.FIRST_TIME, ORDER), Op.GE, Ago(d("30d"))), LADDER[0].expected,
         'first_time("Order Completed") >= ago(30d)'),
    Case("last_time vs a date", cmp(agg(Fn.LAST_TIME, ORDER), Op.LT, dt.date(2024, 1, 1)),
         ids("oleg", "rita", "vlad"), 'last_time("Order Completed") < 2024-01-01'),
    # windows
    Case(
        "window since",
        cmp(count(ORDER, window=Window(since=day(2024, 5, 20))), Op.GE, 1),
        # Orders from May 20th 00:00 on. Out: egor (May 12th), zoya (May 17th), older ones.
        ids("anna", "boris", "vera", "gleb", "dasha", "fedor", "ilya", "kirill", "mark", "yana"),
        'count("Order Completed", window: since(2024-05-20)) >= 1',
    ),
    Case(
        "window between (both days included)",
        cmp(count(ORDER, window=between(day(2024, 5, 10), day(2024, 5, 17))), Op.GE, 1),
        # anna 05-17 12:00 (the last day counts), boris/gleb/dasha/egor 05-12, dasha-old and
        # zoya 05-17. Out: vera (05-04, 05-20).
        ids("anna", "boris", "gleb", "dasha", "egor", "zoya"),
        'count("Order Completed", window: between(2024-05-10, 2024-05-17)) >= 1',
    ),
    # sequences
    Case(
        "funnel of three steps within a day",
        Sequence(steps=(step(VIEWED), step(ADDED), step(ORDER)), within=d("1d")),
        # yana, vera and ilya viewed, added and ordered within hours. Out: gleb (viewed 3 days
        # before adding), boris and nina (no order after adding), egor (no view).
        ids("yana", "vera", "ilya"),
        'sequence(step("Product Viewed"), step("Product Added"), step("Order Completed"), within: 1d)',
    ),
    Case("funnel without a time limit", Sequence(steps=(step(VIEWED), step(ADDED), step(ORDER))),
         ids("yana", "vera", "ilya", "gleb"),
         'sequence(step("Product Viewed"), step("Product Added"), step("Order Completed"))'),
    Case(
        "abandoned browse",
        NotFollowed(first=step(VIEWED, f("product.room", Op.EQ, "Living room")), then=step(ADDED), within=d("1d")),
        # Every living-room viewer; nina added Sofa Grey 3 days after her view, not within a day.
        ids("anna", "boris", "kirill", "lena", "mark", "nina", "oleg", "xenia"),
        'not_followed(step("Product Viewed", where: product.room = "Living room"), step("Product Added"), '
        "within: 1d)",
    ),
    Case(
        "an event does not follow itself",
        NotFollowed(first=step(VIEWED), then=step(VIEWED), within=d("1d")),
        # Viewed, and no other view within a day after: each viewer's last view at least a day
        # old counts (kirill 7d, lena 05-29, oleg 9d, ...). Out: yana and vera (views today).
        ids("anna", "boris", "gleb", "ilya", "kirill", "lena", "mark", "nina", "oleg", "wanda", "xenia"),
        'not_followed(step("Product Viewed"), step("Product Viewed"), within: 1d)',
    ),
    # other segments, buckets
    Case(
        "in_segment and its negation",
        and_(InSegment(segment="kazan"), not_(InSegment(segment="nps"))),
        ids("lena"),  # the only Kazan resident who never answered the survey
        'in_segment("kazan") and not in_segment("nps")',
        segments={"kazan": trait("city", Op.EQ, "Kazan"), "nps": cmp(count(NPS), Op.GE, 1)},
    ),
    Case("bucket", Bucket(low=0, high=30, salt="holdout"),
         {p for p in UNIVERSE if bucket_of(p, "holdout") < 30}, 'bucket(0, 30, salt: "holdout")'),
    Case("bucket without salt", Bucket(low=50, high=100), {p for p in UNIVERSE if bucket_of(p) >= 50},
         "bucket(50, 100)"),
]

CASES = [*EXAMPLES, *LADDER, *NODES]


# -- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chdb_data_dir: Path) -> Iterator[Backend]:
    """The data set, loaded once per engine for the whole module."""
    backend = open_test_backend(request.param, tmp_path_factory.mktemp(request.param), chdb_data_dir)
    try:
        yield dataset.load(backend)
    finally:
        close_test_backend(backend)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference(case: Case) -> None:
    assert reference_members(DATA, case.tree, NOW, case.params, case.segments) == case.expected


def _engine_cases() -> list[Any]:
    return [
        pytest.param(c, marks=pytest.mark.xfail(reason=c.engine_differs, strict=True)) if c.engine_differs else c
        for c in CASES
    ]


@pytest.mark.parametrize("case", _engine_cases(), ids=str)
def test_engine(store: Backend, case: Case) -> None:
    from opencdp.segments.sql import members

    got = members(store, case.tree, NOW, params=case.params, segments=case.segments)
    assert got == case.expected, f"missing {sorted(case.expected - got)}, extra {sorted(got - case.expected)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.text is not None], ids=str)
def test_text(case: Case) -> None:
    from opencdp.segments.text import parse

    assert parse(case.text or "") == case.tree


def test_example_8_serves_every_size() -> None:
    example = EXAMPLES[7]
    # size-L: boris (5d) and kirill (2d), both in mass e-mails.
    assert reference_members(DATA, example.tree, NOW, {"size": "size-L"}) == ids("boris", "kirill")


def test_buckets_split_everyone_once() -> None:
    low = reference_members(DATA, Bucket(low=0, high=30, salt="s"), NOW)
    high = reference_members(DATA, Bucket(low=30, high=100, salt="s"), NOW)
    assert low | high == set(UNIVERSE) and not low & high and low
