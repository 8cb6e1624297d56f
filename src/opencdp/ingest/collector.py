"""The tracking pipeline's front door: validate, log durably, acknowledge.

``Collector.submit`` takes the raw messages of one request, validates each on its
own (a bad message never affects its neighbours), and appends the accepted rows
and the rejects to the write-ahead log (a record each). The returned future
completes when they are on disk, which is when the API answers 200.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import msgspec

from opencdp.config import Settings
from opencdp.errors import TransientError
from opencdp.ingest import records
from opencdp.ingest.loader import Loader
from opencdp.ingest.segment import Envelope
from opencdp.ingest.validation import Rejection, Validated, reject_row, validate
from opencdp.ingest.wal import WriteAheadLog
from opencdp.ingest.workers import ValidationWorkers
from opencdp.storage.base import Backend

_WORKER_MIN_MESSAGES = 20


@dataclass
class Submission:
    accepted: int
    rejected: list[Rejection] = field(default_factory=list)
    durable: asyncio.Future[int] | None = None
    """Resolves, on the submitting event loop, once the records are on disk."""


class Collector:
    def __init__(self, settings: Settings, backend: Backend, *, fsync: bool = True) -> None:
        self.settings = settings
        self.backend = backend
        self.wal = WriteAheadLog(settings.wal_dir, segment_bytes=settings.wal_segment_bytes, fsync=fsync)
        window = dt.timedelta(days=settings.dedupe_window_days) if settings.dedupe_window_days else None
        self.loader = Loader(
            backend,
            self.wal,
            batch_events=settings.loader_batch_events,
            interval_s=settings.loader_interval_s,
            dedupe_window=window,
            nice=settings.loader_nice,
        )
        self._workers: ValidationWorkers | None = None

    async def start(self) -> None:
        records.warm_up()  # small requests are validated in this process
        self.loader.start()
        if self.settings.ingest_processes > 0:
            self._workers = ValidationWorkers(self.settings.ingest_processes)
            await self._workers.start()

    async def close(self) -> None:
        if self._workers is not None:
            await self._workers.close()
            self._workers = None
        self.loader.stop()
        self.wal.close()

    def check_capacity(self) -> None:
        """Refuse work early instead of growing memory or an unbounded backlog."""
        if self.wal.queued_bytes > self.settings.max_pending_bytes:
            raise TransientError(
                "the write-ahead log is saturated; retry after the Retry-After delay",
                retry_after=1,
                code="too_many_requests",
            )
        if self.loader.lag_bytes > self.settings.max_lag_bytes:
            raise TransientError(
                f"the store is {self.loader.lag_bytes // 1_048_576} MB behind the log; retry after the Retry-After delay",
                retry_after=5,
                code="backlog",
            )

    def _envelope(self, source: str, default_type: str | None, sent_at: Any) -> Envelope:
        return Envelope(
            received_at_ms=int(time.time() * 1000),
            source=source,
            max_future_ms=int(self.settings.max_future_skew_s * 1000),
            default_type=default_type,
            sent_at=sent_at,
        )

    async def submit(
        self,
        messages: Sequence[msgspec.Raw | bytes],
        *,
        source: str,
        default_type: str | None = None,
        sent_at: Any = None,
        context: dict[str, Any] | None = None,
        body: bytes | None = None,
    ) -> Submission:
        """Validate one request's messages and append them to the write-ahead log.

        Batches are validated in a worker process when ``ingest_processes`` > 0:
        validation is most of the CPU an event costs, and there it runs beside the
        event loop instead of holding the interpreter lock. Small requests stay in
        this thread, where they cost less than a round trip to a worker. ``body`` is
        the ``/v1/batch`` body the messages came from: a worker gets it whole (one
        copy) rather than the messages one by one.
        """
        self.check_capacity()
        envelope = self._envelope(source, default_type, sent_at)
        limit = self.settings.max_event_bytes
        if self._workers is None or len(messages) < _WORKER_MIN_MESSAGES:
            validated = validate(messages, envelope, limit, context)
        else:
            payload = body if body is not None else [bytes(m) for m in messages]
            validated = await self._workers.validate(payload, envelope, limit, context)
        return self._log(validated)

    def _log(self, validated: Validated) -> Submission:
        durable = self.wal.append_on_loop(validated.records) if validated.records else None
        return Submission(validated.accepted, validated.rejected, durable)

    def reject(self, *, source: str, error: str, detail: str, payload: bytes, field: str | None = None) -> Future[int]:
        """Quarantine a request that could not be read at all (bad JSON, gzip, encoding)."""
        row = reject_row(int(time.time() * 1000), source, error, detail, field, None, payload)
        return self.wal.append(records.encode(records.REJECTS_KIND, [row]))

    def flush(self) -> None:
        """Load everything acknowledged so far into the store (tests and CLI)."""
        self.loader.drain()


