"""The Segment-compatible tracking API: /v1/identify, track, page, screen, group, alias, batch.

Handlers are thin: read the body, find the write key, hand the messages to the
``Collector`` and wait until they are durable before answering 200.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from opencdp.errors import AuthError, TerminalError
from opencdp.ingest.collector import Collector, Submission
from opencdp.keys import KeyRing
from opencdp.web.body import BodyError, basic_auth_user, read_body
from opencdp.web.errors import JSONResponse, sdk_keys
from opencdp.web.schemas import BATCH_SCHEMA, MESSAGE_SCHEMAS, RESPONSES

router = APIRouter(tags=["tracking"])
_OK = b'{"success":true}'


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]
    writeKey: str | None = None
    sentAt: Any = None
    context: dict[str, Any] | None = None


class _KeyOnly(msgspec.Struct):
    writeKey: Any = None


_decode_batch = msgspec.json.Decoder(_Batch).decode
_decode_key = msgspec.json.Decoder(_KeyOnly).decode


def _collector(request: Request) -> Collector:
    collector: Collector = request.app.state.collector
    return collector


def _source(request: Request, body_key: Any) -> str:
    key = basic_auth_user(request)
    if key is None and isinstance(body_key, str):
        key = body_key
    if not key:
        raise AuthError(
            "missing write key: send it as the Basic auth username (empty password) or as `writeKey` in the body",
            field="writeKey",
        )
    keys: KeyRing = request.app.state.keys
    source = keys.source_of(key)
    if source is None:
        raise AuthError("the write key is unknown or revoked; create one with `opencdp keys create write <source>`", field="writeKey")
    return source


async def _unreadable(request: Request, error: TerminalError, body: bytes) -> Response:
    """Quarantine an unreadable request from an authenticated sender, then answer 4xx."""
    try:
        source = _source(request, None)
    except AuthError:
        source = None
    if source is not None:
        future = _collector(request).reject(
            source=f"api:{source}", error=error.code, detail=error.detail, payload=body, field=error.field
        )
        await asyncio.wrap_future(future)
    return JSONResponse(sdk_keys(error.to_dict()), status_code=error.status)


async def _answer(submission: Submission, *, single: bool) -> Response:
    if submission.durable is not None:
        await asyncio.wrap_future(submission.durable)
    if not submission.rejected:
        return Response(_OK, media_type="application/json")
    rejected = [r.to_dict() for r in submission.rejected]
    if single or submission.accepted == 0:
        first = rejected[0]
        body: dict[str, Any] = sdk_keys(dict(first))
        if not single:
            body["rejected"] = rejected
        return JSONResponse(body, status_code=400)
    return JSONResponse({"success": True, "accepted": submission.accepted, "rejected": rejected})


def _single(kind: str) -> Any:
    async def handler(request: Request) -> Response:
        settings = request.app.state.settings
        body = b""
        try:
            body = await read_body(request, settings.max_event_bytes)
            try:
                key = _decode_key(body).writeKey
            except msgspec.ValidationError:
                raise BodyError("the body must be a JSON object (one event)", field="$", code="invalid_event") from None
            except msgspec.DecodeError as error:
                raise _invalid_json(error) from None
        except BodyError as error:
            return await _unreadable(request, error, body)
        source = _source(request, key)
        submission = await _collector(request).submit([body], source=source, default_type=kind)
        return await _answer(submission, single=True)

    handler.__name__ = kind
    return handler


def _invalid_json(error: msgspec.DecodeError) -> BodyError:
    text = str(error)
    if "UTF-8" in text or "utf-8" in text:
        return BodyError("the body is not valid UTF-8; encode JSON as UTF-8", field="$", code="invalid_encoding")
    return BodyError(f"the body is not valid JSON: {text}", field="$", code="invalid_json")


for _kind in ("identify", "track", "page", "screen", "group", "alias"):
    router.add_api_route(
        f"/v1/{_kind}",
        _single(_kind),
        methods=["POST"],
        summary=f"Segment {_kind} call",
        responses=RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": MESSAGE_SCHEMAS[_kind]}}}},
    )


@router.post(
    "/v1/batch",
    summary="Several calls of any type in one request (up to 2500 events, 500 KB)",
    responses=RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": BATCH_SCHEMA}}}},
)
async def batch(request: Request) -> Response:
    settings = request.app.state.settings
    body = b""
    try:
        body = await read_body(request, settings.max_batch_bytes)
        try:
            parsed = _decode_batch(body)
        except msgspec.ValidationError as error:
            raise BodyError(f"invalid batch: {error}; send {{\"batch\": [ ...events ]}}", field="batch", code="invalid_batch") from None
        except msgspec.DecodeError as error:
            raise _invalid_json(error) from None
        if not parsed.batch:
            raise BodyError("`batch` is empty; send at least one event", field="batch", code="invalid_batch")
        if len(parsed.batch) > settings.max_batch_events:
            raise BodyError(
                f"`batch` has {len(parsed.batch)} events; the limit is {settings.max_batch_events} — split it",
                field="batch",
                code="too_many_events",
            )
    except BodyError as error:
        return await _unreadable(request, error, body)
    source = _source(request, parsed.writeKey)
    submission = await _collector(request).submit(
        parsed.batch, source=source, sent_at=parsed.sentAt, context=parsed.context, body=body
    )
    return await _answer(submission, single=False)


# RudderStack's and Segment's HTTP import endpoint take the batch shape too.
router.add_api_route("/v1/import", batch, methods=["POST"], include_in_schema=False)


@router.get("/v1/projects/{write_key}/settings", summary="Source settings for analytics.js")
async def project_settings(write_key: str, request: Request) -> Response:
    """What Segment's browser SDK fetches at start-up: send everything to this server."""
    keys: KeyRing = request.app.state.keys
    if keys.source_of(write_key) is None:
        raise AuthError("the write key is unknown or revoked", field="writeKey")
    host = request.url.netloc
    return JSONResponse(
        {
            "integrations": {"Segment.io": {"apiKey": write_key, "apiHost": f"{host}/v1", "protocol": request.url.scheme}},
            "plan": {"track": {"__default": {"enabled": True}}, "identify": {"__default": {"enabled": True}}},
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }
    )
