"""ClickHouse storage: embedded through chDB, or a server over HTTP."""

from opencdp.storage.clickhouse.backend import ClickHouseBackend
from opencdp.storage.clickhouse.connection import (
    ChdbConnection,
    ClickHouseConnection,
    HttpConnection,
)

__all__ = ["ChdbConnection", "ClickHouseBackend", "ClickHouseConnection", "HttpConnection"]
