"""State shared by the steps of one import: the store, parsers, rejects and the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from opencdp.config import Settings
from opencdp.ingest.imports.frame import Frame
from opencdp.ingest.imports.mapping import Options, Resolved
from opencdp.ingest.imports.normalise import Clock, PhoneBook
from opencdp.ingest.imports.reader import Chunk
from opencdp.ingest.imports.report import ImportReport, RejectSink
from opencdp.ingest.imports.writer import Writer
from opencdp.storage.base import Backend, LoadBatch, LoadResult
from opencdp.storage.schema import EVENTS, ORDER_LINES


@dataclass
class Context:
    backend: Backend
    settings: Settings
    kind: str
    resolved: Resolved | None
    """None when rows are whole JSON objects (nested events)."""
    options: Options
    source: str
    """The ``events.source`` of imported events."""
    received_ms: int
    clock: Clock
    phones: PhoneBook
    sink: RejectSink
    report: ImportReport
    writer: Writer

    @property
    def max_future_ms(self) -> int:
        return int(self.settings.max_future_skew_s * 1000)

    def frame(self, chunk: Chunk) -> Frame:
        assert chunk.table is not None and self.resolved is not None
        return Frame(chunk.table, chunk.positions, self.resolved)

    def reject_frame(self, frame: Frame) -> None:
        for index, problem in frame.problems():
            line = int(frame.positions[index])
            self.sink.add(line, problem.error, problem.field, problem.detail, frame.payload(index))

    def write(self, events: pa.Table, lines: pa.Table | None = None) -> None:
        """Queue events (deduplicated by message id at load) with the rejects collected so far."""
        self.writer.add(events, lines, self.sink.take_quarantine())

    def write_now(self, events: pa.Table) -> LoadResult:
        """Load events at once, for callers that act on which ones were new."""
        return self.writer.load_now(LoadBatch(events, ORDER_LINES.empty(), self.sink.take_quarantine()))

    def flush(self) -> None:
        """Hand rejects that no event batch has carried yet to the writer."""
        if self.sink.pending:
            self.writer.add(EVENTS.empty(), None, self.sink.take_quarantine())


class Importer(Protocol):
    """One kind's processing: ``process`` each chunk in file order, then ``finish``."""

    def process(self, chunk: Chunk) -> None: ...

    def finish(self) -> None: ...
