"""Consent API: a profile's consent per channel and topic, changes to it, and the suppression list.

Consent is derived from events (``opencdp.consent``), so a change made here is a
``Consent Updated`` track event sent through the collector like any other: durable
in the write-ahead log before the answer (202), in the profile's timeline, and
visible in ``GET .../consents`` once the loader has stored it (within
``loader_interval_s``). The suppression list is a table changed directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Annotated, Any, TypeVar

import msgspec
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field, ValidationError
from sqlglot import exp

from opencdp.consent import suppressions
from opencdp.consent.model import (
    CHANNELS,
    CONSENT_UPDATED,
    DEFAULT_TOPIC,
    UNKNOWN,
    ConsentError,
    Status,
    channel_of,
    status_of,
    topic_of,
)
from opencdp.consent.store import canonical_ids, history
from opencdp.errors import TerminalError
from opencdp.identity.identifiers import ANONYMOUS_ID, USER_ID
from opencdp.ingest.collector import Collector
from opencdp.privacy.mask import mask_email, mask_phone
from opencdp.storage.base import Backend
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1", tags=["consent"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]
EVENT_SOURCE = "admin-api"
"""The ``source`` of the events this API writes."""
_MAX_CHANGES = 100
_MAX_SUPPRESSIONS = 1000
_encode = msgspec.json.Encoder().encode


class ProfileNotFound(TerminalError):
    status = 404
    code = "profile_not_found"


class NotSuppressed(TerminalError):
    status = 404
    code = "not_suppressed"


class NoIdentity(TerminalError):
    status = 409
    code = "profile_without_id"


class ConsentIn(BaseModel):
    channel: str = Field(description=f"one of {', '.join(CHANNELS)}", examples=["email"])
    topic: str | None = Field(None, description=f"a lowercase slug; default {DEFAULT_TOPIC!r}", examples=["news"])
    status: Any = Field(
        description="opted_in, pending (double opt-in sent) or opted_out; or true / false",
        examples=["opted_in"],
        json_schema_extra={"anyOf": [{"type": "string", "enum": [s.value for s in Status]}, {"type": "boolean"}]},
    )  # checked by status_of, whose message names the field and the choices
    source: str | None = Field(None, max_length=200, description="where the person gave it, e.g. checkout_form")
    evidence: dict[str, Any] | None = Field(None, description="proof kept with the change (form, wording, IP)")


class SuppressionIn(BaseModel):
    channel: str = Field(description=f"one of {', '.join(CHANNELS)}", examples=["email"])
    address: str = Field(description="e-mail, phone (sms, whatsapp, viber) or token / chat id", examples=["anna@example.ru"])
    reason: str = Field("manual", description="hard_bounce, complaint, manual or unsubscribed_all")
    source: str | None = Field(None, max_length=200, description="who reports it; default: the admin key's name")


_M = TypeVar("_M", bound=BaseModel)


def _validated(model: type[_M], item: Any, prefix: str) -> _M:
    """``item`` read as ``model``; a bad one raises ``ConsentError`` naming ``prefix`` + the field."""
    try:
        return model.model_validate(item)
    except ValidationError as error:
        first = error.errors()[0]
        where = (prefix + ".".join(str(part) for part in first["loc"])).rstrip(".") or "$"
        raise ConsentError(f"`{where}`: {first['msg']}", field=where) from None


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _canonical(backend: Backend, profile_id: str) -> str:
    canonical = canonical_ids(backend, [profile_id]).get(profile_id)
    if canonical is None:
        raise ProfileNotFound(
            f"there is no profile {profile_id[:80]!r}; find one with GET /api/v1/profiles?email=...", field="profile_id"
        )
    return canonical


# -- consents --------------------------------------------------------------------
@router.get("/profiles/{profile_id}/consents", summary="A profile's consent per channel and topic")
def get_consents(request: Request, principal: Reader, profile_id: str) -> Any:
    backend = _backend(request)
    canonical = _canonical(backend, profile_id)
    found = history(backend, [canonical])[canonical]
    consents = [change.to_dict() for change in found.current()]
    ignored = [{"message_id": i.message_id, "field": i.field, "reason": i.reason} for i in found.ignored]
    return principal.mask({"profile_id": canonical, "default": UNKNOWN, "consents": consents, "ignored": ignored})


@router.put(
    "/profiles/{profile_id}/consents",
    status_code=202,
    summary="Record consent changes (as events)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "array", "items": ConsentIn.model_json_schema(), "maxItems": _MAX_CHANGES,
        "example": [{"channel": "email", "topic": "news", "status": "opted_in", "source": "footer_form"}],
    }}}}},
)
async def put_consents(request: Request, principal: Writer, profile_id: str, body: Annotated[Any, Body()]) -> Any:
    # Read by hand (as below for suppressions) so that errors name fields as `0.status`.
    if not isinstance(body, list):
        raise ConsentError('send a JSON list of changes: [{"channel": "email", "status": "opted_in"}, ...]', field="$")
    if not body:
        raise ConsentError('the body is an empty list; send [{"channel": "email", "status": "opted_in"}, ...]', field="$")
    if len(body) > _MAX_CHANGES:
        raise ConsentError(f"the body has {len(body)} changes; send at most {_MAX_CHANGES} per request", field="$")
    items = _checked([_validated(ConsentIn, item, f"{index}.") for index, item in enumerate(body)])
    backend = _backend(request)
    canonical = await asyncio.to_thread(_canonical, backend, profile_id)
    kind, value = await asyncio.to_thread(_sender, backend, canonical)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    limit = request.app.state.settings.max_event_bytes
    messages: list[bytes] = []
    recorded: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        message_id = f"consent-{uuid.uuid4()}"
        raw = _encode(_event(item, (kind, value), message_id, now, principal))
        if len(raw) > limit:
            raise ConsentError(
                f"change {index} is {len(raw)} bytes as an event; the limit is {limit}: shorten `evidence`",
                field=f"{index}.evidence",
            )
        messages.append(raw)
        recorded.append({
            "channel": item["channel"], "topic": item["topic"], "status": item["status"],
            "source": item["source"] or EVENT_SOURCE, "message_id": message_id, "at": now,
        })
    collector: Collector = request.app.state.collector
    submission = await collector.submit(messages, source=EVENT_SOURCE)
    if submission.durable is not None:
        await asyncio.wrap_future(submission.durable)
    if submission.rejected:  # not expected: the events are built here
        first = submission.rejected[0]
        raise TerminalError(f"change {first.index} was not accepted: {first.detail}", field=f"{first.index}.{first.field or '$'}",
                            code=first.error)
    return principal.mask({"profile_id": canonical, kind: value, "recorded": recorded})


def _event(item: dict[str, Any], sender: tuple[str, str], message_id: str, now: str, principal: Principal) -> dict[str, Any]:
    """The ``Consent Updated`` track call recording one checked change."""
    properties = {k: v for k, v in item.items() if v is not None}
    properties["evidence"] = {**(item["evidence"] or {}), "recorded_by": principal.key_id}
    kind, value = sender
    return {
        "type": "track",
        "event": CONSENT_UPDATED,
        "userId" if kind == USER_ID else "anonymousId": value,
        "messageId": message_id,
        "timestamp": now,
        "properties": properties,
    }


def _checked(changes: list[ConsentIn]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    for index, change in enumerate(changes):
        channel = channel_of(change.channel, f"{index}.channel")
        topic = topic_of(change.topic, f"{index}.topic")
        status: Status = status_of(change.status, f"{index}.status")
        if (channel, topic) in seen:
            raise ConsentError(
                f"changes {seen[(channel, topic)]} and {index} are both for {channel} / {topic}; send one per channel and topic",
                field=f"{index}.topic",
            )
        seen[(channel, topic)] = index
        source = change.source.strip() if change.source else None
        items.append({"channel": channel, "topic": topic, "status": status.value, "source": source or None,
                      "evidence": change.evidence})
    return items


def _sender(backend: Backend, canonical: str) -> tuple[str, str]:
    """The id the profile's consent events are sent with: its user id, else its oldest anonymous id."""
    members = exp.select("profile_id").from_(backend.table_ref(PROFILE_MAP)).where(
        exp.column("canonical_id").eq(exp.Literal.string(canonical))
    )
    query = (
        exp.select("kind", "value")
        .from_(backend.table_ref(IDENTITIES))
        .where(
            exp.and_(
                exp.column("profile_id").isin(query=members),
                exp.column("kind").isin(exp.Literal.string(USER_ID), exp.Literal.string(ANONYMOUS_ID)),
                exp.column("deleted").not_(),
            )
        )
    )
    rows = backend.select(query).to_pylist()
    rows.sort(key=lambda r: (r["kind"] != USER_ID, r["value"]))
    if not rows:
        raise NoIdentity(
            f"profile {canonical!r} has no user id or anonymous id left to send a consent event for; "
            "send an identify call for the person first",
            field="profile_id",
        )
    return str(rows[0]["kind"]), str(rows[0]["value"])


# -- suppressions ------------------------------------------------------------------
def _region(request: Request) -> str:
    return str(request.app.state.settings.default_region)


def _shown(principal: Principal, entry: suppressions.Suppression) -> dict[str, Any]:
    body = entry.to_dict()
    if principal.mask_pii:
        if entry.channel == "email":
            body["address"] = mask_email(entry.address)
        elif entry.channel in ("sms", "whatsapp", "viber"):
            body["address"] = mask_phone(entry.address)
    return body


@router.get("/suppressions", summary="The suppression list, by channel and address")
def list_suppressions(
    request: Request,
    principal: Reader,
    channel: str | None = None,
    address: Annotated[str | None, Query(description="with `channel`: is this address suppressed?")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
) -> Any:
    cursor = None
    if after is not None:
        cursor_channel, colon, cursor_address = after.partition(":")
        if not colon or cursor_channel not in CHANNELS:
            raise ConsentError("`after` is not a cursor from a previous page; pass its `next` value as is", field="after")
        cursor = (cursor_channel, cursor_address)
    rows = suppressions.list_suppressions(
        _backend(request), channel=channel, address=address, after=cursor, limit=limit + 1, region=_region(request)
    )
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if page else None
    return {
        "suppressions": [_shown(principal, entry) for entry in page],
        "next": f"{last.channel}:{last.address}" if more and last else None,
    }


_ENTRY_SCHEMA = SuppressionIn.model_json_schema()


@router.post(
    "/suppressions",
    status_code=201,
    summary="Add addresses to the suppression list (one entry, or a list of up to 1000)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "anyOf": [_ENTRY_SCHEMA, {"type": "array", "items": _ENTRY_SCHEMA, "maxItems": _MAX_SUPPRESSIONS}],
        "example": {"channel": "email", "address": "anna@example.ru", "reason": "hard_bounce"},
    }}}}},
)
def add_suppressions(request: Request, principal: Writer, body: Annotated[Any, Body()]) -> Any:
    # Read by hand: a union body type would name fields after the model (`SuppressionIn.address`).
    if isinstance(body, dict):
        raw, prefixes = [body], [""]
    elif isinstance(body, list):
        raw, prefixes = body, [f"{index}." for index in range(len(body))]
    else:
        raise ConsentError('send {"channel": ..., "address": ..., "reason"?: ...} or a list of them', field="$")
    if not raw:
        raise ConsentError('the body is an empty list; send {"channel": ..., "address": ...} or a list of them', field="$")
    if len(raw) > _MAX_SUPPRESSIONS:
        raise ConsentError(f"the body has {len(raw)} entries; send at most {_MAX_SUPPRESSIONS} per request", field="$")
    region = _region(request)
    checked = []
    for prefix, item in zip(prefixes, raw, strict=True):  # all checked before any is written
        entry = _validated(SuppressionIn, item, prefix)
        channel = channel_of(entry.channel, f"{prefix}channel")
        address = suppressions.address_of(channel, entry.address, region=region, field=f"{prefix}address")
        reason = suppressions.reason_of(entry.reason, f"{prefix}reason")
        checked.append((channel, address, reason, entry.source or f"admin:{principal.name}"))
    backend = _backend(request)
    added = [suppressions.add(backend, c, a, r, source=s, region=region) for c, a, r, s in checked]
    return {"suppressions": [_shown(principal, entry) for entry in added]}


@router.delete("/suppressions/{channel}/{address:path}", summary="Take an address off the suppression list")
def remove_suppression(request: Request, principal: Writer, channel: str, address: str) -> Any:
    region = _region(request)
    channel = channel_of(channel)
    normalised = suppressions.address_of(channel, address, region=region)
    removed = suppressions.remove(_backend(request), channel, normalised, region=region)
    if removed is None:
        raise NotSuppressed(f"{channel} address {address[:80]!r} is not on the suppression list", field="address")
    return {"removed": _shown(principal, removed)}
