"""Saved templates, campaigns and scenarios: one current-state table, a row per (kind, id).

Definitions are stored as the JSON they were given (after validation); ``status`` moves
draft -> (planning, for a broadcast) -> active -> paused / done. Deleting keeps the row, marked ``deleted``, so the
deletion wins over older versions on every engine.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.storage.base import Backend
from opencdp.storage.schema import CAMPAIGN_DEFINITIONS

TEMPLATE, CAMPAIGN, SCENARIO = "template", "campaign", "scenario"
DRAFT, ACTIVE, PAUSED, DONE = "draft", "active", "paused", "done"
PLANNING = "planning"
"""A broadcast being planned into the outbox in the background (``broadcast.begin`` / ``run_planning``)."""
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_MS = dt.timedelta(milliseconds=1)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class NotFound(TerminalError):
    status = 404
    code = "not_found"


class DefinitionError(TerminalError):
    """A campaign or scenario that cannot run as written; ``field`` is the JSON path."""

    status = 422
    code = "invalid_definition"


@dataclass(frozen=True)
class Stored:
    kind: str
    id: str
    name: str
    definition: dict[str, Any]
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.definition, "id": self.id, "name": self.name, "status": self.status,
                "created_at": self.created_at, "updated_at": self.updated_at}


def check_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise DefinitionError(f"`{field}` {value!r} must be a slug of letters, digits, '_' and '-' (at most 100)", field=field)
    return value


def _row(row: Mapping[str, Any]) -> Stored:
    def utc(value: dt.datetime) -> dt.datetime:
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    return Stored(row["kind"], row["id"], row["name"], _decode(row["definition"]), row["status"],
                  utc(row["created_at"]), utc(row["updated_at"]))


def _query(backend: Backend, kind: str, object_id: str | None) -> list[dict[str, Any]]:
    where: exp.Expr = exp.column("kind").eq(exp.Literal.string(kind))
    if object_id is not None:
        where = where.and_(exp.column("id").eq(exp.Literal.string(object_id)))
    query = exp.select("*").from_(backend.table_ref(CAMPAIGN_DEFINITIONS)).where(where).order_by("id")
    return backend.select(query).to_pylist()


def get(backend: Backend, kind: str, object_id: str) -> Stored | None:
    rows = [r for r in _query(backend, kind, object_id) if not r["deleted"]]
    return _row(rows[0]) if rows else None


def require(backend: Backend, kind: str, object_id: str) -> Stored:
    found = get(backend, kind, object_id)
    if found is None:
        raise NotFound(f"no {kind} `{object_id}`; list them with GET /api/v1/{kind}s", field="id")
    return found


def list_all(backend: Backend, kind: str) -> list[Stored]:
    return [_row(r) for r in _query(backend, kind, None) if not r["deleted"]]


def save(
    backend: Backend, kind: str, object_id: str, name: str, definition: Mapping[str, Any], *,
    status: str | None = None, now: dt.datetime | None = None,
) -> Stored:
    """Write (a new version of) an object; keeps its creation time and, unless given, its status."""
    check_id(object_id)
    now = now or dt.datetime.now(dt.UTC)
    existing = _query(backend, kind, object_id)
    previous = existing[0] if existing and not existing[0]["deleted"] else None
    version = now
    if existing:
        stored = existing[0]["updated_at"]
        stored = stored if stored.tzinfo else stored.replace(tzinfo=dt.UTC)
        version = max(now, stored + _MS)
    row = {
        "kind": kind, "id": object_id, "name": name or object_id,
        "definition": _encode(dict(definition)).decode(),
        "status": status or (previous["status"] if previous else DRAFT),
        "created_at": previous["created_at"] if previous else now,
        "updated_at": version, "deleted": False,
    }
    backend.upsert(CAMPAIGN_DEFINITIONS, pa.Table.from_pylist([row], schema=CAMPAIGN_DEFINITIONS.arrow_schema))
    return _row(row)


def set_status(backend: Backend, kind: str, object_id: str, status: str) -> Stored:
    found = require(backend, kind, object_id)
    return save(backend, kind, object_id, found.name, found.definition, status=status)


def delete(backend: Backend, kind: str, object_id: str) -> None:
    found = require(backend, kind, object_id)
    now = max(dt.datetime.now(dt.UTC), found.updated_at + _MS)
    row = {"kind": kind, "id": object_id, "name": found.name, "definition": _encode(found.definition).decode(),
           "status": found.status, "created_at": found.created_at, "updated_at": now, "deleted": True}
    backend.upsert(CAMPAIGN_DEFINITIONS, pa.Table.from_pylist([row], schema=CAMPAIGN_DEFINITIONS.arrow_schema))
