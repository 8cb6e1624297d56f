"""Segment-spec event rows and their assembly into arrow tables."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import text

IntArray = npt.NDArray[np.int64]
Value: TypeAlias = str | pa.Array | None

EVENT_SCHEMA = pa.schema(
    [
        ("type", pa.string()),
        ("message_id", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("event", pa.string()),
        ("name", pa.string()),
        ("properties", pa.string()),
        ("traits", pa.string()),
        ("context", pa.string()),
    ]
)
_TEXT_COLUMNS = (
    "type",
    "user_id",
    "anonymous_id",
    "event",
    "name",
    "properties",
    "traits",
    "context",
)


def _column(value: Value, n: int) -> pa.Array:
    if value is None:
        return pa.nulls(n, pa.string())
    if isinstance(value, str):
        return pa.repeat(pa.scalar(value, pa.string()), n)
    if len(value) != n:
        raise ValueError(f"column of {len(value)} values for {n} events")
    return value


class EventColumns:
    """Accumulates batches of events; ``table`` turns them into EVENT_SCHEMA rows."""

    def __init__(self) -> None:
        self._timestamps: list[IntArray] = []
        self._columns: dict[str, list[pa.Array]] = {c: [] for c in _TEXT_COLUMNS}

    def __len__(self) -> int:
        return sum(len(t) for t in self._timestamps)

    def add(
        self,
        kind: Value,
        timestamp_ms: IntArray,
        *,
        user_id: Value = None,
        anonymous_id: Value = None,
        event: Value = None,
        name: Value = None,
        properties: Value = None,
        traits: Value = None,
        context: Value = None,
    ) -> None:
        n = len(timestamp_ms)
        values = {
            "type": kind,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "event": event,
            "name": name,
            "properties": properties,
            "traits": traits,
            "context": context,
        }
        self._timestamps.append(np.asarray(timestamp_ms, dtype=np.int64))
        for column, value in values.items():
            self._columns[column].append(_column(value, n))

    def add_track(
        self,
        event: str,
        timestamp_ms: IntArray,
        user_id: Value,
        anonymous_id: Value,
        properties: Value,
        context: Value,
    ) -> None:
        self.add(
            "track",
            timestamp_ms,
            user_id=user_id,
            anonymous_id=anonymous_id,
            event=event,
            properties=properties,
            context=context,
        )

    def extend(self, other: EventColumns) -> None:
        self._timestamps.extend(other._timestamps)
        for column in _TEXT_COLUMNS:
            self._columns[column].extend(other._columns[column])

    def table(self, rng: np.random.Generator) -> pa.Table:
        """All events ordered by time, each with a fresh deterministic message id."""
        timestamps = np.concatenate(self._timestamps) if self._timestamps else np.zeros(0, np.int64)
        order = pa.array(np.argsort(timestamps, kind="stable"))
        n = len(timestamps)

        def column(name: str) -> pa.Array:
            parts = self._columns[name]
            merged = pa.concat_arrays(parts) if parts else pa.nulls(0, pa.string())
            return merged.take(order)

        return pa.Table.from_arrays(
            [
                column("type"),
                text.uuid4(rng, n),
                pa.array(np.sort(timestamps, kind="stable"), pa.timestamp("ms", tz="UTC")),
                column("user_id"),
                column("anonymous_id"),
                column("event"),
                column("name"),
                column("properties"),
                column("traits"),
                column("context"),
            ],
            schema=EVENT_SCHEMA,
        )
