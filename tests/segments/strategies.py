"""Hypothesis strategies for random valid segment trees, driven by the node declarations.

Each node is drawn by drawing every argument by its ``Arg.kind`` and keeping the draws the
node accepts (its ``validate``), so a new node is covered without a change here.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from hypothesis import reject
from hypothesis import strategies as st

from opencdp.segments.ast import (
    NODES,
    Ago,
    And,
    Compare,
    Condition,
    Duration,
    Field,
    Fn,
    Measure,
    Node,
    Not,
    Op,
    Or,
    Param,
    SegmentError,
    Step,
    Window,
)
from opencdp.segments.text import SYNTAX

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
PATHS = st.lists(NAMES | st.sampled_from(["x y", "and", "ä"]), min_size=1, max_size=3).map(".".join)
EVENTS = st.lists(st.sampled_from(["Order Completed", "Product Viewed", 'Odd "name"\n']), min_size=1, max_size=2)
DURATIONS = st.builds(Duration, st.integers(1, 400), st.sampled_from("mhdw"))
DAYS = st.dates(dt.date(2000, 1, 1), dt.date(2030, 1, 1))
ZONES = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=3))])
MOMENTS = st.builds(
    lambda d, s, z: dt.datetime.combine(d, dt.time(), z) + dt.timedelta(seconds=s), DAYS, st.integers(0, 86399), ZONES
)
SCALARS = (
    st.text(max_size=8)
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | DAYS
    | MOMENTS
    | st.builds(Ago, DURATIONS)
    | st.builds(Param, NAMES)
)


def _window(draw: st.DrawFn) -> Window:
    form = draw(st.sampled_from(["all", "last", "since_day", "since", "between_days", "between"]))
    if form == "all":
        return Window()
    if form == "last":
        return Window(last=draw(DURATIONS))
    day = draw(DAYS)
    if form == "since_day":
        return Window(since=dt.datetime.combine(day, dt.time(), dt.UTC))
    if form == "since":
        return Window(since=draw(MOMENTS).astimezone(dt.UTC))
    if form == "between_days":
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        return Window(since=start, until=start + dt.timedelta(days=draw(st.integers(1, 60))))
    start = draw(MOMENTS).astimezone(dt.UTC)
    return Window(since=start, until=start + dt.timedelta(seconds=draw(st.integers(1, 10**7))))


windows = st.composite(_window)


NESTED = frozenset({"condition", "conditions", "step", "steps"})
"""Kinds whose values hold nodes that nest further (``measure`` is drawn as a leaf or an aggregate)."""


@cache
def _kinds(cls: type[Node], depth: int, event: bool) -> dict[str, st.SearchStrategy[Any]]:
    return {
        # A condition argument of a call (where) filters its events; under not, it is the same kind.
        "condition": conditions(depth - 1, event=event or cls not in SYNTAX),
        "conditions": st.lists(conditions(depth - 1, event=event), min_size=2, max_size=3).map(tuple),
        "measure": measures(depth - 1, event=event),
        "field": PATHS,
        "trait": PATHS,
        "text": st.text(max_size=8),
        "int": st.integers(0, 100),
        "value": SCALARS | st.lists(SCALARS, max_size=3).map(tuple),
        "op": st.sampled_from(list(Op)),
        "fn": st.sampled_from(list(Fn)),
        "events": EVENTS.map(tuple),
        "window": windows(),
        "duration": DURATIONS,
        "step": nodes(Step, depth - 1, event=event),
        "steps": st.lists(nodes(Step, depth - 1, event=event), min_size=2, max_size=3).map(tuple),
    }


@cache
def nodes(cls: type[Node], depth: int, *, event: bool = False) -> st.SearchStrategy[Node]:
    @st.composite
    def draw_node(draw: st.DrawFn) -> Node:
        kinds = _kinds(cls, depth, event)

        def pick(name: str) -> Any:
            arg = cls.args[name]
            if arg.required or ((depth > 0 or arg.kind not in NESTED) and draw(st.booleans())):
                return draw(kinds[arg.kind])
            return None

        # Children are drawn once; the node's own rules are about its plain arguments (an
        # operator and its value, a function and its field), so only those are drawn again.
        nested = {name: pick(name) for name, arg in cls.args.items() if arg.kind in NESTED or arg.kind == "measure"}
        for _ in range(30):
            values = {name: nested[name] if name in nested else pick(name) for name in cls.args}
            try:
                return cls(**values)
            except SegmentError:
                continue
        reject()
        raise AssertionError("unreachable")

    return draw_node()


@cache
def measures(depth: int, *, event: bool = False) -> st.SearchStrategy[Node]:
    if event:
        return nodes(Field, depth, event=True)
    return st.one_of(
        [nodes(c, depth) for c in NODES.values() if issubclass(c, Measure) and (c is not Field) and _fits(c, depth)]
    )


def _fits(cls: type[Node], depth: int) -> bool:
    """Whether the node can be drawn ``depth`` levels deep (leaves at depth 0)."""
    return depth > 0 or not any(a.required and a.kind in NESTED for a in cls.args.values())


@cache
def conditions(depth: int = 3, *, event: bool = False) -> st.SearchStrategy[Node]:
    if event:
        allowed: list[type[Node]] = [And, Or, Not, Compare]
    else:
        allowed = [c for c in NODES.values() if issubclass(c, Condition)]
    allowed.sort(key=lambda c: not _fits(c, 0))  # leaves first: hypothesis shrinks towards them
    return st.one_of([nodes(c, depth, event=event) for c in allowed if _fits(c, depth)])
