"""A reference interpreter of the segment language: the tree evaluated directly on rows in Python.

It knows nothing of SQL or of the compiler; it reads the semantics in ``opencdp.segments.ast``
and applies them row by row, slowly and plainly, so that the tests can hold every engine to
it. Where the semantics leave a choice open, the choice made here is written below; the
compiler must make the same one.

Reading the data

* ``profile_map`` gives each profile id its canonical profile (the newest ``updated_at`` row
  per ``profile_id`` wins, as on ClickHouse before a merge). The universe is every canonical
  id in it. Events whose ``profile_id`` is null or not in ``profile_map`` belong to nobody.
* Events after ``now`` never count, for aggregates, sequences and traits alike: the segment
  is evaluated as of ``now``.
* A trait is read the way the profiles API shows it (``web/profiles.py: _latest_traits``):
  every event of the profile (any type) whose ``traits`` column is a JSON object, ordered by
  ``timestamp`` then ``message_id``; each top-level key of a later object replaces the earlier
  value, *including with null* (an explicit ``null`` clears the trait). A path such as
  ``address.city`` is then read inside the winning ``address`` object, so a later ``address``
  without ``city`` leaves ``address.city`` missing.

Fields of an event (inside ``where``, and the value an aggregate folds)

* ``line.x`` is the column ``x`` of an order line; ``product.x`` the current catalogue row's
  ``x`` (the newest ``updated_at`` per product) for the line's ``product_id`` when the
  aggregate or step works on lines, else for the event's; ``product.stock_then`` the
  ``new_value`` of the latest ``product_changes`` row with ``field = 'stock'`` and
  ``changed_at <= `` the event's time (missing when there is none, even if a later row's
  ``old_value`` tells what it was); ``properties.a.b``, ``context.a.b``, ``traits.a.b`` paths
  into the JSON columns; anything else an event column (``total``, ``channel``, ``event``).
* An aggregate or step "works on lines" when its ``where`` or its ``value`` names a
  ``line.`` field. Then an event matches when one of its lines matches the whole ``where``
  (event and line predicates together); ``count``, ``first_time`` and ``last_time`` count each
  such event once; a ``line.``/``product.`` value folds the matching lines; an event value
  (``total``) folds the matching events, each once.

Comparisons (``Compare``)

* A missing value (NULL, absent or JSON null, no value to aggregate) makes every operator
  false, ``!=``, ``not in`` and ``exists`` included; ``not`` is the complement.
* The literal says how the value is read: a number literal reads a number (a JSON number, a
  numeric column, or text that is wholly a number, as ``profiles/computed.py`` reads JSON);
  a text literal reads text (a JSON string; a JSON number or boolean by its JSON text, e.g.
  ``9``, ``true``; a numeric *column* is not text and compares false); a boolean literal reads
  a JSON boolean; a value that cannot be read so is missing. ``contains``, ``starts with``
  and ``matches`` read text and are case-sensitive; ``matches`` is a regular-expression
  search (anywhere in the text, as DuckDB's ``regexp_matches`` and ClickHouse's ``match``).
* A time literal (a date, a date-time, ``ago(...)``) reads a time: a timestamp column,
  ``first_time``/``last_time``, or ISO 8601 text (a date alone is midnight UTC; no offset is
  UTC). A *date* literal compares the value's UTC calendar day with the date (``= 2024-05-10``
  is that whole day, ``> 2024-05-10`` from the next day on, ``between`` includes both days);
  a date-time or ``ago`` compares exact instants.
* ``between`` is ``low <= value <= high``; ``in`` holds when the value equals one element
  (each read by that element's type); ``not in`` when it is present and equals none.

Aggregates

* ``count`` counts matching events; ``sum``/``avg``/``min``/``max`` fold the values readable
  as numbers (others are skipped); ``distinct`` counts distinct present values (by their
  text); ``first_time``/``last_time`` are the earliest/latest matching event time. With
  nothing to fold ``count``, ``sum`` and ``distinct`` are 0 and the others missing.
* Windows: ``start <= t <= now`` with ``start = max(since, now - last)``, and ``t < until``.

Sequences and absence

* ``Sequence``: events ``t1 < t2 < ... < tn`` (strictly later each), one per step matching its
  name and ``where``, ``t1`` inside the window, ``tn - t1 <= within``. The later steps need
  not be inside the window (only before ``now``).
* ``NotFollowed``: some ``first`` event inside the window with ``t <= now - within`` and no
  ``then`` event with ``t <= t' <= t + within``; an event never follows itself (only matters
  when ``first`` and ``then`` can match the same event).

Dates of traits

* ``Age`` is whole years from the date (UTC day of the trait read as a time) to ``now``'s UTC
  day; ``DaysUntil`` the days from ``now``'s UTC day to the next anniversary (0 on the day).
  A 29 February date has its anniversary on 28 February in other years, for both.

Not modelled: ``Computed`` (computed traits and predictions) raises ``NotImplementedError``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opencdp.segments.ast import (
    Age,
    Aggregate,
    Ago,
    And,
    Bucket,
    Compare,
    Computed,
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
    Sequence,
    Step,
    Trait,
    Window,
    bind,
    bucket_of,
    params_used,
)

Row = dict[str, Any]
JSON_COLUMNS = ("properties", "traits", "context", "integrations")


@dataclass
class Data:
    """The rows of the store the segments read, as plain Python values (timestamps UTC-aware)."""

    events: list[Row]
    order_lines: list[Row] = field(default_factory=list)
    products: list[Row] = field(default_factory=list)
    product_changes: list[Row] = field(default_factory=list)
    profile_map: list[Row] = field(default_factory=list)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""No value (NULL, absent, JSON null); distinct from a JSON value that is ``None``-like."""


def reference_members(
    data: Data,
    tree: Node,
    now: dt.datetime,
    params: Mapping[str, Any] | None = None,
    segments: Mapping[str, Node] | None = None,
) -> set[str]:
    """The canonical profile ids for which ``tree`` holds at ``now``."""
    return _Interpreter(data, now, params or {}, segments or {}).members(tree, ())


# -- the interpreter --------------------------------------------------------------------------


@dataclass
class _Event:
    row: Row
    time: dt.datetime
    json: dict[str, Any]
    lines: list[Row]


class _Interpreter:
    def __init__(self, data: Data, now: dt.datetime, params: Mapping[str, Any], segments: Mapping[str, Node]) -> None:
        self.now = now
        self.params = params
        self.segments = segments
        newest: dict[str, Row] = {}
        for row in data.profile_map:
            if row["profile_id"] not in newest or row["updated_at"] >= newest[row["profile_id"]]["updated_at"]:
                newest[row["profile_id"]] = row
        self.canonical = {p: r["canonical_id"] for p, r in newest.items()}
        self.universe = set(self.canonical.values())
        self.products: dict[str, Row] = {}
        for row in sorted(data.products, key=lambda r: r["updated_at"]):
            self.products[row["product_id"]] = row
        self.stock: dict[str, list[Row]] = defaultdict(list)
        for row in sorted(data.product_changes, key=lambda r: r["changed_at"]):
            if row["field"] == "stock":
                self.stock[row["product_id"]].append(row)
        lines: dict[str, list[Row]] = defaultdict(list)
        for line in sorted(data.order_lines, key=lambda r: r["line_no"]):
            lines[line["message_id"]].append(line)
        self.events: dict[str, list[_Event]] = defaultdict(list)
        for row in data.events:
            owner = self.canonical.get(row.get("profile_id") or "")
            if owner is None or row["timestamp"] > now:
                continue
            parsed = {c: _loads(row.get(c)) for c in JSON_COLUMNS}
            self.events[owner].append(_Event(row, row["timestamp"], parsed, lines.get(row["message_id"], [])))
        for events in self.events.values():
            events.sort(key=lambda e: (e.time, e.row["message_id"]))
        self.traits = {p: self._traits(events) for p, events in self.events.items()}

    # conditions ------------------------------------------------------------------------------
    def members(self, tree: Node, seen: tuple[str, ...]) -> set[str]:
        if params_used(tree):
            tree = bind(tree, self.params)
        return {p for p in self.universe if self.holds(tree, p, seen)}

    def holds(self, node: Node, profile: str, seen: tuple[str, ...]) -> bool:
        if isinstance(node, And):
            return all(self.holds(c, profile, seen) for c in node.conditions)
        if isinstance(node, Or):
            return any(self.holds(c, profile, seen) for c in node.conditions)
        if isinstance(node, Not):
            return not self.holds(node.this, profile, seen)
        if isinstance(node, Compare):
            return compare(self.measure(node.this, profile), node.op, node.value, node.high, self.now)
        if isinstance(node, Sequence):
            return self.sequence(node, profile)
        if isinstance(node, NotFollowed):
            return self.not_followed(node, profile)
        if isinstance(node, InSegment):
            return self.in_segment(node.segment, profile, seen)
        if isinstance(node, Bucket):
            return node.low <= bucket_of(profile, node.salt or "") < node.high
        raise TypeError(f"not a condition: {node!r}")

    def in_segment(self, segment: str, profile: str, seen: tuple[str, ...]) -> bool:
        if segment in seen:
            raise SegmentError(f"segment {segment} refers to itself: {' -> '.join((*seen, segment))}")
        if segment not in self.segments:
            raise SegmentError(f"unknown segment {segment}")
        tree = self.segments[segment]
        if params_used(tree):
            tree = bind(tree, self.params)
        return self.holds(tree, profile, (*seen, segment))

    # measures --------------------------------------------------------------------------------
    def measure(self, node: Node, profile: str) -> Any:
        if isinstance(node, Trait):
            return self.trait(profile, node.path)
        if isinstance(node, Age | DaysUntil):
            day = _as_time(self.trait(profile, node.path))
            if day is MISSING:
                return MISSING
            born, today = day.date(), self.now.astimezone(dt.UTC).date()
            if isinstance(node, Age):
                years = today.year - born.year
                return years if _anniversary(born, today.year) <= today else years - 1
            next_day = _anniversary(born, today.year)
            if next_day < today:
                next_day = _anniversary(born, today.year + 1)
            return (next_day - today).days
        if isinstance(node, Aggregate):
            return self.aggregate(node, profile)
        if isinstance(node, Computed):
            raise NotImplementedError("the reference does not model computed traits")
        raise TypeError(f"not a profile measure: {node!r}")

    def trait(self, profile: str, path: str) -> Any:
        return _path(self.traits.get(profile, {}), path.split("."))

    @staticmethod
    def _traits(events: Iterable[_Event]) -> dict[str, Any]:
        latest: dict[str, Any] = {}
        for event in events:  # already by (timestamp, message_id)
            values = event.json["traits"]
            if isinstance(values, dict):
                latest.update(values)
        return latest

    def aggregate(self, node: Aggregate, profile: str) -> Any:
        on_lines = uses_lines(node.where) or bool(node.value and node.value.startswith("line."))
        matched: list[tuple[_Event, list[Row]]] = []
        for event in self.matching(profile, node.event, node.where, node.window, on_lines):
            matched.append(event)
        fn = node.fn
        if fn == Fn.COUNT:
            return len(matched)
        if fn in (Fn.FIRST_TIME, Fn.LAST_TIME):
            times = [e.time for e, _ in matched]
            if not times:
                return MISSING
            return min(times) if fn == Fn.FIRST_TIME else max(times)
        per_line = on_lines and (node.value.startswith("line.") or node.value.startswith("product."))
        values = [
            self.field(node.value, event, line)
            for event, lines in matched
            for line in (lines if per_line else [lines[0] if lines else None])
        ]
        present = [v for v in values if v is not MISSING]
        if fn == Fn.DISTINCT:
            return len({_text_key(v) for v in present})
        numbers = [n for n in (_as_number(v) for v in present) if n is not MISSING]
        if fn == Fn.SUM:
            return sum(numbers) if numbers else 0
        if not numbers:
            return MISSING
        if fn == Fn.AVG:
            return sum(numbers) / len(numbers)
        return min(numbers) if fn == Fn.MIN else max(numbers)

    def matching(
        self,
        profile: str,
        names: tuple[str, ...] | None,
        where: Node | None,
        window: Window | None,
        on_lines: bool,
    ) -> list[tuple[_Event, list[Row]]]:
        """The profile's events that count, each with its lines that matched (when on lines)."""
        found = []
        for event in self.events.get(profile, []):
            if names is not None and event.row["event"] not in names:
                continue
            if names is None and event.row["event"] in ("Segment Entered", "Segment Exited"):
                continue  # membership changes count only where they are named
            if window is not None and not in_window(window, event.time, self.now):
                continue
            if on_lines:
                lines = [line for line in event.lines if where is None or self.where(where, event, line)]
                if lines:
                    found.append((event, lines))
            elif where is None or self.where(where, event, None):
                found.append((event, []))
        return found

    def where(self, node: Node, event: _Event, line: Row | None) -> bool:
        if isinstance(node, And):
            return all(self.where(c, event, line) for c in node.conditions)
        if isinstance(node, Or):
            return any(self.where(c, event, line) for c in node.conditions)
        if isinstance(node, Not):
            return not self.where(node.this, event, line)
        if isinstance(node, Compare) and isinstance(node.this, Field):
            return compare(self.field(node.this.path, event, line), node.op, node.value, node.high, self.now)
        raise TypeError(f"not an event filter: {node!r}")

    def field(self, path: str, event: _Event, line: Row | None) -> Any:
        root, _, rest = path.partition(".")
        if root == "line":
            return _present(line.get(rest)) if line is not None else MISSING
        if root == "product" and rest:
            product_id = line.get("product_id") if line is not None else event.row.get("product_id")
            if not product_id:
                return MISSING
            if rest == "stock_then":
                changes = [c for c in self.stock.get(product_id, []) if c["changed_at"] <= event.time]
                return _present(changes[-1]["new_value"]) if changes else MISSING
            product = self.products.get(product_id)
            if product is None:
                return MISSING
            column, _, inner = rest.partition(".")
            if inner:
                return _path(_loads(product.get(column)) or {}, inner.split("."))
            return _present(product.get(column))
        if root in JSON_COLUMNS and rest:
            return _path(event.json[root] or {}, rest.split("."))
        return _present(event.row.get(path))

    # sequences -------------------------------------------------------------------------------
    def step_times(self, profile: str, step: Step, window: Window | None = None) -> list[tuple[dt.datetime, str]]:
        events = self.matching(profile, step.event, step.where, window, uses_lines(step.where))
        return [(e.time, e.row["message_id"]) for e, _ in events]

    def sequence(self, node: Sequence, profile: str) -> bool:
        firsts = self.step_times(profile, node.steps[0], node.window)
        rest = [[t for t, _ in self.step_times(profile, s)] for s in node.steps[1:]]
        for start, _ in firsts:
            at: dt.datetime | None = start
            for times in rest:  # the earliest strictly later event of each step: greedy is optimal
                at = next((t for t in sorted(times) if at is not None and t > at), None)
                if at is None:
                    break
            if at is not None and (node.within is None or at - start <= node.within.delta):
                return True
        return False

    def not_followed(self, node: NotFollowed, profile: str) -> bool:
        wait = node.within.delta
        thens = self.step_times(profile, node.then)
        for start, message_id in self.step_times(profile, node.first, node.window):
            if start > self.now - wait:
                continue
            if not any(start <= t <= start + wait and m != message_id for t, m in thens):
                return True
        return False


# -- windows and comparisons ----------------------------------------------------------------


def in_window(window: Window, t: dt.datetime, now: dt.datetime) -> bool:
    start, end = window.bounds(now)
    if start is not None and t < start:
        return False
    if window.until is not None and t >= window.until:
        return False
    return t <= end


def uses_lines(where: Node | None) -> bool:
    return where is not None and any(isinstance(n, Field) and n.path.startswith("line.") for n in where.walk())


def compare(value: Any, op: Op, literal: Any, high: Any, now: dt.datetime) -> bool:
    """``value op literal`` by the rules in the module docstring; a missing value is false."""
    if value is MISSING:
        return False
    if op == Op.EXISTS:
        return True
    if op == Op.IN:
        return any(_equal(value, item, now) for item in literal)
    if op == Op.NOT_IN:  # the value must be readable as the list's values: unreadable is missing
        readable = any(_pair(value, item, now)[0] is not MISSING for item in literal)
        return readable and not any(_equal(value, item, now) for item in literal)
    if op == Op.EQ:
        return _equal(value, literal, now)
    if op == Op.NE:
        left, right = _pair(value, literal, now)
        return left is not MISSING and left != right
    if op in (Op.CONTAINS, Op.STARTS_WITH, Op.MATCHES):
        text = _as_text(value)
        if text is MISSING or not isinstance(literal, str):
            return False
        if op == Op.CONTAINS:
            return literal in text
        if op == Op.STARTS_WITH:
            return text.startswith(literal)
        return re.search(literal, text) is not None
    if op == Op.BETWEEN:
        left, low = _pair(value, literal, now)
        _, top = _pair(value, high, now)
        return left is not MISSING and top is not MISSING and _ordered(low, left) and _ordered(left, top)
    left, right = _pair(value, literal, now)
    if left is MISSING or right is MISSING or isinstance(right, bool):
        return False
    check: dict[Op, Callable[[Any, Any], bool]] = {
        Op.GT: lambda a, b: a > b,
        Op.GE: lambda a, b: a >= b,
        Op.LT: lambda a, b: a < b,
        Op.LE: lambda a, b: a <= b,
    }
    try:
        return check[op](left, right)
    except TypeError:
        return False


def _ordered(a: Any, b: Any) -> bool:
    try:
        return bool(a <= b)
    except TypeError:
        return False


def _equal(value: Any, literal: Any, now: dt.datetime) -> bool:
    left, right = _pair(value, literal, now)
    return left is not MISSING and left == right


def _pair(value: Any, literal: Any, now: dt.datetime) -> tuple[Any, Any]:
    """The value read the way the literal asks, and the literal in the same terms."""
    if isinstance(literal, bool):
        return (value if isinstance(value, bool) else MISSING), literal
    if isinstance(literal, Ago):
        return _as_time(value), literal.at(now)
    if isinstance(literal, dt.datetime):
        return _as_time(value), _utc(literal)
    if isinstance(literal, dt.date):
        time = _as_time(value)
        return (time.date() if time is not MISSING else MISSING), literal
    if isinstance(literal, int | float):
        return _as_number(value), float(literal)
    if isinstance(literal, str):
        return _as_text(value), literal
    return MISSING, literal


# -- reading values -----------------------------------------------------------------------------


def _as_number(value: Any) -> Any:
    if isinstance(value, bool):
        return MISSING
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else MISSING
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return MISSING
        return number if math.isfinite(number) and value.strip() else MISSING
    return MISSING


class _JsonNumber(float):
    """A number that came from JSON: compared with text it reads as its JSON text."""

    text: str


def _as_text(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # only JSON has booleans among the columns read
        return "true" if value else "false"
    if isinstance(value, _JsonNumber):
        return value.text
    return MISSING


def _as_time(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if not isinstance(value, str):
        return MISSING
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        return _utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return MISSING


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _text_key(value: Any) -> str:
    text = _as_text(value)
    return text if text is not MISSING else repr(value)


def _present(value: Any) -> Any:
    return MISSING if value is None else value


def _loads(text: Any) -> Any:
    if text is None:
        return None
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text, parse_int=_json_number, parse_float=_json_number)
    except json.JSONDecodeError:
        return None


def _json_number(text: str) -> _JsonNumber:
    number = _JsonNumber(text)
    number.text = text
    return number


def _path(root: Any, path: list[str]) -> Any:
    value = root
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return _present(value)


def _anniversary(born: dt.date, year: int) -> dt.date:
    try:
        return born.replace(year=year)
    except ValueError:  # 29 February in a year that has none
        return dt.date(year, 2, 28)
