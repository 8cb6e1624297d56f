"""What an import did, and where its rejected rows went.

Rejected rows are never dropped: each goes to the store's ``quarantine`` table
(written in the same ``Backend.load`` call as its batch's events) and to a CSV
reject file next to the input, with the reason and the original row.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import pyarrow as pa

from opencdp.ingest.rows import quarantine_table

REJECT_COLUMNS = ("line", "error", "field", "detail", "row")
SAMPLE_REJECTS = 100
_encode = msgspec.json.Encoder().encode


@dataclass
class RejectedRow:
    line: int | None
    """Line number in the file (CSV: physical line, header = 1; JSON Lines: line; Parquet: row)."""
    error: str
    field: str | None
    detail: str
    row: Any
    """The original row: a dict of the file's columns, or the raw text when it could not be split."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportReport:
    kind: str
    file: str
    rows_read: int = 0
    events_written: int = 0
    duplicates: int = 0
    """Events already in the store (an earlier import of the same rows)."""
    order_lines: int = 0
    products_upserted: int = 0
    price_changes: int = 0
    stock_changes: int = 0
    rejected: int = 0
    reject_file: str | None = None
    seconds: float = 0.0
    sample_rejects: list[RejectedRow] = field(default_factory=list, repr=False)
    """The first rejects, for answers that show them inline."""

    def to_dict(self, *, rejects: bool = False) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if k != "sample_rejects"}
        body["seconds"] = round(self.seconds, 3)
        if rejects:
            body["rejects"] = [r.to_dict() for r in self.sample_rejects]
        return body


class RejectSink:
    """Collects rejects: the reject file is written as they come, quarantine rows per batch."""

    def __init__(self, path: Path, source: str, received_ms: int, report: ImportReport) -> None:
        self.path = path
        self.source = source
        self.received_ms = received_ms
        self.report = report
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._pending: list[dict[str, Any]] = []

    def add(self, line: int | None, error: str, field: str | None, detail: str, row: Any) -> None:
        payload = row if isinstance(row, str) else _encode(row).decode()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(REJECT_COLUMNS)
            self.report.reject_file = str(self.path)
        self._writer.writerow((line if line is not None else "", error, field or "", detail, payload))
        self._pending.append(
            {
                "received_at": self.received_ms,
                "source": self.source,
                "error": error,
                "detail": detail,
                "field": field,
                "position": line,
                "payload": payload,
            }
        )
        self.report.rejected += 1
        if len(self.report.sample_rejects) < SAMPLE_REJECTS:
            self.report.sample_rejects.append(RejectedRow(line, error, field, detail, row))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take_quarantine(self) -> pa.Table | None:
        """The rejects since the last call, as ``quarantine`` rows (None when there are none)."""
        if not self._pending:
            return None
        table = quarantine_table(self._pending)
        self._pending = []
        return table

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.path.exists() and _is_reject_file(self.path):
            # A clean re-import must not leave the previous run's rejects looking current.
            self.path.unlink()


def _is_reject_file(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", newline="") as file:
            return next(csv.reader(file), None) == list(REJECT_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False
