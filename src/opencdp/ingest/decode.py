"""Decode write-ahead log records (``opencdp.ingest.records``) into Arrow tables.

Events arrive as Arrow IPC (mapped, not parsed). JSON lines (older event records,
rejects) are parsed by an in-memory DuckDB, whatever the store is: its reader costs
about half of what Arrow's does per event here. DuckDB reads files, so a batch is
staged in a temporary file for the call.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencdp.ingest.records import (
    ARROW_EVENTS_KIND,
    EVENTS_KIND,
    EVENTS_WIRE,
    LINE_OWN,
    REJECTS_KIND,
    REJECTS_WIRE,
    read_events,
)
from opencdp.storage.schema import EVENTS, ORDER_LINE_EVENT_COLUMNS, ORDER_LINES, QUARANTINE, Table


def _sql_type(kind: pa.DataType) -> str:
    if pa.types.is_struct(kind):
        return "STRUCT(" + ", ".join(f'"{f.name}" {_sql_type(f.type)}' for f in kind) + ")"
    if pa.types.is_list(kind):
        return _sql_type(kind.value_type) + "[]"
    return {pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR"}[kind]


_COLUMNS = {id(schema): {f.name: _sql_type(f.type) for f in schema} for schema in (EVENTS_WIRE, REJECTS_WIRE)}
_reader = threading.local()  # one in-memory DuckDB per thread that decodes


def _parse(chunks: list[bytes], schema: pa.Schema) -> pa.Table:
    if not hasattr(_reader, "con"):
        _reader.con = duckdb.connect(config={"preserve_insertion_order": True})
    with tempfile.NamedTemporaryFile(prefix="opencdp-records-", suffix=".ndjson") as staged:
        staged.write(b"\n".join(chunks))
        staged.flush()
        relation = _reader.con.read_json(
            staged.name, format="newline_delimited", columns=_COLUMNS[id(schema)], maximum_object_size=1 << 26
        )
        return relation.to_arrow_table()


def _conform(parsed: pa.Table, table: Table, extra: dict[str, pa.Array]) -> pa.Table:
    columns = []
    for field in table.arrow_schema:
        column = extra[field.name] if field.name in extra else parsed.column(field.name)
        columns.append(column.cast(field.type) if column.type != field.type else column)
    return pa.Table.from_arrays(columns, schema=table.arrow_schema)


def decode(records: Iterable[tuple[int, bytes]]) -> tuple[pa.Table, pa.Table, pa.Table | None]:
    """Events (with ``lsn`` = the end of their record), order lines and rejects of records, in log order."""
    parts: list[tuple[pa.Table, np.ndarray]] = []  # parsed wire rows and their lsn, record by record
    json_run: list[tuple[int, bytes]] = []  # consecutive JSON-lines records: parsed in one call
    reject_chunks: list[bytes] = []
    for end, payload in records:
        kind = payload[:1]
        if kind == ARROW_EVENTS_KIND:
            parts.extend(_json_events(json_run))
            json_run = []
            table = read_events(memoryview(payload)[1:])
            parts.append((table, np.full(table.num_rows, end, dtype=np.int64)))
        elif kind == EVENTS_KIND:
            json_run.append((end, payload[1:]))
        elif kind == REJECTS_KIND:
            reject_chunks.append(payload[1:])
        else:
            raise ValueError(f"unknown write-ahead log record kind {kind!r}")
    parts.extend(_json_events(json_run))
    if parts:
        parsed = pa.concat_tables([table for table, _ in parts])
        lsn = pa.array(np.concatenate([ends for _, ends in parts]))
        unresolved = pa.nulls(len(lsn), pa.string())  # the identity stage fills it
        events = _conform(parsed, EVENTS, {"lsn": lsn, "profile_id": unresolved})
        lines = _order_lines(parsed, events)
    else:
        events, lines = EVENTS.empty(), ORDER_LINES.empty()
    quarantine = _conform(_parse(reject_chunks, REJECTS_WIRE), QUARANTINE, {}) if reject_chunks else None
    return events, lines, quarantine


def _json_events(run: list[tuple[int, bytes]]) -> list[tuple[pa.Table, np.ndarray]]:
    """JSON-lines event records (logs from before Arrow records) as wire rows."""
    if not run:
        return []
    counts = [body.count(b"\n") + 1 for _, body in run]
    parsed = _parse([body for _, body in run], EVENTS_WIRE).cast(EVENTS_WIRE)
    return [(parsed, np.repeat(np.asarray([end for end, _ in run], dtype=np.int64), counts))]


def _order_lines(parsed: pa.Table, events: pa.Table) -> pa.Table:
    nested = parsed.column("_lines").combine_chunks()
    flat = pc.list_flatten(nested)
    if len(flat) == 0:
        return ORDER_LINES.empty()
    parents = pc.list_parent_indices(nested)
    owners = events.select(list(ORDER_LINE_EVENT_COLUMNS)).take(parents)
    extra = {name: owners.column(name) for name in ORDER_LINE_EVENT_COLUMNS}
    extra.update({field.name: flat.field(field.name) for field in LINE_OWN})
    return _conform(pa.table({}), ORDER_LINES, extra)
