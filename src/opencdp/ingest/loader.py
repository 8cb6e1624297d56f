"""Move durable write-ahead log records into the store, exactly once.

The loader reads from its checkpoint, writes events, order lines and rejects in
one ``Backend.load`` call that also advances the checkpoint, then releases log
files it no longer needs. After a crash it starts again from the checkpoint;
``load`` skips message ids already stored, so a replay adds nothing twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from opencdp.identity.stage import stage_for
from opencdp.ingest.decode import decode
from opencdp.ingest.wal import WriteAheadLog
from opencdp.storage.base import Backend, LoadBatch, LoadResult
from opencdp.storage.profile_summary import stored_events

CHECKPOINT = "loader"
log = logging.getLogger(__name__)


@dataclass
class LoaderStats:
    loaded: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    last_error: str | None = None


class Loader:
    def __init__(
        self,
        backend: Backend,
        wal: WriteAheadLog,
        *,
        batch_events: int = 50_000,
        interval_s: float = 0.2,
        dedupe_window: dt.timedelta | None = None,
        nice: int = 0,
    ) -> None:
        self.backend = backend
        self.wal = wal
        self.batch_events = batch_events
        self.interval_s = interval_s
        self.dedupe_window = dedupe_window
        self.nice = nice
        self._niced: set[int] = set()
        self.position = backend.get_checkpoint(CHECKPOINT)
        self.stats = LoaderStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one step at a time: the thread, drain() and shutdown
        self.listeners: list[Callable[[pa.Table], None]] = []
        """Called with the events each batch stored (repeats of stored ones left out: real-time segments add
        them to the rows they keep); a failing listener never stops loading."""

    @property
    def _full_batch_bytes(self) -> int:
        return self.batch_events * 400  # bytes: ~400 per normalised event

    @property
    def lag_bytes(self) -> int:
        return self.wal.durable_lsn - self.position

    def step(self) -> LoadResult | None:
        """Load one batch; ``None`` when there was nothing to load."""
        with self._lock:
            return self._step()

    def _step(self) -> LoadResult | None:
        if self.position >= self.wal.durable_lsn:
            return None
        batch_records: list[tuple[int, bytes]] = []
        end = self.position
        budget = self._full_batch_bytes
        # Read at least one record, then up to the budget.
        for end, payload in self.wal.read(self.position, max_bytes=budget):
            batch_records.append((end, payload))
        event_table, line_table, quarantine = decode(batch_records)
        event_table, line_table = stage_for(self.backend).resolve(event_table, line_table)
        since = dt.datetime.now(dt.UTC) - self.dedupe_window if self.dedupe_window else None
        batch = LoadBatch(event_table, line_table, quarantine, since)
        result = self.backend.load(batch, (CHECKPOINT, end))
        self.position = end
        self.wal.release(end)
        self.stats.loaded += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.quarantined += result.quarantined
        self.stats.batches += 1
        stored = stored_events(event_table, result.new_message_ids)  # a repeat already reached the listeners
        for listener in self.listeners:
            try:
                listener(stored)
            except Exception:
                log.exception("loader listener %r failed", listener)
        return result

    def drain(self) -> None:
        """Load everything durable now (used by tests, imports and shutdown)."""
        while self.step() is not None:
            pass

    # -- background thread -------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Load a backlog batch after batch; otherwise start a step at most every ``interval_s``.

        A step costs tens of milliseconds whatever its size (a store transaction,
        the identity stage, the listeners), so loading each few events as soon as
        they are durable would spend a core on those fixed costs at 1,000 events/s
        and take the interpreter lock from the request handlers every few ms.
        """
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._lower_priority()
                if self.step() is not None:
                    self.stats.last_error = None
                    if self.lag_bytes >= self._full_batch_bytes:
                        continue
            except Exception as error:  # the store is down: keep the log, retry later
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("loader step failed; retrying")
                time.sleep(min(5.0, self.interval_s * 10))
            self._wake.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
            self._wake.clear()

    def _lower_priority(self) -> None:
        """Run this thread and the native worker threads (store, Arrow) at ``nice``.

        Request handling (the event loop, the log writer: Python threads) keeps its
        priority. Threads the store or Arrow start later are found at the next step.
        """
        if not self.nice or not sys.platform.startswith("linux"):
            return
        python_threads = {t.native_id for t in threading.enumerate()} - {threading.get_native_id()}
        try:
            tasks = {int(name) for name in os.listdir("/proc/self/task")}
        except OSError:
            return
        for tid in tasks - python_threads - self._niced:
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                os.setpriority(os.PRIO_PROCESS, tid, self.nice)
        self._niced = tasks - python_threads

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.drain()
