"""``import_file``: read a file in batches, normalise, and load it into the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from opencdp.config import Settings
from opencdp.errors import TerminalError
from opencdp.ingest.imports.catalog import CatalogImporter
from opencdp.ingest.imports.context import Context, Importer
from opencdp.ingest.imports.customers import CustomersImporter
from opencdp.ingest.imports.events import EventsImporter
from opencdp.ingest.imports.mapping import Mapping, MappingError, Resolved, resolve
from opencdp.ingest.imports.normalise import Clock, PhoneBook
from opencdp.ingest.imports.orders import OrdersImporter
from opencdp.ingest.imports.reader import detect_format, open_reader
from opencdp.ingest.imports.report import ImportReport, RejectSink
from opencdp.ingest.imports.targets import KINDS, SPECS, Kind
from opencdp.ingest.imports.writer import Writer
from opencdp.storage.base import Backend

_IMPORTERS: dict[str, Callable[[Context], Importer]] = {
    "customers": CustomersImporter,
    "orders": OrdersImporter,
    "catalog": CatalogImporter,
    "events": EventsImporter,
}


def import_file(
    backend: Backend,
    path: Path,
    kind: Kind,
    *,
    settings: Settings,
    format: str | None = None,
    mapping: Mapping | None = None,
    reject_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
    source: str | None = None,
) -> ImportReport:
    """Import one file of ``kind`` (customers, orders, catalog, events).

    ``format`` is csv, parquet or jsonl (default: from the file suffix). Rejected
    rows go to the quarantine table and to ``reject_path`` (default
    ``<stem>.rejects.csv`` next to the file). ``source`` sets the events' source
    (default ``import:<kind>``). Raises ``TerminalError`` when the file cannot be
    read at all; bad rows never stop the import.
    """
    started = time.perf_counter()
    if kind not in KINDS:
        raise TerminalError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}", field="kind", code="unknown_kind")
    path = Path(path)
    spec = SPECS[kind]
    mapping = mapping or Mapping()
    if mapping.kind is not None and mapping.kind != kind:
        raise MappingError(f"the mapping is for {mapping.kind}, not {kind}", field="kind")
    fmt = detect_format(path, format)
    options = mapping.options
    reader = open_reader(path, fmt, options, nested=kind == "events" and fmt == "jsonl", explode=kind == "orders")
    resolved: Resolved | None = None
    if not (kind == "events" and fmt == "jsonl"):
        resolved = resolve(spec, mapping, reader.columns)

    report = ImportReport(kind=kind, file=str(path))
    received_ms = int(time.time() * 1000)
    reject_file = reject_path or path.with_name(f"{_stem(path)}.rejects.csv")
    sink = RejectSink(Path(reject_file), f"import:{kind}:{path.name}", received_ms, report)
    clock = Clock(options)
    writer = Writer(backend, report)
    try:
        ctx = Context(
            backend=backend,
            settings=settings,
            kind=kind,
            resolved=resolved,
            options=options,
            source=source or f"import:{kind}",
            received_ms=received_ms,
            clock=clock,
            phones=PhoneBook(options.default_region or settings.default_region),
            sink=sink,
            report=report,
            writer=writer,
        )
        importer = _IMPORTERS[kind](ctx)
        for chunk in reader:
            report.rows_read += chunk.rows
            for problem in chunk.problems:
                sink.add(problem.position, problem.error, None, problem.detail, problem.payload)
            importer.process(chunk)
            ctx.flush()
            if progress is not None:
                progress(report.rows_read)
        importer.finish()
        ctx.flush()
        writer.close()
    except BaseException:
        writer.close(discard=True)
        raise
    finally:
        sink.close()
        clock.close()
    report.seconds = time.perf_counter() - started
    return report


def _stem(path: Path) -> str:
    """``orders`` for orders.csv and orders.csv.gz."""
    name = path.name
    for suffix in reversed(path.suffixes):
        name = name.removesuffix(suffix)
    return name or path.stem
