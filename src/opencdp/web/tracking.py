"""The Segment-compatible tracking API: /v1/identify, track, page, screen, group, alias, batch.

Handlers are thin: read the body, find the write key, hand the messages to the
``Collector`` and wait until they are durable before answering 200. ``DirectRoutes``
serves them ahead of FastAPI's router (the routes below stay for the OpenAPI docs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from opencdp.errors import AuthError, OpenCDPError, TerminalError
from opencdp.ingest.collector import Collector, Submission
from opencdp.keys import KeyRing
from opencdp.web.body import BodyError, basic_auth_user, read_body
from opencdp.web.errors import JSONResponse, domain_response, sdk_keys
from opencdp.web.schemas import BATCH_SCHEMA, MESSAGE_SCHEMAS, RESPONSES

router = APIRouter(tags=["tracking"])
_OK = b'{"success":true}'
_OK_RESPONSE = Response(_OK, media_type="application/json")  # sent as is; CORS adds its headers to a copy
Handler = Callable[[Request], Awaitable[Response]]
_DIRECT: dict[str, Handler] = {}  # path -> handler, for DirectRoutes


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
        await submission.durable
    if not submission.rejected:
        return _OK_RESPONSE
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
    _DIRECT[f"/v1/{_kind}"] = _single(_kind)
    router.add_api_route(
        f"/v1/{_kind}",
        _DIRECT[f"/v1/{_kind}"],
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
_DIRECT["/v1/batch"] = _DIRECT["/v1/import"] = batch


class DirectRoutes:
    """ASGI middleware: serve the tracking POSTs straight from their handlers, ahead of FastAPI's router.

    For a one-event ``/v1/track`` FastAPI's route matching, dependency resolution and
    telemetry cost the event loop more than the handler does (measured in-process:
    ~0.4 of ~0.9 ms of CPU per request), and at 1,000 requests/s that CPU is what the
    p99 is made of. The handlers take the plain ``Request`` and need none of it. A
    domain error gets the answer the app's exception handlers give; anything else
    propagates as it would from the router (a 500).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = _DIRECT.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await handler(Request(scope, receive, send))
        except OpenCDPError as error:
            response = domain_response(error)
        await response(scope, receive, send)


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
