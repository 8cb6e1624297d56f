"""JSON text built column-wise with Arrow string kernels.

Used where per-row ``msgspec`` encoding would dominate an import (one JSON
document per order, a fragment per order line). Strings are escaped by msgspec
once per distinct value, numbers are formatted by Arrow (shortest round-trip;
whole numbers without ``.0``, which JSON readers take as the same number), and
absent (null) members are left out, as a dict without the key would be.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

_encode = msgspec.json.Encoder().encode
_EMPTY = pa.scalar(None, pa.string())


def literal(values: pa.Array) -> pa.Array:
    """JSON string literals (``"..."``, escaped); null stays null."""
    values = _array(values)
    distinct = pc.unique(values.drop_null())
    encoded = pa.array([_encode(v).decode() for v in distinct.to_pylist()], pa.string())
    return pc.take(encoded, pc.index_in(values, value_set=distinct))


def number(values: pa.Array) -> pa.Array:
    """JSON numbers, as Arrow formats them (shortest round-trip; 2.0 is written ``2``). Null stays null."""
    return pc.cast(_array(values), pa.string())


def obj(members: list[tuple[str, pa.Array]], *, empty_as_null: bool = False) -> pa.Array:
    """``{...}`` of each row's non-null members, given as (key, JSON values) in key order."""
    assert members, "an object needs at least one member"
    keys = [_encode(key).decode() + ":" for key, _ in members]
    values = [_array(v) for _, v in members]
    if not any(v.null_count for v in values):
        # Every member present: one join with the keys interleaved.
        parts: list[pa.Array | str] = []
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            parts += [("{" if i == 0 else ",") + key, value]
        return pc.binary_join_element_wise(*parts, "}", "")
    inner = join_present([pc.binary_join_element_wise(key, value, "") for key, value in zip(keys, values, strict=True)])
    text = pc.binary_join_element_wise("{", inner, "}", "")
    return pc.if_else(pc.equal(inner, ""), _EMPTY, text) if empty_as_null else text


def join_present(parts: list[pa.Array]) -> pa.Array:
    """The non-null parts of each row joined by commas ("" when none is present).

    Arrow's own ``null_handling="skip"`` drops rows whose parts are all null
    (pyarrow 26), so each part carries its comma and the first one is cut off.
    """
    prefixed = [pc.binary_join_element_wise(",", part, "") for part in parts]
    joined = pc.binary_join_element_wise(*prefixed, "", null_handling="replace", null_replacement="")
    return pc.utf8_slice_codeunits(joined, 1)


def array_of(items: pa.Array, starts: npt.NDArray[np.int64], *, empty_as_null: bool = False) -> pa.Array:
    """``[...]`` per group: rows ``starts[k]`` up to the next start form group ``k``; nulls skipped."""
    items = _array(items)
    bounds = np.append(starts, len(items))
    if items.null_count:
        valid = np.asarray(items.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        bounds = np.concatenate([[0], np.cumsum(valid)])[bounds]
        items = items.filter(pa.array(valid))
    lists = pa.ListArray.from_arrays(pa.array(bounds.astype(np.int32)), items)
    inner = pc.binary_join(lists, ",")
    text = pc.binary_join_element_wise("[", inner, "]", "")
    return pc.if_else(pc.equal(inner, ""), _EMPTY, text) if empty_as_null else text


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
