"""Validate one request's messages into write-ahead log records.

Light on purpose (msgspec, Arrow and the normaliser only): the server runs it in
worker processes for large batches, so that validation does not hold the server's
interpreter lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from opencdp.ingest import records
from opencdp.ingest.fastpath import normalize_json
from opencdp.ingest.segment import Envelope, Rejected, normalize
from opencdp.ingest.wal import frame

_decode_json = msgspec.json.Decoder().decode
ARROW_MIN_EVENTS = 20
"""Fewer events are logged as JSON lines: an Arrow stream's fixed cost (~0.3 ms, mostly its
schema) would outweigh its per-event saving, on the event loop that validates small requests."""


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]


_decode_batch = msgspec.json.Decoder(_Batch).decode


@dataclass
class Rejection:
    index: int
    error: str
    detail: str
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"index": self.index, "error": self.error, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        return body


@dataclass
class Validated:
    """What validation makes of one request: write-ahead log records and the rejections.

    ``records`` are framed for the log (``wal.frame``), the events record then the
    rejects record, each only when there is one: ready for ``append_framed``, so a
    worker process does the checksumming and copying instead of the event loop.
    """

    accepted: int
    rejected: list[Rejection]
    records: bytes


def validate(
    messages: Sequence[msgspec.Raw | bytes], envelope: Envelope, max_event_bytes: int, context: dict[str, Any] | None
) -> Validated:
    """Validate each message on its own; a bad one never affects its neighbours.

    A plain function of picklable arguments, so it can run in a worker process.
    """
    accepted: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(messages):
        try:
            if len(raw) > max_event_bytes:
                raise Rejected(
                    f"event is {len(raw)} bytes; the limit is {max_event_bytes} bytes (32 KB) per event",
                    field="$",
                    code="event_too_large",
                )
            row = None if context else normalize_json(bytes(raw), envelope)  # the common shape, fast
            if row is None:
                message = _decode(raw)
                if context and isinstance(message, dict):
                    message.setdefault("context", context)  # batch-level context, as Segment's batch API
                row = normalize(message, envelope)
            accepted.append(row)
        except Rejected as error:
            rejected.append(Rejection(index, error.code, error.detail, error.field))
            rejects.append(
                reject_row(envelope.received_at_ms, envelope.source, error.code, error.detail, error.field, index, bytes(raw))
            )
    framed = b""
    if accepted:
        framed = frame(
            records.encode_events(accepted) if len(accepted) >= ARROW_MIN_EVENTS else records.encode(records.EVENTS_KIND, accepted)
        )
    if rejects:
        framed += frame(records.encode(records.REJECTS_KIND, rejects))
    return Validated(len(accepted), rejected, framed)


def batch_messages(body: bytes) -> list[msgspec.Raw]:
    """The events of a ``/v1/batch`` body the API has already checked (workers get the body whole)."""
    return _decode_batch(body).batch


def _decode(raw: msgspec.Raw | bytes) -> Any:
    try:
        return _decode_json(raw)
    except UnicodeDecodeError:
        raise Rejected("the event is not valid UTF-8; encode JSON as UTF-8", field="$", code="invalid_encoding") from None
    except msgspec.DecodeError as error:
        raise Rejected(f"the event is not valid JSON: {error}", field="$", code="invalid_json") from None


def reject_row(
    received_ms: int, source: str, error: str, detail: str, field: str | None, position: int | None, payload: bytes
) -> dict[str, Any]:
    """A ``quarantine`` row: the input as received (first 64 KB) with the reason."""
    return {
        "received_at": received_ms,
        "source": source,
        "error": error,
        "detail": detail,
        "field": field,
        "position": position,
        "payload": payload[:65536].decode("utf-8", "replace"),
    }
