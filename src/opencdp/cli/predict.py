"""`opencdp predict fit|score|status|fits`: the prediction models from the command line.

Works on the store directly, or through the running server that holds it (``cli/local.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from opencdp.cli.common import console, err
from opencdp.cli.common import fail as _fail
from opencdp.cli.common import load_settings as _settings
from opencdp.cli.local import ServerClient, store_or_server
from opencdp.errors import OpenCDPError

predict_app = typer.Typer(
    help="Predictions: fit BG/NBD + Gamma-Gamma, propensity, churn, next order, replenishment, VIP; rescore; status.",
    no_args_is_help=True,
)

Models = Annotated[list[str] | None, typer.Argument(help="models (clv purchase churn next_order replenishment vip); default: all")]
Now = Annotated[str | None, typer.Option(help="use the history up to this ISO time (UTC if no zone), e.g. 2026-12-01")]




def _parse_now(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        err.print(f"[red]error (now):[/red] {text!r} is not an ISO date or time, e.g. 2026-12-01 or 2026-12-01T12:00Z")
        raise typer.Exit(2) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _print_fits(rows: list[dict[str, Any]]) -> None:
    table = Table("model", "status", "version", "data until", "s", "scores", "key figures")
    for row in rows:
        metrics = row.get("metrics") or {}
        keys = ("auc", "baseline_auc", "lift_top_decile", "holdout_mae", "baseline_holdout_mae", "backtest_mae_days", "customers_due")
        figures = ", ".join(f"{k}={metrics[k]}" for k in keys if metrics.get(k) is not None)
        if row["status"] == "failed":
            figures = f"[yellow]{row.get('message')}[/yellow]"
        scores = ", ".join(f"{k} ({v:,})" for k, v in (row.get("scores") or {}).items())
        seconds = row.get("seconds")
        table.add_row(
            row["model"], row["status"], row.get("model_version", ""), str(row.get("data_until", ""))[:19],
            "" if seconds is None else f"{seconds:.1f}", scores, figures,
        )
    console.print(table)


def _fit_on_server(server: ServerClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Start a background fit on the server and wait for it, showing each model as it finishes."""
    job = server.call("POST", "/api/v1/predictions/fit", json.dumps(body).encode())
    shown = 0
    while True:
        for row in job["fits"][shown:]:
            err.print(f"{row['model']}: {row['status']}")
        shown = len(job["fits"])
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(2)
        job = server.call("GET", f"/api/v1/predictions/fits/{job['fit_id']}")
    if job["status"] == "failed" and not job["fits"]:
        err.print(f"[red]error:[/red] fit {job['fit_id']} failed: {job['message']}")
        raise typer.Exit(1)
    rows: list[dict[str, Any]] = job["fits"]
    return rows


@predict_app.command("fit")
def fit_command(
    models: Models = None,
    now: Now = None,
    horizon_days: Annotated[int | None, typer.Option(help="purchase horizon (default predictions_horizon_days)")] = None,
    churn_days: Annotated[int | None, typer.Option(help="churn horizon (default predictions_churn_days)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the registry rows as JSON")] = False,
) -> None:
    """Fit models on the history and store their scores (a model without enough history writes nothing)."""
    settings = _settings()
    overrides = {"horizon_days": horizon_days, "churn_days": churn_days}
    at = _parse_now(now)
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                body = {"models": models or None, "now": at.isoformat() if at else None, **overrides}
                rows = _fit_on_server(target, body)
            else:
                from opencdp.predictions import run

                target.create_schema()
                if target.settings is None:
                    target.settings = settings
                options = run.Options.from_settings(settings, **overrides)
                rows = [r.to_dict() for r in run.fit(target, models or None, now=at, options=options)]
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print_json(json.dumps(rows)) if as_json else _print_fits(rows)
    if any(r["status"] == "failed" for r in rows):
        raise typer.Exit(1)


@predict_app.command("score")
def score_command(models: Models = None, now: Now = None) -> None:
    """Rescore the current history with the last fitted models, without refitting."""
    settings = _settings()
    at = _parse_now(now)
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                body = {"models": models or None, "now": at.isoformat() if at else None}
                rows = target.call("POST", "/api/v1/predictions/score", json.dumps(body).encode())["scores"]
            else:
                from opencdp.predictions import run

                rows = [r.to_dict() for r in run.score(target, models or None, now=at)]
    except OpenCDPError as error:
        raise _fail(error) from None
    _print_fits(rows)


@predict_app.command("status")
def status_command(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """Each model's latest fit: when, on what history, how good (backtest figures against the baseline)."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                rows = [r for r in target.call("GET", "/api/v1/predictions")["models"] if "model_version" in r]
            else:
                from opencdp.predictions import registry

                target.create_schema()
                rows = [r.to_dict() for r in registry.latest(target).values()]
    except OpenCDPError as error:
        raise _fail(error) from None
    if as_json:
        console.print_json(json.dumps(rows))
    elif not rows:
        console.print("no model fitted yet: run `opencdp predict fit`")
    else:
        _print_fits(rows)
