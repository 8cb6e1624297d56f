"""The segment language's typed tree.

A segment is a condition on a profile. Its tree is made of ``Node`` subclasses that
declare their children in ``args`` (as sqlglot's ``Expr.arg_types``), so traversal,
copying, the JSON form, validation and the text form are generic: a new node is one
class here plus its compilation rule, never a new visitor.

Two kinds of node:

* **conditions** (``Condition``) are true or false for a profile: ``And``, ``Or``,
  ``Not``, ``Compare`` (a measure against a value), ``Sequence``, ``NotFollowed``,
  ``InSegment``, ``Bucket``; inside an event filter (``where``) a ``Compare`` of a
  ``Field`` is true or false for one event (or order line);
* **measures** (``Measure``) give one value per profile: ``Trait``, ``Computed``,
  ``Aggregate``, ``Age``, ``DaysUntil``; or, inside ``where``, per event: ``Field``.

Values in comparisons are ``Value`` literals (text, numbers, booleans, dates,
date-times, ``Ago`` times relative to now, lists) or ``Param`` placeholders bound when
the segment is evaluated.

Semantics, the same for the SQL compiler on every engine, the real-time evaluator and
the reference interpreter the tests use:

* Every condition is true or false for every profile, never unknown: a comparison
  with a missing value (a trait never set, ``avg`` of no orders, text where a number
  is compared) is false, and ``not`` is the complement.
* Profiles are canonical: events of merged profiles count for the survivor.
* An aggregate of any event (no event named) leaves out ``Segment Entered`` and
  ``Segment Exited``, which the engine writes itself; name them to count them.
* ``count`` counts matching events; ``sum``/``avg``/``min``/``max`` fold a field over
  them; ``distinct`` counts distinct values of a field. With no matching event,
  ``count``, ``sum`` and ``distinct`` are 0, the others are missing.
* A ``where`` filter that names a line field (``line.category``) makes an order event
  match when at least one of its lines matches the line predicates together with the
  event predicates; an aggregate of a line field (``sum(..., line.quantity)``) folds the
  matching lines, and of an event field the matching events (each once).
* ``product.<column>`` is the catalogue's current state for the event's (or line's)
  ``product_id``; ``product.stock_then`` is the stock the catalogue recorded at the
  event's time (``product_changes``), missing when no change was recorded before it.
* Windows are by event time and end at ``now``: ``30d`` is the last 30 days,
  ``since(2024-01-01)``, ``between(2024-01-01, 2024-01-31)`` (both days included).
* ``Sequence`` steps happen in order, each strictly later than the one before, all
  within ``within`` of the first step (and inside ``window``). ``NotFollowed``: some
  ``first`` event at least ``within`` before now with no ``then`` event in the
  ``within`` after it (another ``then`` event at the same time counts as following; an
  event never follows itself).
* A date compared with a time is that whole UTC day: ``= 2024-05-20`` is any time that
  day, ``> 2024-05-10`` from the next day on, ``between`` includes both days. A
  date-time or ``ago(...)`` is an instant.
* A typed column compared with a value of another type (``total = "25"``) is an error
  when the segment is compiled, not a silent false; JSON fields are read as the
  literal's type (numeric text counts as a number).
* ``Bucket(low, high)`` holds for the profiles whose stable hash of
  ``salt:profile_id`` falls in ``[low, high)`` of 100 (see ``bucket_of``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from opencdp.errors import TerminalError


class SegmentError(TerminalError):
    """A segment definition is invalid: ``detail`` says where and how to fix it."""

    code = "invalid_segment"
    status = 422

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(detail, field=field)
        self.line = line
        self.column = column
        self.suggestion = suggestion

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        for name in ("line", "column", "suggestion"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        return body


# -- values ---------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([mhdw])")
UNITS: dict[str, dt.timedelta] = {
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}


@dataclass(frozen=True)
class Duration:
    """A length of time written ``15m``, ``12h``, ``30d`` or ``2w``."""

    amount: int
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNITS or isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise SegmentError(
                f"duration {self.amount}{self.unit} is not valid; write a positive whole number and a unit "
                "m (minutes), h (hours), d (days) or w (weeks), e.g. 30d"
            )

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.fullmatch(text.strip())
        if not match:
            raise SegmentError(f"`{text}` is not a duration; write e.g. 15m, 12h, 30d or 2w")
        return cls(int(match.group(1)), match.group(2))

    @property
    def delta(self) -> dt.timedelta:
        return self.amount * UNITS[self.unit]

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class Ago:
    """A time relative to evaluation: ``ago(30d)`` is ``now - 30 days``."""

    duration: Duration

    def at(self, now: dt.datetime) -> dt.datetime:
        return now - self.duration.delta


@dataclass(frozen=True)
class Param:
    """``$name``: a value bound when the segment is evaluated (``params={"name": ...}``)."""

    name: str


Scalar = str | int | float | bool | dt.date | Ago
"""A literal; ``dt.datetime`` is a ``dt.date``."""
Value = Scalar | Param | tuple["Scalar | Param", ...]


def bucket_of(profile_id: str, salt: str = "") -> int:
    """The profile's stable bucket, 0..99: the first 32 bits of md5(``salt:profile_id``) mod 100.

    The same on every engine and in Python, so holdouts and splits agree everywhere.
    """
    digest = hashlib.md5(f"{salt}:{profile_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


# -- windows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Which events count by time; every window ends at ``now``. ``Window()`` is all time."""

    last: Duration | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    """Exclusive end (the day after the last day of ``between``)."""

    def bounds(self, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime]:
        """``[start, end)`` plus ``now`` itself: events with ``start <= t <= now`` and ``t < until``."""
        starts = [t for t in (self.since, now - self.last.delta if self.last is not None else None) if t is not None]
        return (max(starts) if starts else None), now

    @property
    def is_all(self) -> bool:
        return self.last is None and self.since is None and self.until is None



ALL_TIME = Window()


# -- operators ------------------------------------------------------------------------------


class Op(StrEnum):
    EQ = "="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    IN = "in"
    NOT_IN = "not in"
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    MATCHES = "matches"
    BETWEEN = "between"
    EXISTS = "exists"


class Fn(StrEnum):
    """Aggregations of events."""

    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    DISTINCT = "distinct"
    FIRST_TIME = "first_time"
    LAST_TIME = "last_time"


VALUE_FNS = (Fn.SUM, Fn.AVG, Fn.MIN, Fn.MAX, Fn.DISTINCT)
"""Aggregations that need a field."""


# -- nodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One child or attribute of a node."""

    kind: str
    """condition, conditions, measure, field (an event field), trait (a trait path), value, op,
    fn, events, window, duration, text, int, step, steps"""
    required: bool = True
    doc: str = ""


class Node:
    """A node of the tree; subclasses declare ``args`` (name -> ``Arg``) in order."""

    key: ClassVar[str]
    """The node's name in the JSON form (``{"type": key, ...}``) and, for calls, in text."""
    args: ClassVar[dict[str, Arg]]
    doc: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self.args)
        if unknown:
            raise SegmentError(
                f"`{self.key}` has no argument {', '.join(sorted(unknown))}; it takes {', '.join(self.args)}",
                field=sorted(unknown)[0],
            )
        for name, spec in self.args.items():
            value = values.get(name)
            if value is None and spec.required:
                raise SegmentError(f"`{self.key}` needs `{name}`: {spec.doc}", field=name)
            object.__setattr__(self, name, value)
        self.validate()

    if TYPE_CHECKING:  # arguments are set from ``args``; to the type checker they are Any

        def __getattr__(self, name: str) -> Any: ...

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new node (replace)")

    def validate(self) -> None:
        """Checks beyond the argument kinds; raises ``SegmentError``."""

    # generic machinery ------------------------------------------------------------------
    def items(self) -> Iterator[tuple[str, Any]]:
        for name in self.args:
            yield name, getattr(self, name)

    def children(self) -> Iterator[Node]:
        for _, value in self.items():
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                yield from (v for v in value if isinstance(v, Node))

    def walk(self) -> Iterator[Node]:
        """This node and every node under it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def replace(self, **changes: Any) -> Node:
        return type(self)(**{**dict(self.items()), **changes})

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and dict(self.items()) == dict(other.items())

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(_hashable(v) for _, v in self.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.items() if v is not None)
        return f"{type(self).__name__}({inner})"


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, tuple | list) else value


class Condition(Node):
    """True or false for a profile (or, inside ``where``, for an event)."""


class Measure(Node):
    """A value per profile (or, ``Field``, per event)."""


class And(Condition):
    key = "and"
    args: ClassVar[dict[str, Arg]] = {"conditions": Arg("conditions", doc="two or more conditions")}
    doc = "All of the conditions hold."

    def validate(self) -> None:
        _at_least_two(self)


class Or(Condition):
    key = "or"
    args: ClassVar[dict[str, Arg]] = {"conditions": Arg("conditions", doc="two or more conditions")}
    doc = "At least one of the conditions holds."

    def validate(self) -> None:
        _at_least_two(self)


class Not(Condition):
    key = "not"
    args: ClassVar[dict[str, Arg]] = {"this": Arg("condition", doc="the condition to negate")}
    doc = "The condition does not hold."


def _at_least_two(node: And | Or) -> None:
    items = node.__dict__["conditions"]
    if not isinstance(items, tuple) or len(items) < 2 or not all(isinstance(i, Condition) for i in items):
        raise SegmentError(f"`{node.key}` joins two or more conditions", field="conditions")


class Compare(Condition):
    key = "compare"
    args: ClassVar[dict[str, Arg]] = {
        "this": Arg("measure", doc="what is compared: a trait, a computed trait, an aggregate of events, a field"),
        "op": Arg("op", doc="=, !=, >, >=, <, <=, in, not in, contains, starts with, matches, between, exists"),
        "value": Arg("value", required=False, doc="the value compared with (a list for in / not in; the low end for between)"),
        "high": Arg("value", required=False, doc="the high end for between (included)"),
    }
    doc = "A measure compared with a value."

    def validate(self) -> None:
        op: Op = self.__dict__["op"]
        value = self.__dict__["value"]
        high = self.__dict__["high"]
        if not isinstance(op, Op):
            raise SegmentError(f"unknown operator {op!r}; use one of {', '.join(o.value for o in Op)}", field="op")
        if op == Op.EXISTS:
            if value is not None or high is not None:
                raise SegmentError("`exists` takes no value", field="value")
            return
        if value is None:
            raise SegmentError(f"`{op}` needs a value to compare with", field="value")
        if op in (Op.IN, Op.NOT_IN):
            if not isinstance(value, tuple | Param):
                raise SegmentError(f"`{op}` needs a list, e.g. [\"Kazan\", \"Moscow\"]", field="value")
        elif isinstance(value, tuple):
            raise SegmentError(f"`{op}` compares with one value, not a list; use `in` for a list", field="value")
        if (op == Op.BETWEEN) != (high is not None):
            raise SegmentError("`between` needs a low and a high value: `between 10 and 20`", field="high")
        if op == Op.MATCHES and isinstance(value, str):
            try:
                re.compile(value)
            except re.error as error:
                raise SegmentError(f"`matches` needs a valid regular expression: {error}", field="value") from None


class Trait(Measure):
    key = "trait"
    args: ClassVar[dict[str, Arg]] = {"path": Arg("trait", doc="the trait's name, or a path into it: address.city")}
    doc = "The profile's latest value of a trait (last write wins by event time)."


class Computed(Measure):
    key = "computed"
    args: ClassVar[dict[str, Arg]] = {"name": Arg("text", doc="a computed trait or prediction, e.g. orders, rfm_cell")}
    doc = "A computed trait (built-in, declared, or a prediction) by name."


class Field(Measure):
    key = "field"
    args: ClassVar[dict[str, Arg]] = {
        "path": Arg("field", doc="an event column (total, channel), properties.x, context.x, traits.x, line.x, product.x")
    }
    doc = "A field of the event being filtered (only inside `where`)."


class Aggregate(Measure):
    key = "aggregate"
    args: ClassVar[dict[str, Arg]] = {
        "fn": Arg("fn", doc="count, sum, avg, min, max, distinct, first_time, last_time"),
        "event": Arg("events", required=False, doc="an event name or a list of names; leave out for any event"),
        "value": Arg("field", required=False, doc="the field folded (sum, avg, min, max, distinct)"),
        "where": Arg("condition", required=False, doc="which events count: conditions on their fields"),
        "window": Arg("window", required=False, doc="last 30d, since(2024-01-01), between(a, b); all time if left out"),
    }
    doc = "An aggregate of the profile's events."

    def validate(self) -> None:
        fn: Fn = self.__dict__["fn"]
        value = self.__dict__["value"]
        if not isinstance(fn, Fn):
            raise SegmentError(f"unknown aggregation {fn!r}; use one of {', '.join(f.value for f in Fn)}", field="fn")
        if fn in VALUE_FNS and value is None:
            raise SegmentError(f"`{fn}` needs a field to fold, e.g. {fn}(\"Order Completed\", total)", field="value")
        if fn not in VALUE_FNS and value is not None:
            raise SegmentError(f"`{fn}` takes no field; remove `{value}`", field="value")
        event = self.__dict__["event"]
        if event is not None and not (isinstance(event, tuple) and event and all(isinstance(e, str) and e for e in event)):
            raise SegmentError("`event` is an event name or a list of names", field="event")
        _where_fields_only(self.__dict__["where"])


class Age(Measure):
    key = "age"
    args: ClassVar[dict[str, Arg]] = {"path": Arg("trait", doc="a date trait, e.g. birthday")}
    doc = "Whole years since a date trait (age from birthday)."


class DaysUntil(Measure):
    key = "days_until"
    args: ClassVar[dict[str, Arg]] = {"path": Arg("trait", doc="a date trait, e.g. birthday")}
    doc = "Days until the next anniversary of a date trait (0 on the day): birthday in the next 7 days."


class Step(Node):
    key = "step"
    args: ClassVar[dict[str, Arg]] = {
        "event": Arg("events", doc="the event name(s) of the step"),
        "where": Arg("condition", required=False, doc="conditions on the step's event fields"),
    }
    doc = "One step of a sequence."

    def validate(self) -> None:
        _where_fields_only(self.__dict__["where"])


class Sequence(Condition):
    key = "sequence"
    args: ClassVar[dict[str, Arg]] = {
        "steps": Arg("steps", doc="two or more steps, in order"),
        "within": Arg("duration", required=False, doc="the longest time from the first step to the last"),
        "window": Arg("window", required=False, doc="when the first step happened; all time if left out"),
    }
    doc = "The steps happened in order (a funnel), within a time of each other."

    def validate(self) -> None:
        steps = self.__dict__["steps"]
        if not isinstance(steps, tuple) or len(steps) < 2 or not all(isinstance(s, Step) for s in steps):
            raise SegmentError("`sequence` needs two or more steps", field="steps")


class NotFollowed(Condition):
    key = "not_followed"
    args: ClassVar[dict[str, Arg]] = {
        "first": Arg("step", doc="what happened (e.g. Product Added)"),
        "then": Arg("step", doc="what did not follow (e.g. Order Completed)"),
        "within": Arg("duration", doc="how long `then` was waited for"),
        "window": Arg("window", required=False, doc="when `first` happened; all time if left out"),
    }
    doc = "`first` happened and `then` did not follow within the time (abandoned cart, abandoned browse)."


class InSegment(Condition):
    key = "in_segment"
    args: ClassVar[dict[str, Arg]] = {"segment": Arg("text", doc="the segment id")}
    doc = "The profile is a member of another segment."


class Bucket(Condition):
    key = "bucket"
    args: ClassVar[dict[str, Arg]] = {
        "low": Arg("int", doc="first bucket, 0-99"),
        "high": Arg("int", doc="end bucket (excluded), 1-100"),
        "salt": Arg("text", required=False, doc="splits with another salt are independent"),
    }
    doc = "A stable hash-based share of profiles: bucket(0, 10) is 10% (holdouts, splits)."

    def validate(self) -> None:
        low, high = self.__dict__["low"], self.__dict__["high"]
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low < high <= 100):
            raise SegmentError(f"bucket({low}, {high}) is not a range of 0..100; write e.g. bucket(0, 10)", field="low")


def _where_fields_only(where: Any) -> None:
    if where is None:
        return
    if not isinstance(where, Condition):
        raise SegmentError("`where` is a condition on event fields", field="where")
    for node in where.walk():
        if isinstance(node, Measure) and not isinstance(node, Field):
            raise SegmentError(
                f"`where` filters events by their fields; `{node.key}` is a profile measure, use it outside where",
                field="where",
            )
        if isinstance(node, Condition) and not isinstance(node, And | Or | Not | Compare):
            raise SegmentError(f"`{node.key}` cannot be used inside where", field="where")


_NODE_CLASSES: tuple[type[Node], ...] = (
    And, Or, Not, Compare, Trait, Computed, Field, Aggregate, Age, DaysUntil, Step, Sequence, NotFollowed, InSegment,
    Bucket,
)
NODES: dict[str, type[Node]] = {cls.key: cls for cls in _NODE_CLASSES}


# -- queries over a tree --------------------------------------------------------------------


def segments_used(tree: Node) -> set[str]:
    """Ids of the segments the tree refers to."""
    return {n.segment for n in tree.walk() if isinstance(n, InSegment)}


def params_used(tree: Node) -> set[str]:
    """Names of the ``$parameters`` in the tree."""
    found: set[str] = set()
    for node in tree.walk():
        for _, value in node.items():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Param):
                    found.add(item.name)
    return found


def events_used(tree: Node) -> set[str] | None:
    """Event names the tree's value depends on; None: any event may change it (traits, any-event aggregates)."""
    names: set[str] = set()
    for node in tree.walk():
        if isinstance(node, Aggregate | Step):
            event = node.event
            if event is None:
                return None
            names.update(event)
        elif isinstance(node, Trait | Computed | Age | DaysUntil):
            return None
    return names


def shortest_window(tree: Node) -> dt.timedelta | None:
    """The shortest relative time in the tree (windows, ``ago``, ``within``); None: time alone never changes it."""
    spans: list[dt.timedelta] = []
    for node in tree.walk():
        for _, value in node.items():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Window) and item.last is not None:
                    spans.append(item.last.delta)
                elif isinstance(item, Ago):
                    spans.append(item.duration.delta)
                elif isinstance(item, Duration):
                    spans.append(item.delta)
        if isinstance(node, Age | DaysUntil):
            spans.append(dt.timedelta(days=1))
    return min(spans) if spans else None


def bind(tree: Node, params: Mapping[str, Any]) -> Node:
    """The tree with every ``$parameter`` replaced by its value; a missing one is an error."""

    def value_of(item: Any) -> Any:
        if isinstance(item, Param):
            if item.name not in params:
                raise SegmentError(
                    f"parameter ${item.name} has no value; pass it as params={{\"{item.name}\": ...}}",
                    field=item.name,
                )
            bound = params[item.name]
            return tuple(bound) if isinstance(bound, list) else bound
        return item

    def visit(node: Node) -> Node:
        changes: dict[str, Any] = {}
        for name, value in node.items():
            if isinstance(value, Node):
                changes[name] = visit(value)
            elif isinstance(value, tuple):
                changes[name] = tuple(visit(v) if isinstance(v, Node) else value_of(v) for v in value)
            else:
                changes[name] = value_of(value)
        return type(node)(**changes)

    return visit(tree)
