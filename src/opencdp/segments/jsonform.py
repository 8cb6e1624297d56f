"""The segment language's JSON form and its JSON Schema, both driven by the node declarations.

A node is ``{"type": <node key>, <arg>: <value>, ...}`` with the arguments left out that are
not set. Each ``Arg.kind`` has one codec here (encode, decode, schema), so a new node needs
nothing in this module, and a new kind is one entry in ``KINDS``:

* values: JSON strings, numbers and booleans as themselves; ``{"date": "2024-01-01"}``,
  ``{"datetime": "2024-01-01T10:00:00Z"}``, ``{"ago": "30d"}``, ``{"param": "size"}``; a list;
* durations ``"30d"``; windows ``"30d"``, ``"all"``, ``{"since": "2024-01-01"}`` or
  ``{"between": ["2024-01-01", "2024-01-31"]}`` (dates or date-times, as in the text form:
  a ``between`` of dates includes its last day);
* event names a list of strings; ``op`` and ``fn`` their text (``"starts with"``, ``"count"``).
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opencdp.segments.ast import (
    NODES,
    Ago,
    Condition,
    Duration,
    Fn,
    Measure,
    Node,
    Op,
    Param,
    SegmentError,
    Window,
)
from opencdp.segments.text import format_datetime, format_time, window_form, window_of

SCHEMA_ID = "https://opencdp.dev/schemas/segment.json"
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"
_DURATION = r"^\d+[mhdw]$"


def _fail(path: str, detail: str) -> SegmentError:
    return SegmentError(f"{path or 'the segment'}: {detail}", field=path or None)


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


# -- nodes ----------------------------------------------------------------------------------

GROUPS: dict[str, type[Node]] = {"condition": Condition, "measure": Measure}
"""Argument kinds that take any node of a class; other node-valued kinds name one node key."""


def to_json(tree: Node) -> dict[str, Any]:
    """The JSON form of a tree: ``{"type": key, ...arguments}``."""
    body: dict[str, Any] = {"type": tree.key}
    for name, value in tree.items():
        if value is not None:
            body[name] = KINDS[tree.args[name].kind].encode(value)
    return body


def from_json(data: Any) -> Condition:
    """The tree of a JSON form; ``SegmentError`` naming the JSON path (``conditions[1].this.fn``)."""
    return _node(data, "", Condition)  # type: ignore[return-value]


def _node(data: Any, path: str, expected: type[Node]) -> Node:
    if not isinstance(data, dict):
        raise _fail(path, f"expected a node {{\"type\": ...}}, found {type(data).__name__}")
    key = data.get("type")
    cls = NODES.get(key) if isinstance(key, str) else None
    if cls is None:
        close = difflib.get_close_matches(str(key), list(NODES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; use one of {', '.join(NODES)}"
        raise SegmentError(f"{_join(path, 'type')}: unknown node type {key!r}{hint}", field=_join(path, "type"),
                           suggestion=close[0] if close else None)
    if not issubclass(cls, expected):
        raise _fail(path, f"a {key} is not a {expected.__name__.lower()} here")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "type":
            continue
        arg = cls.args.get(name)
        if arg is None:
            close = difflib.get_close_matches(name, list(cls.args), n=1)
            raise SegmentError(
                f"{_join(path, name)}: `{key}` has no argument {name!r}; it takes {', '.join(cls.args)}"
                + (f"; did you mean {close[0]!r}?" if close else ""),
                field=_join(path, name),
                suggestion=close[0] if close else None,
            )
        if value is not None:
            values[name] = KINDS[arg.kind].decode(value, _join(path, name))
    try:
        return cls(**values)
    except SegmentError as error:
        where = _join(path, error.field) if error.field else path
        raise _fail(where, error.detail) from None


# -- kinds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How one ``Arg.kind`` is written in JSON, read back, and described in the schema."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any, str], Any]
    schema: dict[str, Any]


def _text(value: Any, path: str, what: str = "a text") -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected {what} (a JSON string), found {value!r}")
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected a whole number, found {value!r}")
    return value


def _duration(value: Any, path: str) -> Duration:
    try:
        return Duration.parse(_text(value, path, "a duration such as \"30d\""))
    except SegmentError as error:
        raise _fail(path, error.detail) from None


def _time(value: Any, path: str) -> dt.date:
    text = _text(value, path, "a date \"2024-01-01\" or a date-time \"2024-01-01T10:00:00Z\"")
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(path, f"{text!r} is not a date (2024-01-01) or a date-time (2024-01-01T10:00:00Z)") from None
    if moment.tzinfo is None:
        raise _fail(path, f"{text!r} has no time zone; add Z or an offset like +03:00")
    return moment


def _encode_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, dt.datetime):
        return {"datetime": format_datetime(value)}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, Ago):
        return {"ago": str(value.duration)}
    if isinstance(value, Param):
        return {"param": value.name}
    return value


_TAGGED: dict[str, Callable[[Any, str], Any]] = {
    "date": lambda v, p: _tagged_time(v, p, dt.date),
    "datetime": lambda v, p: _tagged_time(v, p, dt.datetime),
    "ago": lambda v, p: Ago(_duration(v, p)),
    "param": lambda v, p: Param(_text(v, p, "a parameter name")),
}


def _tagged_time(value: Any, path: str, kind: type[dt.date]) -> dt.date:
    moment = _time(value, path)
    if isinstance(moment, dt.datetime) != (kind is dt.datetime):
        raise _fail(path, f"expected a {kind.__name__}, found {value!r}")
    return moment


def _decode_value(value: Any, path: str, *, nested: bool = False) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list) and not nested:
        return tuple(_decode_value(v, _join(path, i), nested=True) for i, v in enumerate(value))
    if isinstance(value, dict) and len(value) == 1:
        [(tag, inner)] = value.items()
        if tag in _TAGGED:
            return _TAGGED[tag](inner, _join(path, tag))
    raise _fail(
        path,
        f"expected a value: a string, number, boolean, {{\"date\": ...}}, {{\"datetime\": ...}}, {{\"ago\": \"30d\"}}, "
        f"{{\"param\": name}}{'' if nested else ' or a list of those'}; found {value!r}",
    )


def _encode_window(window: Window) -> Any:
    form, parts = window_form(window)
    if form in ("all", "last"):
        return str(parts[0]) if parts else "all"
    texts = [format_time(p) for p in parts]
    return {form: texts[0] if form == "since" else texts}


def _decode_window(value: Any, path: str) -> Window:
    try:
        if value == "all":
            return window_of("all", ())
        if isinstance(value, str):
            return window_of("last", (_duration(value, path),))
        if isinstance(value, dict) and list(value) == ["since"]:
            return window_of("since", (_time(value["since"], _join(path, "since")),))
        if isinstance(value, dict) and list(value) == ["between"]:
            bounds = value["between"]
            if not (isinstance(bounds, list) and len(bounds) == 2):
                raise _fail(_join(path, "between"), "expected a list of two dates [first, last]")
            return window_of("between", tuple(_time(b, _join(_join(path, "between"), i)) for i, b in enumerate(bounds)))
    except SegmentError as error:
        if error.field == "window":
            raise _fail(path, error.detail) from None
        raise
    raise _fail(path, f"expected a window: \"30d\", \"all\", {{\"since\": date}} or {{\"between\": [date, date]}}; found {value!r}")


def _decode_events(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not value:
        raise _fail(path, f"expected a list of event names, found {value!r}")
    return tuple(_text(v, _join(path, i), "an event name") for i, v in enumerate(value))


def _decode_enum(enum: type[Op] | type[Fn]) -> Callable[[Any, str], Any]:
    def decode(value: Any, path: str) -> Any:
        try:
            return enum(value)
        except ValueError:
            names = [m.value for m in enum]
            close = difflib.get_close_matches(str(value), names, n=1)
            raise SegmentError(
                f"{path}: {value!r} is not one of {', '.join(names)}" + (f"; did you mean {close[0]!r}?" if close else ""),
                field=path,
                suggestion=close[0] if close else None,
            ) from None

    return decode


def _decode_nodes(expected: type[Node], at_least: int) -> Callable[[Any, str], Any]:
    def decode(value: Any, path: str) -> tuple[Node, ...]:
        if not isinstance(value, list):
            raise _fail(path, f"expected a list of {at_least} or more nodes, found {value!r}")
        return tuple(_node(v, _join(path, i), expected) for i, v in enumerate(value))

    return decode


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


_TIME_SCHEMA = {"anyOf": [{"type": "string", "pattern": _DATE}, {"type": "string", "pattern": _DATETIME}]}
_SCALAR_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        *(
            {"type": "object", "properties": {tag: schema}, "required": [tag], "additionalProperties": False}
            for tag, schema in (
                ("date", {"type": "string", "pattern": _DATE}),
                ("datetime", {"type": "string", "pattern": _DATETIME}),
                ("ago", {"type": "string", "pattern": _DURATION}),
                ("param", {"type": "string"}),
            )
        ),
    ]
}
_STEP = next(cls for cls in NODES.values() if cls.key == "step")

KINDS: dict[str, Kind] = {
    "condition": Kind(to_json, lambda v, p: _node(v, p, Condition), _ref("condition")),
    "conditions": Kind(
        lambda v: [to_json(c) for c in v], _decode_nodes(Condition, 2),
        {"type": "array", "items": _ref("condition"), "minItems": 2},
    ),
    "measure": Kind(to_json, lambda v, p: _node(v, p, Measure), _ref("measure")),
    "step": Kind(to_json, lambda v, p: _node(v, p, _STEP), _ref(_STEP.key)),
    "steps": Kind(
        lambda v: [to_json(s) for s in v], _decode_nodes(_STEP, 2),
        {"type": "array", "items": _ref(_STEP.key), "minItems": 2},
    ),
    "field": Kind(str, _text, {"type": "string", "minLength": 1}),
    "trait": Kind(str, _text, {"type": "string", "minLength": 1}),
    "text": Kind(str, _text, {"type": "string"}),
    "int": Kind(int, _int, {"type": "integer"}),
    "value": Kind(
        _encode_value, _decode_value,
        {"anyOf": [_ref("scalar"), {"type": "array", "items": _ref("scalar")}]},
    ),
    "events": Kind(list, _decode_events, {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}),
    "duration": Kind(str, _duration, {"type": "string", "pattern": _DURATION}),
    "window": Kind(
        _encode_window, _decode_window,
        {
            "anyOf": [
                {"const": "all"},
                {"type": "string", "pattern": _DURATION},
                {"type": "object", "properties": {"since": _ref("time")}, "required": ["since"],
                 "additionalProperties": False},
                {"type": "object", "required": ["between"], "additionalProperties": False,
                 "properties": {"between": {"type": "array", "prefixItems": [_ref("time"), _ref("time")],
                                            "minItems": 2, "maxItems": 2}}},
            ]
        },
    ),
    "op": Kind(lambda v: v.value, _decode_enum(Op), {"enum": [o.value for o in Op]}),
    "fn": Kind(lambda v: v.value, _decode_enum(Fn), {"enum": [f.value for f in Fn]}),
}


# -- schema ---------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the JSON form, generated from the node declarations."""
    defs: dict[str, Any] = {}
    for key, cls in NODES.items():
        properties: dict[str, Any] = {"type": {"const": key}}
        for name, arg in cls.args.items():
            properties[name] = {**KINDS[arg.kind].schema, "description": arg.doc}
        defs[key] = {
            "type": "object",
            "description": cls.doc,
            "properties": properties,
            "required": ["type", *(n for n, a in cls.args.items() if a.required)],
            "additionalProperties": False,
        }
    for group, base in GROUPS.items():
        defs[group] = {"anyOf": [_ref(k) for k, cls in NODES.items() if issubclass(cls, base)]}
    defs["scalar"] = _SCALAR_SCHEMA
    defs["time"] = _TIME_SCHEMA
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "opencdp segment",
        "description": "A segment definition: a condition on a profile (see docs/segments.md).",
        **_ref("condition"),
        "$defs": defs,
    }
