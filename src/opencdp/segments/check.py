"""Checking a segment tree against what a store has seen: event names, traits, properties,
computed traits and segments. Errors stop a definition from being saved; warnings are shown.
"""

from __future__ import annotations

import difflib
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from opencdp.segments.ast import Aggregate, Computed, Field, InSegment, Node, Step, Trait
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES, PRODUCTS

SAMPLE = 200_000
"""Events read (the latest by the table's order) to collect trait and property keys; cheap on 20M."""

EVENT_COLUMNS = frozenset(c.name for c in EVENTS.columns) - {"properties", "traits", "context", "integrations"}
PREFIXES = {"properties", "context", "traits", "line", "product"}


@dataclass(frozen=True)
class Problem:
    severity: str
    """error (the definition is not saved) or warning."""
    message: str
    suggestion: str | None = None
    field: str | None = None
    """The argument at fault: event, segment, name, path or value."""


@dataclass
class Known:
    """What the store has seen."""

    events: set[str] = field(default_factory=set)
    traits: set[str] = field(default_factory=set)
    properties: dict[str, set[str]] = field(default_factory=dict)
    computed: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)

    @classmethod
    def from_store(cls, backend: Backend, *, computed: set[str] | None = None, segments: set[str] | None = None) -> Known:
        """Event names from ``events``; trait and property keys from a sample of its JSON."""
        events = exp.select(exp.column("event")).distinct().from_(backend.table_ref(EVENTS))
        names = {row["event"] for row in backend.rows(events) if row["event"]}
        sample = (
            exp.select("event", "properties", "traits")
            .from_(backend.table_ref(EVENTS))
            .where(exp.or_(exp.column("properties").is_(exp.null()).not_(), exp.column("traits").is_(exp.null()).not_()))
            .limit(SAMPLE)
        )
        traits: set[str] = set()
        properties: dict[str, set[str]] = {}
        # Keys are read in Python from the sample: the same on every engine, and the sample is small.
        for row in backend.rows(sample):
            traits.update(_keys(row["traits"]))
            if row["event"]:
                properties.setdefault(row["event"], set()).update(_keys(row["properties"]))
        return cls(names, traits, properties, set(computed or ()), set(segments or ()))


_SEEN: weakref.WeakKeyDictionary[Backend, tuple[float, Known]] = weakref.WeakKeyDictionary()
SEEN_FOR_S = 60.0
"""How long ``seen`` reuses what a store has seen (reading it takes ~0.5 s on 20M events)."""


def seen(backend: Backend, *, fresh: bool = False) -> Known:
    """``Known.from_store``, reused for ``SEEN_FOR_S``: saving 100 segments reads the store once.
    A definition that names something not seen is checked again with ``fresh=True``, so a
    name that just arrived is never reported unknown from a stale read."""
    cached = None if fresh else _SEEN.get(backend)
    if cached is not None and time.monotonic() - cached[0] < SEEN_FOR_S:
        return cached[1]
    known = Known.from_store(backend)
    _SEEN[backend] = (time.monotonic(), known)
    return known


def _keys(value: Any) -> set[str]:
    if not value:
        return set()
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return set()
    return set(data) if isinstance(data, dict) else set()


def _unknown(what: str, name: str, known: set[str], argument: str | None = None) -> Problem:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" — did you mean `{close[0]}`?" if close else ""
    return Problem("error", f"unknown {what} `{name}`{hint}", close[0] if close else None, argument)


def check(tree: Node, known: Known) -> list[Problem]:
    """Errors (unknown event, segment, computed trait, event column) and warnings (unseen keys)."""
    problems: list[Problem] = []
    line_columns = {c.name for c in ORDER_LINES.columns}
    product_columns = {c.name for c in PRODUCTS.columns} | {"stock_then"}
    for node in tree.walk():
        if isinstance(node, Aggregate | Step):
            events = node.event or ()
            for name in events:
                if name not in known.events:
                    problems.append(_unknown("event", name, known.events, "event"))
            for sub in node.where.walk() if node.where is not None else ():
                if isinstance(sub, Field):
                    problems += _field(sub.path, events, known, line_columns, product_columns)
            if isinstance(node, Aggregate) and node.value is not None:
                problems += _field(node.value, events, known, line_columns, product_columns)
        elif isinstance(node, InSegment) and node.segment not in known.segments:
            problems.append(_unknown("segment", node.segment, known.segments, "segment"))
        elif isinstance(node, Computed) and node.name not in known.computed:
            problems.append(_unknown("computed trait", node.name, known.computed, "name"))
        elif isinstance(node, Trait) and node.path.split(".")[0] not in known.traits:
            problems.append(Problem("warning", f"trait `{node.path.split('.')[0]}` was never seen on an event"))
    return problems


def _field(path: str, events: tuple[str, ...], known: Known, lines: set[str], products: set[str]) -> list[Problem]:
    head, _, rest = path.partition(".")
    if not rest:
        if head in EVENT_COLUMNS:
            return []
        return [_unknown("event column", head, set(EVENT_COLUMNS))]
    key = rest.split(".")[0]
    if head == "properties":
        seen = [e for e in events if key in known.properties.get(e, set())] if events else [
            e for e, keys in known.properties.items() if key in keys
        ]
        if not seen:
            on = " or ".join(f"`{e}`" for e in events) or "any event"
            return [Problem("warning", f"property `{key}` was never seen on {on}")]
    elif head == "line" and key not in lines:
        return [_unknown("order line column", key, lines)]
    elif head == "product" and key not in products:
        return [_unknown("product column", key, products)]
    elif head not in PREFIXES:
        return [_unknown("event field", head, PREFIXES | set(EVENT_COLUMNS))]
    return []
