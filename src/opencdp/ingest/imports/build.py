"""Building ``events`` rows for imported data, column by column.

The customers, orders and catalog importers build the events table directly
instead of calling ``segment.normalize`` per row: at a million rows the per-row
dicts cost more than the whole rest of the import. They produce what
``normalize`` would for the same message (tests compare the two), and check the
same limits on timestamps and identifiers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from opencdp.ingest.imports.frame import Frame
from opencdp.ingest.imports.normalise import mask, out_of_range, when
from opencdp.storage.schema import EVENTS

MAX_ID_LENGTH = 512  # as segment.normalize
_canonical = msgspec.json.Encoder(order="deterministic").encode
_encode = msgspec.json.Encoder().encode


def content_id(prefix: str, content: Any) -> str:
    """A message id derived from content: the same row gives the same id on every import."""
    return prefix + hashlib.sha1(_canonical(content)).hexdigest()


def json_text(value: dict[str, Any] | None) -> str | None:
    """JSON as ``normalize`` stores it (None for an empty object)."""
    return _encode(value).decode() if value else None


def events_table(n: int, columns: dict[str, Any]) -> pa.Table:
    """An ``events`` table from columns given as Arrow arrays, lists, or one value for all rows."""
    arrays = []
    for field in EVENTS.arrow_schema:
        value = columns.get(field.name)
        if value is None:
            array = pa.nulls(n, field.type)
        elif isinstance(value, pa.Array | pa.ChunkedArray):
            array = value if value.type == field.type else pc.cast(value, field.type)
        elif isinstance(value, list):
            array = pa.array(value, field.type)
        else:
            array = pa.repeat(pa.scalar(value, _scalar_type(field.type)), n).cast(field.type)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=EVENTS.arrow_schema)


def _scalar_type(kind: pa.DataType) -> pa.DataType:
    """Scalars are given as text or epoch milliseconds; timestamps are cast after repeating."""
    return pa.int64() if pa.types.is_timestamp(kind) else kind


def external_id(value: str, kind: str) -> dict[str, str]:
    """A Segment ``context.externalIds`` entry."""
    return {"id": value, "type": kind, "collection": "users", "encoding": "none"}


def check_time(frame: Frame, target: str, epoch_ms: pa.Array, now_ms: int, max_future_ms: int) -> None:
    """Reject rows whose event time ``normalize`` would refuse."""
    future, ancient = out_of_range(epoch_ms, now_ms, max_future_ms)
    limit = when(now_ms + max_future_ms)
    frame.flag(future, target, "invalid_timestamp", lambda v: f"{v!r} is in the future (after {limit}); write UTC times or set options.timezone")
    frame.flag(ancient, target, "invalid_timestamp", lambda v: f"{v!r} is before 1900; check the date format (options.timestamp_format)")


def check_id_length(frame: Frame, target: str, values: pa.Array) -> None:
    """Reject identifiers ``normalize`` would refuse as too long."""
    too_long = mask(pc.greater(pc.utf8_length(values), MAX_ID_LENGTH))
    frame.flag(too_long, target, "invalid_value", lambda _v: f"is longer than {MAX_ID_LENGTH} characters")
