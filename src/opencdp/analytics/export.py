"""Export raw data for BI: events, orders, order lines, profiles, scores and memberships.

Each dataset is the query of its ``bi_*`` view (``views.VIEWS``), so a file and the view
have the same columns. Event-like datasets are written partitioned by the event date
(hive style, ``<dir>/<dataset>/date=YYYY-MM-DD/part-0.parquet``), one calendar month
at a time so memory stays bounded on a large store; current-state datasets (profiles,
scores, memberships) are snapshots, partitioned by the export date. Parquet or CSV.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from sqlglot import exp

from opencdp.analytics.params import ReportError
from opencdp.analytics.sql import Engine, col
from opencdp.analytics.views import VIEWS
from opencdp.storage.base import Backend

DATED = {"bi_events": "timestamp", "bi_orders": "ts", "bi_order_lines": "ts"}
FORMATS = ("parquet", "csv")


def _months(backend: Backend, name: str, column: str) -> list[dt.date]:
    engine = Engine(backend)
    query = exp.select(
        exp.alias_(engine.epoch_ms(exp.Min(this=col(column))), "lo"), exp.alias_(engine.epoch_ms(exp.Max(this=col(column))), "hi")
    ).from_(exp.alias_(exp.Subquery(this=VIEWS[name](engine)), "v", table=True))
    row = backend.rows(query)[0]
    if row["lo"] is None or not row["hi"]:
        return []
    lo = dt.datetime.fromtimestamp(int(row["lo"]) / 1000, dt.UTC).date().replace(day=1)
    hi = dt.datetime.fromtimestamp(int(row["hi"]) / 1000, dt.UTC).date()
    months = []
    while lo <= hi:
        months.append(lo)
        lo = (lo + dt.timedelta(days=32)).replace(day=1)
    return months


def _write(table: pa.Table, target: Path, fmt: str, part: str) -> int:
    if not table.num_rows:
        return 0
    if "date" in table.column_names:
        table = table.set_column(table.column_names.index("date"), "date", pc.strftime(table.column("date").cast(pa.timestamp("s")), "%Y-%m-%d"))
    ds.write_dataset(
        table, target, format=fmt, partitioning=["date"], partitioning_flavor="hive",
        basename_template=f"{part}-{{i}}.{fmt}", existing_data_behavior="overwrite_or_ignore",
    )  # fmt: skip
    return table.num_rows


def export(backend: Backend, target: Path, *, fmt: str = "parquet", datasets: list[str] | None = None,
           now: dt.datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the datasets under ``target`` (replacing an earlier export of them); rows per dataset."""
    if fmt not in FORMATS:
        raise ReportError(f"`format` must be one of {', '.join(FORMATS)}, not {fmt!r}", field="format")
    chosen = datasets or list(VIEWS)
    for name in chosen:
        if name not in VIEWS:
            raise ReportError(f"no dataset `{name}`; datasets: {', '.join(VIEWS)}", field="datasets")
    now = now or dt.datetime.now(dt.UTC)
    engine = Engine(backend)
    counts: dict[str, int] = {}
    for name in chosen:
        out = target / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        query = VIEWS[name](engine)
        if name in DATED:
            column = DATED[name]
            total = 0
            for month in _months(backend, name, column):
                end = (month + dt.timedelta(days=32)).replace(day=1)
                start_t = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
                end_t = dt.datetime(end.year, end.month, 1, tzinfo=dt.UTC)
                chunk = (
                    exp.select("*")
                    .from_(exp.alias_(exp.Subquery(this=query.copy()), "v", table=True))
                    .where(exp.and_(exp.GTE(this=col(column), expression=engine.time(start_t)), exp.LT(this=col(column), expression=engine.time(end_t))))
                )  # fmt: skip
                total += _write(backend.select(chunk), out, fmt, f"part-{month:%Y%m}")
            counts[name] = total
        else:
            table = backend.select(query)
            table = table.append_column("date", pa.array([now.date()] * table.num_rows, pa.date32()))
            counts[name] = _write(table, out, fmt, "snapshot")
    return {"format": fmt, "to": str(target), "rows": counts}
