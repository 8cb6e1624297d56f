"""Streaming file writers: CSV for the CRM/POS exports, rolling Parquet for events."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from opencdp.demo.config import EVENTS_PER_FILE
from opencdp.demo.events import EVENT_SCHEMA

CATALOG_FILE = "catalog.csv"
CUSTOMERS_FILE = "customers.csv"
POS_FILE = "pos_orders.csv"
EVENTS_GLOB = "events-*.parquet"
_DICTIONARY_COLUMNS = ["type", "event", "name", "user_id", "anonymous_id"]


def event_file(out_dir: Path, index: int) -> Path:
    return out_dir / f"events-{index:05d}.parquet"


def clear_outputs(out_dir: Path) -> None:
    """Remove files a previous run left behind, so a directory never mixes two runs."""
    for name in (CATALOG_FILE, CUSTOMERS_FILE, POS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for path in out_dir.glob(EVENTS_GLOB):
        path.unlink()


class _Csv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pacsv.CSVWriter(str(self.path), table.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Outputs:
    """All output files of one run; use as a context manager."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.catalog = _Csv(out_dir / CATALOG_FILE)
        self.customers = _Csv(out_dir / CUSTOMERS_FILE)
        self.pos = _Csv(out_dir / POS_FILE)
        self.event_paths: list[Path] = []
        self.events = 0
        self._parquet: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def __enter__(self) -> Outputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write_catalog(self, table: pa.Table) -> None:
        self.catalog.write(table)

    def write_customers(self, table: pa.Table) -> None:
        self.customers.write(table)

    def write_pos(self, table: pa.Table) -> None:
        self.pos.write(table)

    def write_events(self, table: pa.Table) -> None:
        if self._parquet is None:
            path = event_file(self.out_dir, len(self.event_paths))
            self.event_paths.append(path)
            self._parquet = pq.ParquetWriter(
                str(path), EVENT_SCHEMA, compression="zstd", use_dictionary=_DICTIONARY_COLUMNS
            )
        self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows_in_file += table.num_rows
        self.events += table.num_rows
        if self._rows_in_file >= EVENTS_PER_FILE:
            self._close_parquet()

    def _close_parquet(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
            self._rows_in_file = 0

    def close(self) -> None:
        self._close_parquet()
        if not self.event_paths:  # keep the contract: at least one events file
            self.write_events(EVENT_SCHEMA.empty_table())
            self._close_parquet()
        for csv in (self.catalog, self.customers, self.pos):
            csv.close()
