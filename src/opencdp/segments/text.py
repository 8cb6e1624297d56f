"""The segment language's text form: ``parse`` (text -> tree) and ``to_text`` (tree -> text).

Both are driven by the node declarations in ``ast``: a call ``name(positional..., key: value)``
is the node whose ``key`` is ``name`` (or, for a node with an ``fn`` argument, whose ``fn`` is
``name``: ``count(...)`` is ``Aggregate(fn=count)``), and each argument is read and written
by its ``Arg.kind``. Only ``and``/``or``/``not``, comparisons and the paths ``traits.x``,
``computed.x`` and (inside ``where``) event fields have syntax of their own.

Canonical text (what ``to_text`` writes, and ``parse(to_text(t)) == t``):

* one space around binary operators and after commas and colons, none inside brackets;
* an argument is positional when it is required or names what is aggregated (kinds
  ``events`` and ``field``), up to the first one left out; conditions (``where``), windows
  and durations are always ``name: value``;
* parentheses only where needed: an ``or`` inside an ``and``, an ``and``/``or`` under
  ``not``, and an ``and`` inside an ``and`` (or ``or`` inside ``or``), which the parser
  would otherwise flatten;
* a definition longer than ``WIDTH`` characters on one line breaks its top-level
  ``and``/``or``: each further operand on its own line, indented by two spaces and led by
  the operator (operands themselves stay on one line);
* no comments (``#`` to end of line is read and dropped).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opencdp.segments.ast import (
    NODES,
    Ago,
    And,
    Arg,
    Compare,
    Computed,
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
    Trait,
    Window,
)

WIDTH = 100
"""Longest canonical line before the top-level and/or is broken across lines."""

SYNTAX: tuple[type[Node], ...] = (And, Or, Not, Compare, Trait, Computed, Field)
"""Nodes written with syntax of their own; every other node is a call by its key."""
NAMED_BY: dict[str, type[Fn]] = {"fn": Fn}
"""An argument of these kinds is given by the call's name (``count(...)``), not inside it."""
KEYWORD_KINDS = frozenset({"condition", "window", "duration"})
"""Arguments of these kinds are always written ``name: value``."""
RESERVED = frozenset({"and", "or", "not", "true", "false"})


def is_positional(arg: Arg) -> bool:
    """Whether the canonical text gives ``arg`` by position (see the module docstring)."""
    return arg.kind not in KEYWORD_KINDS and (arg.required or arg.kind in ("events", "field"))


@dataclass(frozen=True)
class Call:
    """What a call name stands for: a node class, with the arguments its name fixes."""

    node: type[Node]
    fixed: dict[str, Any]

    @property
    def positional(self) -> list[str]:
        return [name for name, arg in self.node.args.items() if name not in self.fixed and is_positional(arg)]


def _calls() -> dict[str, Call]:
    calls: dict[str, Call] = {}
    for cls in NODES.values():
        if cls in SYNTAX:
            continue
        named = [(name, NAMED_BY[arg.kind]) for name, arg in cls.args.items() if arg.kind in NAMED_BY]
        if named:
            name, enum = named[0]
            calls.update({member.value: Call(cls, {name: member}) for member in enum})
        else:
            calls[cls.key] = Call(cls, {})
    return calls


CALLS = _calls()


def call_name(node: Node) -> str:
    for name, arg in node.args.items():
        if arg.kind in NAMED_BY:
            return str(getattr(node, name).value)
    return node.key


# -- shared value forms (also used by the JSON form) ----------------------------------------


def is_midnight(value: dt.datetime) -> bool:
    return value.utcoffset() == dt.timedelta(0) and value.time() == dt.time()


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def format_datetime(value: dt.datetime) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def format_time(value: dt.date) -> str:
    return format_datetime(value) if isinstance(value, dt.datetime) else value.isoformat()


def window_form(window: Window) -> tuple[str, tuple[Any, ...]]:
    """The written form of a window: ``all``, ``last`` (``30d``), ``since`` or ``between``.

    Bounds at midnight UTC are written as dates; ``between`` of dates includes its last day,
    so the stored ``until`` (exclusive) is the day after.
    """
    if window.is_all:
        return "all", ()
    if window.last is not None and window.since is None and window.until is None:
        return "last", (window.last,)
    if window.last is None and window.since is not None and window.until is None:
        return "since", (window.since.date() if is_midnight(window.since) else window.since,)
    if window.last is None and window.since is not None and window.until is not None:
        if is_midnight(window.since) and is_midnight(window.until):
            return "between", (window.since.date(), window.until.date() - dt.timedelta(days=1))
        return "between", (window.since, window.until)
    raise SegmentError(
        f"window {window} cannot be written; use 30d, all, since(2024-01-01) or between(2024-01-01, 2024-01-31)",
        field="window",
    )


def window_of(form: str, parts: tuple[Any, ...]) -> Window:
    """The window for ``window_form``'s output (dates or timezone-aware date-times)."""

    def bound(value: Any, *, end: bool = False) -> dt.datetime:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise SegmentError(f"{value.isoformat()} has no time zone; add Z or an offset", field="window")
            return value.astimezone(dt.UTC)
        if isinstance(value, dt.date):
            return midnight(value + dt.timedelta(days=1) if end else value)
        raise SegmentError(f"{value!r} is not a date; write e.g. 2024-01-01", field="window")

    if form == "all":
        return Window()
    if form == "last":
        return Window(last=parts[0])
    if form == "since":
        return Window(since=bound(parts[0]))
    low, high = parts
    if isinstance(low, dt.datetime) != isinstance(high, dt.datetime):
        raise SegmentError("between takes two dates or two date-times, not one of each", field="window")
    since, until = bound(low), bound(high, end=True)
    if until <= since:
        raise SegmentError(f"between({format_time(low)}, {format_time(high)}) ends before it starts", field="window")
    return Window(since=since, until=until)


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    at: int


_TOKENS = re.compile(
    r"""
    (?P<space>[ \t\r\n]+|\#[^\n]*)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<float>-?\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+))
  | (?P<duration>\d+[A-Za-z_]\w*)
  | (?P<int>-?\d+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<param>\$[A-Za-z_]\w*)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<op>>=|<=|!=|=|>|<)
  | (?P<punct>[()\[\],:.])
    """,
    re.VERBOSE,
)


def _error(source: str, at: int, detail: str, suggestion: str | None = None, field: str | None = None) -> SegmentError:
    line = source.count("\n", 0, at) + 1
    start = source.rfind("\n", 0, at) + 1
    end = source.find("\n", at)
    column = at - start + 1
    text = source[start : end if end >= 0 else len(source)]
    message = f"line {line}, column {column}: {detail}\n  {text}\n  {' ' * (column - 1)}^"
    return SegmentError(message, field=field, line=line, column=column, suggestion=suggestion)


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    at = 0
    while at < len(source):
        match = _TOKENS.match(source, at)
        if match is None:
            if source[at] == '"':
                raise _error(source, at, 'unterminated string; close it with " on the same line')
            raise _error(source, at, f"unexpected character `{source[at]}`")
        kind = match.lastgroup or ""
        if kind == "string" and match.end() < len(source) and source[match.end() - 1] != '"':
            raise _error(source, at, 'unterminated string; close it with " on the same line')
        if kind == "datetime" and not re.search(r"(Z|[+-]\d{2}:\d{2})$", match.group()):
            raise _error(source, at, f"date-time {match.group()} has no time zone; add Z (UTC) or an offset like +03:00")
        if kind != "space":
            tokens.append(Token(kind, match.group(), at))
        at = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


# -- parser ---------------------------------------------------------------------------------

PROFILE, EVENT = "profile", "event"
"""Contexts: a segment's conditions are on profiles; a call's ``where`` is on its events."""


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.kinds: dict[str, Callable[[str], Any]] = {
            "condition": lambda ctx: self.condition(EVENT),
            "events": self.events,
            "field": lambda ctx: self.path(EVENT),
            "trait": self.trait,
            "text": lambda ctx: self.string("a quoted text"),
            "int": self.integer,
            "duration": lambda ctx: self.duration(),
            "window": self.window,
            "value": lambda ctx: self.value(),
            "step": self.step,
        }

    # tokens
    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.token
        self.pos += 1
        return token

    def is_(self, text: str, offset: int = 0) -> bool:
        token = self.peek(offset) if offset else self.token
        return token.text == text and token.kind in ("ident", "punct", "op")

    def error(self, detail: str, token: Token | None = None, suggestion: str | None = None) -> SegmentError:
        return _error(self.source, (token or self.token).at, detail, suggestion)

    def found(self, token: Token | None = None) -> str:
        token = token or self.token
        return "the end" if token.kind == "end" else f"`{token.text}`"

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.is_(text):
            raise self.error(f"expected {what or f'`{text}`'}, found {self.found()}")
        return self.next()

    # conditions
    def parse(self) -> Condition:
        tree = self.condition(PROFILE)
        if self.token.kind != "end":
            raise self.error(f"expected `and`, `or` or the end, found {self.found()}")
        return tree

    def condition(self, ctx: str) -> Condition:
        return self.joined(ctx, "or", Or, lambda: self.joined(ctx, "and", And, lambda: self.negation(ctx)))

    def joined(self, ctx: str, word: str, cls: type[Node], operand: Callable[[], Condition]) -> Condition:
        items = [operand()]
        while self.is_(word):
            self.next()
            items.append(operand())
        return items[0] if len(items) == 1 else self.build(cls, {"conditions": tuple(items)}, self.token)

    def negation(self, ctx: str) -> Condition:
        if self.is_("not"):
            start = self.next()
            return self.build(Not, {"this": self.negation(ctx)}, start)
        if self.is_("("):
            self.next()
            inner = self.condition(ctx)
            self.expect(")", "`)` to close the `(`")
            return inner
        start = self.token
        node = self.operand(ctx)
        if isinstance(node, Condition):
            return node
        if isinstance(node, Measure):
            return self.comparison(node, start)
        raise self.error(f"`{call_name(node)}(...)` is not a condition; it is used inside another call", start)

    def comparison(self, measure: Measure, start: Token) -> Condition:
        token = self.token
        words = [o.value for o in Op]
        if token.kind == "op":
            op = Op(self.next().text)
        elif self.is_("not") and self.is_("in", 1):
            self.pos += 2
            op = Op.NOT_IN
        elif self.is_("starts") and self.is_("with", 1):
            self.pos += 2
            op = Op.STARTS_WITH
        elif token.kind == "ident" and token.text in words:
            op = Op(self.next().text)
        else:
            close = difflib.get_close_matches(token.text, words, n=1) if token.kind == "ident" else []
            raise self.error(
                f"expected a comparison ({', '.join(words)}) after the measure, found {self.found()}"
                + (f"; did you mean `{close[0]}`?" if close else ""),
                suggestion=close[0] if close else None,
            )
        values: dict[str, Any] = {"this": measure, "op": op}
        places = {"op": token}
        if op != Op.EXISTS:
            places["value"] = self.token
            values["value"] = self.value()
        if op == Op.BETWEEN:
            self.expect("and", "`and` and the high end (`between 10 and 20`)")
            places["high"] = self.token
            values["high"] = self.value()
        return self.build(Compare, values, start, places)

    def operand(self, ctx: str) -> Node:
        """A call, or a path: a measure of the profile (``traits.x``, ``computed.x``) or of the event."""
        token = self.token
        if token.kind == "ident" and self.is_("(", 1):
            return self.call(ctx)
        if token.kind in ("ident", "string"):
            if ctx == EVENT:
                return self.build(Field, {"path": self.path(EVENT)}, token)
            if token.text in ("traits", "computed") and self.is_(".", 1):
                self.pos += 2
                rest = self.segments()
                if token.text == "traits":
                    return self.build(Trait, {"path": rest}, token)
                return self.build(Computed, {"name": rest}, token)
            name = self.path(EVENT)
            raise self.error(
                f"`{name}` is not a measure of a profile; write traits.{name} for a trait, computed.{name} "
                "for a computed trait (event fields go inside where: of a call)",
                token,
                suggestion=f"traits.{name}",
            )
        raise self.error(f"expected a condition (a call such as count(...), or traits.x ...), found {self.found()}")

    def call(self, ctx: str) -> Node:
        start = self.next()
        name = start.text
        target = CALLS.get(name)
        if target is None:
            close = difflib.get_close_matches(name, [*CALLS, "ago"], n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; known: {', '.join(CALLS)}"
            raise self.error(f"unknown function `{name}`{hint}", start, suggestion=close[0] if close else None)
        if ctx == EVENT and not issubclass(target.node, Step):
            raise self.error(
                f"`{name}` is a profile measure; `where` filters events by their fields (total, "
                "properties.x, line.x, product.x): use it outside where",
                start,
            )
        self.expect("(")
        values: dict[str, Any] = dict(target.fixed)
        places: dict[str, Token] = {}
        positional = target.positional
        slot = 0
        while not self.is_(")"):
            if len(values) > len(target.fixed):
                self.expect(",", f"`,` or `)` in {name}(...)")
            token = self.token
            if token.kind == "ident" and self.is_(":", 1):
                arg_name = self.keyword(name, target, values)
                places[arg_name] = self.token
                values[arg_name] = self.argument(name, arg_name, target.node.args[arg_name], ctx)
                slot = -1
                continue
            if slot < 0:
                raise self.error(f"a positional argument cannot follow `name: value` ones in {name}(...)")
            if slot >= len(positional):
                others = [n for n in target.node.args if n not in positional and n not in target.fixed]
                raise self.error(
                    f"`{name}` takes {len(positional)} positional argument(s) ({', '.join(positional) or 'none'}); "
                    f"write the others as name: value ({', '.join(others)})"
                )
            arg_name = positional[slot]
            arg = target.node.args[arg_name]
            places.setdefault(arg_name, token)
            if arg.kind == "steps":  # takes every further positional argument
                item = self.argument(name, arg_name, Arg("step", doc=arg.doc), ctx)
                values[arg_name] = (*values.get(arg_name, ()), item)
            else:
                values[arg_name] = self.argument(name, arg_name, arg, ctx)
                slot += 1
        self.expect(")")
        return self.build(target.node, values, start, places)

    def keyword(self, call: str, target: Call, values: dict[str, Any]) -> str:
        token = self.token
        if token.text in values and token.text not in target.fixed:
            raise self.error(f"`{token.text}` is given twice in {call}(...)")
        names = [n for n in target.node.args if n not in target.fixed]
        if token.text not in names:
            close = difflib.get_close_matches(token.text, names, n=1)
            raise self.error(
                f"`{call}` has no argument `{token.text}`; it takes {', '.join(names)}"
                + (f"; did you mean `{close[0]}`?" if close else ""),
                suggestion=close[0] if close else None,
            )
        self.pos += 2
        return token.text

    def argument(self, call: str, name: str, arg: Arg, ctx: str) -> Any:
        reader = self.kinds.get(arg.kind)
        if reader is None:
            raise self.error(f"`{call}` argument `{name}` (a {arg.kind}) cannot be written in text")
        start = self.pos
        try:
            return reader(ctx)
        except SegmentError as error:
            if self.pos != start or error.suggestion is not None:
                raise
            # Nothing of the value could be read: say what the argument is, from its declaration.
            raise self.error(f"`{call}` argument `{name}` is {arg.doc}; found {self.found()}") from None

    def build(self, cls: type[Node], values: dict[str, Any], start: Token, places: dict[str, Token] | None = None) -> Any:
        """The node; its own checks' errors point at the argument they name (``places``) or at ``start``."""
        try:
            return cls(**values)
        except SegmentError as error:
            if error.line is not None:
                raise
            token = (places or {}).get(error.field or "", start)
            raise _error(self.source, token.at, error.detail, field=error.field) from None

    # argument kinds
    def segments(self) -> str:
        parts = [self.segment()]
        while self.is_("."):
            self.next()
            parts.append(self.segment())
        return ".".join(parts)

    def segment(self) -> str:
        token = self.token
        if token.kind == "ident":
            return self.next().text
        if token.kind == "string":
            return str(json.loads(self.next().text))
        raise self.error(f"expected a name after `.`, found {self.found()}")

    def path(self, ctx: str) -> str:
        token = self.token
        if token.kind == "ident" and token.text in RESERVED:
            raise self.error(f"expected a field, found `{token.text}`; quote a field of that name: \"{token.text}\"")
        if token.kind not in ("ident", "string"):
            raise self.error(f"expected a field (total, properties.x, line.x), found {self.found()}")
        return self.segments()

    def trait(self, ctx: str) -> str:
        token = self.token
        if not (self.is_("traits") and self.is_(".", 1)):
            raise self.error(f"expected a trait, e.g. traits.birthday, found {self.found()}", token)
        self.pos += 2
        return self.segments()

    def string(self, what: str) -> str:
        token = self.token
        if token.kind != "string":
            raise self.error(f"expected {what} in double quotes, found {self.found()}")
        self.next()
        try:
            return str(json.loads(token.text))
        except json.JSONDecodeError as error:
            raise self.error(f"bad escape in string: {error.msg}; use JSON escapes (\\\", \\\\, \\n, \\u00e9)", token) from None

    def integer(self, ctx: str) -> int:
        token = self.token
        if token.kind != "int":
            raise self.error(f"expected a whole number, found {self.found()}")
        self.next()
        return int(token.text)

    def duration(self) -> Duration:
        token = self.token
        if token.kind != "duration":
            raise self.error(f"expected a duration (15m, 12h, 30d, 2w), found {self.found()}")
        self.next()
        try:
            return Duration.parse(token.text)
        except SegmentError:
            raise self.error(
                f"`{token.text}` is not a duration; write a whole number and m (minutes), h (hours), d (days) or w (weeks)",
                token,
            ) from None

    def events(self, ctx: str) -> tuple[str, ...]:
        if self.is_("["):
            self.next()
            names = [self.string("an event name")]
            while self.is_(","):
                self.next()
                names.append(self.string("an event name"))
            self.expect("]", "`,` or `]` in the list of event names")
            return tuple(names)
        return (self.string("an event name"),)

    def window(self, ctx: str) -> Window:
        token = self.token
        if token.kind == "duration":
            return window_of("last", (self.duration(),))
        if self.is_("all"):
            self.next()
            return window_of("all", ())
        if token.text in ("since", "between") and self.is_("(", 1):
            self.pos += 2
            parts = [self.time()]
            if token.text == "between":
                self.expect(",", "`,` and the last day: between(2024-01-01, 2024-01-31)")
                parts.append(self.time())
            self.expect(")")
            try:
                return window_of(token.text, tuple(parts))
            except SegmentError as error:
                raise self.error(error.detail, token) from None
        raise self.error(f"expected a window (30d, all, since(2024-01-01), between(2024-01-01, 2024-01-31)), found {self.found()}")

    def time(self) -> dt.date:
        token = self.token
        if token.kind in ("date", "datetime"):
            value = self.value()
            assert isinstance(value, dt.date)
            return value
        raise self.error(f"expected a date (2024-01-01) or a date-time (2024-01-01T10:00:00Z), found {self.found()}")

    def step(self, ctx: str) -> Step:
        if not (self.is_("step") and self.is_("(", 1)):
            raise self.error(f"expected step(\"Event name\", ...), found {self.found()}")
        node = self.call(PROFILE)
        assert isinstance(node, Step)
        return node

    def value(self) -> Any:
        token = self.token
        kind = token.kind
        try:
            if kind == "string":
                return self.string("a text")
            if kind == "int":
                self.next()
                return int(token.text)
            if kind == "float":
                self.next()
                return float(token.text)
            if kind == "date":
                self.next()
                return dt.date.fromisoformat(token.text)
            if kind == "datetime":
                self.next()
                return dt.datetime.fromisoformat(token.text.replace("Z", "+00:00"))
            if kind == "param":
                self.next()
                return Param(token.text[1:])
        except ValueError as error:
            raise self.error(f"`{token.text}` is not a valid {kind}: {error}", token) from None
        if kind == "ident" and token.text in ("true", "false"):
            self.next()
            return token.text == "true"
        if self.is_("ago") and self.is_("(", 1):
            self.pos += 2
            duration = self.duration()
            self.expect(")")
            return Ago(duration)
        if self.is_("["):
            self.next()
            items: list[Any] = []
            while not self.is_("]"):
                if items:
                    self.expect(",", "`,` or `]` in the list")
                if self.is_("["):
                    raise self.error("lists cannot be nested")
                items.append(self.value())
            self.next()
            return tuple(items)
        if kind == "duration":
            raise self.error(f"a duration is not a value here; write ago({token.text}) for that long before now", token,
                             suggestion=f"ago({token.text})")
        raise self.error(
            f"expected a value (\"text\", 12, 3.5, true, 2024-01-01, ago(30d), $param or [list]), found {self.found()}"
        )


def parse(text: str) -> Condition:
    """The tree of a segment definition; ``SegmentError`` with line and column if it is not valid."""
    return _Parser(text).parse()


# -- printer --------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_]\w*")


def _segment(name: str) -> str:
    return name if _IDENT.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _path(path: str, *, first_free: bool = False) -> str:
    parts = [_segment(p) for p in path.split(".")]
    if not first_free and parts[0] in RESERVED:
        parts[0] = json.dumps(parts[0])
    return ".".join(parts)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SegmentError(f"{value} is not a number that can be written; use a finite number", field="value")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.date):
        return format_time(value)
    if isinstance(value, Ago):
        return f"ago({value.duration})"
    if isinstance(value, Param):
        return f"${value.name}"
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise SegmentError(f"{value!r} is not a value of the segment language", field="value")


def format_window(window: Window) -> str:
    form, parts = window_form(window)
    if form == "all":
        return "all"
    if form == "last":
        return str(parts[0])
    return f"{form}({', '.join(format_time(p) for p in parts)})"


_FORMATS: dict[str, Callable[[Any], str]] = {
    "condition": lambda v: _condition(v, None),
    "events": lambda v: format_value(v[0]) if len(v) == 1 else format_value(v),
    "field": lambda v: _path(v),
    "trait": lambda v: "traits." + _path(v, first_free=True),
    "text": format_value,
    "int": format_value,
    "value": format_value,
    "duration": str,
    "window": format_window,
    "step": lambda v: _call(v),
    "steps": lambda v: ", ".join(_call(s) for s in v),
}


def _call(node: Node) -> str:
    parts: list[str] = []
    keyword = False
    for name, arg in node.args.items():
        if arg.kind in NAMED_BY:
            continue
        value = getattr(node, name)
        if value is None:
            keyword = keyword or is_positional(arg)
            continue
        text = _FORMATS[arg.kind](value)
        keyword = keyword or not is_positional(arg)
        parts.append(f"{name}: {text}" if keyword else text)
    return f"{call_name(node)}({', '.join(parts)})"


def _get(node: Node, name: str) -> Any:
    return node.__dict__[name]


def _measure(node: Node) -> str:
    if isinstance(node, Trait):
        return _FORMATS["trait"](_get(node, "path"))
    if isinstance(node, Computed):
        return "computed." + _path(_get(node, "name"), first_free=True)
    if isinstance(node, Field):
        return _path(_get(node, "path"))
    return _call(node)


def _condition(node: Node, parent: type[Node] | None) -> str:
    if isinstance(node, And | Or):
        word = " and " if isinstance(node, And) else " or "
        text = word.join(_condition(c, type(node)) for c in _get(node, "conditions"))
        needs = parent is not None and (parent is Not or parent is type(node) or (parent is And and isinstance(node, Or)))
        return f"({text})" if needs else text
    if isinstance(node, Not):
        return "not " + _condition(_get(node, "this"), Not)
    if isinstance(node, Compare):
        op: Op = _get(node, "op")
        text = f"{_measure(_get(node, 'this'))} {op.value}"
        if op == Op.EXISTS:
            return text
        text += " " + format_value(_get(node, "value"))
        if op == Op.BETWEEN:
            text += " and " + format_value(_get(node, "high"))
        return text
    return _call(node)


def to_text(tree: Node) -> str:
    """The canonical text of a tree (a condition, or a measure or step on its own)."""
    if isinstance(tree, Measure):
        return _measure(tree)
    if isinstance(tree, Step):
        return _call(tree)
    text = _condition(tree, None)
    if len(text) <= WIDTH or not isinstance(tree, And | Or):
        return text
    word = "and" if isinstance(tree, And) else "or"
    first, *rest = (_condition(c, type(tree)) for c in _get(tree, "conditions"))
    return "\n".join([first, *(f"  {word} {c}" for c in rest)])
