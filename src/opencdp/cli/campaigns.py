"""`opencdp campaigns ...`: templates, broadcast campaigns and trigger scenarios from the command line.

Works on the store directly, or through the running server that holds it (``cli/local.py``):
the server's API does the same checks, so a definition refused here names the same field.
``send`` runs the sender until nothing is due (only on the store directly: a running server
sends by itself).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from opencdp.cli.common import console, err
from opencdp.cli.common import fail as _fail
from opencdp.cli.common import load_settings as _settings
from opencdp.cli.local import ServerClient, store_or_server
from opencdp.config import Settings
from opencdp.errors import OpenCDPError

campaigns_app = typer.Typer(
    help="Communication: templates, campaigns, scenarios (save, activate, pause, report), the scenario library, send.",
    no_args_is_help=True,
)
Kind = Annotated[str, typer.Option("--kind", "-k", help="template, campaign or scenario")]
_PLURAL = {"template": "templates", "campaign": "campaigns", "scenario": "scenarios"}




def _kind(kind: str) -> str:
    if kind not in _PLURAL:
        err.print(f"[red]error (kind):[/red] {kind!r}; use template, campaign or scenario")
        raise typer.Exit(2)
    return kind


def _runtime(backend: Any, settings: Settings) -> Any:
    from opencdp.campaigns.runtime import CampaignRuntime

    return CampaignRuntime(backend, settings)


@campaigns_app.command("list")
def list_command(kind: Kind = "campaign") -> None:
    """List templates, campaigns or scenarios."""
    from opencdp.campaigns import store

    settings = _settings()
    with store_or_server(settings) as target:
        if isinstance(target, ServerClient):
            rows = target.call("GET", f"/api/v1/{_PLURAL[_kind(kind)]}")
        else:
            rows = [s.to_dict() for s in store.list_all(target, _kind(kind))]
    table = Table("id", "name", "status", "updated")
    for row in rows:
        table.add_row(row["id"], row.get("name", ""), row.get("status", ""), str(row.get("updated_at", ""))[:19])
    console.print(table)


@campaigns_app.command("save")
def save_command(path: Annotated[Path, typer.Argument(help="a JSON file with the definition (and its id)")], kind: Kind = "campaign") -> None:
    """Save a template, campaign or scenario from a JSON file (checked; campaigns and scenarios as drafts)."""
    from opencdp.campaigns import broadcast, scenarios, store, templates

    body = json.loads(path.read_text())
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                saved = target.call("POST", f"/api/v1/{_PLURAL[_kind(kind)]}", json.dumps(body).encode())
            elif kind == "template":
                template = templates.Template.from_dict(body)
                templates.validate(template)
                saved = store.save(target, store.TEMPLATE, template.template_id, body.get("name") or template.template_id,
                                   template.to_dict(), status=store.ACTIVE).to_dict()
            else:
                object_id = store.check_id(body.get("id"))
                definition = {k: v for k, v in body.items() if k not in ("id", "name", "status")}
                runtime = _runtime(target, settings)
                check = broadcast.validate if kind == "campaign" else scenarios.validate
                saved = store.save(target, _kind(kind), object_id, body.get("name") or object_id,
                                   check(target, runtime.channels, definition)).to_dict()
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"saved {kind} [bold]{saved['id']}[/bold] ({saved.get('status')})")


@campaigns_app.command("activate")
def activate_command(object_id: str, kind: Kind = "campaign") -> None:
    """Validate against the store as it is now and start (a campaign is planned into the outbox)."""
    from opencdp.campaigns import broadcast, scenarios, store

    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                result = target.call("POST", f"/api/v1/{_PLURAL[_kind(kind)]}/{object_id}/activate", b"{}")
            elif kind == "campaign":
                result = broadcast.activate(target, _runtime(target, settings).channels, object_id, dt.datetime.now(dt.UTC),
                                            default_zone=settings.campaign_timezone)
            else:
                stored = store.require(target, store.SCENARIO, object_id)
                checked = scenarios.validate(target, _runtime(target, settings).channels, stored.definition)
                result = store.save(target, store.SCENARIO, object_id, stored.name, checked, status=store.ACTIVE).to_dict()
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print_json(json.dumps(result, default=str))


@campaigns_app.command("pause")
def pause_command(object_id: str, kind: Kind = "campaign") -> None:
    """Pause a campaign or scenario (journeys wait; planned messages stay in the outbox)."""
    from opencdp.campaigns import store

    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                target.call("POST", f"/api/v1/{_PLURAL[_kind(kind)]}/{object_id}/pause", b"{}")
            else:
                store.set_status(target, _kind(kind), object_id, store.PAUSED)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"paused {kind} {object_id}")


@campaigns_app.command("report")
def report_command(object_id: str, kind: Kind = "campaign",
                   hours: Annotated[float | None, typer.Option(help="attribution window in hours")] = None) -> None:
    """Per-variant delivered, open, click and conversion rates, revenue, significance and uplift."""
    from opencdp.campaigns import reports

    settings = _settings()
    with store_or_server(settings) as target:
        if isinstance(target, ServerClient):
            query = f"?attribution_hours={hours}" if hours else ""
            report = target.call("GET", f"/api/v1/{_PLURAL[_kind(kind)]}/{object_id}/report{query}")
        else:
            report = reports.campaign_report(target, object_id, attribution_hours=hours or settings.campaign_attribution_hours,
                                             conversion_event=settings.campaign_conversion_event)
    table = Table("variant", "recipients", "sent", "opened", "clicked", "converted", "revenue", "open %", "click %", "conv %", "unsub")
    for name, v in sorted(report["variants"].items()):
        table.add_row(name, str(v["recipients"]), str(v["sent"]), str(v["opened"]), str(v["clicked"]), str(v["converted"]),
                      f"{v['revenue']:.2f}", f"{100 * v['open_rate']:.1f}", f"{100 * v['click_rate']:.1f}",
                      f"{100 * v['conversion_rate']:.2f}", str(v["unsubscribed"]))
    console.print(table)
    for test in report["tests"]:
        console.print(json.dumps(test, default=str))


@campaigns_app.command("library")
def library_command(install: Annotated[str | None, typer.Option(help="install this ready-made scenario (as a draft)")] = None) -> None:
    """List the ready-made scenarios, or install one with the templates it uses."""
    from opencdp.campaigns import library

    if install is None:
        for name in library.names():
            console.print(f"{name:28} {library.SCENARIOS[name]['name']}")
        return
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                target.call("POST", f"/api/v1/scenarios/library/{install}", b"{}")
            else:
                library.install(target, install)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"installed scenario {install} (draft): edit it, then `opencdp campaigns activate {install} -k scenario`")


@campaigns_app.command("send")
def send_command() -> None:
    """Send everything due now and run due scenario steps (the store directly; a running server sends by itself)."""
    settings = _settings()
    with store_or_server(settings) as target:
        if isinstance(target, ServerClient):
            console.print("the server is running: it sends by itself")
            return
        runtime = _runtime(target, settings)
        try:
            runtime.engine.tick()
            result = runtime.sender.run_until_idle()
        finally:
            runtime.sender.close()
            runtime.channels.close()
    console.print(f"sent {result.sent}, skipped {result.skipped}, deferred {result.deferred}, "
                  f"retrying {result.retried}, failed {result.failed}")
