"""Loading into the store on a background thread, in large transactions.

Parsing (Python and Arrow) and loading (the engine's own threads) overlap, so an
import takes about as long as the slower of the two rather than their sum. Loads
gather several read batches: a commit has a fixed cost in the store (DuckDB
rewrites the table's last row group at each checkpoint), so ~200k rows per load
is much faster than a load per 50k-row read batch. At most one load waits while
another runs, which bounds memory.
"""

from __future__ import annotations

import dataclasses
import queue
import threading

import pyarrow as pa

from opencdp.identity.stage import stage_for
from opencdp.ingest.imports.report import ImportReport
from opencdp.storage.base import Backend, LoadBatch, LoadResult
from opencdp.storage.schema import EVENTS, ORDER_LINES, QUARANTINE

LOAD_ROWS = 200_000


class Writer:
    def __init__(self, backend: Backend, report: ImportReport, *, load_rows: int | None = None) -> None:
        self.backend = backend
        self.report = report
        self.load_rows = load_rows or LOAD_ROWS
        self._events: list[pa.Table] = []
        self._lines: list[pa.Table] = []
        self._quarantine: list[pa.Table] = []
        self._rows = 0
        self._queue: queue.Queue[LoadBatch | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def add(self, events: pa.Table, lines: pa.Table | None = None, quarantine: pa.Table | None = None) -> None:
        """Queue rows for loading; they reach the store by ``drain`` at the latest."""
        self._raise()
        for parts, table in ((self._events, events), (self._lines, lines), (self._quarantine, quarantine)):
            if table is not None and table.num_rows:
                parts.append(table)
                self._rows += table.num_rows
        if self._rows >= self.load_rows:
            self._submit()

    def load_now(self, batch: LoadBatch) -> LoadResult:
        """Load at once, after everything queued (for callers that need the result)."""
        self.drain()
        return self._load(batch)

    def drain(self) -> None:
        """Wait until everything added so far is in the store."""
        self._submit()
        self._queue.join()
        self._raise()

    def close(self, *, discard: bool = False) -> None:
        """Drain (or, after a failure elsewhere, drop what is not yet loading) and stop the thread."""
        try:
            if discard:
                self._events, self._lines, self._quarantine, self._rows = [], [], [], 0
                self._queue.join()
            else:
                self.drain()
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def _submit(self) -> None:
        if not self._rows:
            return
        batch = LoadBatch(
            _concat(self._events, EVENTS.arrow_schema),
            _concat(self._lines, ORDER_LINES.arrow_schema),
            _concat(self._quarantine, QUARANTINE.arrow_schema) if self._quarantine else None,
        )
        self._events, self._lines, self._quarantine, self._rows = [], [], [], 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is None:  # after a failure, later batches are dropped
                    self._load(batch)
            except BaseException as error:
                self._error = error
            finally:
                self._queue.task_done()

    def _load(self, batch: LoadBatch) -> LoadResult:
        events, lines = stage_for(self.backend).resolve(batch.events, batch.order_lines)
        result = self.backend.load(dataclasses.replace(batch, events=events, order_lines=lines))
        self.report.events_written += result.inserted
        self.report.duplicates += result.duplicates
        self.report.order_lines += result.order_lines
        return result

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)  # chunked, not copied: the engines read chunked tables
