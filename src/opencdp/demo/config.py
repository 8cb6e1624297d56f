"""Configuration and result types of the demo shop generator."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CHUNK_CUSTOMERS = 20_000  # fixed: the output depends on it, so it is not a setting
EVENTS_PER_FILE = 1_000_000


def _yesterday_utc() -> datetime.date:
    """The last whole day: history ends before now, so no demo event lies in the future."""
    return datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)


@dataclass(frozen=True)
class DemoConfig:
    """What to generate. Same ``seed`` and ``end`` give byte-identical files."""

    customers: int = 5000
    seed: int = 42
    end: datetime.date = field(default_factory=_yesterday_utc)  # last day of history, inclusive
    days: int = 365  # length of history
    products: int = 2000
    stores: int = 40

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers must be positive")
        if self.days < 14:
            raise ValueError("days must be at least 14")
        if self.stores < 1:
            raise ValueError("stores must be positive")
        if self.seed < 0:
            raise ValueError("seed must be non-negative")


@dataclass(frozen=True)
class Window:
    """History as epoch milliseconds: ``[start_ms, end_ms)`` covering ``days`` whole days."""

    start_ms: int
    end_ms: int
    days: int

    @classmethod
    def of(cls, config: DemoConfig) -> Window:
        epoch = datetime.date(1970, 1, 1)
        end_day = (config.end - epoch).days + 1
        return cls((end_day - config.days) * DAY_MS, end_day * DAY_MS, config.days)

    @property
    def start_day(self) -> int:
        """Days since the Unix epoch of the first day of history."""
        return self.start_ms // DAY_MS


@dataclass(frozen=True)
class DemoSummary:
    products: int
    customers: int
    pos_orders: int
    pos_lines: int
    online_orders: int
    events: int
    catalog_path: Path
    customers_path: Path
    pos_orders_path: Path
    event_paths: tuple[Path, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.catalog_path, self.customers_path, self.pos_orders_path, *self.event_paths)
