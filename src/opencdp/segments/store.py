"""Segment definitions in the store: save (validated), read, list, delete.

A segment is saved only when its definition parses, compiles against what the store
holds (other segments, computed traits, event fields) and passes the schema check;
otherwise ``SegmentError`` says what to fix. Deleting a segment that others refer to
marks those ``broken`` with the reason, so they are flagged rather than silently empty.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.profiles.computed import BUILTIN, ComputedTrait
from opencdp.profiles.scores import score_names
from opencdp.segments.ast import Condition, Node, SegmentError, segments_used
from opencdp.segments.jsonform import from_json, to_json
from opencdp.segments.sql import Catalogue, compile_segment
from opencdp.segments.text import parse, to_text
from opencdp.storage.base import Backend
from opencdp.storage.schema import SEGMENTS

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,79}")
DYNAMIC, STATIC, UPLOADED = "dynamic", "static", "uploaded"
ACTIVE, BROKEN = "active", "broken"


@dataclass(frozen=True)
class Alert:
    """Warn when a segment gets small: below ``min_size`` members, or ``drop_percent`` down on one refresh."""

    min_size: int | None = None
    drop_percent: float | None = None
    webhook: str | None = None
    """POSTed a JSON body when the alert fires (besides the log)."""

    @classmethod
    def from_dict(cls, data: Any, at: str = "alerts[0]") -> Alert:
        if not isinstance(data, Mapping) or not set(data) <= {"min_size", "drop_percent", "webhook"} or not data:
            raise SegmentError(
                f"`{at}` is {data!r}; an alert is {{\"min_size\": 100}}, {{\"drop_percent\": 20}} and optionally \"webhook\": URL",
                field=at,
            )
        min_size, drop, hook = data.get("min_size"), data.get("drop_percent"), data.get("webhook")
        if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0):
            raise SegmentError(f"`{at}.min_size` is {min_size!r}; use a whole number >= 0", field=f"{at}.min_size")
        if drop is not None and (isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 < drop <= 100):
            raise SegmentError(f"`{at}.drop_percent` is {drop!r}; use a percentage in (0, 100]", field=f"{at}.drop_percent")
        if min_size is None and drop is None:
            raise SegmentError(f"`{at}` needs min_size or drop_percent", field=at)
        if hook is not None and not (isinstance(hook, str) and re.match(r"https?://", hook)):
            raise SegmentError(f"`{at}.webhook` is {hook!r}; use an http(s) URL", field=f"{at}.webhook")
        return cls(min_size, float(drop) if drop is not None else None, hook)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("min_size", self.min_size), ("drop_percent", self.drop_percent), ("webhook", self.webhook)) if v is not None}


@dataclass(frozen=True)
class Segment:
    segment_id: str
    name: str
    definition: str
    """The text form ('' for static and uploaded lists)."""
    tree: Condition | None
    kind: str = DYNAMIC
    description: str = ""
    status: str = ACTIVE
    problem: str | None = None
    alerts: tuple[Alert, ...] = ()
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.segment_id,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "definition": self.definition or None,
            "tree": to_json(self.tree) if self.tree is not None else None,
            "status": self.status,
            "problem": self.problem,
            "alerts": [a.to_dict() for a in self.alerts],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class Validation:
    tree: Condition
    text: str
    warnings: list[str] = field(default_factory=list)


def read_definition(definition: str | Mapping[str, Any]) -> Condition:
    """A tree from the text form or the JSON form."""
    if isinstance(definition, str):
        return parse(definition)
    if isinstance(definition, Mapping):
        return from_json(definition)
    raise SegmentError("`definition` is the segment's text, or its JSON tree", field="definition")


def computed_traits(backend: Backend) -> dict[str, ComputedTrait]:
    """Computed traits segments may name: built-ins, the configured file, those declared through the API."""
    try:
        from opencdp.profiles.definitions import (
            all_traits,  # the profiles API's registry, when present
        )
    except ImportError:  # pragma: no cover - older layouts
        return {t.name: t for t in BUILTIN}
    return {t.name: t for t in all_traits(backend)}


def catalogue(backend: Backend, *, without: str | None = None) -> Catalogue:
    segments: dict[str, Node | None] = {}
    for segment in list_segments(backend):
        if segment.segment_id != without and segment.status == ACTIVE:
            segments[segment.segment_id] = segment.tree if segment.kind == DYNAMIC else None
    return Catalogue(computed=computed_traits(backend), segments=segments, scores=score_names(backend))


def validate(backend: Backend, definition: str | Mapping[str, Any], *, segment_id: str | None = None) -> Validation:
    """Parse, compile and check a definition against the store; raises ``SegmentError``."""
    tree = read_definition(definition)
    known_segments = catalogue(backend, without=segment_id)
    if segment_id is not None and segment_id in segments_used(tree):
        raise SegmentError(f"segment `{segment_id}` refers to itself; remove in_segment(\"{segment_id}\")", field="definition")
    if segment_id is not None:  # would saving it close a cycle through others?
        with_self = dict(known_segments.segments)
        with_self[segment_id] = tree
        for other, other_tree in with_self.items():
            if other_tree is not None and other != segment_id and segment_id in segments_used(other_tree):
                compile_segment(other_tree, backend, dt.datetime.now(dt.UTC), catalogue=Catalogue(known_segments.computed, with_self, known_segments.scores), params=_dummy_params(other_tree))
    compile_segment(tree, backend, dt.datetime.now(dt.UTC), catalogue=known_segments, params=_dummy_params(tree))
    warnings: list[str] = []
    try:
        from opencdp.segments.check import check, seen
    except ImportError:  # pragma: no cover - check.py not present
        pass
    else:
        computed, named = set(known_segments.computed) | set(known_segments.scores), set(known_segments.segments)
        problems = check(tree, replace(seen(backend), computed=computed, segments=named))
        if problems:  # perhaps only unknown to a reading of a minute ago: read the store again
            problems = check(tree, replace(seen(backend, fresh=True), computed=computed, segments=named))
        for problem in problems:
            # an event not seen yet is fine (segments are made before data flows), unless it looks like a typo
            unseen = problem.field == "event" and problem.suggestion is None
            if problem.severity == "error" and not unseen:
                raise SegmentError(problem.message, field=problem.field, suggestion=problem.suggestion)
            warnings.append(problem.message)
    return Validation(tree, to_text(tree), warnings)


def _dummy_params(tree: Node) -> dict[str, Any]:
    """Placeholder values so a parametric segment compiles for checking (bound for real at evaluation)."""
    from opencdp.segments.ast import params_used

    return {name: "" for name in params_used(tree)}


def check_id(segment_id: str) -> str:
    if not isinstance(segment_id, str) or not _ID.fullmatch(segment_id):
        raise SegmentError(
            f"segment id {segment_id!r} is not valid; use up to 80 letters, digits, '_' and '-', e.g. vip_kazan", field="id"
        )
    return segment_id


def save(
    backend: Backend,
    segment_id: str,
    *,
    name: str | None = None,
    definition: str | Mapping[str, Any] | None = None,
    description: str = "",
    alerts: Any = (),
    kind: str = DYNAMIC,
    now: dt.datetime | None = None,
) -> tuple[Segment, list[str]]:
    """Create or replace a segment; returns it with the check's warnings."""
    check_id(segment_id)
    now = now or dt.datetime.now(dt.UTC)
    if not isinstance(alerts, list | tuple):
        raise SegmentError("`alerts` is a list of alerts", field="alerts")
    parsed_alerts = tuple(Alert.from_dict(a, f"alerts[{i}]") for i, a in enumerate(alerts))
    warnings: list[str] = []
    tree: Condition | None = None
    text = ""
    if kind == DYNAMIC:
        if definition is None:
            raise SegmentError("`definition` is required: the segment in text or as a JSON tree", field="definition")
        validation = validate(backend, definition, segment_id=segment_id)
        tree, text, warnings = validation.tree, validation.text, validation.warnings
    elif kind not in (STATIC, UPLOADED):
        raise SegmentError(f"`kind` is {kind!r}; use dynamic, static or uploaded", field="kind")
    existing = get(backend, segment_id)
    segment = Segment(
        segment_id,
        name or segment_id,
        text,
        tree,
        kind,
        description or "",
        ACTIVE,
        None,
        parsed_alerts,
        existing.created_at if existing else now,
        now,
    )
    _write(backend, segment, now)
    return segment, warnings


def _write(backend: Backend, segment: Segment, now: dt.datetime, deleted: bool = False) -> None:
    row = {
        "segment_id": segment.segment_id,
        "name": segment.name,
        "description": segment.description,
        "definition": segment.definition,
        "tree": json.dumps(to_json(segment.tree) if segment.tree is not None else None, ensure_ascii=False),
        "kind": segment.kind,
        "status": segment.status,
        "problem": segment.problem,
        "alerts": json.dumps([a.to_dict() for a in segment.alerts]),
        "created_at": segment.created_at or now,
        "updated_at": now,
        "deleted": deleted,
    }
    backend.upsert(SEGMENTS, pa.Table.from_pylist([row], schema=SEGMENTS.arrow_schema))


@functools.lru_cache(maxsize=4096)
def _tree(text: str) -> Condition | None:
    """A stored tree, built once per text: the real-time evaluator lists every segment twice a second."""
    data = json.loads(text)
    return from_json(data) if data else None


def _segment(row: Mapping[str, Any]) -> Segment:
    return Segment(
        row["segment_id"],
        row["name"],
        row["definition"] or "",
        _tree(row["tree"]) if row["tree"] else None,
        row["kind"],
        row["description"] or "",
        row["status"],
        row["problem"],
        tuple(Alert.from_dict(a) for a in json.loads(row["alerts"] or "[]")),
        row["created_at"],
        row["updated_at"],
    )


def list_segments(backend: Backend, *, include_deleted: bool = False) -> list[Segment]:
    query = exp.select("*").from_(backend.table_ref(SEGMENTS))
    if not include_deleted:
        query = query.where(exp.column("deleted").eq(exp.false()))
    rows = backend.rows(query.order_by("segment_id"))
    return [_segment(row) for row in rows]


def get(backend: Backend, segment_id: str) -> Segment | None:
    query = (
        exp.select("*")
        .from_(backend.table_ref(SEGMENTS))
        .where(exp.and_(exp.column("segment_id").eq(exp.Literal.string(segment_id)), exp.column("deleted").eq(exp.false())))
    )
    rows = backend.rows(query)
    return _segment(rows[0]) if rows else None


def delete(backend: Backend, segment_id: str, now: dt.datetime | None = None) -> list[str]:
    """Delete a segment; returns the ids of the segments this broke (they referred to it)."""
    now = now or dt.datetime.now(dt.UTC)
    segment = get(backend, segment_id)
    if segment is None:
        raise SegmentNotFound(segment_id)
    _write(backend, segment, now, deleted=True)
    return mark_broken(backend, f"segment `{segment_id}` was deleted", now)


def mark_broken(backend: Backend, reason: str, now: dt.datetime | None = None) -> list[str]:
    """Re-check every active dynamic segment; those that no longer compile become ``broken`` with the reason."""
    now = now or dt.datetime.now(dt.UTC)
    broken: list[str] = []
    known = catalogue(backend)
    for segment in list_segments(backend):
        if segment.kind != DYNAMIC or segment.tree is None:
            continue
        try:
            compile_segment(segment.tree, backend, now, catalogue=known, params=_dummy_params(segment.tree))
        except SegmentError as error:
            _write(backend, replace(segment, status=BROKEN, problem=f"{reason}: {error.detail}"), now)
            broken.append(segment.segment_id)
            known = catalogue(backend)
    return broken


class SegmentNotFound(SegmentError):
    code = "segment_not_found"
    status = 404

    def __init__(self, segment_id: str) -> None:
        super().__init__(f"no segment `{segment_id}`; GET /api/v1/segments lists them", field="id")
