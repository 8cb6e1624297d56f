"""Storage engines behind one ``Backend`` interface; ``open_backend`` picks one from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opencdp.config import Settings
    from opencdp.storage.base import Backend


def open_backend(settings: Settings, *, create: bool = True) -> Backend:
    """Open the store ``settings.backend`` names, creating its tables when ``create``.

    Engines are imported here, not at module level: each pulls in a large native
    library (chDB takes about half a second) that the other configurations never use.
    """
    backend: Backend
    if settings.backend == "duckdb":
        from opencdp.storage.duckdb import DuckDBBackend

        backend = DuckDBBackend(settings.store_path, memory_limit=settings.duckdb_memory_limit)
    elif settings.backend in ("chdb", "clickhouse"):
        from opencdp.storage.clickhouse import ChdbConnection, ClickHouseBackend, HttpConnection
        from opencdp.storage.clickhouse.connection import ClickHouseConnection

        connection: ClickHouseConnection
        if settings.backend == "chdb":
            connection, database = ChdbConnection(settings.chdb_path), settings.clickhouse_database
        else:
            http = HttpConnection(settings.clickhouse_url)
            connection, database = http, http.database
        try:
            backend = ClickHouseBackend(connection, database=database)
        except BaseException:
            connection.close()
            raise
    else:  # pragma: no cover - Settings validates the name
        from opencdp.errors import ConfigError

        raise ConfigError(f"unknown backend {settings.backend!r}", field="backend")
    backend.settings = settings
    if create:
        try:
            backend.create_schema()
        except BaseException:
            backend.close()
            raise
    return backend
