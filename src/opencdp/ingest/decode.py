"""Decode write-ahead log records (``opencdp.ingest.records``) into Arrow tables."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from opencdp.ingest.records import EVENTS_KIND, REJECTS_KIND
from opencdp.storage.schema import EVENTS, ORDER_LINE_EVENT_COLUMNS, ORDER_LINES, QUARANTINE, Table

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_LINE_OWN = [f for f in ORDER_LINES.arrow_schema if f.name not in ORDER_LINE_EVENT_COLUMNS]


def _wire_schema(table: Table, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The table's schema as written in records: timestamps are epoch milliseconds."""
    fields = [pa.field(f.name, pa.int64()) if f.type == _TIMESTAMP else f.with_nullable(True) for f in table.arrow_schema]
    return pa.schema([*fields, *extra])


_EVENTS_WIRE = _wire_schema(
    EVENTS,
    [pa.field("_lines", pa.list_(pa.struct([f.with_nullable(True) for f in _LINE_OWN])))],
).remove(EVENTS.arrow_schema.get_field_index("lsn"))
_REJECTS_WIRE = _wire_schema(QUARANTINE)


def _parse(chunks: list[bytes], schema: pa.Schema) -> pa.Table:
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    block = max(1 << 20, sum(len(c) for c in chunks) + 1)  # one block: no row is split
    return pj.read_json(io.BytesIO(b"\n".join(chunks)), read_options=pj.ReadOptions(block_size=block), parse_options=options)


def _conform(parsed: pa.Table, table: Table, extra: dict[str, pa.Array]) -> pa.Table:
    columns = []
    for field in table.arrow_schema:
        column = extra[field.name] if field.name in extra else parsed.column(field.name)
        columns.append(column.cast(field.type) if column.type != field.type else column)
    return pa.Table.from_arrays(columns, schema=table.arrow_schema)


def decode(records: Iterable[tuple[int, bytes]]) -> tuple[pa.Table, pa.Table, pa.Table | None]:
    """Events (with ``lsn`` = the end of their record), order lines and rejects of records."""
    event_chunks: list[bytes] = []
    ends: list[int] = []
    counts: list[int] = []
    reject_chunks: list[bytes] = []
    for end, payload in records:
        kind, body = payload[:1], payload[1:]
        if kind == EVENTS_KIND:
            event_chunks.append(body)
            ends.append(end)
            counts.append(body.count(b"\n") + 1)
        elif kind == REJECTS_KIND:
            reject_chunks.append(body)
        else:
            raise ValueError(f"unknown write-ahead log record kind {kind!r}")
    if event_chunks:
        parsed = _parse(event_chunks, _EVENTS_WIRE)
        lsn = pa.array(np.repeat(np.asarray(ends, dtype=np.int64), counts))
        events = _conform(parsed, EVENTS, {"lsn": lsn})
        lines = _order_lines(parsed, events)
    else:
        events, lines = EVENTS.empty(), ORDER_LINES.empty()
    quarantine = _conform(_parse(reject_chunks, _REJECTS_WIRE), QUARANTINE, {}) if reject_chunks else None
    return events, lines, quarantine


def _order_lines(parsed: pa.Table, events: pa.Table) -> pa.Table:
    nested = parsed.column("_lines").combine_chunks()
    flat = pc.list_flatten(nested)
    if len(flat) == 0:
        return ORDER_LINES.empty()
    parents = pc.list_parent_indices(nested)
    owners = events.select(list(ORDER_LINE_EVENT_COLUMNS)).take(parents)
    extra = {name: owners.column(name) for name in ORDER_LINE_EVENT_COLUMNS}
    extra.update({field.name: flat.field(field.name) for field in _LINE_OWN})
    return _conform(pa.table({}), ORDER_LINES, extra)
