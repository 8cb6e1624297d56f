"""Turn normalised event rows into Arrow tables for the store (column by column)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from opencdp.storage.schema import EVENTS, ORDER_LINES, QUARANTINE, Table

# Order-line columns copied from the parent event.
_FROM_EVENT = ("message_id", "order_id", "timestamp", "user_id", "anonymous_id", "event", "channel", "store_id", "currency")


def to_arrow(table: Table, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table from dict rows; timestamps may be epoch milliseconds."""
    schema = table.arrow_schema
    columns = [pa.array([row.get(name) for row in rows], type=schema.field(name).type) for name in schema.names]
    return pa.Table.from_arrays(columns, schema=schema)


def events_and_lines(rows: Sequence[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """Events table plus the order lines exploded from each row's ``_lines``.

    Rows must carry ``lsn`` (the write-ahead log position, 0 for imports).
    """
    lines: list[dict[str, Any]] = []
    for row in rows:
        for line in row.get("_lines") or ():
            merged = dict(line)
            for name in _FROM_EVENT:
                merged[name] = row[name]
            lines.append(merged)
    return to_arrow(EVENTS, rows), to_arrow(ORDER_LINES, lines)


def quarantine_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return to_arrow(QUARANTINE, list(rows))
