"""JSON schemas of the Segment messages, for the OpenAPI document.

The handlers validate with ``opencdp.ingest.segment`` (per-event, with field-naming
errors); these schemas describe the same fields for people and client generators.
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time"}
_ID = {"anyOf": [{"type": "string"}, {"type": "number"}]}
_OBJECT = {"type": "object", "additionalProperties": True}

COMMON: dict[str, Any] = {
    "messageId": {"type": "string", "description": "Unique per message; retries with the same id are stored once."},
    "userId": {**_ID, "description": "Your id for the person. userId or anonymousId is required."},
    "anonymousId": {**_ID, "description": "A device or browser id for a person not yet known."},
    "timestamp": {**_TIME, "description": "When it happened; used as is when originalTimestamp/sentAt are absent."},
    "originalTimestamp": {**_TIME, "description": "When it happened on the client's clock."},
    "sentAt": {**_TIME, "description": "When the client sent it; timestamp = receivedAt - (sentAt - originalTimestamp)."},
    "context": {**_OBJECT, "description": "ip, userAgent, page, app, device, campaign, library, traits, externalIds..."},
    "integrations": _OBJECT,
    "writeKey": {"type": "string", "description": "Write key, if not sent as the Basic auth username."},
}

_SPECIFIC: dict[str, tuple[dict[str, Any], list[str]]] = {
    "identify": ({"traits": _OBJECT}, []),
    "track": ({"event": {"type": "string", "example": "Order Completed"}, "properties": _OBJECT}, ["event"]),
    "page": ({"name": {"type": "string"}, "category": {"type": "string"}, "properties": _OBJECT}, []),
    "screen": ({"name": {"type": "string"}, "properties": _OBJECT}, []),
    "group": ({"groupId": _ID, "traits": _OBJECT}, ["groupId"]),
    "alias": ({"previousId": _ID}, ["previousId", "userId"]),
}


def _message(kind: str, with_type: bool) -> dict[str, Any]:
    fields, required = _SPECIFIC[kind]
    properties = {**COMMON, **fields}
    if with_type:
        properties["type"] = {"const": kind}
    return {"type": "object", "title": kind.capitalize(), "properties": properties, "required": required}


MESSAGE_SCHEMAS: dict[str, dict[str, Any]] = {kind: _message(kind, False) for kind in _SPECIFIC}
BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "maxItems": 2500,
            "items": {"oneOf": [_message(kind, True) for kind in _SPECIFIC]},
        },
        "context": _OBJECT,
        "sentAt": _TIME,
        "writeKey": {"type": "string"},
    },
}

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
        "index": {"type": "integer"},
        "rejected": {"type": "array", "items": {"type": "object"}},
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Durably accepted. A batch with some bad events lists them under `rejected`."},
    400: {"description": "Invalid input; `detail` names the field and the fix", "content": {"application/json": {"schema": _ERROR}}},
    401: {"description": "Missing, unknown or revoked write key", "content": {"application/json": {"schema": _ERROR}}},
    413: {"description": "Event or batch over the size limit", "content": {"application/json": {"schema": _ERROR}}},
    429: {"description": "Overloaded: retry after `Retry-After` seconds"},
    503: {"description": "The store is behind: retry after `Retry-After` seconds"},
}
