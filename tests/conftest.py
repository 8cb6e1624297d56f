"""Shared fixtures: a fresh, empty store per test on every storage engine.

chDB hosts one embedded engine per process, bound to one data directory, so all chDB
stores of a test run live in the one directory ``chdb_data_dir`` gives, each in its own
database. A test that opens chDB itself (``open_backend`` with ``backend="chdb"``)
must use that directory too while another chDB store is open.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencdp.storage.base import Backend

BACKENDS = ["duckdb", "chdb"]


@pytest.fixture(scope="session")
def chdb_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory (``Settings.data_dir``) whose ``chdb`` folder holds chDB stores."""
    return tmp_path_factory.mktemp("data")


def open_test_backend(name: str, tmp_path: Path, chdb_data_dir: Path) -> Backend:
    """A new empty store with its schema, on the engine ``name``."""
    backend: Backend
    if name == "duckdb":
        from opencdp.storage.duckdb import DuckDBBackend

        backend = DuckDBBackend(tmp_path / "store.duckdb")
    elif name == "chdb":
        from opencdp.storage.clickhouse import ChdbConnection, ClickHouseBackend

        connection = ChdbConnection(chdb_data_dir / "chdb")
        try:
            backend = ClickHouseBackend(connection, database=f"t_{uuid.uuid4().hex}")
        except BaseException:
            connection.close()
            raise
    else:
        raise ValueError(f"unknown backend {name}")
    backend.create_schema()
    return backend


def close_test_backend(backend: Backend) -> None:
    from opencdp.storage.clickhouse import ClickHouseBackend

    try:
        if isinstance(backend, ClickHouseBackend):
            backend.drop_database()
    finally:
        backend.close()


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, chdb_data_dir: Path
) -> Iterator[Backend]:
    """An empty store with its schema, once per engine (test ids name the engine)."""
    store = open_test_backend(request.param, tmp_path, chdb_data_dir)
    try:
        yield store
    finally:
        close_test_backend(store)
