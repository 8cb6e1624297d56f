"""Compile a segment tree to one SQL query of its members, for every engine.

The query reads every canonical profile (``profile_map``) once and left-joins one
subquery per measure the tree uses (a trait's latest value, an aggregate of events, a
computed trait, the profiles of a sequence); the tree itself becomes the ``WHERE``
clause over those columns. Each comparison is wrapped so that a missing value makes it
false, never unknown, so ``not`` is the complement (see ``ast``'s semantics).

What differs between engines is the table in ``Dialect`` subclasses (JSON reads, time
parsing, hashing); the rest is one compiler. User values only ever become sqlglot
literals, which the generator escapes; nothing is pasted into SQL text.
"""

from __future__ import annotations

import calendar
import datetime as dt
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.profiles.computed import BUILTIN, ComputedTrait, compile_trait
from opencdp.profiles.scores import ScoreInfo, score_names, score_query
from opencdp.segments.ast import (
    Age,
    Aggregate,
    Ago,
    And,
    Bucket,
    Compare,
    Computed,
    Condition,
    DaysUntil,
    Field,
    Fn,
    InSegment,
    Node,
    Not,
    NotFollowed,
    Op,
    Or,
    SegmentError,
    Step,
    Trait,
    Window,
    bind,
)
from opencdp.segments.ast import (
    Sequence as SequenceNode,
)
from opencdp.storage.base import Backend
from opencdp.storage.schema import (
    EVENTS,
    ORDER_LINE_EVENT_COLUMNS,
    ORDER_LINES,
    PRODUCT_CHANGES,
    PRODUCTS,
    PROFILE_MAP,
    SEGMENT_MEMBERS,
    T,
    Table,
)

# -- engine differences -----------------------------------------------------------------------


class Dialect:
    """How one engine spells what the compiler needs; subclasses override the differences."""

    name: str

    def json_text(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        """A JSON scalar as text (a string's value, a number's digits); NULL when missing or null."""
        raise NotImplementedError

    def json_present(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        """True when the path is set in the JSON (to any value, null included)."""
        raise NotImplementedError

    def json_exists(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        """True when the path holds a value other than null (objects and arrays count)."""
        raise NotImplementedError

    def to_time(self, text: exp.Expr) -> exp.Expr:
        """ISO 8601 text to a UTC timestamp; NULL when it is not one."""
        raise NotImplementedError

    def timestamp(self, value: dt.datetime) -> exp.Expr:
        raise NotImplementedError

    def now(self) -> exp.Expr:
        """The evaluation time, a query parameter (``now_param``), so one rendered query serves every run."""
        raise NotImplementedError

    def now_param(self, now: dt.datetime) -> str:
        return now.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def bucket(self, text: exp.Expr) -> exp.Expr:
        """``ast.bucket_of``: the first 32 bits of md5(text), mod 100."""
        raise NotImplementedError

    def list_contains(self, values: exp.Expr, value: exp.Expr) -> exp.Expr:
        raise NotImplementedError

    def current(self, table: Table, alias: str) -> exp.Expr:
        """A table's current state under an alias (without a backend to ask)."""
        return exp.alias_(exp.to_table(table.name), alias, table=True)

    def to_number(self, text: exp.Expr) -> exp.Expr:
        return exp.TryCast(this=text, to=exp.DataType.build("DOUBLE"))

    def to_date(self, time: exp.Expr) -> exp.Expr:
        return exp.cast(time, exp.DataType.build("DATE"))

    def make_date(self, year: int, month: exp.Expr, day: exp.Expr) -> exp.Expr:
        return exp.DateFromParts(year=exp.Literal.number(year), month=month, day=day)

    def date(self, value: dt.date) -> exp.Expr:
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))

    def day_diff(self, start: exp.Expr, end: exp.Expr) -> exp.Expr:
        return exp.DateDiff(this=end, expression=start, unit=exp.var("DAY"))


class DuckDB(Dialect):
    name = "duckdb"

    @staticmethod
    def _pointer(path: tuple[str, ...]) -> exp.Literal:
        # A JSON pointer: DuckDB reads '*' in a '$' path as a wildcard, even quoted.
        return exp.Literal.string("".join("/" + k.replace("~", "~0").replace("/", "~1") for k in path))

    def json_text(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        return exp.Anonymous(this="json_extract_string", expressions=[column, self._pointer(path)])

    def json_present(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        raw = exp.Anonymous(this="json_extract", expressions=[column, self._pointer(path)])
        return exp.Not(this=exp.Is(this=raw, expression=exp.Null()))

    def json_exists(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        raw = exp.Anonymous(this="json_extract", expressions=[column, self._pointer(path)])
        return exp.NEQ(
            this=exp.Coalesce(this=exp.cast(raw, exp.DataType.build("VARCHAR")), expressions=[exp.Literal.string("null")]),
            expression=exp.Literal.string("null"),
        )

    def to_time(self, text: exp.Expr) -> exp.Expr:
        return exp.TryCast(this=text, to=exp.DataType.build("TIMESTAMPTZ"))

    def timestamp(self, value: dt.datetime) -> exp.Expr:
        return exp.cast(exp.Literal.string(value.astimezone(dt.UTC).isoformat()), exp.DataType.build("TIMESTAMPTZ"))

    def now(self) -> exp.Expr:
        return exp.cast(exp.Placeholder(this="now"), exp.DataType.build("TIMESTAMPTZ"))

    def now_param(self, now: dt.datetime) -> str:
        return now.astimezone(dt.UTC).isoformat()

    def bucket(self, text: exp.Expr) -> exp.Expr:
        hexed = exp.DPipe(
            this=exp.Literal.string("0x"),
            expression=exp.Substring(this=exp.MD5(this=text), start=exp.Literal.number(1), length=exp.Literal.number(8)),
        )
        return exp.Mod(this=exp.cast(hexed, exp.DataType.build("UBIGINT", dialect="duckdb")), expression=exp.Literal.number(100))

    def list_contains(self, values: exp.Expr, value: exp.Expr) -> exp.Expr:
        return exp.Anonymous(this="list_contains", expressions=[values, value])


class ClickHouse(Dialect):
    name = "clickhouse"

    @staticmethod
    def _keys(path: tuple[str, ...]) -> list[exp.Expr]:
        return [exp.Literal.string(k) for k in path]

    def _type(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        return exp.cast(exp.Anonymous(this="JSONType", expressions=[column, *self._keys(path)]), exp.DataType.build("String"))

    def json_text(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        # JSONExtractString gives '' for numbers; the raw text of a number is its digits.
        kind = self._type(column, path)
        string = exp.Anonymous(this="JSONExtractString", expressions=[column.copy(), *self._keys(path)])
        raw = exp.Anonymous(this="JSONExtractRaw", expressions=[column.copy(), *self._keys(path)])
        return (
            exp.Case()
            .when(kind.eq(exp.Literal.string("String")), string)
            .when(exp.In(this=kind.copy(), expressions=[exp.Literal.string(k) for k in ("Null", "Object", "Array")]), exp.Null())
            .else_(raw)
        )

    def json_present(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        return exp.Anonymous(this="JSONHas", expressions=[column, *self._keys(path)])

    def json_exists(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        return exp.NEQ(this=self._type(column, path), expression=exp.Literal.string("Null"))

    def to_time(self, text: exp.Expr) -> exp.Expr:
        return exp.Anonymous(
            this="parseDateTime64BestEffortOrNull", expressions=[text, exp.Literal.number(3), exp.Literal.string("UTC")]
        )

    def timestamp(self, value: dt.datetime) -> exp.Expr:
        text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return exp.cast(exp.Literal.string(text), exp.DataType.build("DateTime64(6, 'UTC')", dialect="clickhouse"))

    def now(self) -> exp.Expr:
        return exp.Placeholder(this=exp.var("now"), kind=exp.DataType.build("DateTime64(6, 'UTC')", dialect="clickhouse"))

    def bucket(self, text: exp.Expr) -> exp.Expr:
        digest = exp.Anonymous(this="hex", expressions=[exp.Anonymous(this="MD5", expressions=[text])])
        first = exp.Substring(this=digest, start=exp.Literal.number(1), length=exp.Literal.number(8))
        number = exp.Anonymous(
            this="reinterpretAsUInt32",
            expressions=[exp.Anonymous(this="reverse", expressions=[exp.Anonymous(this="unhex", expressions=[first])])],
        )
        return exp.Mod(this=number, expression=exp.Literal.number(100))

    def list_contains(self, values: exp.Expr, value: exp.Expr) -> exp.Expr:
        return exp.Anonymous(this="has", expressions=[values, value])

    def current(self, table: Table, alias: str) -> exp.Expr:
        ref = exp.to_table(table.name)
        ref.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        return exp.Final(this=ref) if table.key else ref

    def to_number(self, text: exp.Expr) -> exp.Expr:
        return exp.Anonymous(this="toFloat64OrNull", expressions=[exp.cast(text, exp.DataType.build("String"))])

    def make_date(self, year: int, month: exp.Expr, day: exp.Expr) -> exp.Expr:
        return exp.Anonymous(this="makeDate", expressions=[exp.Literal.number(year), month, day])


DIALECTS: dict[str, Dialect] = {d.name: d for d in (DuckDB(), ClickHouse())}


# -- field references -------------------------------------------------------------------------


class Kind:
    NUMBER = "number"
    TEXT = "text"
    TIME = "time"
    BOOL = "bool"
    LIST = "list"


_COLUMN_KINDS = {T.STRING: Kind.TEXT, T.LOW_CARD: Kind.TEXT, T.INT: Kind.NUMBER, T.FLOAT: Kind.NUMBER,
                 T.TIMESTAMP: Kind.TIME, T.BOOL: Kind.BOOL, T.DATE: Kind.TIME}
_JSON_COLUMNS = ("properties", "context", "traits", "integrations")
STOCK_THEN = "stock_then"
MEMBERSHIP_EVENTS = ("Segment Entered", "Segment Exited")
"""Written by the segment engine; aggregates of any event leave them out (name them to count them)."""


@dataclass(frozen=True)
class Operand:
    """A value to compare: its text (or typed column) and the kind it has when typed."""

    expr: exp.Expr
    kind: str | None
    """The column's kind; None: JSON text, read as the compared literal's kind."""
    present: exp.Expr | None = None
    """For JSON: true when a non-null value is there (``exists``)."""


def _names(table: Table) -> dict[str, T]:
    return {c.name: c.type for c in table.columns}


_EVENT_COLUMNS = _names(EVENTS)
_LINE_COLUMNS = _names(ORDER_LINES)
_PRODUCT_COLUMNS = _names(PRODUCTS)


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" — did you mean `{close[0]}`?" if close else ""


def _unknown_field(path: str, options: Sequence[str], prefix: str = "") -> SegmentError:
    head = path.split(".")[-1] if prefix else path
    listed = ", ".join(sorted(options))
    return SegmentError(
        f"unknown field `{path}`{_suggest(head, options)} (known {prefix or 'event '}fields: {listed}; "
        "JSON fields are properties.x, context.x, traits.x)",
        field=path,
    )


# -- compilation ------------------------------------------------------------------------------


@dataclass
class Catalogue:
    """What a tree may refer to besides events: computed traits and other segments."""

    computed: Mapping[str, ComputedTrait] = field(default_factory=lambda: {t.name: t for t in BUILTIN})
    segments: Mapping[str, Node | None] = field(default_factory=dict)
    """Segment id -> its tree; None for a static or uploaded segment, read from ``segment_members``."""
    scores: Mapping[str, ScoreInfo] = field(default_factory=dict)
    """Stored scores (``profiles/scores.py``: RFM cells, predictions) by name, read like computed traits."""


class _Compiler:
    def __init__(
        self,
        dialect: Dialect,
        now: dt.datetime,
        catalogue: Catalogue,
        backend: Backend | None,
        profiles: Sequence[str] | None,
        stack: tuple[str, ...] = (),
    ) -> None:
        self.dialect = dialect
        self.now = now
        self.catalogue = catalogue
        self.backend = backend
        self.profiles = profiles
        self.stack = stack
        self.leaves: list[exp.Expr] = []
        self.aliases: dict[Node, str] = {}
        self.groups: dict[tuple[Any, ...], _Group] = {}
        """Aggregates over the same rows share one subquery, one column each."""

    def at(self, before: dt.timedelta = dt.timedelta(0)) -> exp.Expr:
        """``now - before``, from the ``now`` parameter."""
        now = self.dialect.now()
        return _plus(now, -before) if before else now

    # tables -----------------------------------------------------------------------------
    def ref(self, table: Table, alias: str) -> exp.Expr:
        if self.backend is not None:
            return self.backend.aliased_ref(table, alias)
        return self.dialect.current(table, alias)

    def canonical(self, raw: exp.Expr) -> exp.Expr:
        return exp.Coalesce(this=exp.column("canonical_id", table="pm"), expressions=[raw])

    def restrict(self, raw_profile: exp.Expr) -> list[exp.Expr]:
        """Conditions limiting rows to the profiles being evaluated (stored under any of their ids)."""
        conditions: list[exp.Expr] = [exp.Not(this=exp.Is(this=raw_profile, expression=exp.Null()))]
        if self.profiles is not None:
            ids: list[exp.Expr] = [exp.Literal.string(p) for p in self.profiles] or [exp.Null()]
            members = (
                exp.select("profile_id").from_(self.ref(PROFILE_MAP, "rm")).where(exp.In(this=exp.column("canonical_id"), expressions=ids))
            )
            conditions.append(
                exp.or_(
                    exp.In(this=raw_profile.copy(), query=members.subquery()),
                    exp.In(this=raw_profile.copy(), expressions=[i.copy() for i in ids]),
                )
            )
        return conditions

    # the query ----------------------------------------------------------------------------
    def query(self, tree: Node) -> exp.Select:
        if not isinstance(tree, Condition):
            raise SegmentError(f"a segment is a condition; `{tree.key}` is a measure — compare it, e.g. `... >= 1`")
        where = self.condition(tree)
        universe = exp.select(exp.alias_(exp.column("canonical_id"), "profile_id")).distinct().from_(self.ref(PROFILE_MAP, "pm0"))
        if self.profiles is not None:
            universe = universe.where(
                exp.In(this=exp.column("canonical_id"), expressions=[exp.Literal.string(p) for p in self.profiles] or [exp.Null()])
            )
        query = exp.select(exp.alias_(exp.column("profile_id", table="u"), "profile_id")).from_(universe.subquery("u"))
        subqueries = [(f"l{n}", leaf) for n, leaf in enumerate(self.leaves)]
        subqueries += [(group.alias, group.build()) for group in self.groups.values()]
        for alias, leaf in subqueries:
            query = query.join(
                exp.Subquery(this=leaf, alias=exp.TableAlias(this=exp.to_identifier(alias))),
                on=exp.column("profile_id", table=alias).eq(exp.column("profile_id", table="u")),
                join_type="left",
            )
        return query.where(where)

    def leaf(self, measure: Node, build: Any) -> exp.Column:
        """The joined column of a per-profile subquery (each distinct measure once)."""
        alias = self.aliases.get(measure)
        if alias is None:
            alias = f"l{len(self.leaves)}"
            self.leaves.append(build())
            self.aliases[measure] = alias
        return exp.column("value", table=alias)

    # conditions ---------------------------------------------------------------------------
    def condition(self, node: Node) -> exp.Expr:
        if isinstance(node, And):
            return exp.and_(*(exp.Paren(this=self.condition(c)) for c in node.conditions))
        if isinstance(node, Or):
            return exp.or_(*(exp.Paren(this=self.condition(c)) for c in node.conditions))
        if isinstance(node, Not):
            return exp.Not(this=exp.Paren(this=self.condition(node.this)))
        if isinstance(node, Compare):
            return self.compare(self.measure(node.this), node)
        if isinstance(node, Bucket):
            text = exp.DPipe(
                this=exp.Literal.string(f"{node.salt or ''}:"),
                expression=exp.column("profile_id", table="u"),
            )
            bucket = self.dialect.bucket(text)
            return exp.and_(
                exp.GTE(this=bucket, expression=exp.Literal.number(node.low)),
                exp.LT(this=bucket.copy(), expression=exp.Literal.number(node.high)),
            )
        if isinstance(node, InSegment):
            return self.in_segment(node)
        if isinstance(node, SequenceNode | NotFollowed):
            value = self.leaf(node, lambda: self.pattern(node))
            return exp.Coalesce(this=value, expressions=[exp.false()])
        raise SegmentError(f"`{node.key}` is not a condition here")

    def in_segment(self, node: InSegment) -> exp.Expr:
        segment: str = node.segment
        if segment in self.stack:
            cycle = " -> ".join((*self.stack, segment))
            raise SegmentError(f"segments refer to each other in a cycle: {cycle}; remove one of the in_segment references", field="segment")
        if segment not in self.catalogue.segments:
            raise SegmentError(
                f"unknown segment `{segment}`{_suggest(segment, list(self.catalogue.segments))}", field="segment"
            )
        tree = self.catalogue.segments[segment]
        if tree is None:  # a static list
            members = (
                exp.select("profile_id")
                .from_(self.ref(SEGMENT_MEMBERS, "sm"))
                .where(exp.and_(exp.column("segment_id").eq(exp.Literal.string(segment)), exp.column("member").eq(exp.true())))
            )
        else:
            inner = _Compiler(self.dialect, self.now, self.catalogue, self.backend, self.profiles, (*self.stack, segment))
            members = inner.query(tree)
        return exp.In(this=exp.column("profile_id", table="u"), query=members.subquery())

    # measures -----------------------------------------------------------------------------
    def measure(self, node: Node) -> Operand:
        if isinstance(node, Trait):
            path = tuple(node.path.split("."))
            return Operand(self.leaf(node, lambda: self.trait(path)), None)
        if isinstance(node, Age | DaysUntil):
            path = tuple(node.path.split("."))
            text = self.leaf(Trait(path=node.path), lambda: self.trait(path))
            day = self.dialect.to_date(self.dialect.to_time(text))
            return Operand(self.age(day) if isinstance(node, Age) else self.days_until(day), Kind.NUMBER)
        if isinstance(node, Computed) and node.name not in self.catalogue.computed and node.name in self.catalogue.scores:
            info = self.catalogue.scores[node.name]
            return Operand(self.leaf(node, lambda: score_query(self.backend, info)), Kind.NUMBER if info.kind == "number" else Kind.TEXT)
        if isinstance(node, Computed):
            trait = self.computed_trait(node.name)
            value = self.leaf(node, lambda: compile_trait(trait, self.backend or self.dialect.name, self.now))
            empty = trait.empty_value()
            if isinstance(empty, int):
                value = exp.Coalesce(this=value, expressions=[exp.Literal.number(empty)])  # type: ignore[assignment]
            return Operand(value, _trait_kind(trait))
        if isinstance(node, Aggregate):
            value = self.aggregate(node)
            fn: Fn = node.fn
            if fn in (Fn.COUNT, Fn.SUM, Fn.DISTINCT):
                return Operand(exp.Coalesce(this=value, expressions=[exp.Literal.number(0)]), Kind.NUMBER)
            if fn in (Fn.FIRST_TIME, Fn.LAST_TIME):
                return Operand(value, Kind.TIME)
            return Operand(value, self.aggregate_kind(node))
        if isinstance(node, Field):
            raise SegmentError(f"`{node.path}` is an event field; use it inside where: of an aggregate", field="path")
        raise SegmentError(f"`{node.key}` is not a measure")

    def computed_trait(self, name: str) -> ComputedTrait:
        trait = self.catalogue.computed.get(name)
        if trait is None:
            known = [*self.catalogue.computed, *self.catalogue.scores]
            raise SegmentError(f"unknown computed trait `{name}`{_suggest(name, known)}", field="name")
        return trait

    def age(self, day: exp.Expr) -> exp.Expr:
        today = self.now.date()
        later = exp.GT(
            this=exp.Add(this=exp.Mul(this=exp.Month(this=day), expression=exp.Literal.number(100)), expression=exp.Day(this=day.copy())),
            expression=exp.Literal.number(today.month * 100 + today.day),
        )
        years = exp.Sub(this=exp.Literal.number(today.year), expression=exp.Year(this=day.copy()))
        return exp.Sub(this=years, expression=exp.Case().when(later, exp.Literal.number(1)).else_(exp.Literal.number(0)))

    def days_until(self, day: exp.Expr) -> exp.Expr:
        today = self.now.date()

        def anniversary(year: int) -> exp.Expr:
            feb29 = exp.and_(exp.Month(this=day.copy()).eq(2), exp.Day(this=day.copy()).eq(29))
            dom = exp.Day(this=day.copy()) if calendar.isleap(year) else exp.Case().when(feb29, exp.Literal.number(28)).else_(exp.Day(this=day.copy()))
            return self.dialect.make_date(year, exp.Month(this=day.copy()), dom)

        this_year = anniversary(today.year)
        passed = exp.LT(this=this_year, expression=self.dialect.date(today))
        upcoming = exp.Case().when(passed, anniversary(today.year + 1)).else_(this_year.copy())
        return self.dialect.day_diff(self.dialect.date(today), upcoming)

    def trait(self, path: tuple[str, ...]) -> exp.Select:
        """A profile's latest value of the trait: the last event (by time, then message id) that set it; null unsets."""
        e = lambda name: exp.column(name, table="e")  # noqa: E731
        marker = exp.Literal.string("\u0000null")
        value = exp.Coalesce(this=self.dialect.json_text(e("traits"), path), expressions=[marker])
        latest = exp.ArgMax(this=value, expression=exp.Tuple(expressions=[e("timestamp"), e("message_id")]))
        rows = (
            exp.select(
                exp.alias_(self.canonical(e("profile_id")), "profile_id"),
                exp.alias_(exp.Nullif(this=latest, expression=marker.copy()), "value"),
            )
            .from_(exp.alias_(exp.to_table(EVENTS.name), "e", table=True))
            .join(self.ref(PROFILE_MAP, "pm"), on=exp.column("profile_id", table="pm").eq(e("profile_id")), join_type="left")
            .where(
                exp.and_(
                    *self.restrict(e("profile_id")),
                    self.dialect.json_present(e("traits"), path[:1]),  # a write replaces the whole top-level trait
                    exp.LTE(this=e("timestamp"), expression=self.at()),
                )
            )
            .group_by(self.canonical(e("profile_id")))
        )
        return rows

    # events -------------------------------------------------------------------------------
    def aggregate_kind(self, node: Aggregate) -> str:
        fn: Fn = node.fn
        if fn in (Fn.SUM, Fn.AVG):
            return Kind.NUMBER
        ref = _Rows(self, node.event, node.where, node.window, node.value)
        return ref.value_kind(default=Kind.NUMBER)

    def aggregate(self, node: Aggregate) -> exp.Column:
        """The aggregate's column in the subquery of its rows (shared with aggregates of the same rows)."""
        fn: Fn = node.fn
        rows = _Rows(self, node.event, node.where, node.window, node.value)
        kind: str | None = None
        if fn in (Fn.SUM, Fn.AVG):
            kind = Kind.NUMBER
        elif node.value is not None:
            kind = rows.value_kind(default=Kind.TEXT if fn == Fn.DISTINCT else Kind.NUMBER)
        on_line = node.value is not None and node.value.startswith("line.")
        key = (node.event, node.where, node.window, on_line)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(f"g{len(self.groups)}", self, node.event, node.where, node.window, on_line)
        return group.column(fn, node.value, kind)

    def pattern(self, node: Node) -> exp.Select:
        """Profiles with the sequence (or the unanswered first step): ``(profile_id, value=true)``."""
        if isinstance(node, NotFollowed):
            within = node.within.delta
            first = _Rows(self, node.first.event, node.first.where, node.window, None, before=within)
            then = _Rows(self, node.then.event, node.then.where, None, None)
            a = first.select(None).distinct().subquery("a")
            b = then.select(None).distinct()
            col = exp.column
            # the earliest `then` strictly after each `first` (ASOF: the closest match of the inequality) ...
            after = (
                exp.select(col("_p", table="a"), col("_t", table="a"), col("_m", table="a"), exp.alias_(col("_t", table="b"), "_next"))
                .from_(a)
                .join(
                    b.subquery("b"),
                    on=exp.and_(col("_p", table="b").eq(col("_p", table="a")), exp.GT(this=col("_t", table="b"), expression=col("_t", table="a"))),
                    join_type="asof left",
                )
            )
            # ... and any other `then` event at the very same time (an event never follows itself)
            same = (
                exp.select("_p", "_t", exp.alias_(exp.Min(this=col("_m")), "_m1"), exp.alias_(exp.Max(this=col("_m")), "_m2"))
                .from_(b.subquery("b0"))
                .group_by("_p", "_t")
            )
            joined = (
                exp.select(col("_p", table="l"), col("_t", table="l"), col("_next", table="l"), exp.alias_(
                    exp.and_(
                        exp.Not(this=exp.Is(this=col("_m1", table="s"), expression=exp.Null())),
                        exp.or_(exp.NEQ(this=col("_m1", table="s"), expression=col("_m", table="l")),
                                exp.NEQ(this=col("_m2", table="s"), expression=col("_m", table="l"))),
                    ), "_same"))
                .from_(after.subquery("l"))
                .join(
                    same.subquery("s"),
                    on=exp.and_(col("_p", table="s").eq(col("_p", table="l")), col("_t", table="s").eq(col("_t", table="l"))),
                    join_type="left",
                )
            )
            unanswered = exp.and_(
                exp.Not(this=exp.Coalesce(this=col("_same"), expressions=[exp.false()])),
                exp.or_(
                    exp.Is(this=col("_next"), expression=exp.Null()),
                    exp.GT(this=col("_next"), expression=_plus(col("_t"), within)),
                ),
            )
            return (
                exp.select(exp.alias_(col("_p"), "profile_id"), exp.alias_(exp.true(), "value"))
                .distinct()
                .from_(joined.subquery("j"))
                .where(unanswered)
            )
        assert isinstance(node, SequenceNode)
        steps: tuple[Step, ...] = node.steps
        within = node.within.delta if node.within is not None else None
        first = _Rows(self, steps[0].event, steps[0].where, node.window, None)
        chain: exp.Select = exp.select(
            exp.column("_p"), exp.alias_(exp.column("_t"), "_t0"), exp.alias_(exp.column("_t"), "_last")
        ).from_(first.select(None).distinct().subquery("s0"))
        for number, step in enumerate(steps[1:], start=1):
            later = _Rows(self, step.event, step.where, None, None)
            c, s = f"c{number}", f"s{number}"
            joined = (
                exp.select(exp.column("_p", table=c), exp.column("_t0", table=c), exp.alias_(exp.column("_t", table=s), "_last"))
                .from_(chain.subquery(c))
                .join(
                    later.select(None).distinct().subquery(s),
                    on=exp.and_(
                        exp.column("_p", table=s).eq(exp.column("_p", table=c)),
                        exp.GT(this=exp.column("_t", table=s), expression=exp.column("_last", table=c)),
                    ),
                    join_type="asof left",
                )
            )
            found: list[exp.Expr] = [exp.Not(this=exp.Is(this=exp.column("_last"), expression=exp.Null()))]
            if within is not None:
                found.append(exp.LTE(this=exp.column("_last"), expression=_plus(exp.column("_t0"), within)))
            chain = exp.select("_p", "_t0", "_last").from_(joined.subquery(f"j{number}")).where(exp.and_(*found))
        return (
            exp.select(exp.alias_(exp.column("_p"), "profile_id"), exp.alias_(exp.true(), "value"))
            .distinct()
            .from_(chain.subquery("q"))
        )

    def compare(self, operand: Operand, node: Compare) -> exp.Expr:
        """``node``'s comparison over the operand, false when the value is missing."""
        op: Op = node.op
        return exp.Coalesce(this=exp.Paren(this=self.comparison(operand, op, node.value, node.high)), expressions=[exp.false()])

    def comparison(self, operand: Operand, op: Op, value: Any, high: Any) -> exp.Expr:
        if op == Op.EXISTS:
            if operand.present is not None:
                return operand.present
            return exp.Not(this=exp.Is(this=operand.expr, expression=exp.Null()))
        values = value if isinstance(value, tuple) else (value,)
        if operand.kind == Kind.LIST:
            if op != Op.CONTAINS:
                raise SegmentError(f"a list trait is compared with `contains`, not `{op}`", field="op")
            return self.dialect.list_contains(operand.expr, _literal(values[0], self))
        kind = _literal_kind(values[0])
        if op in (Op.CONTAINS, Op.STARTS_WITH, Op.MATCHES) and kind != Kind.TEXT:
                raise SegmentError(f"`{op}` compares text; write the value in quotes, e.g. \"{values[0]}\"", field="value")
        left = self.typed(operand, kind)
        if kind == Kind.TIME and any(_is_day(v) for v in (*values, high)):
            return self.days(left, op, values, high)
        literals = [self.literal(v, kind) for v in values]
        match op:
            case Op.IN:
                return exp.In(this=left, expressions=literals)
            case Op.NOT_IN:
                return exp.Not(this=exp.In(this=left, expressions=literals))
            case Op.CONTAINS:
                return exp.GT(this=exp.StrPosition(this=left, substr=literals[0]), expression=exp.Literal.number(0))
            case Op.STARTS_WITH:
                return exp.StartsWith(this=left, expression=literals[0])
            case Op.MATCHES:
                return exp.RegexpLike(this=left, expression=literals[0])
            case Op.BETWEEN:
                if _literal_kind(high) != kind:
                    raise SegmentError(f"`between` bounds must be of one type; got {values[0]!r} and {high!r}", field="high")
                return exp.Between(this=left, low=literals[0], high=self.literal(high, kind))
        binary: dict[Op, type[exp.Binary]] = {Op.EQ: exp.EQ, Op.NE: exp.NEQ, Op.GT: exp.GT, Op.GE: exp.GTE, Op.LT: exp.LT, Op.LE: exp.LTE}
        return binary[op](this=left, expression=literals[0])

    def days(self, left: exp.Expr, op: Op, values: tuple[Any, ...], high: Any) -> exp.Expr:
        """A time against dates: a date is its whole UTC day (``= 2024-05-20`` is any time that day)."""

        def start(value: Any) -> exp.Expr:
            return self.time(value)

        def end(value: Any) -> exp.Expr:  # the instant after the value: the next midnight for a day
            return self.time(value + dt.timedelta(days=1)) if _is_day(value) else self.time(value)

        def on(value: Any) -> exp.Expr:
            if not _is_day(value):
                return exp.EQ(this=left.copy(), expression=self.time(value))
            return exp.and_(exp.GTE(this=left.copy(), expression=start(value)), exp.LT(this=left.copy(), expression=end(value)))

        value = values[0]
        later_than = exp.GTE if _is_day(value) else exp.GT
        up_to = exp.LT if _is_day(value) else exp.LTE
        match op:
            case Op.EQ:
                return on(value)
            case Op.NE:
                return exp.Not(this=exp.Paren(this=on(value)))
            case Op.IN:
                return exp.or_(*(exp.Paren(this=on(v)) for v in values))
            case Op.NOT_IN:
                return exp.Not(this=exp.Paren(this=exp.or_(*(exp.Paren(this=on(v)) for v in values))))
            case Op.GT:
                return later_than(this=left, expression=end(value))
            case Op.GE:
                return exp.GTE(this=left, expression=start(value))
            case Op.LT:
                return exp.LT(this=left, expression=start(value))
            case Op.LE:
                return up_to(this=left, expression=end(value))
            case Op.BETWEEN:
                top = exp.LT(this=left.copy(), expression=end(high)) if _is_day(high) else exp.LTE(this=left.copy(), expression=self.time(high))
                return exp.and_(exp.GTE(this=left, expression=start(value)), top)
        raise SegmentError(f"`{op}` does not compare times", field="op")

    def typed(self, operand: Operand, kind: str) -> exp.Expr:
        """The operand read as ``kind`` (JSON text is cast; a typed column must match)."""
        if operand.kind is None:
            if kind == Kind.NUMBER:
                return self.dialect.to_number(operand.expr)
            if kind == Kind.TIME:
                return self.dialect.to_time(operand.expr)
            if kind == Kind.BOOL:
                return operand.expr  # JSON text 'true' / 'false', compared with the text of the literal
            return operand.expr
        if operand.kind == kind or (operand.kind == Kind.BOOL and kind == Kind.BOOL):
            return operand.expr
        if operand.kind == Kind.TEXT and kind == Kind.NUMBER:
            return self.dialect.to_number(operand.expr)
        if operand.kind == Kind.TEXT and kind == Kind.TIME:
            return self.dialect.to_time(operand.expr)
        if operand.kind == Kind.NUMBER and kind == Kind.TEXT:
            raise SegmentError("a number is compared with text; write the value without quotes", field="value")
        if operand.kind == Kind.TIME and kind != Kind.TIME:
            raise SegmentError(
                "a time is compared with a date or a time: write 2024-01-01, 2024-01-01T10:00:00Z or ago(30d)",
                field="value",
            )
        raise SegmentError(f"a {operand.kind} is compared with a {kind} value; compare values of one type", field="value")

    def literal(self, value: Any, kind: str) -> exp.Expr:
        if kind == Kind.TIME:
            return self.time(value)
        return _literal(value, self)

    def time(self, value: Any) -> exp.Expr:
        if isinstance(value, Ago):
            return self.at(value.duration.delta)
        return self.dialect.timestamp(_as_time(value, self.now))


def _plus(time: exp.Expr, delta: dt.timedelta) -> exp.Expr:
    seconds = int(delta.total_seconds())
    interval = exp.Interval(this=exp.Literal.number(abs(seconds)), unit=exp.var("SECOND"))
    return exp.Add(this=time, expression=interval) if seconds >= 0 else exp.Sub(this=time, expression=interval)


def _is_day(value: Any) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int | float):
        return Kind.NUMBER
    if isinstance(value, dt.date | Ago):
        return Kind.TIME
    return Kind.TEXT


def _literal(value: Any, compiler: _Compiler) -> exp.Expr:
    if isinstance(value, bool):
        return exp.Literal.string("true" if value else "false")
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    if isinstance(value, dt.date | Ago):
        return compiler.time(value)
    return exp.Literal.string(str(value))


def _as_time(value: Any, now: dt.datetime) -> dt.datetime:
    if isinstance(value, Ago):
        return value.at(now)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    raise SegmentError(f"{value!r} is not a time; write 2024-01-01, 2024-01-01T10:00:00Z or ago(30d)", field="value")


def _trait_kind(trait: ComputedTrait) -> str:
    import pyarrow as pa

    result = trait.result_type()
    if pa.types.is_list(result):
        return Kind.LIST
    if pa.types.is_timestamp(result):
        return Kind.TIME
    if pa.types.is_integer(result) or pa.types.is_floating(result):
        return Kind.NUMBER
    return Kind.TEXT


@dataclass
class _Group:
    """Aggregates of one set of rows: one subquery ``(profile_id, v0, v1, ...)``.

    ``on_line``: the folded values are order-line fields, so rows are lines; otherwise rows
    are events, each once however many of its lines matched.
    """

    alias: str
    compiler: _Compiler
    event: tuple[str, ...] | None
    where: Condition | None
    window: Window | None
    on_line: bool
    folds: list[tuple[Fn, str | None, str | None]] = field(default_factory=list)

    def column(self, fn: Fn, value: str | None, kind: str | None) -> exp.Column:
        fold = (fn, value, kind)
        if fold not in self.folds:
            self.folds.append(fold)
        return exp.column(f"v{self.folds.index(fold)}", table=self.alias)

    def build(self) -> exp.Select:
        values: list[tuple[str, str]] = []
        for _, value, kind in self.folds:
            if value is not None and kind is not None and (value, kind) not in values:
                values.append((value, kind))
        rows = _Rows(self.compiler, self.event, self.where, self.window, None, values=values)
        select = rows.select_values()
        if rows.lines and not self.on_line:  # one row per matching event, whatever number of its lines matched
            select = select.distinct()
        t = exp.column("_t")
        outputs: list[exp.Expr] = [exp.alias_(exp.column("_p"), "profile_id")]
        for number, (fn, value, kind) in enumerate(self.folds):
            v = exp.column(f"_v{values.index((value, kind))}") if value is not None and kind is not None else None
            fold: exp.Expr = {
                Fn.COUNT: lambda v=v: exp.Count(this=exp.Star()),
                Fn.SUM: lambda v=v: exp.Sum(this=v),
                Fn.AVG: lambda v=v: exp.Avg(this=v),
                Fn.MIN: lambda v=v: exp.Min(this=v),
                Fn.MAX: lambda v=v: exp.Max(this=v),
                Fn.DISTINCT: lambda v=v: exp.Count(this=exp.Distinct(expressions=[v])),
                Fn.FIRST_TIME: lambda v=v: exp.Min(this=t.copy()),
                Fn.LAST_TIME: lambda v=v: exp.Max(this=t.copy()),
            }[fn]()
            outputs.append(exp.alias_(fold, f"v{number}"))
        return exp.select(*outputs).from_(select.subquery("r")).group_by(exp.column("_p"))


class _Rows:
    """The matching rows of events (or order lines) for an aggregate or a step: ``_p``, ``_t``, ``_v``."""

    def __init__(
        self,
        compiler: _Compiler,
        event: tuple[str, ...] | None,
        where: Condition | None,
        window: Window | None,
        value: str | None,
        before: dt.timedelta = dt.timedelta(0),
        values: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.c = compiler
        self.values = list(values)
        """Fields to read, as ``_v0``, ``_v1``, ... (with their kinds)."""
        self.event = event
        self.where = where
        self.window = window or Window()
        self.value = value
        self.before = before
        """Only rows at least this long before now."""
        paths = [n.path for n in (where.walk() if where is not None else ()) if isinstance(n, Field)]
        if value is not None:
            paths.append(value)
        paths += [path for path, _ in self.values]
        self.lines = any(p.startswith("line.") for p in paths)
        # order lines carry their event's name, time, profile, channel ...: no join with events needed
        self.lines_only = self.lines and all(
            p.startswith(("line.", "product.")) or p in ORDER_LINE_EVENT_COLUMNS for p in paths
        )
        self.value_on_line = any(p.startswith("line.") for p in ([value] if value else []) + [v for v, _ in self.values])
        self.e = "l" if self.lines_only else "e"
        """The alias event columns are read from: the order lines themselves when they carry all that is needed."""
        self.products = any(p.startswith("product.") for p in paths)
        self.stock_then = any(p == f"product.{STOCK_THEN}" for p in paths)

    def operand(self, path: str) -> Operand:
        e = lambda name: exp.column(name, table=self.e)  # noqa: E731
        head, _, rest = path.partition(".")
        if head in _JSON_COLUMNS and rest:
            keys = tuple(rest.split("."))
            return Operand(self.c.dialect.json_text(e(head), keys), None, self.c.dialect.json_exists(e(head), keys))
        if head == "line":
            if rest not in _LINE_COLUMNS:
                raise _unknown_field(path, list(_LINE_COLUMNS), "line ")
            return Operand(exp.column(rest, table="l"), _COLUMN_KINDS[_LINE_COLUMNS[rest]])
        if head == "product":
            if rest == STOCK_THEN:
                return Operand(exp.column("new_value", table="sc"), Kind.NUMBER)
            name, _, sub = rest.partition(".")
            if name == "attributes" and sub:
                keys = tuple(sub.split("."))
                p = exp.column("attributes", table="p")
                return Operand(self.c.dialect.json_text(p, keys), None, self.c.dialect.json_exists(p.copy(), keys))
            if name not in _PRODUCT_COLUMNS or sub:
                raise _unknown_field(path, [*_PRODUCT_COLUMNS, STOCK_THEN], "product ")
            return Operand(exp.column(name, table="p"), _COLUMN_KINDS[_PRODUCT_COLUMNS[name]])
        if path in _EVENT_COLUMNS and path not in _JSON_COLUMNS:
            return Operand(e(path), _COLUMN_KINDS[_EVENT_COLUMNS[path]])
        raise _unknown_field(path, [c for c in _EVENT_COLUMNS if c not in _JSON_COLUMNS])

    def value_kind(self, default: str) -> str:
        assert self.value is not None
        kind = self.operand(self.value).kind
        return kind or default

    def filter(self, node: Node) -> exp.Expr:
        if isinstance(node, And):
            return exp.and_(*(exp.Paren(this=self.filter(c)) for c in node.conditions))
        if isinstance(node, Or):
            return exp.or_(*(exp.Paren(this=self.filter(c)) for c in node.conditions))
        if isinstance(node, Not):
            return exp.Not(this=exp.Paren(this=self.filter(node.this)))
        assert isinstance(node, Compare) and isinstance(node.this, Field)
        return self.c.compare(self.operand(node.this.path), node)

    def select(self, kind: str | None) -> exp.Select:
        """``_p``, ``_t``, ``_m`` (and ``_v``, the value read as ``kind``) of each matching row."""
        if self.value is not None and kind is not None:
            self.values = [(self.value, kind)]
            return self.select_values(single=True)
        self.values = []
        return self.select_values()

    def select_values(self, *, single: bool = False) -> exp.Select:
        c = self.c
        e = lambda name: exp.column(name, table=self.e)  # noqa: E731
        outputs: list[exp.Expr] = [
            exp.alias_(c.canonical(e("profile_id")), "_p"),
            exp.alias_(e("timestamp"), "_t"),
            exp.alias_(e("message_id"), "_m"),
        ]
        if self.value_on_line:
            outputs.append(exp.alias_(exp.column("line_no", table="l"), "_line"))
        for number, (path, kind) in enumerate(self.values):
            outputs.append(exp.alias_(c.typed(self.operand(path), kind), "_v" if single else f"_v{number}"))
        if self.lines_only:
            query = exp.select(*outputs).from_(exp.alias_(exp.to_table(ORDER_LINES.name), "l", table=True))
        else:
            query = exp.select(*outputs).from_(exp.alias_(exp.to_table(EVENTS.name), "e", table=True))
        query = query.join(c.ref(PROFILE_MAP, "pm"), on=exp.column("profile_id", table="pm").eq(e("profile_id")), join_type="left")
        if self.lines and not self.lines_only:
            query = query.join(
                exp.alias_(exp.to_table(ORDER_LINES.name), "l", table=True),
                on=exp.column("message_id", table="l").eq(e("message_id")),
            )
        if self.products:
            product = exp.column("product_id", table="l" if self.lines else "e")
            query = query.join(c.ref(PRODUCTS, "p"), on=exp.column("product_id", table="p").eq(product), join_type="left")
        if self.stock_then:
            product = exp.column("product_id", table="l" if self.lines else "e")
            changes = (
                exp.select("product_id", "changed_at", "new_value")
                .from_(exp.to_table(PRODUCT_CHANGES.name))
                .where(exp.column("field").eq(exp.Literal.string("stock")))
            )
            query = query.join(
                changes.subquery("sc"),
                on=exp.and_(
                    exp.column("product_id", table="sc").eq(product.copy()),
                    exp.LTE(this=exp.column("changed_at", table="sc"), expression=e("timestamp")),
                ),
                join_type="asof left",
            )
        conditions = c.restrict(e("profile_id"))
        if not self.event:  # any event, but not the segment engine's own: a change must not change the segment
            own = [exp.Literal.string(n) for n in MEMBERSHIP_EVENTS]
            conditions.append(exp.Not(this=exp.In(this=e("event"), expressions=own)))
        if self.event:
            names = [exp.Literal.string(n) for n in self.event]
            conditions.append(e("event").eq(names[0]) if len(names) == 1 else exp.In(this=e("event"), expressions=names))
        conditions.append(exp.LTE(this=e("timestamp"), expression=c.at(self.before)))
        if self.window.last is not None:
            conditions.append(exp.GTE(this=e("timestamp"), expression=c.at(self.window.last.delta)))
        if self.window.since is not None:
            conditions.append(exp.GTE(this=e("timestamp"), expression=c.dialect.timestamp(self.window.since)))
        if self.window.until is not None:
            conditions.append(exp.LT(this=e("timestamp"), expression=c.dialect.timestamp(self.window.until)))
        if self.where is not None:
            conditions.append(self.filter(self.where))
        return query.where(exp.and_(*conditions))


# -- entry points -----------------------------------------------------------------------------


def compile_segment(
    tree: Node,
    target: Backend | str,
    now: dt.datetime,
    *,
    params: Mapping[str, Any] | None = None,
    catalogue: Catalogue | None = None,
    profiles: Sequence[str] | None = None,
) -> exp.Select:
    """``SELECT profile_id`` of the canonical profiles in the segment at ``now``.

    ``target``: a backend, or a dialect name (``duckdb``, ``clickhouse``) to render
    without one. ``params`` binds ``$parameters``; ``catalogue`` resolves computed traits
    and other segments; ``profiles`` limits evaluation to these canonical ids.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(datetime.UTC)")
    tree = bind(tree, params or {})
    backend = target if isinstance(target, Backend) else None
    dialect = DIALECTS[target.capabilities.dialect if isinstance(target, Backend) else target]
    compiler = _Compiler(dialect, now, catalogue or Catalogue(), backend, profiles)
    return compiler.query(tree)


class SegmentQueryError(TerminalError):
    """The engine could not evaluate a segment (too much memory, a time-out)."""

    code = "segment_query_failed"
    status = 422


_RENDERED: dict[tuple[Any, ...], tuple[str, bool]] = {}
"""Rendered queries by what they depend on (``_cache_key``): ``now`` is a parameter, so a segment
is compiled once a day (once per run when it uses computed traits) instead of on every evaluation."""
_RENDERED_MAX = 1024


def _cache_key(
    dialect: str, tree: Node, params: Mapping[str, Any] | None, catalogue: Catalogue, profiles: Sequence[str] | None, now: dt.datetime
) -> tuple[Any, ...] | None:
    trees, seen, stack = [tree], set(), [tree]
    while stack:  # the segments it refers to, at any depth
        for name in sorted(n.segment for n in stack.pop().walk() if isinstance(n, InSegment)):
            if name not in seen:
                seen.add(name)
                inner = catalogue.segments.get(name)
                trees.append(inner) if inner is not None else None
                stack += [inner] if inner is not None else []
    computed = sorted({n.name for t in trees for n in t.walk() if isinstance(n, Computed)})
    try:
        return (
            dialect,
            tuple(trees),
            tuple(sorted(seen)),
            tuple(sorted((k, _frozen(v)) for k, v in (params or {}).items())),
            tuple(profiles) if profiles is not None else None,
            now.date(),
            now if computed else None,  # computed traits are compiled with now as a literal
            tuple((name, catalogue.computed.get(name)) for name in computed),
            tuple((name, info.model_version) for name in computed if (info := catalogue.scores.get(name)) is not None),
        )
    except TypeError:  # an unhashable parameter value: do not cache
        return None


def _scores_named(backend: Backend, tree: Node) -> dict[str, ScoreInfo]:
    """The stored scores a tree names (none looked up when it names no computed trait beyond the built-ins)."""
    builtin = {t.name for t in BUILTIN}
    if all(n.name in builtin for n in tree.walk() if isinstance(n, Computed)):
        return {}
    return score_names(backend)


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def render(
    backend: Backend,
    tree: Node,
    now: dt.datetime,
    *,
    params: Mapping[str, Any] | None = None,
    catalogue: Catalogue | None = None,
    profiles: Sequence[str] | None = None,
) -> tuple[str, dict[str, str]]:
    """The segment's query for ``backend`` and its parameters (cached, see ``_RENDERED``)."""
    catalogue = catalogue or Catalogue()
    dialect = DIALECTS[backend.capabilities.dialect]
    key = _cache_key(dialect.name, tree, params, catalogue, profiles, now)
    cached = _RENDERED.get(key) if key is not None else None
    if cached is None:
        query = compile_segment(tree, backend, now, params=params, catalogue=catalogue, profiles=profiles)
        uses_now = any(isinstance(node, exp.Placeholder) for node in query.walk())
        cached = backend.render(query), uses_now
        if key is not None:
            if len(_RENDERED) >= _RENDERED_MAX:
                _RENDERED.clear()
            _RENDERED[key] = cached
    sql, uses_now = cached
    return sql, ({"now": dialect.now_param(now)} if uses_now else {})


def members(
    backend: Backend,
    tree: Node,
    now: dt.datetime,
    params: Mapping[str, Any] | None = None,
    profiles: Sequence[str] | None = None,
    segments: Mapping[str, Node | None] | None = None,
    catalogue: Catalogue | None = None,
) -> set[str]:
    """The canonical ids of the profiles in the segment at ``now``."""
    found = member_ids(backend, tree, now, params=params, profiles=profiles, segments=segments, catalogue=catalogue)
    return {str(p) for p in found.to_pylist()}


def member_ids(
    backend: Backend,
    tree: Node,
    now: dt.datetime,
    params: Mapping[str, Any] | None = None,
    profiles: Sequence[str] | None = None,
    segments: Mapping[str, Node | None] | None = None,
    catalogue: Catalogue | None = None,
) -> pa.Array:
    """``members`` as an Arrow array (each id once): a refresh compares a million of them with
    the stored members in Arrow, rather than building two Python sets."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(datetime.UTC)")
    if catalogue is None:
        catalogue = Catalogue(segments=segments or {}, scores=_scores_named(backend, tree))
    elif segments is not None:
        catalogue = Catalogue(computed=catalogue.computed, segments=segments, scores=catalogue.scores)
    sql, values = render(backend, tree, now, params=params, catalogue=catalogue, profiles=profiles)
    try:
        result = backend.query_arrow(sql, values)
    except MemoryError as error:
        raise SegmentQueryError(f"the segment needs more memory than the store may use: {error}") from None
    except Exception as error:
        text = str(error)
        if "memory" in text.lower() and ("limit" in text.lower() or "out of" in text.lower()):
            raise SegmentQueryError(
                "the segment needs more memory than the store may use (duckdb_memory_limit / max_memory_usage); "
                f"narrow its windows or raise the limit: {text.splitlines()[0][:300]}"
            ) from None
        raise
    return result.column("profile_id").combine_chunks().cast(pa.string())
