"""The write-ahead log's record format, and turning records into Arrow tables.

A record is one kind byte and newline-delimited JSON: ``E`` + one normalised
events row per line (with its ``_lines``), or ``Q`` + one quarantine row per line.
JSON lines let the loader parse a whole batch of records with Arrow's C++ JSON
reader (``opencdp.ingest.decode``), without building a Python object per value,
so loading competes little with the request handlers for the interpreter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

# Light on purpose (msgspec only): validation worker processes import it.
EVENTS_KIND = b"E"
REJECTS_KIND = b"Q"
_encode = msgspec.json.Encoder().encode


def encode(kind: bytes, rows: Sequence[dict[str, Any]]) -> bytes:
    """A record of ``rows`` (JSON strings escape newlines, so one row is one line)."""
    return kind + b"\n".join(map(_encode, rows))
