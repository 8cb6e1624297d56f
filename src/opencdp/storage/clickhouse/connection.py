"""How ``ClickHouseBackend`` talks to an engine: embedded chDB or a ClickHouse server.

Both implement ``ClickHouseConnection``: queries return Arrow tables, parameters use
ClickHouse's ``{name:Type}`` placeholders, inserts take an Arrow table whose columns
are matched to the target table by name, and unqualified table names resolve in the
database chosen with ``use``.

Both connections apply the same session settings (``SQL_SETTINGS``) so that queries
written for DuckDB give the same answers here: aggregates of no rows are NULL, outer
joins fill non-matching columns with NULL, not with type defaults, and a NULL for a
required column is refused rather than stored as a default.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from opencdp.errors import ConfigError

SQL_SETTINGS: dict[str, int] = {
    # max(), sum() ... over no rows give NULL (ClickHouse default: the type's zero,
    # e.g. 1970-01-01 for max(timestamp) of an empty table).
    "aggregate_functions_null_for_empty": 1,
    # LEFT/RIGHT/FULL JOIN fill non-matching columns with NULL (default: 0 or '').
    "join_use_nulls": 1,
    # A NULL for a non-Nullable column is an error, as NOT NULL is in DuckDB; by default
    # ClickHouse stores the type's default ('' or 1970-01-01) instead, silently.
    "insert_null_as_default": 0,  # INSERT ... SELECT, and chDB's Python() inserts
    "input_format_null_as_default": 0,  # Arrow inserts over HTTP
}

DEFAULT_DATABASE = "opencdp"


class ClickHouseConnection(Protocol):
    """The few operations the backend needs from an engine."""

    embedded: bool
    """The engine runs inside this process."""

    def use(self, database: str) -> None:
        """Resolve unqualified table names in ``database`` from now on."""

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query with ``{name:Type}`` parameters; the result as Arrow."""

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing."""

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append ``data`` to ``table`` (in the current database), columns matched by name."""

    def close(self) -> None: ...


def quote_identifier(name: str) -> str:
    """A ClickHouse identifier in backquotes, safe for any name."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# -- chDB --------------------------------------------------------------------------


@dataclass
class _Engine:
    """The chDB session shared by every ``ChdbConnection`` to one path in this process."""

    path: str
    session: Any  # chdb.session.Session
    users: int = 0
    database: str | None = None
    """The session's current database (``USE``), switched per query as connections need."""
    lock: threading.RLock = field(default_factory=threading.RLock)


_ENGINES: dict[str, _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _acquire_engine(path: str) -> _Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(path)
        if engine is None:
            if _ENGINES:
                # chDB hosts one embedded engine per process, bound to one path.
                other = next(iter(_ENGINES))
                raise ConfigError(
                    f"chdb can open one store per process: {other} is open, so {path} cannot be. "
                    "Close the other store first.",
                    field="chdb_path",
                )
            from chdb.session import Session

            session = Session(path)
            for name, value in SQL_SETTINGS.items():
                session.query(f"SET {name} = {value}")
            engine = _ENGINES[path] = _Engine(path, session)
        engine.users += 1
        return engine


def _release_engine(engine: _Engine) -> None:
    with _ENGINES_LOCK:
        engine.users -= 1
        if engine.users > 0:
            return
        del _ENGINES[engine.path]
        with engine.lock:
            # chDB shuts the engine down with its last session; a later ChdbConnection
            # (to this or another path) starts it again.
            engine.session.close()


def open_chdb_paths() -> list[str]:
    """Paths with an open chDB engine in this process (at most one)."""
    with _ENGINES_LOCK:
        return list(_ENGINES)


class ChdbConnection:
    """Embedded ClickHouse (chDB) on the data directory ``path``.

    chDB runs one engine per process, so all connections to a path share one cached
    session (reference-counted: the last ``close`` shuts the engine down, and opening
    again later starts it anew). Each connection keeps its own current database; the
    shared session is switched to it, under a lock, before each of its queries.
    """

    embedded = True

    def __init__(self, path: str | Path) -> None:
        text = str(path)
        if text != ":memory:":
            Path(text).mkdir(parents=True, exist_ok=True)
            text = str(Path(text).resolve())
        self.path = text
        self._engine: _Engine | None = _acquire_engine(text)
        # Releases the engine once, on close() or when the connection is garbage: a
        # store nobody closed must not pin the engine (and its path) for good.
        self._release = weakref.finalize(self, _release_engine, self._engine)
        self._database = "default"

    def use(self, database: str) -> None:
        self._database = database

    @contextmanager
    def _session(self) -> Iterator[Any]:
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"the chdb connection to {self.path} is closed")
        with engine.lock:
            if engine.database != self._database:
                engine.session.query(f"USE {quote_identifier(self._database)}")
                engine.database = self._database
            yield engine.session

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        encoded = encode_params(params) if params else None
        with self._session() as session:
            result = session.query(sql, "ArrowTable", params=encoded)
        assert isinstance(result, pa.Table)
        return result

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        encoded = encode_params(params) if params else None
        with self._session() as session:
            session.query(sql, "CSV", params=encoded)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        columns = ", ".join(quote_identifier(c) for c in data.column_names)
        # Python(name) makes chDB read the Arrow table straight from the local variable of
        # that name in a calling frame, without serialising it. The name is unusual so that
        # no frame further up the stack shadows it.
        _opencdp_arrow_input = data
        sql = (
            f"INSERT INTO {quote_identifier(table)} ({columns}) "
            f"SELECT {columns} FROM Python(_opencdp_arrow_input)"
        )
        with self._session() as session:
            session.query(sql, "CSV")

    def close(self) -> None:
        self._engine = None
        self._release()


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Python values as the text ClickHouse parses ``{name:Type}`` parameters from.

    chDB passes each value through ``str()``, which breaks on backslashes, tab and
    newline (the escaped text format), on ``None`` (becomes the string 'NULL'), on
    timezone-aware datetimes and on lists; this spells them as a ClickHouse server
    expects them over HTTP.
    """
    return {name: _top_level(value) for name, value in params.items()}


_ESCAPED = {
    "\\": "\\\\",
    "\t": "\\t",
    "\n": "\\n",
    "\r": "\\r",
    "\0": "\\0",
    "'": "\\'",
    "`": "\\`",
}


def _escape(text: str) -> str:
    return "".join(_ESCAPED.get(c, c) for c in text)


def _datetime(value: dt.datetime) -> str:
    # Naive datetimes are taken as UTC, as everywhere in the store.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _top_level(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, dt.datetime):
        return _datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return _nested(value)


def _nested(value: Any) -> str:
    """A value inside an Array or Tuple parameter: spelled as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{_escape(value)}'"
    if isinstance(value, dt.datetime):
        return f"'{_datetime(value)}'"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    if isinstance(value, list | set | frozenset):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_nested(v) for v in value) + ")"
    return str(value)


# -- ClickHouse server over HTTP -----------------------------------------------------


@dataclass(frozen=True)
class ServerAddress:
    """The parts of ``http(s)://user:password@host:port/database``."""

    host: str
    port: int
    username: str
    password: str
    database: str
    secure: bool

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"clickhouse_url {url!r} is not of the form http://user:password@host:8123/database",
                field="clickhouse_url",
            )
        secure = parts.scheme == "https"
        database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
        return cls(
            host=parts.hostname,
            port=parts.port or (8443 if secure else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database,
            secure=secure,
        )


class HttpConnection:
    """A ClickHouse server, through clickhouse-connect's HTTP client."""

    embedded = False

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        self.address = ServerAddress.parse(url)
        # No database at connect time: it may not exist yet (the backend creates it).
        # No HTTP session: statements share no session state, and a session would make
        # concurrent requests from several threads fail with "session is locked".
        self._client = clickhouse_connect.get_client(
            host=self.address.host,
            port=self.address.port,
            username=self.address.username,
            password=self.address.password,
            secure=self.address.secure,
            settings=dict(SQL_SETTINGS),
            autogenerate_session_id=False,
        )
        self._database: str | None = None

    @property
    def database(self) -> str:
        """The database named in the URL."""
        return self.address.database

    def use(self, database: str) -> None:
        self._database = database
        self._client.database = database

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        result = self._client.query_arrow(sql, parameters=dict(params) if params else None)
        assert isinstance(result, pa.Table)
        return result

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=dict(params) if params else None)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._client.insert_arrow(table, data, database=self._database)

    def close(self) -> None:
        self._client.close()
