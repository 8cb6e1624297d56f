"""Helpers for import tests: write small files, run an import, read back plain values.

Every test runs on each storage engine through the shared ``backend`` fixture
(tests/conftest.py), so the assertions are on plain Python values.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opencdp.config import Settings
from opencdp.ingest.imports import ImportReport, import_file
from opencdp.ingest.imports import reader as reader_module
from opencdp.storage.base import Backend


def ms(value: Any) -> int | None:
    """Epoch milliseconds of a stored timestamp."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return round(value.timestamp() * 1000)


def iso_ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def write(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    """A file with exactly ``text`` (dedented, first newline dropped)."""
    body = textwrap.dedent(text).lstrip("\n")
    path.write_bytes(body.encode(encoding))
    return path


@dataclass
class Store:
    backend: Backend
    settings: Settings
    dir: Path

    def run(self, file: Path, kind: str, **options: Any) -> ImportReport:
        return import_file(self.backend, file, kind, settings=self.settings, **options)  # type: ignore[arg-type]

    def events(self, where: str = "1 = 1") -> list[dict[str, Any]]:
        rows = self.backend.rows(f"SELECT * FROM events WHERE {where} ORDER BY timestamp, message_id")
        for row in rows:
            for name in ("properties", "traits", "context"):
                row[name] = json.loads(row[name]) if row[name] else None
        return rows

    def lines(self) -> list[dict[str, Any]]:
        return self.backend.rows("SELECT * FROM order_lines ORDER BY order_id, line_no")

    def quarantine(self) -> list[dict[str, Any]]:
        return self.backend.rows("SELECT * FROM quarantine ORDER BY position")

    def products(self) -> list[dict[str, Any]]:
        rows = self.backend.rows("SELECT * FROM products" + self.final("products") + " ORDER BY product_id")
        for row in rows:
            row["attributes"] = json.loads(row["attributes"]) if row["attributes"] else None
        return rows

    def changes(self) -> list[dict[str, Any]]:
        return self.backend.rows("SELECT * FROM product_changes ORDER BY product_id, changed_at, field")

    def count(self, table: str) -> int:
        return int(self.backend.scalar(f"SELECT count(*) FROM {table}{self.final(table)}"))

    def final(self, table: str) -> str:
        return " FINAL" if table == "products" and self.backend.name != "duckdb" else ""


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Store:
    return Store(backend, Settings(data_dir=tmp_path / "data"), tmp_path)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Read files 3 rows at a time, so orders and multi-line values straddle batches."""
    monkeypatch.setattr(reader_module, "BATCH_ROWS", 3)
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", 128)
    yield 3


def rejects_file(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))

