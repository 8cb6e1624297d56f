"""The common shape of a Segment message, normalised without building Python dicts.

``normalize_json`` decodes a message straight into typed msgspec structs (in C):
the objects that are stored as JSON (``properties``, ``traits``, ``context``,
``integrations``) stay the raw bytes they arrived as, and only the few fields the
``events`` row needs are read out of them. It gives exactly the row
``segment.normalize`` gives (checked by a property test); anything unusual (a
wrong type, an identifier with spaces, a message the general path would reject or
repair) is handed to ``segment.normalize``, which owns every error message.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from opencdp.ingest.segment import (
    _APP_LIBRARIES,
    _MAX_ID_LENGTH,
    _NUMBER,
    _WEB_LIBRARIES,
    LINE_PROPERTIES,
    TYPED_PROPERTIES,
    TYPES,
    Envelope,
    _number,
    _text,
    to_ms,
)

_NULL = Raw(b"null")


class _Library(Struct):
    name: str = ""


class _Context(Struct):
    library: _Library | None = None
    channel: str | None = None
    traits: Raw = _NULL
    app: Raw | UnsetType = UNSET
    page: Raw | UnsetType = UNSET
    userAgent: Raw | UnsetType = UNSET


class _Line(Struct):
    product_id: Any = UNSET
    productId: Any = UNSET
    id: Any = UNSET
    sku: Any = UNSET
    name: Any = UNSET
    category: Any = UNSET
    brand: Any = UNSET
    price: Any = UNSET
    quantity: Any = UNSET
    discount: Any = UNSET


class _Properties(Struct):
    order_id: Any = UNSET
    orderId: Any = UNSET
    revenue: Any = UNSET
    total: Any = UNSET
    value: Any = UNSET
    currency: Any = UNSET
    product_id: Any = UNSET
    productId: Any = UNSET
    category: Any = UNSET
    price: Any = UNSET
    quantity: Any = UNSET
    store_id: Any = UNSET
    storeId: Any = UNSET
    products: list[_Line] | UnsetType = UNSET


class _Message(Struct):
    type: str | None = None
    event: str | None = None
    name: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    groupId: str | None = None
    previousId: str | None = None
    messageId: str | None = None
    channel: str | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | UnsetType | None = UNSET
    category: Raw | UnsetType = UNSET
    properties: Raw = _NULL
    traits: Raw = _NULL
    context: Raw = _NULL
    integrations: Raw = _NULL


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_context = msgspec.json.Decoder(_Context).decode
_decode_properties = msgspec.json.Decoder(_Properties).decode


class _General(Exception):
    """Not the common shape: normalise this message the general way."""


def normalize_json(raw: bytes, envelope: Envelope) -> dict[str, Any] | None:
    """The ``events`` row of one JSON message, or None to use ``segment.normalize``."""
    try:
        return _normalize(raw.decode(), envelope)
    except (
        Exception
    ):  # _General, a msgspec or UTF-8 error, a Rejected timestamp: the general path words it
        return None


def _identifier(value: str | None) -> str | None:
    if value is None or (
        value
        and len(value) <= _MAX_ID_LENGTH
        and not value[0].isspace()
        and not value[-1].isspace()
    ):
        return value
    raise _General


def _object(raw: Raw) -> str | None:
    """A stored JSON object as text, None when absent, null or empty."""
    data = bytes(raw)
    if data[:1] != b"{":
        if data == b"null":
            return None
        raise _General  # not an object: the general path rejects it
    if data[1:].lstrip()[:1] == b"}":
        return None
    return data.decode()


def _normalize(text: str, envelope: Envelope) -> dict[str, Any]:
    message = _decode_message(text)
    kind = message.type or envelope.default_type
    if (
        kind is None
        or kind not in TYPES
        or (envelope.default_type is not None and kind != envelope.default_type)
    ):
        raise _General
    user_id = _identifier(message.userId)
    anonymous_id = _identifier(message.anonymousId)
    if user_id is None and anonymous_id is None:
        raise _General
    if message.category is not UNSET and kind in ("page", "screen"):
        raise _General  # page/screen `category` moves into properties
    event = ""
    if kind == "track":
        event = (message.event or "").strip()
        if not event or len(event) > 200:
            raise _General
    group_id = _identifier(message.groupId)
    previous_id = _identifier(message.previousId)
    if (kind == "group" and group_id is None) or (
        kind == "alias" and (previous_id is None or user_id is None)
    ):
        raise _General

    properties = _object(message.properties)
    context_text = _object(message.context)
    context = _decode_context(context_text) if context_text is not None else _Context()
    traits = (
        _object(message.traits) if bytes(message.traits) != b"null" else _object(context.traits)
    )

    received = envelope.received_at_ms
    original = to_ms(message.originalTimestamp, "originalTimestamp")
    sent = envelope.sent_at_ms if message.sentAt is UNSET else to_ms(message.sentAt, "sentAt")
    explicit = to_ms(message.timestamp, "timestamp")
    if original is not None and sent is not None:
        timestamp = received - (sent - original)
    elif explicit is not None:
        timestamp = explicit
    elif original is not None:
        timestamp = original
    else:
        timestamp = received
    if timestamp > received + envelope.max_future_ms or timestamp < -2_208_988_800_000:
        raise _General

    row: dict[str, Any] = {
        "message_id": _identifier(message.messageId) or f"ocdp-{uuid.uuid4()}",
        "type": kind,
        "event": event,
        "name": message.name,
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent,
        "received_at": received,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "group_id": group_id,
        "previous_id": previous_id,
        "source": envelope.source,
        "channel": _channel(message, context),
        "properties": properties,
        "traits": traits,
        "context": context_text,
        "integrations": _object(message.integrations),
    }
    lines: list[dict[str, Any]] = []
    if properties is not None:
        parsed = _decode_properties(properties)
        _extract(parsed, TYPED_PROPERTIES, row)
        if kind == "track" and parsed.products is not UNSET:
            for number, product in enumerate(parsed.products):
                line: dict[str, Any] = {"line_no": number}
                _extract(product, LINE_PROPERTIES, line)
                lines.append(line)
    else:
        for column, _, _ in TYPED_PROPERTIES:
            row[column] = None
    row["_lines"] = lines
    return row


def _channel(message: _Message, context: _Context) -> str:
    explicit = message.channel or context.channel
    if explicit:
        return explicit.lower()
    name = context.library.name if context.library is not None else ""
    if name.startswith(_APP_LIBRARIES) or context.app is not UNSET:
        return "app"
    if (
        name.startswith(_WEB_LIBRARIES)
        or context.page is not UNSET
        or context.userAgent is not UNSET
    ):
        return "web"
    return "server"


def _extract(
    source: Struct, spec: tuple[tuple[str, tuple[str, ...], str], ...], row: dict[str, Any]
) -> None:
    for column, names, kind in spec:
        for name in names:
            value = getattr(source, name)
            if value is not UNSET:
                row[column] = (
                    None if value is None else _number(value) if kind == _NUMBER else _text(value)
                )
                break
        else:
            row[column] = None
