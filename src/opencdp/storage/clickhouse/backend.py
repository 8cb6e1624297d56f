"""ClickHouse: embedded (chDB) or a server, for stores that outgrow one DuckDB file.

There are no transactions, so ``load`` is written to be idempotent statement by
statement: replaying a batch after a crash anywhere in it stores nothing twice.
Current-state tables are ReplacingMergeTree tables keyed on ``table.key``; an upsert
is a plain insert, and reads collapse the versions with FINAL (newest version wins).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.storage import ddl, profile_summary
from opencdp.storage.base import Backend, Capabilities, LoadBatch, LoadResult
from opencdp.storage.clickhouse.connection import (
    DEFAULT_DATABASE,
    ClickHouseConnection,
    quote_identifier,
)
from opencdp.storage.schema import (
    CHECKPOINTS,
    EVENTS,
    ORDER_LINES,
    PROFILE_SUMMARY,
    QUARANTINE,
    Column,
    T,
    Table,
)

TYPES: dict[T, str] = {
    T.STRING: "String",
    T.LOW_CARD: "LowCardinality(String)",
    T.INT: "Int64",
    T.FLOAT: "Float64",
    T.BOOL: "Bool",
    T.TIMESTAMP: "DateTime64(3, 'UTC')",
    T.DATE: "Date32",
    T.JSON: "String",  # queried with JSONExtract*; the JSON type is still young
}

_EVENT_COLUMNS = ", ".join(quote_identifier(c) for c in EVENTS.column_names)
_LINE_COLUMNS = ", ".join(quote_identifier(c) for c in ORDER_LINES.column_names)

# Events of the batch not yet stored, one per message_id: the one with the smallest lsn.
# The inner IN keeps the set of stored ids built for the NOT IN to this batch's ids.
_NEW_EVENTS = """
CREATE TABLE {new} ENGINE = Memory AS
SELECT * FROM {staged}
WHERE message_id NOT IN (
  SELECT message_id FROM events WHERE message_id IN (SELECT message_id FROM {staged}) {window}
)
ORDER BY lsn
LIMIT 1 BY message_id
"""
# Lines of the new events, once per (message_id, line_no), and only those not stored
# yet: lines go in before their events, so a replay after a crash between the two
# inserts finds the events new again but their lines already there.
_NEW_LINES = """
CREATE TABLE {new_lines} ENGINE = Memory AS
SELECT * FROM {staged_lines}
WHERE message_id IN (SELECT message_id FROM {new})
  AND (message_id, line_no) NOT IN (
    SELECT message_id, line_no FROM order_lines
    WHERE message_id IN (SELECT message_id FROM {new})
  )
LIMIT 1 BY message_id, line_no
"""


def _is_current_state(table: Table) -> bool:
    return bool(table.key) and table.version is not None


class ClickHouseBackend(Backend):
    """A store in one ClickHouse database, over a chDB or HTTP connection.

    ``database`` is created if missing; tests give each store its own database inside
    the one chDB engine a process can host.
    """

    name: str = "clickhouse"
    capabilities: Capabilities = Capabilities(
        dialect="clickhouse", transactions=False, embedded=False, native_upsert=False
    )

    def __init__(self, connection: ClickHouseConnection, database: str = DEFAULT_DATABASE) -> None:
        if connection.embedded:
            # Whether the engine is embedded depends on the connection, not on the class.
            self.capabilities = replace(type(self).capabilities, embedded=True)
            self.name = "chdb"
        self.connection = connection
        self.database = database
        self._to_type = ddl.type_mapper(TYPES, "clickhouse", nullable_wrapper=True)
        self._write_lock = threading.Lock()
        self._ensure_database()
        connection.use(database)

    def _ensure_database(self) -> None:
        # Look before creating, so that a server user without the CREATE DATABASE grant
        # can still open a database that exists.
        exists = self.connection.query_arrow(
            "SELECT count() AS n FROM system.databases WHERE name = {database:String}",
            {"database": self.database},
        )
        if not exists.column(0)[0].as_py():
            self.connection.command(
                f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}"
            )

    def drop_database(self) -> None:
        """Delete this store's database with all its tables (for tests and resets)."""
        self.connection.command(f"DROP DATABASE IF EXISTS {quote_identifier(self.database)} SYNC")

    # -- primitives ----------------------------------------------------------
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.connection.command(sql, params)

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.connection.query_arrow(sql, params)

    def insert(self, table: str, data: pa.Table) -> None:
        self.connection.insert_arrow(table, data)

    def create_table_sql(self, table: Table) -> str:
        engine: exp.Expression
        if _is_current_state(table):
            assert table.version is not None
            engine = exp.Anonymous(
                this="ReplacingMergeTree", expressions=[exp.column(table.version)]
            )
            order = table.key
        else:
            engine = exp.to_identifier("MergeTree")
            order = table.order_by
        properties: list[exp.Expression] = [exp.EngineProperty(this=engine)]
        # ReplacingMergeTree collapses versions only within a partition, so current-state
        # tables are never partitioned.
        if table.partition_by_month and not _is_current_state(table):
            month = exp.Anonymous(
                this="toYYYYMM", expressions=[exp.column(table.partition_by_month)]
            )
            properties.append(exp.PartitionedByProperty(this=month))
        properties.append(ddl.order_by(order))
        create = ddl.create_table(
            table,
            self._to_type,
            not_null_constraints=False,
            primary_key=False,
            properties=properties,
        )
        return self.render(create)

    def column_names(self, table: str) -> set[str]:
        rows = self.query_arrow(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {table:String}",
            {"table": table},
        )
        return set(rows.column(0).to_pylist())

    def add_column_sql(self, table: Table, column: Column) -> str:
        definition = exp.ColumnDef(this=exp.to_identifier(column.name), kind=self._to_type(column))
        return self.render(exp.Alter(this=exp.to_table(table.name), kind="TABLE", actions=[definition]))

    def create_indexes(self, table: Table) -> None:
        # Bloom-filter skipping indexes: a read by the column skips the granules (8192 rows)
        # that cannot hold the value. Parts written before the index existed are read whole.
        present = set(
            self.query_arrow(
                "SELECT name FROM system.data_skipping_indices WHERE database = currentDatabase() AND table = {table:String}",
                {"table": table.name},
            ).column(0).to_pylist()
        )
        for column in table.indexes:
            name = f"{table.name}_{column}"
            if name in present:
                continue
            index = exp.IndexColumnConstraint(
                this=exp.to_identifier(name),
                expression=exp.column(column),
                index_type=exp.var("bloom_filter"),
                granularity=exp.Literal.number(1),
            )
            alter = exp.Alter(this=exp.to_table(table.name), kind="TABLE", actions=[exp.AddConstraint(expressions=[index])])
            self.execute(self.render(alter))

    def table_ref(self, table: Table) -> exp.Expression:
        """``t FINAL`` for current-state tables (versions collapsed at read), else ``t``.

        The FINAL node wraps the table: to alias it, set the alias on the inner table
        (``ref.this.set("alias", exp.TableAlias(this=exp.to_identifier("p")))``), which
        renders ``t AS p FINAL``; ``exp.alias_`` on the FINAL node is dropped by sqlglot.
        """
        ref = exp.to_table(table.name)
        return exp.Final(this=ref) if _is_current_state(table) else ref

    def load(self, batch: LoadBatch, checkpoint: tuple[str, int] | None = None) -> LoadResult:
        result = LoadResult()
        with self._write_lock:
            # Lines, then events, then quarantine, then the checkpoint: each step is
            # skipped on replay once done, except quarantine rows, which are appended
            # again if a crash comes before the checkpoint.
            if batch.events.num_rows:
                self._load_events(batch, result)
            if batch.quarantine is not None and batch.quarantine.num_rows:
                self.insert(QUARANTINE.name, batch.quarantine)
                result.quarantined = batch.quarantine.num_rows
            if checkpoint is not None:
                self.insert(CHECKPOINTS.name, self.checkpoint_table(*checkpoint))
        return result

    def _load_events(self, batch: LoadBatch, result: LoadResult) -> None:
        run = self.connection.command
        with self._scratch_tables() as scratch:
            staged = scratch("events")
            run(f"CREATE TABLE {staged} AS events ENGINE = Memory")
            self.insert(staged, batch.events)
            new = scratch("new_events")
            if batch.dedupe_since is None:
                run(_NEW_EVENTS.format(new=new, staged=staged, window=""))
            else:
                window = "AND received_at >= {since:DateTime64(3, 'UTC')}"
                run(_NEW_EVENTS.format(new=new, staged=staged, window=window), {"since": batch.dedupe_since})
            ids = self.query_arrow(f"SELECT message_id FROM {new} ORDER BY lsn")
            result.new_message_ids = [str(v) for v in ids.column(0).to_pylist()]
            result.inserted = len(result.new_message_ids)
            result.duplicates = batch.events.num_rows - result.inserted
            if not result.inserted:
                return
            if batch.order_lines.num_rows:
                staged_lines = scratch("lines")
                run(f"CREATE TABLE {staged_lines} AS order_lines ENGINE = Memory")
                self.insert(staged_lines, batch.order_lines)
                new_lines = scratch("new_lines")
                run(_NEW_LINES.format(new_lines=new_lines, staged_lines=staged_lines, new=new))
                result.order_lines = int(self.scalar(f"SELECT count() FROM {new_lines}") or 0)
                if result.order_lines:
                    run(
                        f"INSERT INTO order_lines ({_LINE_COLUMNS}) SELECT {_LINE_COLUMNS} FROM {new_lines}"
                    )
            run(
                f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM {new} "
                "ORDER BY event, timestamp"
            )
            # The events' index by profile (storage/profile_summary.py). Without transactions, a
            # crash between the events and this insert leaves those events out of the counts.
            stored = profile_summary.stored_events(batch.events, result.new_message_ids)
            summary = profile_summary.update(stored, lambda ids: self._summary_rows(scratch, ids))
            if summary.num_rows:
                self.insert(PROFILE_SUMMARY.name, summary)

    def _summary_rows(self, scratch: Callable[[str], str], profile_ids: pa.Array) -> pa.Table:
        """Stored ``profile_summary`` rows of these ids (a key range read through the ids' scratch table)."""
        ids = scratch("summary_ids")
        self.connection.command(f"CREATE TABLE {ids} (profile_id String) ENGINE = Memory")
        self.insert(ids, pa.table({"profile_id": profile_ids}))
        return self.query_arrow(f"SELECT * FROM profile_summary FINAL WHERE profile_id IN (SELECT profile_id FROM {ids})")

    @contextmanager
    def _scratch_tables(self) -> Iterator[Callable[[str], str]]:
        """Names for Memory tables that live for one load, all dropped at the end.

        Plain tables rather than TEMPORARY ones: over HTTP those need a server session,
        which would serialise every request of the process. A crash can leave some
        behind; their names start with ``_load_``.
        """
        created: list[str] = []

        def scratch(purpose: str) -> str:
            name = f"_load_{purpose}_{uuid.uuid4().hex}"  # a plain identifier: no quoting needed
            created.append(name)
            return name

        def drop(name: str) -> None:
            self.connection.command(f"DROP TABLE IF EXISTS {name} SYNC")

        try:
            yield scratch
        except BaseException:
            # Best effort only: the load's own error is the one to report.
            for name in created:
                with suppress(Exception):
                    drop(name)
            raise
        for name in created:
            drop(name)

    def upsert(self, table: Table, data: pa.Table) -> None:
        assert _is_current_state(table), f"{table.name} is not a current-state table"
        with self._write_lock:
            # ReplacingMergeTree(version) keeps the highest version per key (the last
            # inserted on a tie); FINAL in table_ref applies that before merges do.
            self.insert(table.name, data)

    def size_bytes(self) -> int:
        value = self.scalar(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = {database:String} AND active",
            {"database": self.database},
        )
        return int(value or 0)

    def close(self) -> None:
        self.connection.close()
