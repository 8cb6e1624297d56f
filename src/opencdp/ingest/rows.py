"""Turn normalised event rows into Arrow tables for the store (column by column)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from opencdp.storage.schema import EVENTS, ORDER_LINE_EVENT_COLUMNS, ORDER_LINES, QUARANTINE, Table


def to_arrow(table: Table, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table from dict rows; timestamps may be epoch milliseconds.

    Arrow converts the dicts in C++ as one struct array (keys the schema lacks are
    ignored, missing keys are null): about 3x faster than a list per column.
    """
    return pa.Table.from_struct_array(pa.array(rows, type=_struct_type(table)))


@functools.cache
def _struct_type(table: Table) -> pa.StructType:
    return pa.struct(list(table.arrow_schema))


def events_and_lines(rows: Sequence[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """Events table plus the order lines exploded from each row's ``_lines``.

    Rows must carry ``lsn`` (the write-ahead log position, 0 for imports).
    """
    lines: list[dict[str, Any]] = []
    for row in rows:
        for line in row.get("_lines") or ():
            merged = dict(line)
            for name in ORDER_LINE_EVENT_COLUMNS:
                merged[name] = row.get(name)
            lines.append(merged)
    return to_arrow(EVENTS, rows), to_arrow(ORDER_LINES, lines)


def quarantine_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return to_arrow(QUARANTINE, list(rows))
