"""One chunk's columns seen through the mapping, and the problems found in its rows.

``Frame.text(target)`` gives a target's values trimmed, empty cells as null and
the mapping's default filled in. ``Frame.flag`` records the first problem of each
row with a message that names the file's column; rows with a problem are left
out of ``Frame.good`` and reported by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from opencdp.ingest.imports.mapping import Resolved
from opencdp.ingest.imports.normalise import Mask, clean, fill
from opencdp.ingest.imports.reader import Positions


@dataclass
class Problem:
    error: str
    field: str | None
    detail: str


class Frame:
    def __init__(self, table: pa.Table, positions: Positions, resolved: Resolved) -> None:
        self.table = table
        self.n = table.num_rows
        self.positions = positions
        self.resolved = resolved
        self._text: dict[str, pa.Array] = {}
        self._problems: dict[int, Problem] = {}
        self._bad = np.zeros(self.n, dtype=bool)

    # -- values ----------------------------------------------------------------
    def has(self, target: str) -> bool:
        return self.resolved.has(target)

    def raw(self, target: str) -> pa.Array | None:
        source = self.resolved.sources.get(target)
        if source is None or source not in self.table.column_names:
            return None
        return self.table.column(source).combine_chunks()

    def text(self, target: str) -> pa.Array:
        """Trimmed text, null when empty, with the mapping's default for missing values."""
        if target not in self._text:
            raw = self.raw(target)
            values = clean(raw) if raw is not None else pa.nulls(self.n, pa.string())
            self._text[target] = fill(values, self.resolved.defaults.get(target))
        return self._text[target]

    def extra(self, column: str) -> pa.Array:
        if column not in self.table.column_names:
            return pa.nulls(self.n, pa.string())
        return clean(self.table.column(column).combine_chunks())

    def value(self, target: str, index: int) -> Any:
        """The value as written in the file (for error messages)."""
        raw = self.raw(target)
        if raw is None:
            return self.resolved.defaults.get(target)
        return raw[index].as_py()

    # -- problems ----------------------------------------------------------------
    def flag(self, bad: Mask, target: str, error: str, describe: Callable[[Any], str]) -> None:
        """Reject rows in ``bad`` (unless already rejected) with ``column `x`: <describe(value)>``."""
        fresh = bad & ~self._bad
        if not fresh.any():
            return
        field = self.resolved.column(target)
        label = self.resolved.label(target)
        for index in np.flatnonzero(fresh):
            detail = f"column {label}: {describe(self.value(target, int(index)))}"
            self._problems[int(index)] = Problem(error, field, detail)
        self._bad |= fresh

    def flag_rows(self, rows: Mask, error: str, field: str | None, detail: Callable[[int], str]) -> None:
        """Reject rows with a message that is not about one column's value."""
        fresh = rows & ~self._bad
        for index in np.flatnonzero(fresh):
            self._problems[int(index)] = Problem(error, field, detail(int(index)))
        self._bad |= fresh

    def missing(self, target: str, why: str) -> None:
        """Reject rows where a required value is empty."""
        absent = ~np.asarray(self.text(target).is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        self.flag(absent, target, "missing_value", lambda _value: f"is empty; {why}")

    @property
    def good(self) -> Mask:
        return ~self._bad

    def problems(self) -> Iterator[tuple[int, Problem]]:
        for index in sorted(self._problems):
            yield index, self._problems[index]

    def payload(self, index: int) -> dict[str, Any]:
        """The original row, as a dict of the file's columns."""
        return {name: self.table.column(name)[index].as_py() for name in self.table.column_names}
