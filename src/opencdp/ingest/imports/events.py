"""Events: Segment messages, validated by ``segment.normalize`` exactly as the tracking API does.

Two shapes are read: nested JSON (one Segment message per line, camelCase keys,
as Segment sends and exports them) and flat rows (CSV, Parquet, or JSON lines
with snake_case keys) with columns type, message_id, timestamp, user_id,
anonymous_id, event, name, properties, traits, context, where the object columns
hold JSON text. A message without an id gets one derived from its content, so
re-importing the file adds nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from opencdp.ingest.imports.build import content_id
from opencdp.ingest.imports.context import Context
from opencdp.ingest.imports.reader import Chunk
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, Rejected, normalize, to_ms

# Flat column -> Segment key.
_CAMEL = {
    "message_id": "messageId",
    "original_timestamp": "originalTimestamp",
    "sent_at": "sentAt",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "previous_id": "previousId",
}
_SNAKE = {camel: snake for snake, camel in _CAMEL.items()}
_OBJECTS = ("properties", "traits", "context", "integrations")
_decode = msgspec.json.Decoder().decode


class EventsImporter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.envelope = Envelope(received_at_ms=ctx.received_ms, source=ctx.source, max_future_ms=ctx.max_future_ms)

    def process(self, chunk: Chunk) -> None:
        ctx = self.ctx
        if chunk.records is not None:
            items: list[Any] = chunk.records
            columns: dict[str, str] = {}
        else:
            assert chunk.table is not None and ctx.resolved is not None
            resolved = ctx.resolved
            columns = {target: resolved.column(target) for target in resolved.sources}
            # Flat rows keyed by target, empty cells dropped; defaults fill the gaps.
            rename = {source: target for target, source in resolved.sources.items()}
            items = []
            for raw in chunk.table.to_pylist():
                row = {rename[k]: v for k, v in raw.items() if k in rename and v not in (None, "")}
                for target, value in resolved.defaults.items():
                    row.setdefault(target, value)
                items.append((row, raw))
        rows: list[dict[str, Any]] = []
        for position, item in zip(chunk.positions.tolist(), items, strict=True):
            record, original = item if chunk.records is None else (item, item)
            try:
                row = self._normalize(record)
            except Rejected as error:
                name = error.field or ""
                field = columns.get(_SNAKE.get(name, name), error.field)
                ctx.sink.add(position, error.code, field, error.detail, original)
                continue
            row["lsn"] = 0
            rows.append(row)
        if rows:
            events, lines = events_and_lines(rows)
            ctx.write(events, lines)

    def finish(self) -> None:
        pass

    def _normalize(self, record: Any) -> dict[str, Any]:
        message = to_message(record)
        if not isinstance(message, dict):
            return normalize(message, self.envelope)  # rejects it, naming what it got
        if message.get("messageId") in (None, ""):
            message["messageId"] = content_id("imp:events:", message)
        sent = message.get("sentAt")
        if sent is not None and message.get("timestamp") is not None and message.get("originalTimestamp") is not None:
            # normalize() would re-time the event to the moment of import (clock-skew
            # correction against receipt); an import keeps the recorded timestamp.
            message = {k: v for k, v in message.items() if k != "sentAt"}
            row = normalize(message, self.envelope)
            row["sent_at"] = to_ms(sent, "sentAt")
            return row
        return normalize(message, self.envelope)


def to_message(record: Any) -> Any:
    """A Segment message from a nested or flat record (snake_case keys, JSON text objects)."""
    if not isinstance(record, dict):
        return record  # normalize() rejects it with the reason
    message: dict[str, Any] = {}
    for key, value in record.items():
        name = _CAMEL[key] if key in _CAMEL else str(key)
        if name in _OBJECTS and isinstance(value, str):
            value = _object(value, key)
        if value is None or value == "":
            continue
        message[name] = value
    return message


def _object(text: str, column: str) -> Any:
    if not text.strip():
        return None
    try:
        return _decode(text)
    except msgspec.DecodeError as error:
        raise Rejected(f"column `{column}` is not valid JSON ({error}); write a JSON object such as {{\"plan\": \"pro\"}}", field=column) from None
