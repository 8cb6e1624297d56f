"""Computed traits: per-profile aggregations of events, declared as data and compiled to SQL.

A trait says which rows count (``source``, ``event``, ``where``, ``window``), what to
read from each (``value``) and how to fold one profile's values into one
(``aggregation``). Python code, the HTTP API (a dict) and config files (TOML, JSON)
declare traits in the same format::

    [[traits]]
    name = "cosmetics_units_30d"
    description = "Cosmetics items bought in the last 30 days"
    aggregation = "sum"                # count sum avg min max first last
                                       # most_frequent unique_list unique_count
    source = "order_lines"             # or "events" (the default)
    event = "Order Completed"          # a name, a list of names, or leave out: any event
    value = "quantity"                 # a column, a JSON path, or a list: the first present
    window = "30d"                     # "all", "15m", "12h", "30d", "2w",
                                       # { since = 2024-01-01 }, { between = [2024-01-01, 2024-01-31] }
    where = [{ field = "category", op = "=", value = "Cosmetics" }]

Fields are columns of the source table (``total``, ``category``, ``timestamp``) or, on
events, paths in its JSON columns (``properties.color``, ``context.device.type``).
JSON values are untyped: a value is read as text, or as a number for sum, avg, min and
max (``value_type`` overrides this); a filter compares as a number when its literal is
a number and as text otherwise.

Semantics, the same on every engine:

* Rows count for the canonical profile of their ``profile_id`` (``profile_map`` redirects
  merged profiles to the survivor); rows without a ``profile_id`` are ignored.
* A missing value (NULL, an absent or null JSON property, text where a number is read)
  is skipped by every aggregation: ``first``/``last`` give the earliest/latest value
  present (by event time, then message id, then line number).
* ``compile_trait`` gives a row only to profiles with at least one matching row; there
  ``count``, ``unique_count`` and ``sum`` are 0 and ``unique_list`` is ``[]`` when no
  value is present, and the other aggregations are NULL. ``evaluate`` gives those same
  empty values to profiles that only other traits found.
* ``most_frequent`` breaks ties by the smallest value; ``unique_list`` is sorted
  ascending and keeps the first ``limit`` values (100 unless set).
* ``!=`` and ``not in`` are the negations of ``=`` and ``in``: they also match rows
  where the field is missing (add an ``exists`` filter to exclude those). The other
  operators never match a missing field.
* Windows are by event time and relative to an explicit ``now``; rows after ``now``
  never count. A date bound is a whole UTC day (``between`` includes its last day); a
  date-time bound is exact (``between`` excludes its end). Date-times without an offset
  are UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.storage.base import Backend
from opencdp.storage.schema import ARROW_TYPES, EVENTS, ORDER_LINES, PROFILE_MAP, T, Table


class TraitError(TerminalError):
    """A trait definition is invalid; the detail names the trait, the field and the fix."""

    code = "invalid_trait"


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    FIRST = "first"
    LAST = "last"
    MOST_FREQUENT = "most_frequent"
    UNIQUE_LIST = "unique_list"
    UNIQUE_COUNT = "unique_count"


class Source(StrEnum):
    EVENTS = "events"
    ORDER_LINES = "order_lines"


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
    EXISTS = "exists"


class Kind(StrEnum):
    """The type a value is read and compared as."""

    NUMBER = "number"
    TEXT = "text"
    TIME = "time"


Scalar = str | int | float | bool | dt.date
"""A filter literal; ``dt.datetime`` is a ``dt.date``."""

ORDER_COMPLETED = "Order Completed"
DEFAULT_LIMIT = 100
"""How many values ``unique_list`` keeps when the trait does not set ``limit``."""

_SOURCES: dict[Source, Table] = {Source.EVENTS: EVENTS, Source.ORDER_LINES: ORDER_LINES}
_COLUMN_KINDS: dict[T, Kind] = {
    T.STRING: Kind.TEXT,
    T.LOW_CARD: Kind.TEXT,
    T.INT: Kind.NUMBER,
    T.FLOAT: Kind.NUMBER,
    T.TIMESTAMP: Kind.TIME,
}
_ARROW_KINDS: dict[Kind, pa.DataType] = {
    Kind.NUMBER: pa.float64(),
    Kind.TEXT: pa.string(),
    Kind.TIME: ARROW_TYPES[T.TIMESTAMP],
}
_NUMERIC = (Aggregation.SUM, Aggregation.AVG)
_ORDERED = (Aggregation.MIN, Aggregation.MAX)
_COUNTS = (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)
_NEGATIONS = {Op.NE: Op.EQ, Op.NOT_IN: Op.IN}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"(\d+)([mhdw])")
_UNITS = {
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}
_WINDOW_FORMS = (
    '"all", a duration such as "30d" or "12h" (units m, h, d, w), '
    '{"since": "2024-01-01"} or {"between": ["2024-01-01", "2024-01-31"]}'
)


_E = TypeVar("_E", bound=StrEnum)


def _error(trait: str, field: str, problem: str) -> TraitError:
    return TraitError(f"trait {trait!r}: `{field}` {problem}", field=field)


def _choice(enum: type[_E], value: Any, trait: str, field: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        options = ", ".join(repr(str(m)) for m in enum)
        raise _error(trait, field, f"is {value!r}; use one of {options}") from None


# -- windows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Which rows count by event time; every window also ends at ``now``."""

    last: dt.timedelta | None = None
    """Only rows of this long before ``now``."""
    start: dt.datetime | None = None
    """Only rows at or after this time."""
    end: dt.datetime | None = None
    """Only rows before this time."""

    @classmethod
    def parse(cls, value: Any, trait: str = "?", field: str = "window") -> Window:
        """Read ``"all"``, ``"30d"``, ``{"since": day}`` or ``{"between": [day, day]}``."""
        if isinstance(value, Window):
            return value
        if value is None or value == "all":
            return cls()
        if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
            amount = int(match.group(1))
            if amount == 0:
                raise _error(
                    trait, field, f'is {value!r}, an empty window; use a positive length or "all"'
                )
            return cls(last=amount * _UNITS[match.group(2)])
        if isinstance(value, Mapping) and len(value) == 1:
            if "since" in value:
                return cls(start=_time(value["since"], trait, f"{field}.since"))
            bounds = value.get("between")
            if isinstance(bounds, Sequence) and not isinstance(bounds, str) and len(bounds) == 2:
                start = _time(bounds[0], trait, f"{field}.between")
                end = _time(bounds[1], trait, f"{field}.between", whole_day=True)
                if end <= start:
                    raise _error(
                        trait,
                        field,
                        f"ends before it starts: {value!r}; put the earlier bound first",
                    )
                return cls(start=start, end=end)
        raise _error(trait, field, f"is {value!r}; use {_WINDOW_FORMS}")

    def to_config(self) -> str | dict[str, Any]:
        """The window in the form ``parse`` reads (bounds as ISO 8601 date-times)."""
        if self.last is not None:
            for unit in ("d", "h", "m"):
                if self.last % _UNITS[unit] == dt.timedelta(0):
                    return f"{self.last // _UNITS[unit]}{unit}"
        if self.start is not None and self.end is not None:
            return {"between": [self.start.isoformat(), self.end.isoformat()]}
        if self.start is not None:
            return {"since": self.start.isoformat()}
        return "all"

    def conditions(self, at: exp.Expr, now: dt.datetime, dialect: _Dialect) -> list[exp.Expr]:
        bounds: list[exp.Expr] = [exp.LTE(this=at.copy(), expression=dialect.timestamp(now))]
        if self.last is not None:
            bounds.append(exp.GTE(this=at.copy(), expression=dialect.timestamp(now - self.last)))
        if self.start is not None:
            bounds.append(exp.GTE(this=at.copy(), expression=dialect.timestamp(self.start)))
        if self.end is not None:
            bounds.append(exp.LT(this=at.copy(), expression=dialect.timestamp(self.end)))
        return bounds


ALL_TIME = Window()


def _time(value: Any, trait: str, field: str, *, whole_day: bool = False) -> dt.datetime:
    """A UTC date-time from a date, a date-time or ISO 8601 text; a date means its midnight,
    or the next midnight when ``whole_day`` (the end of a range that includes that day)."""
    if isinstance(value, str):
        try:
            value = (
                dt.date.fromisoformat(value)
                if len(value) == 10
                else dt.datetime.fromisoformat(value)
            )
        except ValueError:
            raise _error(
                trait,
                field,
                f"is {value!r}, not an ISO 8601 date; write e.g. 2024-05-01 or 2024-05-01T10:00:00Z",
            ) from None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        day = value + dt.timedelta(days=1) if whole_day else value
        return dt.datetime.combine(day, dt.time(), dt.UTC)
    raise _error(trait, field, f"is {value!r}; use a date such as 2024-05-01")


# -- definitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """``field op value``: e.g. ``properties.color = "red"``, ``total >= 1000``, ``coupon exists``."""

    field: str
    op: Op
    value: Scalar | tuple[Scalar, ...] | None = None
    """A scalar; a list for ``in`` and ``not in``; nothing for ``exists``."""

    @classmethod
    def from_dict(cls, data: Any, trait: str = "?", field: str = "where[0]") -> Filter:
        if not isinstance(data, Mapping):
            raise _error(
                trait,
                field,
                f'is {data!r}; write a filter as {{field = "category", op = "=", value = "Cosmetics"}}',
            )
        unknown = sorted(set(data) - {"field", "op", "value"})
        if unknown:
            raise _error(
                trait,
                field,
                f"has unknown key(s) {', '.join(unknown)}; a filter has field, op and value",
            )
        name: Any = data.get("field")
        return cls(
            name,
            _choice(Op, data.get("op"), trait, f"{field}.op"),
            _tuple_or_scalar(data.get("value")),
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"field": self.field, "op": str(self.op)}
        if self.value is not None:
            body["value"] = list(self.value) if isinstance(self.value, tuple) else self.value
        return body


@dataclass(frozen=True)
class ComputedTrait:
    """One per-profile value, computed from events; validated when created."""

    name: str
    """The trait's column name: letters, digits and underscores."""
    aggregation: Aggregation
    source: Source = Source.EVENTS
    """``events``, or ``order_lines``: one row per product of an order event."""
    event: str | tuple[str, ...] | None = None
    """Event name(s) the rows must have; None: any event."""
    where: tuple[Filter, ...] = ()
    """Filters the rows must all pass."""
    value: str | tuple[str, ...] | None = None
    """What to aggregate: a field, or several, of which the first present counts.
    Required except for ``count``, which then counts rows."""
    window: Window = ALL_TIME
    value_type: Kind | None = None
    """How to read a JSON value: ``number`` or ``text``; None: numbers for sum, avg,
    min and max, text otherwise."""
    limit: int | None = None
    """How many values ``unique_list`` keeps (the smallest); None: ``DEFAULT_LIMIT``."""
    description: str = ""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not _NAME.fullmatch(self.name)
            or self.name == "profile_id"
        ):
            raise _error(
                str(self.name),
                "name",
                f"is {self.name!r}; use letters, digits and underscores, not "
                "starting with a digit (and not profile_id), e.g. orders_30d",
            )
        if self.event is not None and not (
            self.events and all(isinstance(e, str) and e for e in self.events)
        ):
            raise _error(
                self.name,
                "event",
                f"is {self.event!r}; give an event name, a list of names, or leave it out for any event",
            )
        self.value_kind()  # validates value, value_type and the aggregation
        if not isinstance(self.window, Window):
            raise _error(
                self.name,
                "window",
                f"is {self.window!r}; build it with Window.parse, from {_WINDOW_FORMS}",
            )
        for number, condition in enumerate(self.where):
            if not isinstance(condition, Filter):
                raise _error(
                    self.name,
                    f"where[{number}]",
                    f"is {condition!r}; use Filter(...), or ComputedTrait.from_dict for dicts",
                )
            _filter_kind(self, condition, f"where[{number}]")
        if self.limit is not None:
            if self.aggregation != Aggregation.UNIQUE_LIST:
                raise _error(self.name, "limit", "applies to unique_list only; remove it")
            if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
                raise _error(
                    self.name, "limit", f"is {self.limit!r}; use a whole number of at least 1"
                )

    @property
    def table(self) -> Table:
        return _SOURCES[self.source]

    @property
    def events(self) -> tuple[str, ...]:
        """The event names, () for any event."""
        return _names(self.event)

    @property
    def values(self) -> tuple[str, ...]:
        """The fields of ``value``, () for none."""
        return _names(self.value)

    def value_kind(self) -> Kind | None:
        """The type values are read as (None: ``count`` of rows); raises if it does not fit."""
        name = str(self.name)
        aggregation = _choice(Aggregation, self.aggregation, name, "aggregation")
        if not self.values:
            if aggregation == Aggregation.COUNT:
                return None
            raise _error(
                name,
                "value",
                f'is missing; {aggregation} needs a field to aggregate, e.g. value = "total"',
            )
        if self.value_type not in (None, Kind.NUMBER, Kind.TEXT):
            raise _error(
                name,
                "value_type",
                f'is {self.value_type!r}; use "number" or "text" (how to read JSON values)',
            )
        default = Kind.NUMBER if aggregation in (*_NUMERIC, *_ORDERED) else Kind.TEXT
        kinds: set[Kind] = set()
        for text in self.values:
            ref = _resolve(self.table, text, name, "value")
            if ref.kind is None:
                kinds.add(self.value_type or default)
            elif self.value_type not in (None, ref.kind):
                raise _error(
                    name,
                    "value_type",
                    f"is {self.value_type} but `{text}` is a {ref.kind} column; remove value_type",
                )
            else:
                kinds.add(ref.kind)
        if len(kinds) > 1:
            raise _error(
                name,
                "value",
                f"mixes {' and '.join(sorted(kinds))} fields {list(self.values)}; list fields of one type",
            )
        kind = kinds.pop()
        if aggregation in _NUMERIC and kind != Kind.NUMBER:
            raise _error(
                name,
                "value",
                f"`{self.values[0]}` is {kind}, but {aggregation} needs numbers; use a numeric "
                "column (e.g. total, revenue, price, quantity) or a JSON property read as a number",
            )
        return kind

    def result_type(self) -> pa.DataType:
        """The Arrow type of the trait's column in ``evaluate``."""
        if self.aggregation in _COUNTS:
            return pa.int64()
        kind = self.value_kind()
        assert kind is not None
        if self.aggregation == Aggregation.UNIQUE_LIST:
            return pa.list_(_ARROW_KINDS[kind])
        return pa.float64() if self.aggregation in _NUMERIC else _ARROW_KINDS[kind]

    def empty_value(self) -> Any:
        """The value over matching rows without any value present (None: NULL)."""
        if self.aggregation in (*_COUNTS, Aggregation.SUM):
            return 0
        return [] if self.aggregation == Aggregation.UNIQUE_LIST else None

    @classmethod
    def from_dict(cls, data: Any) -> ComputedTrait:
        """Read a definition from parsed JSON or TOML (see the module docstring)."""
        if not isinstance(data, Mapping):
            raise TraitError(
                f"a computed trait is a table with name, aggregation, ...; got {data!r}"
            )
        name: Any = data.get("name")
        label = str(name)
        known = {
            "name",
            "description",
            "aggregation",
            "source",
            "event",
            "where",
            "value",
            "value_type",
            "window",
            "limit",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise _error(label, unknown[0], f"is not a trait field; use {', '.join(sorted(known))}")
        where = data.get("where") or ()
        if isinstance(where, Mapping) or not isinstance(where, Sequence) or isinstance(where, str):
            raise _error(label, "where", f"is {where!r}; give a list of filters")
        value_type: Any = data.get("value_type")
        return cls(
            name=name,
            aggregation=_choice(Aggregation, data.get("aggregation"), label, "aggregation"),
            source=_choice(Source, data.get("source", "events"), label, "source"),
            event=_tuple_or_scalar(data.get("event")),
            where=tuple(Filter.from_dict(f, label, f"where[{i}]") for i, f in enumerate(where)),
            value=_tuple_or_scalar(data.get("value")),
            window=Window.parse(data.get("window", "all"), label),
            value_type=Kind(value_type)
            if value_type in ("number", "text")
            else value_type,  # else refused
            limit=data.get("limit"),
            description=str(data.get("description") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        """The definition as ``from_dict`` reads it; fields left at their default are left out."""
        body: dict[str, Any] = {"name": self.name, "aggregation": str(self.aggregation)}
        if self.description:
            body["description"] = self.description
        if self.source != Source.EVENTS:
            body["source"] = str(self.source)
        if self.event is not None:
            body["event"] = self.event if isinstance(self.event, str) else list(self.event)
        if self.where:
            body["where"] = [f.to_dict() for f in self.where]
        if self.value is not None:
            body["value"] = self.value if isinstance(self.value, str) else list(self.value)
        if self.window != ALL_TIME:
            body["window"] = self.window.to_config()
        if self.value_type is not None:
            body["value_type"] = str(self.value_type)
        if self.limit is not None:
            body["limit"] = self.limit
        return body


def _tuple_or_scalar(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _names(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


def parse_traits(data: Any, origin: str = "traits") -> tuple[ComputedTrait, ...]:
    """Traits from ``{"traits": [...]}`` or a list of definitions; names must be unique."""
    items = data.get("traits") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise TraitError(
            f'{origin}: expected a list of traits ([[traits]] tables in TOML, a "traits" array in JSON)'
        )
    traits = tuple(ComputedTrait.from_dict(item) for item in items)
    _check_unique(traits)
    return traits


def load_traits(path: Path) -> tuple[ComputedTrait, ...]:
    """Read traits from a ``.toml`` file of ``[[traits]]`` tables or a ``.json`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except OSError as error:
        raise TraitError(f"cannot read the traits file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise TraitError(
            f"traits file {path.name} is not valid {path.suffix.lstrip('.').upper()}: {error}"
        ) from None
    return parse_traits(data, f"traits file {path.name}")


def _check_unique(traits: Sequence[ComputedTrait]) -> None:
    seen: set[str] = set()
    for trait in traits:
        if trait.name in seen:
            raise _error(trait.name, "name", "is used by two traits; give each trait its own name")
        seen.add(trait.name)


# -- fields ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """A field of the source rows: a typed column, or a path inside a JSON column."""

    column: str
    path: tuple[str, ...] = ()
    kind: Kind | None = None
    """None for a JSON value, which is read as the use needs."""


def _resolve(table: Table, text: Any, trait: str, field: str) -> _Ref:
    columns = {c.name: c for c in table.columns}
    json_columns = [c.name for c in table.columns if c.type == T.JSON]
    typed = [c.name for c in table.columns if c.type in _COLUMN_KINDS]
    if isinstance(text, str):
        if text in columns and columns[text].type in _COLUMN_KINDS:
            return _Ref(text, kind=_COLUMN_KINDS[columns[text].type])
        root, _, rest = text.partition(".")
        path = tuple(rest.split("."))
        if root in json_columns and all(path):
            return _Ref(root, path)
    hint = f", or a JSON path such as {json_columns[0]}.color" if json_columns else ""
    raise _error(
        trait,
        field,
        f"is {text!r}, not a field of {table.name}; use a column ({', '.join(typed)}){hint}",
    )


def _filter_kind(trait: ComputedTrait, condition: Filter, field: str) -> Kind | None:
    """The type ``condition`` compares as (None for ``exists``); raises if it does not fit."""
    ref = _resolve(trait.table, condition.field, trait.name, f"{field}.field")
    op, value = _choice(Op, condition.op, trait.name, f"{field}.op"), condition.value
    if op == Op.EXISTS:
        if value is not None:
            raise _error(
                trait.name, f"{field}.value", f"is {value!r}, but exists takes no value; remove it"
            )
        return None
    listed = op in (Op.IN, Op.NOT_IN)
    if listed != isinstance(value, tuple) or (listed and not value):
        shape = 'a non-empty list, e.g. ["a", "b"]' if listed else "one value, not a list"
        raise _error(trait.name, f"{field}.value", f"is {value!r}; {op} takes {shape}")
    literals = value if isinstance(value, tuple) else (value,)
    kinds = {_literal_kind(v, ref, trait.name, f"{field}.value") for v in literals}
    if len(kinds) > 1:
        raise _error(
            trait.name,
            f"{field}.value",
            f"mixes numbers and text: {value!r}; use values of one type",
        )
    kind = kinds.pop()
    if op == Op.CONTAINS and kind != Kind.TEXT:
        raise _error(
            trait.name,
            f"{field}.value",
            f"is {value!r}; contains looks for text inside a text field",
        )
    if any(isinstance(v, bool) for v in literals) and op not in (Op.EQ, Op.NE, Op.IN, Op.NOT_IN):
        raise _error(
            trait.name, f"{field}.op", f"is {op}; compare true/false with =, !=, in or not in"
        )
    return kind


def _literal_kind(value: Any, ref: _Ref, trait: str, field: str) -> Kind:
    if isinstance(value, bool):
        kind = Kind.TEXT  # JSON true/false, read as the text 'true'/'false' on every engine
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise _error(trait, field, f"is {value!r}; use a finite number")
        kind = Kind.NUMBER
    elif isinstance(value, str):
        kind = Kind.TEXT
    elif isinstance(value, dt.date):
        kind = Kind.TIME
    else:
        raise _error(trait, field, f"is {value!r}; use a number, a text, true/false or a date")
    if ref.kind is None:
        if kind == Kind.TIME:
            raise _error(
                trait,
                field,
                f"is a date, {value!r}; JSON values compare as numbers or text: quote it",
            )
        return kind
    if ref.kind == Kind.TIME and kind in (Kind.TIME, Kind.TEXT) and not isinstance(value, bool):
        _time(value, trait, field)
        return Kind.TIME
    if kind != ref.kind or isinstance(value, bool):
        example = {
            Kind.NUMBER: "a number such as 100",
            Kind.TEXT: 'a text such as "web"',
            Kind.TIME: "a date such as 2024-05-01",
        }
        raise _error(
            trait,
            field,
            f"is {value!r}, but `{ref.column}` is a {ref.kind} column; use {example[ref.kind]}",
        )
    return kind


# -- SQL ---------------------------------------------------------------------------------------


class _Dialect(ABC):
    """SQL that differs between engines; the rest of the compiler is shared."""

    name: ClassVar[str]

    @abstractmethod
    def json_text(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        """The JSON value at ``path`` as text; NULL when missing or null."""

    @abstractmethod
    def json_number(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        """The JSON value at ``path`` as a number (numeric text too); NULL when it is none."""

    @abstractmethod
    def timestamp(self, value: dt.datetime) -> exp.Expr: ...

    @abstractmethod
    def unique_list(self, value: exp.Expr, limit: int) -> exp.Expr:
        """The sorted distinct values present, the first ``limit`` of them; [] if none."""

    def current(self, table: Table) -> exp.Expr:
        """``Backend.table_ref``, for compiling without a backend."""
        return exp.to_table(table.name)


class _DuckDB(_Dialect):
    name = "duckdb"

    # A JSON pointer ('/device/type') rather than the '$.device.type' sqlglot renders for
    # JSONExtractScalar: DuckDB reads a key "*" in a '$' path as a wildcard, even quoted.
    def json_text(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        pointer = "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)
        return exp.Anonymous(
            this="json_extract_string", expressions=[column, exp.Literal.string(pointer)]
        )

    def json_number(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        return exp.TryCast(this=self.json_text(column, path), to=exp.DataType.build("DOUBLE"))

    def timestamp(self, value: dt.datetime) -> exp.Expr:
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("TIMESTAMPTZ"))

    def unique_list(self, value: exp.Expr, limit: int) -> exp.Expr:
        # list_distinct drops NULLs, so a profile without values gets [] rather than NULL.
        values = exp.Anonymous(this="list_distinct", expressions=[exp.ArrayAgg(this=value)])
        ordered = exp.Anonymous(this="list_sort", expressions=[values])
        return exp.Anonymous(
            this="list_slice",
            expressions=[ordered, exp.Literal.number(1), exp.Literal.number(limit)],
        )


class _ClickHouse(_Dialect):
    name = "clickhouse"
    _NULLABLE_TEXT = exp.Literal.string("Nullable(String)")
    _NULLABLE_NUMBER = exp.Literal.string("Nullable(Float64)")

    # sqlglot renders JSONExtractScalar as JSONExtractString, which gives '' for a missing
    # key; JSONExtract(..., 'Nullable(T)') gives NULL for missing and null values, as DuckDB.
    def json_text(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        keys = [exp.Literal.string(key) for key in path]
        return exp.Anonymous(
            this="JSONExtract", expressions=[column, *keys, self._NULLABLE_TEXT.copy()]
        )

    def json_number(self, column: exp.Expr, path: tuple[str, ...]) -> exp.Expr:
        keys = [exp.Literal.string(key) for key in path]
        return exp.Anonymous(
            this="JSONExtract", expressions=[column, *keys, self._NULLABLE_NUMBER.copy()]
        )

    def timestamp(self, value: dt.datetime) -> exp.Expr:
        text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return exp.cast(
            exp.Literal.string(text),
            exp.DataType.build("DateTime64(6, 'UTC')", dialect="clickhouse"),
        )

    def unique_list(self, value: exp.Expr, limit: int) -> exp.Expr:
        values = exp.Anonymous(this="groupUniqArray", expressions=[value])  # skips NULLs
        ordered = exp.Anonymous(this="arraySort", expressions=[values])
        return exp.Anonymous(
            this="arraySlice",
            expressions=[ordered, exp.Literal.number(1), exp.Literal.number(limit)],
        )

    def current(self, table: Table) -> exp.Expr:
        return exp.Final(this=exp.to_table(table.name)) if table.key else exp.to_table(table.name)


_DIALECTS: dict[str, _Dialect] = {d.name: d for d in (_DuckDB(), _ClickHouse())}
_Columns = Callable[[str], exp.Column]
"""Names a column of the source table (aliased ``s``)."""


def compile_trait(
    trait: ComputedTrait, target: Backend | str, now: dt.datetime, profiles: Sequence[str] | None = None
) -> exp.Select:
    """A query of ``(profile_id, value)`` for each profile with a row that matches ``trait``.

    ``target`` is a backend, or a dialect name (``duckdb``, ``clickhouse``) to render
    the query without one. ``now`` must be timezone-aware. ``profiles`` limits it to
    the rows stored under those profile ids (a profile and the ids merged into it).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(datetime.UTC)")
    profile_map: exp.Expr
    if isinstance(target, Backend):
        dialect, profile_map = _DIALECTS[target.capabilities.dialect], target.table_ref(PROFILE_MAP)
    else:
        dialect = _DIALECTS[target]
        profile_map = dialect.current(PROFILE_MAP)
    rows = _rows(trait, dialect, profile_map, now, profiles).subquery("m")
    if trait.aggregation == Aggregation.MOST_FREQUENT:
        return _most_frequent(rows)
    return (
        exp.select(
            exp.alias_(exp.column("_profile"), "profile_id"),
            exp.alias_(_fold(trait, dialect), "value"),
        )
        .from_(rows)
        .group_by(exp.column("_profile"))
    )


def _fold(trait: ComputedTrait, dialect: _Dialect) -> exp.Expr:
    """The aggregate of ``_value`` over one profile's rows (all but most_frequent)."""
    value = exp.column("_value")
    order_key = exp.Tuple(expressions=[exp.column(c) for c in _order_columns(trait)])
    match trait.aggregation:
        case Aggregation.COUNT:
            return exp.Count(this=value if trait.values else exp.Star())
        case Aggregation.SUM:
            return exp.Coalesce(this=exp.Sum(this=value), expressions=[exp.Literal.number(0)])
        case Aggregation.AVG:
            return exp.Avg(this=value)
        case Aggregation.MIN:
            return exp.Min(this=value)
        case Aggregation.MAX:
            return exp.Max(this=value)
        # Both engines' arg_min/arg_max skip rows whose value is NULL.
        case Aggregation.FIRST:
            return exp.ArgMin(this=value, expression=order_key)
        case Aggregation.LAST:
            return exp.ArgMax(this=value, expression=order_key)
        case Aggregation.UNIQUE_LIST:
            return dialect.unique_list(value, trait.limit or DEFAULT_LIMIT)
        case Aggregation.UNIQUE_COUNT:
            return exp.Count(this=exp.Distinct(expressions=[value]))
    raise AssertionError(f"no fold for {trait.aggregation}")


def _order_columns(trait: ComputedTrait) -> tuple[str, ...]:
    return ("_at", "_id", "_line") if trait.source == Source.ORDER_LINES else ("_at", "_id")


def _rows(
    trait: ComputedTrait,
    dialect: _Dialect,
    profile_map: exp.Expr,
    now: dt.datetime,
    profiles: Sequence[str] | None = None,
) -> exp.Select:
    """The matching rows: ``_profile`` (canonical), ``_value``, and the columns ``first``/``last`` order by."""

    def column(name: str) -> exp.Column:
        return exp.column(name, table="s")

    mapped = profile_map.copy()
    (mapped.this if isinstance(mapped, exp.Final) else mapped).set(
        "alias", exp.TableAlias(this=exp.to_identifier("pm"))
    )
    outputs: list[exp.Expr] = [
        exp.alias_(
            exp.Coalesce(
                this=exp.column("canonical_id", table="pm"), expressions=[column("profile_id")]
            ),
            "_profile",
        )
    ]
    kind = trait.value_kind()
    if kind is not None:
        parts = [
            _read(_resolve(trait.table, text, trait.name, "value"), kind, dialect, column)
            for text in trait.values
        ]
        value = parts[0] if len(parts) == 1 else exp.Coalesce(this=parts[0], expressions=parts[1:])
        outputs.append(exp.alias_(value, "_value"))
    if trait.aggregation in (Aggregation.FIRST, Aggregation.LAST):
        sources = ("timestamp", "message_id", "line_no")
        outputs += [
            exp.alias_(column(c), alias)
            for c, alias in zip(sources, _order_columns(trait), strict=False)
        ]
    conditions: list[exp.Expr] = [
        exp.Not(this=exp.Is(this=column("profile_id"), expression=exp.Null()))
    ]
    if profiles is not None:
        conditions.append(
            exp.In(this=column("profile_id"), expressions=[exp.Literal.string(p) for p in profiles])
        )
    if trait.events:
        names = [exp.Literal.string(name) for name in trait.events]
        conditions.append(
            column("event").eq(names[0])
            if len(names) == 1
            else exp.In(this=column("event"), expressions=names)
        )
    conditions += [_condition(trait, f, dialect, column) for f in trait.where]
    conditions += trait.window.conditions(column("timestamp"), now, dialect)
    return (
        exp.select(*outputs)
        .from_(exp.alias_(exp.to_table(trait.table.name), "s"))
        .join(
            mapped,
            on=exp.column("profile_id", table="pm").eq(column("profile_id")),
            join_type="left",
        )
        .where(exp.and_(*conditions))
    )


def _read(ref: _Ref, kind: Kind, dialect: _Dialect, column: _Columns) -> exp.Expr:
    if not ref.path:
        return column(ref.column)
    read = dialect.json_number if kind == Kind.NUMBER else dialect.json_text
    return read(column(ref.column), ref.path)


def _condition(
    trait: ComputedTrait, condition: Filter, dialect: _Dialect, column: _Columns
) -> exp.Expr:
    ref = _resolve(trait.table, condition.field, trait.name, "where")
    kind = _filter_kind(trait, condition, "where")
    field = _read(ref, kind or Kind.TEXT, dialect, column)
    if condition.op == Op.EXISTS:
        return exp.Not(this=exp.Is(this=field, expression=exp.Null()))
    if condition.op in _NEGATIONS:
        positive = _condition(
            trait,
            Filter(condition.field, _NEGATIONS[condition.op], condition.value),
            dialect,
            column,
        )
        return exp.or_(
            exp.Is(this=field, expression=exp.Null()), exp.Not(this=exp.Paren(this=positive))
        )
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    literals = [_literal(v, kind, dialect) for v in values]
    if condition.op == Op.IN:
        return exp.In(this=field, expressions=literals)
    if condition.op == Op.CONTAINS:
        return exp.GT(
            this=exp.StrPosition(this=field, substr=literals[0]), expression=exp.Literal.number(0)
        )
    comparisons: dict[Op, type[exp.Binary]] = {
        Op.EQ: exp.EQ,
        Op.GT: exp.GT,
        Op.GE: exp.GTE,
        Op.LT: exp.LT,
        Op.LE: exp.LTE,
    }
    return comparisons[condition.op](this=field, expression=literals[0])


def _literal(value: Any, kind: Kind | None, dialect: _Dialect) -> exp.Expr:
    if kind == Kind.TIME:
        return dialect.timestamp(_time(value, "?", "where"))
    if isinstance(value, bool):
        return exp.Literal.string("true" if value else "false")
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _most_frequent(rows: exp.Subquery) -> exp.Select:
    """The value with the most rows per profile; ties go to the smallest value."""
    counts = (
        exp.select("_profile", "_value", exp.alias_(exp.Count(this=exp.Star()), "_n"))
        .from_(rows)
        .group_by("_profile", "_value")
    )
    # A profile whose rows have no value keeps one row, with a NULL value.
    order = exp.Order(
        expressions=[
            exp.Ordered(this=exp.column("_value").is_(exp.null()), desc=False, nulls_first=False),
            exp.Ordered(this=exp.column("_n"), desc=True, nulls_first=False),
            exp.Ordered(this=exp.column("_value"), desc=False, nulls_first=False),
        ]
    )
    rank = exp.Window(this=exp.RowNumber(), partition_by=[exp.column("_profile")], order=order)
    ranked = exp.select("_profile", "_value", exp.alias_(rank, "_rank")).from_(counts.subquery("c"))
    return (
        exp.select(exp.alias_("_profile", "profile_id"), exp.alias_("_value", "value"))
        .from_(ranked.subquery("r"))
        .where(exp.column("_rank").eq(exp.Literal.number(1)))
    )


# -- evaluation -----------------------------------------------------------------------------


def evaluate(
    backend: Backend, traits: Sequence[ComputedTrait], now: dt.datetime, profiles: Sequence[str] | None = None
) -> pa.Table:
    """``profile_id`` and one column per trait, for every profile any trait found.

    One query per trait; the results are joined here, by profile id. ``profiles``: only
    the rows stored under these ids (see ``compile_trait``).
    """
    _check_unique(traits)
    results = [backend.select(compile_trait(trait, backend, now, profiles)) for trait in traits]
    found = [r.column("profile_id").cast(pa.string()) for r in results]
    ids = pc.unique(pa.chunked_array([c for f in found for c in f.chunks], type=pa.string()))
    ids = ids.take(pc.sort_indices(ids))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {"profile_id": ids}
    for trait, result, holders in zip(traits, results, found, strict=True):
        rows = pc.index_in(ids, value_set=holders.combine_chunks())
        values = result.column("value").cast(trait.result_type()).take(rows)
        empty = trait.empty_value()
        if empty is not None:
            values = pc.if_else(pc.is_null(values), pa.scalar(empty, trait.result_type()), values)
        columns[trait.name] = values
    return pa.table(columns)


BUILTIN: tuple[ComputedTrait, ...] = (
    ComputedTrait(
        "first_seen", Aggregation.MIN, value="timestamp", description="Time of the first event."
    ),
    ComputedTrait(
        "last_seen", Aggregation.MAX, value="timestamp", description="Time of the latest event."
    ),
    ComputedTrait(
        "orders", Aggregation.COUNT, event=ORDER_COMPLETED, description="Completed orders."
    ),
    ComputedTrait(
        "revenue",
        Aggregation.SUM,
        event=ORDER_COMPLETED,
        value=("revenue", "total"),
        description="Sum of order revenue (the order total where revenue is missing).",
    ),
    ComputedTrait(
        "average_check",
        Aggregation.AVG,
        event=ORDER_COMPLETED,
        value=("revenue", "total"),
        description="Average order revenue (the order total where revenue is missing).",
    ),
    ComputedTrait(
        "last_order_at",
        Aggregation.MAX,
        event=ORDER_COMPLETED,
        value="timestamp",
        description="Time of the latest completed order.",
    ),
    ComputedTrait(
        "favourite_category",
        Aggregation.MOST_FREQUENT,
        source=Source.ORDER_LINES,
        event=ORDER_COMPLETED,
        value="category",
        description="The category of most order lines.",
    ),
    ComputedTrait(
        "channels",
        Aggregation.UNIQUE_LIST,
        value="channel",
        description="Channels the events came from.",
    ),
    ComputedTrait(
        "devices",
        Aggregation.UNIQUE_LIST,
        value="context.device.type",
        description="Device types (context.device.type) events were sent from.",
    ),
    ComputedTrait(
        "operating_systems",
        Aggregation.UNIQUE_LIST,
        value="context.os.name",
        description="Operating systems (context.os.name) events were sent from.",
    ),
)
