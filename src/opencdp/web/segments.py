"""Segments API: definitions, validation and preview, members, exports, snapshots and uploads.

Handlers are thin: the work is in ``opencdp.segments`` (``store`` saves and checks,
``membership`` evaluates, ``exports`` moves members in and out). Saving a dynamic
segment evaluates it at once, so its size and its members are there in the answer;
after that the server's real-time evaluator keeps it up to date. A bad definition is
a 422 whose body says where (``line``, ``column``, ``field``) and how to fix it
(``suggestion``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from opencdp.identity.identifiers import Rules
from opencdp.segments import exports, membership, store
from opencdp.segments.ast import SegmentError
from opencdp.segments.exports import SegmentExists, change_dict, describe, require
from opencdp.segments.sql import members as evaluate
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

_MAX_UPLOAD_BYTES = 256 * 1024 * 1024
Definition = str | dict[str, Any]


router = APIRouter(prefix="/api/v1/segments", tags=["segments"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]


class SegmentIn(BaseModel):
    id: str = Field(description="a slug: letters, digits, '_' and '-'", examples=["vip_kazan"])
    name: str | None = Field(None, max_length=200, description="what marketers see; default: the id")
    description: str = Field("", max_length=2000)
    definition: Definition = Field(
        description="the segment in the text form, or its JSON tree (GET /api/v1/segments/schema)",
        examples=['traits.city = "Kazan" and count("Order Completed", window: 90d) >= 2'],
    )
    alerts: list[Any] = Field(default_factory=list, description='e.g. [{"min_size": 100, "webhook": "https://..."}]')


class SegmentUpdate(BaseModel):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    definition: Definition | None = Field(None, description="a new definition (dynamic segments only)")
    alerts: list[Any] | None = None


class DefinitionIn(BaseModel):
    definition: Definition


class PreviewIn(BaseModel):
    definition: Definition
    params: dict[str, Any] = Field(default_factory=dict, description="values of the definition's $parameters")
    sample: int = Field(20, ge=0, le=1000, description="how many member ids to show")


class RefreshIn(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, description="a parametric segment's values (evaluated, not stored)")


class SnapshotIn(BaseModel):
    id: str = Field(description="the id of the new static segment")
    name: str | None = Field(None, max_length=200)


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@router.get("", summary="All segments with their status and size")
def list_all(request: Request, principal: Reader) -> Any:
    backend = _backend(request)
    return {"segments": [describe(backend, s) for s in store.list_segments(backend)]}


@router.post("", status_code=201, summary="Create a segment (dynamic segments are evaluated at once)")
def create(request: Request, principal: Writer, body: SegmentIn) -> Any:
    backend = _backend(request)
    store.check_id(body.id)
    if store.get(backend, body.id) is not None:
        raise SegmentExists(f"segment `{body.id}` exists already; change it with PUT /api/v1/segments/{body.id}", field="id")
    now = _now()
    segment, warnings = store.save(
        backend, body.id, name=body.name, description=body.description, definition=body.definition, alerts=body.alerts, now=now
    )
    return exports.evaluate_saved(backend, segment, warnings, now, "created")


@router.get("/schema", summary="JSON Schema of the definition's JSON form (for the visual builder)")
def schema(principal: Reader) -> Any:
    from opencdp.segments.jsonform import json_schema

    return json_schema()


@router.post("/validate", summary="Check a definition: its canonical text, JSON tree and warnings")
def validate(request: Request, principal: Reader, body: DefinitionIn) -> Any:
    from opencdp.segments.jsonform import to_json

    validation = store.validate(_backend(request), body.definition)
    return {"valid": True, "text": validation.text, "tree": to_json(validation.tree), "warnings": validation.warnings}


@router.post("/preview", summary="Size and a sample of a draft segment's members (nothing is saved)")
def preview(request: Request, principal: Reader, body: PreviewIn) -> Any:
    return exports.preview(_backend(request), body.definition, params=body.params, sample=body.sample)


@router.post("/upload", status_code=201, summary="A segment from a CSV of identifiers (the CSV is the body)")
async def upload(
    request: Request,
    principal: Writer,
    id: Annotated[str, Query(description="the new segment's id")],
    identifier: Annotated[str, Query(description=f"what the CSV holds: {', '.join(exports.UPLOAD_KINDS)}")],
    name: str | None = None,
) -> Any:
    from starlette.concurrency import run_in_threadpool

    data = await request.body()
    if len(data) > _MAX_UPLOAD_BYTES:
        raise SegmentError(f"the CSV is {len(data):,} bytes; send at most {_MAX_UPLOAD_BYTES:,}", field="$")
    rules = Rules(default_region=request.app.state.settings.default_region)
    report = await run_in_threadpool(exports.upload, _backend(request), id, data, identifier, name=name, rules=rules)
    return principal.mask(report.to_dict())


@router.get("/{segment_id}", summary="A segment")
def get_one(request: Request, principal: Reader, segment_id: str) -> Any:
    backend = _backend(request)
    return describe(backend, require(backend, segment_id))


@router.put("/{segment_id}", summary="Change a segment (a new definition is evaluated at once)")
def update(request: Request, principal: Writer, segment_id: str, body: SegmentUpdate) -> Any:
    backend = _backend(request)
    old = require(backend, segment_id)
    if body.definition is not None and old.kind != store.DYNAMIC:
        raise SegmentError(f"segment `{segment_id}` is a {old.kind} list; only dynamic segments have a definition", field="definition")
    now = _now()
    segment, warnings = store.save(
        backend,
        segment_id,
        name=body.name if body.name is not None else old.name,
        description=body.description if body.description is not None else old.description,
        definition=body.definition if body.definition is not None else (old.definition or None),
        alerts=body.alerts if body.alerts is not None else [a.to_dict() for a in old.alerts],
        kind=old.kind,
        now=now,
    )
    if segment.definition != old.definition or old.status != store.ACTIVE:
        return exports.evaluate_saved(backend, segment, warnings, now, "definition changed")
    return {**describe(backend, segment), "warnings": warnings}


@router.delete("/{segment_id}", summary="Delete a segment; answers with the segments that referred to it (now broken)")
def delete(request: Request, principal: Writer, segment_id: str) -> Any:
    backend = _backend(request)
    now = _now()
    broken = store.delete(backend, segment_id, now)
    membership.clear(backend, segment_id, now)
    return {"deleted": segment_id, "broken": broken}


@router.get("/{segment_id}/members", summary="Members, by profile id (cursor = the last profile id of the page)")
def members(
    request: Request,
    principal: Reader,
    segment_id: str,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: Annotated[str | None, Query(description="the `next` value of the previous page")] = None,
) -> Any:
    return exports.members_page(_backend(request), segment_id, limit=limit, cursor=cursor)


@router.get("/{segment_id}/history", summary="Size over time")
def history(
    request: Request,
    principal: Reader,
    segment_id: str,
    since: Annotated[str | None, Query(description="ISO time, e.g. 2024-06-01T00:00:00Z")] = None,
) -> Any:
    backend = _backend(request)
    require(backend, segment_id)
    start = None
    if since:
        try:
            start = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise SegmentError(f"`since` is {since[:40]!r}; use an ISO time such as 2024-06-01T00:00:00Z", field="since") from None
        start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
    return {"segment_id": segment_id, "sizes": membership.history(backend, segment_id, start)}


@router.get("/{segment_id}/export", summary="All members as CSV, Parquet or JSON Lines (streamed)")
def export(
    request: Request,
    principal: Reader,
    segment_id: str,
    format: Annotated[str, Query(description=", ".join(exports.FORMATS))] = "csv",
    include: Annotated[str | None, Query(description="`identifiers`: add email, phone and user_id")] = None,
) -> StreamingResponse:
    extras = {part.strip() for part in (include or "").split(",")} - {""}
    if extras - {"identifiers"}:
        raise SegmentError(f"`include` {include!r} is not known; the only value is `identifiers`", field="include")
    stream = exports.export(
        _backend(request), segment_id, format, include_identifiers="identifiers" in extras, mask=principal.mask_pii
    )
    first = next(stream, b"")  # errors (unknown segment, parametric) answer before the stream starts

    def body() -> Any:
        yield first
        yield from stream

    headers = {"Content-Disposition": f'attachment; filename="{segment_id}.{format}"'}
    return StreamingResponse(body(), media_type=exports.MEDIA_TYPES[format], headers=headers)


@router.post("/{segment_id}/refresh", summary="Evaluate the segment over all profiles now")
def refresh(request: Request, principal: Writer, segment_id: str, body: RefreshIn | None = None) -> Any:
    backend = _backend(request)
    segment = require(backend, segment_id)
    if segment.status != store.ACTIVE:
        raise SegmentError(f"segment `{segment_id}` is broken: {segment.problem}; fix its definition with PUT", field="definition")
    if exports.parameters(segment):
        if not (body and body.params):
            names = ", ".join(f'"{p}": ...' for p in exports.parameters(segment))
            raise SegmentError(f"segment `{segment_id}` is parametric: pass {{\"params\": {{{names}}}}} to evaluate it", field="params")
        assert segment.tree is not None
        found = evaluate(backend, segment.tree, _now(), params=body.params, catalogue=store.catalogue(backend))
        return {"segment_id": segment_id, "parametric": True, "params": body.params, "size": len(found), "stored": False}
    change = membership.refresh(backend, segment, _now(), reason="manual refresh")
    return change_dict(change)


@router.post("/{segment_id}/snapshot", status_code=201, summary="Freeze the members into a new static segment")
def snapshot(request: Request, principal: Writer, segment_id: str, body: SnapshotIn) -> Any:
    return exports.snapshot(_backend(request), segment_id, body.id, name=body.name)
