"""The write-ahead log's record formats.

A record is one kind byte and a body:

* ``A``: events as one Arrow IPC stream in ``EVENTS_WIRE`` (normalised rows with
  their ``_lines``). Validation workers build it, beside the server, so the loader
  only maps it (decoding JSON lines cost the loader ~20 us of CPU per event, in the
  process that also answers requests).
* ``E``: events as newline-delimited JSON, one row per line. Logs written before
  Arrow records are still read (``opencdp.ingest.decode``).
* ``Q``: quarantine rows as newline-delimited JSON (rare: rejects are small).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa

from opencdp.storage.schema import EVENTS, ORDER_LINE_EVENT_COLUMNS, ORDER_LINES, QUARANTINE, Table

ARROW_EVENTS_KIND = b"A"
EVENTS_KIND = b"E"
REJECTS_KIND = b"Q"
_encode = msgspec.json.Encoder().encode
_TIMESTAMP = pa.timestamp("ms", tz="UTC")


def _wire_schema(table: Table, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The table's schema as written in records: timestamps are epoch milliseconds."""
    fields = [pa.field(f.name, pa.int64()) if f.type == _TIMESTAMP else f.with_nullable(True) for f in table.arrow_schema]
    return pa.schema([*fields, *extra])


LINE_OWN = [f for f in ORDER_LINES.arrow_schema if f.name not in ORDER_LINE_EVENT_COLUMNS]
_NOT_IN_RECORDS = ("lsn", "profile_id")  # set by the loader and the identity stage
EVENTS_WIRE = pa.schema(
    [
        f
        for f in _wire_schema(EVENTS, [pa.field("_lines", pa.list_(pa.struct([f.with_nullable(True) for f in LINE_OWN])))])
        if f.name not in _NOT_IN_RECORDS
    ]
)
REJECTS_WIRE = _wire_schema(QUARANTINE)
_EVENTS_STRUCT = pa.struct(list(EVENTS_WIRE))


def encode(kind: bytes, rows: Sequence[dict[str, Any]]) -> bytes:
    """A JSON-lines record of ``rows`` (JSON strings escape newlines, so one row is one line)."""
    return kind + b"\n".join(map(_encode, rows))


def encode_events(rows: Sequence[dict[str, Any]]) -> bytes:
    """An ``A`` record: normalised event rows as an Arrow IPC stream.

    Arrow converts the dicts in C++ (keys the schema lacks are ignored, missing
    keys are null), the same conversion ``rows.to_arrow`` makes for imports.
    """
    table = pa.Table.from_struct_array(pa.array(rows, type=_EVENTS_STRUCT))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EVENTS_WIRE) as writer:
        writer.write_table(table)
    return ARROW_EVENTS_KIND + sink.getvalue().to_pybytes()


def warm_up() -> None:
    """Make the first conversion before the first request: it imports pandas (pyarrow's check
    for its types), about a second that would otherwise fall on one request."""
    encode_events([])


def read_events(body: memoryview) -> pa.Table:
    """The rows of an ``A`` record's body (without copying it)."""
    return pa.ipc.open_stream(pa.py_buffer(body)).read_all()
