"""Validate and normalise Segment-spec messages into rows of the ``events`` table.

One function, ``normalize``, is shared by the tracking API and the importers, so
an event means the same whatever door it came in by. Errors name the field and
say how to fix it; a rejected message never affects its neighbours.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from opencdp.errors import TerminalError

TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_MAX_ID_LENGTH = 512
# What every store can hold: 0001-01-01 .. 9999-12-31 (ISO strings cannot leave it; numbers can).
_MIN_MS = -62_135_596_800_000
_MAX_MS = 253_402_300_799_999

_json_encode = msgspec.json.Encoder().encode

# Segment e-commerce spec property -> typed events column, with the converter.
_NUMBER = "number"
_TEXT = "text"
TYPED_PROPERTIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("order_id", ("order_id", "orderId"), _TEXT),
    ("revenue", ("revenue",), _NUMBER),
    ("total", ("total", "value"), _NUMBER),
    ("currency", ("currency",), _TEXT),
    ("product_id", ("product_id", "productId"), _TEXT),
    ("category", ("category",), _TEXT),
    ("price", ("price",), _NUMBER),
    ("quantity", ("quantity",), _NUMBER),
    ("store_id", ("store_id", "storeId"), _TEXT),
)
LINE_PROPERTIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("product_id", ("product_id", "productId", "id"), _TEXT),
    ("sku", ("sku",), _TEXT),
    ("name", ("name",), _TEXT),
    ("category", ("category",), _TEXT),
    ("brand", ("brand",), _TEXT),
    ("price", ("price",), _NUMBER),
    ("quantity", ("quantity",), _NUMBER),
    ("discount", ("discount",), _NUMBER),
)

_APP_LIBRARIES = ("analytics-ios", "analytics-android", "analytics-react-native", "analytics-flutter", "analytics-kotlin", "analytics-swift")
_WEB_LIBRARIES = ("analytics.js", "analytics-next", "rudder-sdk-js", "analytics-js")


class Rejected(TerminalError):
    """A message failed validation; ``field`` names the offending field."""

    code = "invalid_event"


@dataclass(frozen=True)
class Envelope:
    """Facts about the request a message arrived in."""

    received_at_ms: int
    source: str
    max_future_ms: int = 24 * 3600 * 1000
    default_type: str | None = None
    sent_at: Any = None

    @functools.cached_property
    def sent_at_ms(self) -> int | None:
        """The request-level ``sentAt``, parsed once for all the messages of a batch."""
        return to_ms(self.sent_at, "sentAt")


def to_ms(value: Any, field: str) -> int | None:
    """Parse an ISO 8601 string (or epoch seconds/milliseconds number) into epoch ms, UTC."""
    if value is None:
        return None
    if type(value) is str:  # the common case first
        return _parse_iso(value, field)
    if isinstance(value, bool):
        raise Rejected(f"`{field}` must be an ISO 8601 date-time string, got a boolean", field=field)
    if isinstance(value, int | float):
        if not _finite(value):
            raise Rejected(f"`{field}` must be a finite number", field=field)
        # Heuristic as in common SDKs: values above 1e11 are milliseconds.
        ms = int(value if abs(value) > 1e11 else value * 1000)
        if not _MIN_MS <= ms <= _MAX_MS:
            # Every timestamp is stored, and the store cannot hold these: refuse the event
            # here rather than have it fail the loader (and everything behind it) later.
            raise Rejected(
                f"`{field}` is out of range ({value!r} is not a time in the years 1-9999); send an ISO 8601 date-time",
                field=field,
            )
        return ms
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(stamp.timestamp() * 1000)
    if not isinstance(value, str):
        raise Rejected(f"`{field}` must be an ISO 8601 date-time string, got {_kind(value)}", field=field)
    return _parse_iso(value, field)


def _parse_iso(value: str, field: str) -> int:
    text = value.strip()
    try:
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Rejected(
            f"`{field}` is not an ISO 8601 date-time: {value[:40]!r}; use e.g. 2024-05-01T12:30:00Z",
            field=field,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def _finite(value: float) -> bool:
    """False for NaN, infinities, and integers too large for a float (JSON allows them)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _identifier(message: Mapping[str, Any], field: str) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    if type(value) is str:  # the common case first
        if len(value) <= _MAX_ID_LENGTH and value and not value[0].isspace() and not value[-1].isspace():
            return value
    elif isinstance(value, bool) or not isinstance(value, str | int):
        raise Rejected(f"`{field}` must be a string or a number, got {_kind(value)}", field=field)
    text = str(value).strip()
    if len(text) > _MAX_ID_LENGTH:
        raise Rejected(f"`{field}` is longer than {_MAX_ID_LENGTH} characters", field=field)
    return text or None


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int:  # the common case first (bool is not int here)
        return float(value) if _finite(value) else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if _finite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.replace(",", ".").strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _text(value: Any) -> str | None:
    if type(value) is str:  # the common case first
        return value
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _extract(source: Mapping[str, Any], spec: tuple[tuple[str, tuple[str, ...], str], ...], row: dict[str, Any]) -> None:
    for column, names, kind in spec:
        for name in names:
            if name in source:
                value = source[name]
                if value is None:
                    row[column] = None
                else:
                    row[column] = _number(value) if kind == _NUMBER else _text(value)
                break
        else:
            row[column] = None


def channel_of(message: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """web / app / server, from what the SDK says about itself."""
    explicit = message.get("channel") or context.get("channel")
    if isinstance(explicit, str) and explicit:
        return explicit.lower()
    library = context.get("library")
    name = library.get("name", "") if isinstance(library, dict) else ""
    if isinstance(name, str):
        if name.startswith(_APP_LIBRARIES) or "app" in context:
            return "app"
        if name.startswith(_WEB_LIBRARIES) or "page" in context or "userAgent" in context:
            return "web"
    return "server"


def normalize(message: Any, envelope: Envelope) -> dict[str, Any]:
    """Validate one message; return an ``events`` row (timestamps as epoch ms).

    The row carries the exploded ``products[]`` under the key ``_lines``.
    """
    if not isinstance(message, dict):
        raise Rejected(f"each event must be a JSON object, got {_kind(message)}", field="$")
    kind = message.get("type") or envelope.default_type
    if kind is None:
        raise Rejected("`type` is required in a batch item: one of " + ", ".join(sorted(TYPES)), field="type")
    if not isinstance(kind, str) or kind.lower() not in TYPES:
        raise Rejected(f"`type` must be one of {', '.join(sorted(TYPES))}, got {str(kind)[:40]!r}", field="type")
    kind = kind.lower()
    if envelope.default_type is not None and kind != envelope.default_type:
        raise Rejected(
            f"`type` is {kind!r} but this endpoint takes {envelope.default_type!r} calls; send it to /v1/{kind} or /v1/batch",
            field="type",
        )

    user_id = _identifier(message, "userId")
    anonymous_id = _identifier(message, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise Rejected("`userId` or `anonymousId` is required (neither was given)", field="userId")

    objects: dict[str, dict[str, Any] | None] = {}
    for field in _OBJECT_FIELDS:
        value = message.get(field)
        if value is not None and not isinstance(value, dict):
            raise Rejected(f"`{field}` must be a JSON object, got {_kind(value)}", field=field)
        objects[field] = value
    context = objects["context"] or {}
    properties = objects["properties"] or {}
    category = message.get("category")
    if kind in ("page", "screen") and isinstance(category, str) and category and "category" not in properties:
        # Segment's page/screen `category`: kept in properties, as analytics.js does.
        properties = objects["properties"] = {**properties, "category": category}
    # Segment's identify and group carry traits at the top level; older SDKs nest them in context.
    traits = objects["traits"] if objects["traits"] is not None else context.get("traits")
    if traits is not None and not isinstance(traits, dict):
        raise Rejected(f"`context.traits` must be a JSON object, got {_kind(traits)}", field="context.traits")

    event = ""
    if kind == "track":
        raw_event = message.get("event")
        if not isinstance(raw_event, str) or not raw_event.strip():
            raise Rejected("`event` is required for track calls: a non-empty string such as 'Order Completed'", field="event")
        event = raw_event.strip()
        if len(event) > 200:
            raise Rejected("`event` is longer than 200 characters", field="event")
    group_id = _identifier(message, "groupId")
    if kind == "group" and group_id is None:
        raise Rejected("`groupId` is required for group calls", field="groupId")
    previous_id = _identifier(message, "previousId")
    if kind == "alias":
        if previous_id is None:
            raise Rejected("`previousId` is required for alias calls", field="previousId")
        if user_id is None:
            raise Rejected("`userId` is required for alias calls", field="userId")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise Rejected(f"`name` must be a string, got {_kind(name)}", field="name")

    message_id = _identifier(message, "messageId") or f"ocdp-{uuid.uuid4()}"
    received = envelope.received_at_ms
    original = to_ms(message.get("originalTimestamp"), "originalTimestamp")
    sent = to_ms(message["sentAt"], "sentAt") if "sentAt" in message else envelope.sent_at_ms
    explicit = to_ms(message.get("timestamp"), "timestamp")
    if original is not None and sent is not None:
        timestamp = received - (sent - original)  # correct the client's clock skew
    elif explicit is not None:
        timestamp = explicit
    elif original is not None:
        timestamp = original
    else:
        timestamp = received
    if timestamp > received + envelope.max_future_ms:
        ahead = (timestamp - received) / 3_600_000
        raise Rejected(
            f"`timestamp` is {ahead:.1f} hours in the future; send UTC times with a zone (e.g. ...Z) from a correct clock",
            field="timestamp",
        )
    if timestamp < -2_208_988_800_000:  # before 1900: a unit or parsing mistake upstream
        raise Rejected("`timestamp` is before 1900; send ISO 8601 date-times", field="timestamp")

    row: dict[str, Any] = {
        "message_id": message_id,
        "type": kind,
        "event": event,
        "name": name,
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent,
        "received_at": received,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "group_id": group_id,
        "previous_id": previous_id,
        "source": envelope.source,
        "channel": channel_of(message, context),
        "properties": _json(objects["properties"]),
        "traits": _json(traits),
        "context": _json(objects["context"]),
        "integrations": _json(objects["integrations"]),
    }
    _extract(properties, TYPED_PROPERTIES, row)
    row["_lines"] = _lines(properties, row)
    return row


def _json(value: dict[str, Any] | None) -> str | None:
    if not value:
        return None
    return _json_encode(value).decode()


def _lines(properties: Mapping[str, Any], row: Mapping[str, Any]) -> list[dict[str, Any]]:
    products = properties.get("products")
    if not isinstance(products, list) or row["type"] != "track":
        return []
    lines = []
    for number, product in enumerate(products):
        if not isinstance(product, dict):
            continue  # kept verbatim in properties; only objects describe a line
        line: dict[str, Any] = {"line_no": number}
        _extract(product, LINE_PROPERTIES, line)
        lines.append(line)
    return lines
