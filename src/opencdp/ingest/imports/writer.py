"""Loading into the store on background threads, in large transactions.

Three steps overlap: parsing (the importing thread), identity resolution (the
``import-identity`` thread: Python, holding the GIL) and loading (the
``import-loader`` thread: mostly the engine's own code, which releases the GIL).
An import takes about as long as the slowest step rather than their sum; before,
resolution and loading ran one after the other on one thread, the longest path
of the import. Batches keep their order through both steps, and the identity
stage still writes a batch's identity changes before the batch's events.

Loads gather several read batches: a commit has a fixed cost in the store (DuckDB
rewrites the table's last row group at each checkpoint), so ~200k rows per load
is much faster than a load per 50k-row read batch. At most one batch waits before
each step, which bounds memory.
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
        self._to_resolve: queue.Queue[LoadBatch | None] = queue.Queue(maxsize=1)
        self._to_load: queue.Queue[LoadBatch | None] = queue.Queue(maxsize=1)
        self._threads: list[threading.Thread] = []
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
        self._wait()
        self._raise()

    def close(self, *, discard: bool = False) -> None:
        """Drain (or, after a failure elsewhere, drop what is not yet loading) and stop the threads."""
        try:
            if discard:
                self._events, self._lines, self._quarantine, self._rows = [], [], [], 0
                self._wait()
            else:
                self.drain()
        finally:
            if self._threads:
                self._to_resolve.put(None)  # passed on to the loader, which stops after it
                for thread in self._threads:
                    thread.join()
                self._threads = []

    def _submit(self) -> None:
        if not self._rows:
            return
        batch = LoadBatch(
            _concat(self._events, EVENTS.arrow_schema),
            _concat(self._lines, ORDER_LINES.arrow_schema),
            _concat(self._quarantine, QUARANTINE.arrow_schema) if self._quarantine else None,
        )
        self._events, self._lines, self._quarantine, self._rows = [], [], [], 0
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run_identity, name="import-identity", daemon=True),
                threading.Thread(target=self._run_loads, name="import-loader", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
        self._to_resolve.put(batch)

    def _wait(self) -> None:
        """Until both steps are idle: a batch leaves the first queue only once it is in the second."""
        self._to_resolve.join()
        self._to_load.join()

    def _run_identity(self) -> None:
        while True:
            batch = self._to_resolve.get()
            try:
                if batch is None:
                    self._to_load.put(None)
                    return
                if self._error is None:  # after a failure, later batches are dropped
                    self._to_load.put(self._resolve(batch))
            except BaseException as error:
                self._error = error
            finally:
                self._to_resolve.task_done()

    def _run_loads(self) -> None:
        while True:
            batch = self._to_load.get()
            try:
                if batch is None:
                    return
                if self._error is None:
                    self._store(batch)
            except BaseException as error:
                self._error = error
            finally:
                self._to_load.task_done()

    def _load(self, batch: LoadBatch) -> LoadResult:
        return self._store(self._resolve(batch))

    def _resolve(self, batch: LoadBatch) -> LoadBatch:
        """``profile_id`` filled in events and lines (the identity stage writes what it learned first)."""
        events, lines = stage_for(self.backend).resolve(batch.events, batch.order_lines)
        return dataclasses.replace(batch, events=events, order_lines=lines)

    def _store(self, batch: LoadBatch) -> LoadResult:
        result = self.backend.load(batch)
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
