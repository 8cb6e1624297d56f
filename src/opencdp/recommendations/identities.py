"""Who a request is about, answered from memory: profile ids and identifiers -> model rows.

Serving a block must not query the store (a query under load is what makes the slow
1 % of requests). ``HashIndex`` maps strings to integers with two sorted numpy arrays
(the strings' 64-bit hashes and the values), so millions of keys cost 12 bytes each and
no Python objects the garbage collector would walk. ``IdentityIndex`` is built from the
store in the background (``profile_map`` and ``identities``, each resolved to its
canonical profile) and maps every known id to that profile's row in the served model:

* a row >= 0: the canonical profile has history in the model;
* ``NO_HISTORY``: the profile exists but has no interactions in the model (the engine
  asks the store for its canonical id, once, and caches it);
* not in the index: nobody had that id when the index was built — a new visitor (ids
  that appear later are learned from events by the session buffer).

Python's ``hash`` of a string is stable within a process, which is all an in-memory
index needs; a 64-bit collision would have to hit a looked-up id, and
``Model.user_row`` also compares the id itself.

The index is built while the server answers requests, so no step of the build may hold
the GIL for long: a whole 2M-row column turned into Python strings, or 1.7M model ids
gathered into one numpy string array, is a single C call that held it 0.2-0.8 s (every
request waited that long; measured with a 1 ms ticker thread). The build works in
slices of ``SLICE`` rows instead; between them the request threads get the GIL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlglot import exp

from opencdp.recommendations.data import PYTHON_SLICE
from opencdp.storage.base import Backend
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP

NO_HISTORY = -1
"""The profile exists, but the model has no row for it."""
MISSING = -2
SLICE = PYTHON_SLICE
"""Rows per step of a background build (each step's C calls hold the GIL a few milliseconds)."""


class HashIndex:
    """Strings -> int32 values, as sorted hashes (no per-key Python objects)."""

    def __init__(self, keys: Iterable[str], values: np.ndarray) -> None:
        self._build(np.fromiter((hash(k) for k in keys), np.int64, count=len(values)), values)

    @classmethod
    def of_hashes(cls, hashes: np.ndarray, values: np.ndarray) -> HashIndex:
        """An index of keys already hashed with ``hash`` (``column_hashes``)."""
        index = cls.__new__(cls)
        index._build(hashes, values)
        return index

    def _build(self, hashes: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._values = np.asarray(values, np.int32)[order]

    def __len__(self) -> int:
        return int(self._hashes.shape[0])

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """The values of many keys at once; ``missing`` (-2) for those not in the index."""
        return self.lookup_hashes(np.fromiter((hash(k) for k in keys), np.int64, count=len(keys)))

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """``lookup`` of keys already hashed."""
        if not len(self._hashes):
            return np.full(len(hashes), MISSING, np.int32)
        k = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        return np.where(self._hashes[k] == hashes, self._values[k], MISSING).astype(np.int32)

    def get(self, key: str) -> int | None:
        h = hash(key)
        k = int(np.searchsorted(self._hashes, h))
        if k < len(self._hashes) and self._hashes[k] == h:
            return int(self._values[k])
        return None


def user_index(users: Sequence[str] | np.ndarray) -> HashIndex:
    """A model's profile ids -> their rows."""
    return HashIndex((str(u) for u in users), np.arange(len(users), dtype=np.int32))


def column_hashes(column: pa.ChunkedArray | pa.Array, empty: str = "") -> np.ndarray:
    """``hash`` of every string of an Arrow column (a null hashes as ``empty``), a slice at a time."""
    out = np.empty(len(column), np.int64)
    for start in range(0, len(column), SLICE):
        part = column.slice(start, SLICE).to_pylist()
        out[start:start + len(part)] = np.fromiter((hash(v if v is not None else empty) for v in part), np.int64,
                                                   count=len(part))
    return out


@dataclass(frozen=True)
class IdentityIndex:
    profiles: HashIndex
    """Every profile id ever issued -> the model row of its canonical profile, or NO_HISTORY."""
    identifiers: HashIndex
    """``kind:value`` identifiers (live ones) -> the same."""

    def profile(self, profile_id: str) -> int | None:
        return self.profiles.get(profile_id)

    def identifier(self, identifier: str) -> int | None:
        return self.identifiers.get(identifier)

    @classmethod
    def load(cls, backend: Backend, rows_of: HashIndex, users: np.ndarray) -> IdentityIndex:
        """Read profile_map and identities (two scans) and resolve them to rows of the model whose ``users`` these are."""
        profiles = backend.select(
            exp.select(exp.column("profile_id"), exp.column("canonical_id")).from_(backend.table_ref(PROFILE_MAP))
        )
        identifiers = backend.select(
            exp.select(
                exp.column("identifier", "i"),
                exp.func("coalesce", exp.column("canonical_id", "m"), exp.column("profile_id", "i")).as_("canonical_id"),
            )
            .from_(backend.aliased_ref(IDENTITIES, "i"))
            .join(backend.aliased_ref(PROFILE_MAP, "m"),
                  on=exp.column("profile_id", "m").eq(exp.column("profile_id", "i")), join_type="left")
            .where(exp.column("deleted", "i").eq(exp.false()))
        )
        return cls(
            _resolved(profiles.column("profile_id"), profiles.column("canonical_id"), rows_of, users),
            _resolved(identifiers.column("identifier"), identifiers.column("canonical_id"), rows_of, users),
        )


def _resolved(keys: pa.ChunkedArray, canonical: pa.ChunkedArray, rows_of: HashIndex, users: np.ndarray) -> HashIndex:
    """``keys`` -> the model row of their ``canonical`` profile (NO_HISTORY if the model has none)."""
    rows = np.empty(len(canonical), np.int32)
    for start in range(0, len(canonical), SLICE):
        names = [p or "" for p in canonical.slice(start, SLICE).to_pylist()]
        found = rows_of.lookup(names)
        hit = np.flatnonzero(found >= 0)
        if len(hit):  # a hash match must be the very id
            same = users[found[hit]] == np.asarray([names[j] for j in hit.tolist()], dtype=str)
            found[hit[~same]] = NO_HISTORY
        found[found < 0] = NO_HISTORY
        rows[start:start + len(names)] = found
    return HashIndex.of_hashes(column_hashes(keys), rows)
