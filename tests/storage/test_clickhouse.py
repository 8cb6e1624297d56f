"""What is particular to the ClickHouse backend: DDL, FINAL, chDB's one engine per
process, parameter encoding, the HTTP connection (against a stand-in client: no
server runs in the test suite) and ``open_backend``."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlglot import exp

from opencdp.config import Settings
from opencdp.errors import ConfigError
from opencdp.storage import open_backend
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.clickhouse import ChdbConnection, ClickHouseBackend, HttpConnection
from opencdp.storage.clickhouse.connection import (
    SQL_SETTINGS,
    ServerAddress,
    encode_params,
    open_chdb_paths,
)
from opencdp.storage.duckdb import DuckDBBackend
from opencdp.storage.schema import (
    CHECKPOINTS,
    EVENTS,
    ORDER_LINES,
    PRODUCTS,
    QUARANTINE,
    TABLES,
    Column,
    T,
    Table,
)


class RecordingConnection:
    """A stand-in engine that records statements; every database exists."""

    embedded = False

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.database: str | None = None

    def use(self, database: str) -> None:
        self.database = database

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        self.statements.append(sql)
        return pa.table({"n": [1]})

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.statements.append(sql)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self.statements.append(f"insert {table}")

    def close(self) -> None:
        pass


@pytest.fixture
def offline() -> ClickHouseBackend:
    return ClickHouseBackend(RecordingConnection(), database="shop")


# -- DDL and FINAL ---------------------------------------------------------------------------


def test_ddl_of_an_append_only_table_partitions_by_month(offline: ClickHouseBackend) -> None:
    sql = offline.create_table_sql(EVENTS)

    assert sql.startswith(
        "CREATE TABLE IF NOT EXISTS events (message_id String, type LowCardinality(String), "
    )
    assert "name Nullable(String)" in sql
    assert "timestamp DateTime64(3, 'UTC')," in sql
    assert "sent_at Nullable(DateTime64(3, 'UTC'))" in sql
    assert "currency LowCardinality(Nullable(String))" in sql
    assert "revenue Nullable(Float64)" in sql
    assert "profile_id Nullable(String))" in sql
    assert sql.endswith(
        ") ENGINE=MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (event, timestamp)"
    )
    assert offline.create_table_sql(QUARANTINE).endswith(") ENGINE=MergeTree ORDER BY received_at")


def test_ddl_of_a_current_state_table_is_a_replacing_merge_tree_on_the_key(
    offline: ClickHouseBackend,
) -> None:
    assert offline.create_table_sql(PRODUCTS).endswith(
        ") ENGINE=ReplacingMergeTree(updated_at) ORDER BY product_id"
    )
    # Never partitioned: versions in different partitions would not collapse.
    table = Table(
        "state",
        (
            Column("id", T.STRING, False),
            Column("flag", T.BOOL),
            Column("day", T.DATE),
            Column("at", T.TIMESTAMP, False),
        ),
        order_by=("at",),
        key=("id",),
        version="at",
        partition_by_month="at",
    )
    assert offline.create_table_sql(table) == (
        "CREATE TABLE IF NOT EXISTS state (id String, flag Nullable(Bool), day Nullable(Date32), "
        "at DateTime64(3, 'UTC')) ENGINE=ReplacingMergeTree(at) ORDER BY id"
    )


def test_table_ref_reads_current_state_tables_with_final(offline: ClickHouseBackend) -> None:
    assert (
        offline.render(exp.select("*").from_(offline.table_ref(PRODUCTS)))
        == "SELECT * FROM products FINAL"
    )
    assert (
        offline.render(exp.select("*").from_(offline.table_ref(EVENTS))) == "SELECT * FROM events"
    )
    # An alias goes on the table inside FINAL, as the table_ref docstring says.
    ref = offline.table_ref(CHECKPOINTS)
    ref.this.set("alias", exp.TableAlias(this=exp.to_identifier("c")))
    assert (
        offline.render(exp.select("c.name").from_(ref))
        == "SELECT c.name FROM checkpoints AS c FINAL"
    )


def test_an_existing_database_is_not_created_again(offline: ClickHouseBackend) -> None:
    connection = offline.connection
    assert isinstance(connection, RecordingConnection)
    assert connection.database == "shop"
    assert not [s for s in connection.statements if s.startswith("CREATE DATABASE")]


# -- capabilities ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["chdb"], indirect=True)
def test_capabilities_follow_the_connection(backend: Backend, offline: ClickHouseBackend) -> None:
    assert backend.capabilities.embedded is True
    assert backend.name == "chdb"
    assert offline.capabilities.embedded is False
    assert offline.name == "clickhouse"
    for caps in (backend.capabilities, offline.capabilities):
        assert (caps.dialect, caps.transactions, caps.native_upsert) == ("clickhouse", False, False)
    assert ClickHouseBackend.capabilities.embedded is False


# -- chDB: one engine per process, a database per store ---------------------------------------


def test_stores_in_two_databases_of_one_engine_are_separate(chdb_data_dir: Path) -> None:
    path = chdb_data_dir / "chdb"
    first = ClickHouseBackend(ChdbConnection(path), database=f"a_{uuid.uuid4().hex}")
    second = ClickHouseBackend(ChdbConnection(path), database=f"b_{uuid.uuid4().hex}")
    try:
        for store in (first, second):
            store.create_schema()
        first.load(LoadBatch(_events("m1", "m2"), ORDER_LINES.empty()))
        second.load(LoadBatch(_events("m3"), ORDER_LINES.empty()))

        assert (first.count(EVENTS), second.count(EVENTS)) == (2, 1)
        assert second.scalar("SELECT currentDatabase()") == second.database
        assert first.scalar("SELECT currentDatabase()") == first.database
    finally:
        for store in (first, second):
            store.drop_database()
            store.close()


def test_closing_the_last_connection_lets_the_engine_reopen(
    chdb_data_dir: Path, tmp_path: Path
) -> None:
    path = chdb_data_dir / "chdb"
    database = f"r_{uuid.uuid4().hex}"
    store = ClickHouseBackend(ChdbConnection(path), database=database)
    store.create_schema()
    store.load(LoadBatch(_events("m1"), ORDER_LINES.empty()), ("loader", 4))
    store.close()
    store.close()  # closing twice is harmless
    assert open_chdb_paths() == []

    # Another path can be opened once the first is closed...
    other = ChdbConnection(tmp_path / "other")
    assert other.query_arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    other.close()

    # ... and the first one again, with its data.
    again = ClickHouseBackend(ChdbConnection(path), database=database)
    try:
        assert again.count(EVENTS) == 1
        assert again.get_checkpoint("loader") == 4
    finally:
        again.drop_database()
        again.close()


def test_a_second_path_while_one_is_open_is_refused(chdb_data_dir: Path, tmp_path: Path) -> None:
    connection = ChdbConnection(chdb_data_dir / "chdb")
    try:
        with pytest.raises(ConfigError, match="one store per process"):
            ChdbConnection(tmp_path / "elsewhere")
    finally:
        connection.close()
    with pytest.raises(RuntimeError, match="closed"):
        connection.query_arrow("SELECT 1")


def test_parameters_are_encoded_for_chdb() -> None:
    moscow = dt.timezone(dt.timedelta(hours=3))
    assert encode_params(
        {
            "s": "a\\b'c\td\ne`",
            "none": None,
            "flag": True,
            "n": 5,
            "x": 1.5,
            "at": dt.datetime(2024, 1, 1, 3, 0, 0, 123000, tzinfo=moscow),
            "naive": dt.datetime(2024, 1, 1),
            "day": dt.date(2024, 2, 29),
            "ids": ["a'", None, "b\\"],
            "pair": ("x", 1),
        }
    ) == {
        "s": "a\\\\b\\'c\\td\\ne\\`",
        "none": "\\N",
        "flag": "true",
        "n": "5",
        "x": "1.5",
        "at": "2024-01-01 00:00:00.123000",
        "naive": "2024-01-01 00:00:00.000000",
        "day": "2024-02-29",
        "ids": "['a\\'', NULL, 'b\\\\']",
        "pair": "('x', 1)",
    }


@pytest.mark.parametrize("backend", ["chdb"], indirect=True)
def test_parameters_round_trip_through_chdb(backend: Backend) -> None:
    at = dt.datetime(2024, 1, 1, 3, 0, 0, 123000, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    params = {
        "s": "x'); DROP TABLE events; --\\ \t\n `Ё`",
        "none": None,
        "flag": False,
        "n": -(2**62),
        "x": 0.1,
        "at": at,
        "day": dt.date(1900, 1, 1),
        "ids": ["a'", "b\\", "Ж"],
    }
    row = backend.rows(
        "SELECT {s:String} AS s, {none:Nullable(String)} AS none, {flag:Bool} AS flag, {n:Int64} AS n, "
        "{x:Float64} AS x, {at:DateTime64(3, 'UTC')} AS at, {day:Date32} AS day, {ids:Array(String)} AS ids",
        params,
    )[0]
    assert row == {**params, "at": at.astimezone(dt.UTC)}


@pytest.mark.parametrize("backend", ["chdb"], indirect=True)
def test_loads_leave_no_scratch_tables_behind(backend: Backend) -> None:
    def scratch_tables() -> int:
        return int(
            backend.scalar(
                "SELECT count() FROM system.tables "
                "WHERE database = currentDatabase() AND startsWith(name, '_load_')"
            )
        )

    events = _events("m1")
    lines = ORDER_LINES.empty()
    backend.load(LoadBatch(events, lines))
    assert scratch_tables() == 0

    # A column the events table does not have: staging fails, the error is the
    # engine's, and the tables made so far are gone.
    unknown = events.append_column("no_such_column", pa.array(["x"]))
    with pytest.raises(RuntimeError, match="no_such_column"):
        backend.load(LoadBatch(unknown, lines))
    assert scratch_tables() == 0
    assert backend.count(EVENTS) == 1


# -- HTTP: URL and client calls, against a stand-in client ------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://default:@localhost:8123/opencdp",
            ServerAddress("localhost", 8123, "default", "", "opencdp", False),
        ),
        ("http://ch.internal", ServerAddress("ch.internal", 8123, "default", "", "opencdp", False)),
        (
            "https://an%40alyst:p%3As%2Fs@ch.example.com/shop_prod",
            ServerAddress("ch.example.com", 8443, "an@alyst", "p:s/s", "shop_prod", True),
        ),
        (
            "http://u:p@10.0.0.5:18123/",
            ServerAddress("10.0.0.5", 18123, "u", "p", "opencdp", False),
        ),
    ],
)
def test_server_urls_are_parsed(url: str, expected: ServerAddress) -> None:
    assert ServerAddress.parse(url) == expected


@pytest.mark.parametrize("url", ["localhost:8123", "tcp://host:9000/db", "http:///db"])
def test_malformed_server_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        ServerAddress.parse(url)


class StandInClient:
    """Records what HttpConnection asks of clickhouse-connect; has no databases."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.database: str | None = None
        self.calls: list[tuple[Any, ...]] = []

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        self.calls.append(("query_arrow", sql, parameters, self.database))
        return pa.table({"n": pa.array([0], pa.uint64())})

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self.calls.append(("command", sql, parameters, self.database))

    def insert_arrow(self, table: str, data: pa.Table, database: str | None = None) -> None:
        self.calls.append(("insert_arrow", table, data.num_rows, database))

    def close(self) -> None:
        self.calls.append(("close",))


def test_http_connection_drives_clickhouse_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    import clickhouse_connect

    clients: list[StandInClient] = []

    def get_client(**kwargs: Any) -> StandInClient:
        clients.append(StandInClient(**kwargs))
        return clients[-1]

    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)
    connection = HttpConnection("http://loader:secret@ch.internal:8123/shop")
    store = ClickHouseBackend(connection, database=connection.database)
    store.insert("quarantine", QUARANTINE.empty())
    store.close()

    client = clients[0]
    assert client.kwargs == {
        "host": "ch.internal",
        "port": 8123,
        "username": "loader",
        "password": "secret",
        "secure": False,
        "settings": SQL_SETTINGS,
        "autogenerate_session_id": False,
    }
    assert client.calls == [
        (
            "query_arrow",
            "SELECT count() AS n FROM system.databases WHERE name = {database:String}",
            {"database": "shop"},
            None,
        ),
        ("command", "CREATE DATABASE IF NOT EXISTS `shop`", None, None),
        ("insert_arrow", "quarantine", 0, "shop"),
        ("close",),
    ]
    assert client.database == "shop"


# -- open_backend ---------------------------------------------------------------------------


def _table_count(store: Backend) -> int:
    if isinstance(store, DuckDBBackend):
        return int(store.scalar("SELECT count(*) FROM duckdb_tables()"))
    return int(store.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase()"))


@pytest.mark.parametrize("name", ["duckdb", "chdb"])
def test_open_backend_picks_the_engine_and_creates_the_schema(
    name: str, tmp_path: Path, chdb_data_dir: Path
) -> None:
    # chDB stores of a test run share one data directory (one engine per process).
    data_dir = chdb_data_dir if name == "chdb" else tmp_path
    settings = Settings(backend=name, data_dir=data_dir)

    store = open_backend(settings, create=False)
    try:
        assert store.name == name
        assert _table_count(store) == 0
    finally:
        store.close()

    store = open_backend(settings)
    try:
        assert _table_count(store) == len(TABLES)
        store.load(LoadBatch(_events("m1"), ORDER_LINES.empty()), ("loader", 1))
        assert store.stats().rows["events"] == 1
    finally:
        if isinstance(store, ClickHouseBackend):
            assert store.database == "opencdp"
            store.drop_database()
        store.close()
    if name == "duckdb":
        assert settings.store_path.exists()


def _events(*message_ids: str) -> pa.Table:
    at = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "message_id": m,
            "type": "track",
            "event": "Signed Up",
            "timestamp": at,
            "received_at": at,
            "source": "s",
            "channel": "web",
            "lsn": i,
        }
        for i, m in enumerate(message_ids)
    ]
    return pa.Table.from_pylist(
        [{c: r.get(c) for c in EVENTS.column_names} for r in rows], schema=EVENTS.arrow_schema
    )
