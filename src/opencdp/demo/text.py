"""Vectorised string building on top of pyarrow compute.

Everything the generator writes is assembled column-wise: numbers are cast to strings in
C, JSON documents are concatenated from pre-escaped fragments, and identifiers are
formatted from numpy bytes.  No per-row Python code runs on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

Part: TypeAlias = "str | pa.Array | pa.ChunkedArray"
IntArray: TypeAlias = npt.NDArray[np.int64]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_GROUPS = (8, 4, 4, 4, 12)


def js(value: Any) -> str:
    """JSON-encode one scalar without escaping non-ASCII (keeps Cyrillic readable)."""
    return json.dumps(value, ensure_ascii=False)


def cat(*parts: Part) -> pa.Array:
    """Concatenate string arrays and literals element-wise (null if any part is null)."""
    args: list[Any] = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    if not any(isinstance(a, pa.Array | pa.ChunkedArray) for a in args):
        raise ValueError("cat() needs at least one array")
    out = pc.binary_join_element_wise(*args, "")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def full(value: Part, n: int) -> pa.Array:
    """``value`` as an array of length ``n`` (arrays pass through)."""
    if isinstance(value, str):
        return pa.repeat(pa.scalar(value, pa.string()), n)
    return value.combine_chunks() if isinstance(value, pa.ChunkedArray) else value


def num(values: npt.ArrayLike) -> pa.Array:
    """Decimal text of integers."""
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def padded(values: npt.ArrayLike, width: int) -> pa.Array:
    """Zero-padded decimal text of non-negative integers."""
    return pc.utf8_lpad(num(values), width=width, padding="0")


def lookup(table: Sequence[str | None], index: npt.ArrayLike) -> pa.Array:
    """Vectorised ``table[index]`` returning an arrow string array."""
    return pa.array(list(table), pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def take(values: pa.Array, index: npt.ArrayLike) -> pa.Array:
    """Vectorised ``values[index]`` for an arrow array and numpy indices."""
    return values.take(pa.array(np.asarray(index, dtype=np.int64)))


def where(mask: npt.NDArray[np.bool_], yes: Part, no: Part) -> pa.Array:
    """Element-wise choice between two string parts."""
    y = pa.scalar(yes, pa.string()) if isinstance(yes, str) else yes
    n = pa.scalar(no, pa.string()) if isinstance(no, str) else no
    out = pc.if_else(pa.array(mask, pa.bool_()), y, n)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def nulls_where(mask: npt.NDArray[np.bool_], values: pa.Array) -> pa.Array:
    """Replace values by null where ``mask`` is true."""
    return where(~mask, values, pa.nulls(len(values), pa.string()))


def iso_seconds(epoch_ms: IntArray) -> pa.Array:
    """ISO 8601 UTC text (``2024-05-01T18:03:11Z``) of epoch milliseconds."""
    seconds = pa.array(np.asarray(epoch_ms, dtype=np.int64) // 1000, pa.timestamp("s"))
    text = pc.replace_substring(pc.cast(seconds, pa.string()), " ", "T")
    return cat(text, "Z")


def iso_dates(epoch_days: IntArray) -> pa.Array:
    """``YYYY-MM-DD`` text of days since the Unix epoch."""
    return pc.cast(pa.array(np.asarray(epoch_days, dtype=np.int32), pa.date32()), pa.string())


def fixed_width(chars: npt.NDArray[np.uint8]) -> pa.Array:
    """Arrow strings from an (n, width) matrix of ASCII bytes, without a Python loop."""
    rows, width = chars.shape
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    data = np.ascontiguousarray(chars).tobytes()
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def uuid4(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random RFC 4122 version-4 UUID strings drawn from ``rng`` (deterministic)."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    src = 0
    dst = 0
    for length in _UUID_GROUPS:
        out[:, dst : dst + length] = hexed[:, src : src + length]
        src += length
        dst += length + 1
    return fixed_width(out)


def digits(values: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    """(n, width) matrix of ASCII digits of non-negative integers, zero padded."""
    out = np.empty((len(values), width), dtype=np.uint8)
    rest = values.astype(np.int64, copy=True)
    for col in range(width - 1, -1, -1):
        out[:, col] = (rest % 10 + ord("0")).astype(np.uint8)
        rest //= 10
    return out


def list_join(fragments: pa.Array, counts: npt.NDArray[np.int64], separator: str = ",") -> pa.Array:
    """Join consecutive runs of ``fragments`` (run lengths ``counts``) into one string each."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), fragments)
    return pc.binary_join(lists, separator)
