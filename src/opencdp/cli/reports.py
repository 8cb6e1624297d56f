"""``opencdp reports ...`` and ``opencdp bi ...``: ready reports, scoring runs, BI views and export.

Like the other command groups, a command opens the store itself when it is free and
otherwise goes through the running server's API (``cli.local.store_or_server``).
``reports show NAME --html FILE`` draws the report into one self-contained HTML file
(inline SVG; no PNG, matplotlib is not a dependency).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.table import Table

from opencdp.cli.common import console, err
from opencdp.cli.common import fail as _fail
from opencdp.cli.common import load_settings as _settings
from opencdp.cli.local import ServerClient, store_or_server
from opencdp.errors import OpenCDPError

reports_app = typer.Typer(help="Ready reports (sales, activity, RFM, cohorts ...) as tables, JSON or HTML charts.", no_args_is_help=True)
bi_app = typer.Typer(help="BI: stable SQL views and Parquet/CSV export.", no_args_is_help=True)




def _pairs(items: list[str] | None) -> dict[str, Any]:
    """``-p from=2026-01-01 -p steps=a,b`` -> parameters."""
    found: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]error (param):[/red] `{item}` is not key=value (e.g. -p from=2026-01-01)")
            raise typer.Exit(2)
        found[key.strip()] = value.strip()
    return found


def _as_of(value: str | None) -> dt.datetime:
    from opencdp.analytics.params import parse_time

    return parse_time(value, "as_of") if value else dt.datetime.now(dt.UTC)


@reports_app.command("list")
def reports_list() -> None:
    """The reports and the parameters each takes."""
    from opencdp.analytics.reports import catalogue

    table = Table("report", "parameters", "what it shows")
    for item in catalogue():
        table.add_row(item["name"], ", ".join(item["params"]), item["description"])
    console.print(table)


@reports_app.command("show")
def reports_show(
    name: Annotated[str, typer.Argument(help="the report (see `opencdp reports list`)")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value, e.g. -p from=2026-01-01 -p interval=week")] = None,
    as_of: Annotated[str | None, typer.Option(help="compute as of this date/time (default: now)")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="write the report as a self-contained HTML chart file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the chart-ready JSON")] = False,
) -> None:
    """Run one report: a table on the terminal, its JSON, or an HTML chart."""
    from opencdp.analytics.charts import render_html
    from opencdp.analytics.reports import run_report

    raw = _pairs(param)
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                query = {**raw, **({"as_of": as_of} if as_of else {})}
                report = target.call("GET", f"/api/v1/reports/{quote(name)}?{urlencode(query)}")
            else:
                report = run_report(target, name, raw, _as_of(as_of))
    except OpenCDPError as error:
        raise _fail(error) from None
    if html is not None:
        html.write_text(render_html(report), encoding="utf-8")
        console.print(f"wrote {html} (HTML with inline SVG charts; PNG needs matplotlib, which is not installed)")
        return
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    _print_rows(report.get("table") or [], title=f"{name} {report.get('params', {})}")


def _print_rows(rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        console.print(f"{title}: no data")
        return
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = Table(*columns, title=title)
    for row in rows[:200]:
        table.add_row(*(json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else ("" if v is None else str(v)) for v in (row.get(c) for c in columns)))
    console.print(table)


@reports_app.command("score")
def reports_score(
    what: Annotated[str, typer.Argument(help="rfm, engagement, interest or value")],
    as_of: Annotated[str | None, typer.Option(help="score as of this date/time (default: now)")] = None,
    method: Annotated[str | None, typer.Option(help="RFM cut points: quantile or fixed (default: the setting)")] = None,
) -> None:
    """Compute per-profile scores and store them (usable in segments as computed.rfm_cell ...)."""
    from opencdp.analytics.params import ReportError

    paths = {"rfm": "rfm/score?kind=orders", "engagement": "rfm/score?kind=engagement", "interest": "interest/score", "value": "value/score"}
    if what not in paths:
        raise _fail(ReportError(f"`what` must be one of {', '.join(paths)}, not {what!r}", field="what"))
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                extra = urlencode({k: v for k, v in (("as_of", as_of), ("method", method)) if v})
                sep = "&" if "?" in paths[what] else "?"
                result = target.call("POST", f"/api/v1/reports/{paths[what]}" + (sep + extra if extra else ""))
            else:
                result = _score_local(target, what, _as_of(as_of), method)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print_json(json.dumps(result, default=str))


def _score_local(backend: Any, what: str, now: dt.datetime, method: str | None) -> Any:
    from opencdp.analytics import cohorts, interest, rfm

    if what in ("rfm", "engagement"):
        scoring = rfm.Scoring.from_settings(backend.settings, method=method)
        return rfm.run(backend, now, kind="orders" if what == "rfm" else "engagement", scoring=scoring).to_dict()
    if what == "interest":
        return interest.store(backend, now)
    return cohorts.store_value_scores(backend, now)


@bi_app.command("views")
def bi_views(show: Annotated[bool, typer.Option("--show", help="print the SQL instead of creating the views")] = False) -> None:
    """Create (or replace) the stable bi_* views in the store (see docs/bi-views.md)."""
    from opencdp.analytics import views

    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                names = target.call("POST", "/api/v1/reports/bi/views")["views"]
            elif show:
                for name in views.VIEWS:
                    console.print(views.view_sql(target, name) + ";\n", soft_wrap=True, highlight=False)
                return
            else:
                names = views.create_views(target)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print("created views: " + ", ".join(names))


@bi_app.command("export")
def bi_export(
    to: Annotated[Path, typer.Option("--to", help="the directory to write into")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="only these (bi_events, bi_orders ...)")] = None,
) -> None:
    """Export events, orders, order lines (by date=YYYY-MM-DD), profiles, scores and memberships (snapshots)."""
    from opencdp.analytics import export

    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                query = urlencode([("format", fmt), ("to", str(to.resolve())), *(("dataset", d) for d in dataset or [])])
                result = target.call("POST", f"/api/v1/reports/bi/export?{query}")
            else:
                result = export.export(target, to, fmt=fmt, datasets=dataset or None)
    except OpenCDPError as error:
        raise _fail(error) from None
    table = Table("dataset", "rows", title=f"{result['format']} -> {result['to']}")
    for name, rows in result["rows"].items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
