"""Stored scores: per-profile values that models and reports compute in bulk.

A computed trait (``profiles/computed.py``) is a query over events, evaluated when it
is read. A *score* is a value something else computed and stored: the RFM cell of the
last scoring run, the churn probability of the last model fit, the predicted CLV. Each
score has a name, a kind (number or text) and a *version*: writing a score writes a
whole new version of it, and readers switch to it in one step when its registry row
(``score_models``) is written last. So a reader never sees half of one run and half of
another, and a failed run leaves the previous version in place.

Scores are keyed by the canonical profile id at the time of the run. A later merge
leaves the merged-away profile's values behind until the next run (the survivor keeps
its own); runs are frequent (scheduled refits), and a score is not history.

In the segment language a score is read like a computed trait, by name::

    computed("churn_probability") > 0.7 and computed("clv") > 10000

and the 360° profile lists them under ``scores``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.storage.base import Backend
from opencdp.storage.schema import PROFILE_SCORES, SCORE_MODELS

Kind = Literal["number", "text"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ScoreError(TerminalError):
    """A score that cannot be written as asked (a bad name, mismatched columns, mixed kinds)."""


@dataclass(frozen=True)
class ScoreInfo:
    """One score's current version, from the registry."""

    name: str
    kind: Kind
    model_version: str
    computed_at: dt.datetime
    profiles: int
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model_version": self.model_version,
            "computed_at": self.computed_at.isoformat(),
            "profiles": self.profiles,
            "description": self.description,
            "metrics": self.metrics,
        }


def write_scores(
    backend: Backend,
    name: str,
    profile_ids: Sequence[str] | pa.Array | pa.ChunkedArray,
    values: Sequence[Any] | pa.Array | pa.ChunkedArray,
    *,
    model_version: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    description: str = "",
    at: dt.datetime | None = None,
) -> ScoreInfo:
    """Store a new version of score ``name``: one value per profile (nulls are not stored).

    Numbers (ints, floats) make a number score, strings a text score; a score keeps
    its kind across versions. ``model_version`` defaults to a fresh id; ``metrics``
    (fit quality, cut points ...) are kept with the version. Older versions are
    removed once the new one is current.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScoreError(
            f"score name {name!r} must be lower-case letters, digits and '_', starting with a letter (at most 63)",
            field="name",
        )
    ids = _array(profile_ids, pa.string(), "profile_ids")
    data = _array(values, None, "values")
    if len(ids) != len(data):
        raise ScoreError(f"{len(ids)} profile ids but {len(data)} values: give one value per profile", field="values")
    kind = _kind(data.type, name)
    previous = score_info(backend, name)
    if previous is not None and previous.kind != kind:
        raise ScoreError(
            f"score `{name}` holds {previous.kind}s; write {previous.kind}s, or pick a new name", field="values"
        )
    keep = pc.and_(pc.is_valid(ids), pc.is_valid(data))
    ids, data = pc.filter(ids, keep), pc.filter(data, keep)
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ScoreError(f"score `{name}`: a profile id appears twice; give one value per profile", field="profile_ids")
    version = model_version or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    now = at or dt.datetime.now(dt.UTC)
    n = len(ids)
    number = pc.cast(data, pa.float64()) if kind == "number" else pa.nulls(n, pa.float64())
    text = data.cast(pa.string()) if kind == "text" else pa.nulls(n, pa.string())
    rows = pa.table(
        {
            "name": pa.array([name] * n, pa.string()),
            "model_version": pa.array([version] * n, pa.string()),
            "profile_id": ids,
            "number": number,
            "text": text,
        },
        schema=PROFILE_SCORES.arrow_schema,
    )
    if previous is not None and previous.model_version == version:
        _delete(backend, name, exp.column("model_version").eq(exp.Literal.string(version)))
    if n:
        backend.insert(PROFILE_SCORES.name, rows)
    info = ScoreInfo(name, kind, version, now, n, description, dict(metrics or {}))
    registry = pa.table(
        {
            "name": [name],
            "kind": [kind],
            "model_version": [version],
            "computed_at": [now],
            "profiles": [n],
            "description": [description],
            "metrics": [json.dumps(info.metrics, default=str)],
        },
        schema=SCORE_MODELS.arrow_schema,
    )
    backend.upsert(SCORE_MODELS, registry)  # the switch: readers follow the registry's version
    _delete(backend, name, exp.column("model_version").neq(exp.Literal.string(version)))
    return info


def score_names(backend: Backend) -> dict[str, ScoreInfo]:
    """Every score with a current version, by name."""
    rows = backend.rows(
        exp.select("name", "kind", "model_version", "computed_at", "profiles", "description", "metrics").from_(
            backend.table_ref(SCORE_MODELS)
        )
    )
    return {row["name"]: _info(row) for row in rows}


def score_info(backend: Backend, name: str) -> ScoreInfo | None:
    return score_names(backend).get(name)


def read_scores(backend: Backend, name: str, profile_ids: Sequence[str] | None = None) -> pa.Table:
    """``(profile_id, value)`` of the current version of ``name`` (empty when it was never written)."""
    info = score_info(backend, name)
    if info is None:
        return pa.table({"profile_id": pa.array([], pa.string()), "value": pa.array([], pa.float64())})
    query = score_query(backend, info)
    if profile_ids is not None:
        if not profile_ids:
            return pa.table({"profile_id": pa.array([], pa.string()), "value": pa.array([], _value_type(info.kind))})
        query = query.where(exp.column("profile_id").isin(*(exp.Literal.string(p) for p in profile_ids)))
    return backend.select(query)


def scores_of(backend: Backend, profile_ids: Sequence[str]) -> dict[str, Any]:
    """Every current score of one person (any of their profile ids), by name: for the 360° profile."""
    if not profile_ids:
        return {}
    infos = score_names(backend)
    if not infos:
        return {}
    current = exp.or_(
        *(
            exp.and_(
                exp.column("name").eq(exp.Literal.string(info.name)),
                exp.column("model_version").eq(exp.Literal.string(info.model_version)),
            )
            for info in infos.values()
        )
    )
    query = (
        exp.select("name", "number", "text")
        .from_(backend.table_ref(PROFILE_SCORES))
        .where(exp.and_(exp.column("profile_id").isin(*(exp.Literal.string(p) for p in profile_ids)), exp.Paren(this=current)))
    )
    found: dict[str, Any] = {}
    for row in backend.rows(query):
        value = row["number"] if infos[row["name"]].kind == "number" else row["text"]
        found.setdefault(row["name"], value)
    return dict(sorted(found.items()))


def score_query(backend: Backend | None, info: ScoreInfo) -> exp.Select:
    """``SELECT profile_id, value`` of the current version: the segment compiler joins it as a measure."""
    value = exp.column("number" if info.kind == "number" else "text")
    source: exp.Expression = backend.table_ref(PROFILE_SCORES) if backend is not None else exp.to_table(PROFILE_SCORES.name)
    return (
        exp.select(exp.column("profile_id"), exp.alias_(value, "value"))
        .from_(source)
        .where(
            exp.and_(
                exp.column("name").eq(exp.Literal.string(info.name)),
                exp.column("model_version").eq(exp.Literal.string(info.model_version)),
            )
        )
    )


def delete_score(backend: Backend, name: str) -> bool:
    """Remove a score and all its versions; False when there was none."""
    if score_info(backend, name) is None:
        return False
    _delete(backend, name, None)
    backend.execute(
        backend.render(exp.delete(SCORE_MODELS.name).where(exp.column("name").eq(exp.Literal.string(name))))
    )
    return True


# -- helpers ------------------------------------------------------------------------------------------


def _delete(backend: Backend, name: str, extra: exp.Expr | None) -> None:
    where: exp.Expr = exp.column("name").eq(exp.Literal.string(name))
    if extra is not None:
        where = exp.and_(where, extra)
    backend.execute(backend.render(exp.delete(PROFILE_SCORES.name).where(where)))


def _array(values: Any, type: pa.DataType | None, field_name: str) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        try:
            values = pa.array(list(values), type=type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
            raise ScoreError(f"`{field_name}` must be a list of one kind of value: {error}", field=field_name) from None
    if type is not None and values.type != type:
        values = values.cast(type)
    return values


def _kind(type: pa.DataType, name: str) -> Kind:
    if pa.types.is_integer(type) or pa.types.is_floating(type) or pa.types.is_boolean(type) or pa.types.is_null(type):
        return "number"
    if pa.types.is_string(type) or pa.types.is_large_string(type) or pa.types.is_date(type):
        return "text"
    raise ScoreError(f"score `{name}`: values must be numbers or text, not {type}", field="values")


def _value_type(kind: Kind) -> pa.DataType:
    return pa.float64() if kind == "number" else pa.string()


def _info(row: Mapping[str, Any]) -> ScoreInfo:
    at = row["computed_at"]
    if isinstance(at, dt.datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    try:
        metrics = json.loads(row["metrics"] or "{}")
    except ValueError:
        metrics = {}
    return ScoreInfo(row["name"], row["kind"], row["model_version"], at, int(row["profiles"] or 0), row["description"] or "", metrics)
