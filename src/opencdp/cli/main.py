"""`opencdp`: init, serve, import, demo, keys, profiles, segments, status."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from opencdp.cli.campaigns import campaigns_app
from opencdp.cli.common import console, err
from opencdp.cli.common import fail as _fail
from opencdp.cli.common import load_settings as _settings
from opencdp.cli.local import ServerClient, remove_server_file, store_or_server, write_server_file
from opencdp.cli.predict import predict_app
from opencdp.cli.recs import recs_app
from opencdp.cli.reports import bi_app, reports_app
from opencdp.config import Settings
from opencdp.errors import OpenCDPError, StoreLockedError, TerminalError
from opencdp.keys import KeyRing

app = typer.Typer(help="opencdp: an open-source customer data platform.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo home-and-furniture shop.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(demo_app, name="demo")
identity_app = typer.Typer(help="Identity resolution: probabilistic dedupe of profiles.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")
profiles_app = typer.Typer(help="Personal data of one profile: export, erase.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
segments_app = typer.Typer(help="Segments: define, check, preview, refresh, list members, export.", no_args_is_help=True)
traits_app = typer.Typer(help="Computed traits: list them, declare and remove those kept in the store.", no_args_is_help=True)
app.add_typer(traits_app, name="traits")
app.add_typer(segments_app, name="segments")
# stage command groups (reports, predict, recs, campaigns) are defined in their own cli modules, added here one line each
app.add_typer(campaigns_app, name="campaigns")
app.add_typer(reports_app, name="reports")
app.add_typer(bi_app, name="bi")
app.add_typer(predict_app, name="predict")
app.add_typer(recs_app, name="recs")




@app.command()
def init() -> None:
    """Create the data directory and the store's tables (safe to repeat)."""
    from opencdp.storage import open_backend

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open_backend(settings) as backend:
            backend.create_schema()
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"store ready: [bold]{settings.backend}[/bold] in {settings.data_dir}")


def _dev_credentials(settings: Settings) -> dict[str, str]:
    """Keys for local use, created once and kept in data/credentials.json (mode 0600)."""
    from opencdp.storage import open_backend

    path = settings.data_dir / "credentials.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    with open_backend(settings) as backend:
        ring = KeyRing(backend)
        _, write_key = ring.create("write", "demo-website")
        _, admin_key = ring.create("admin", "local-admin")
    credentials = {"write_key": write_key, "admin_key": admin_key}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle)
    return credentials


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    dev_keys: Annotated[bool, typer.Option(help="Create/print local write and admin keys.")] = False,
) -> None:
    """Run the HTTP API (tracking + admin) until interrupted."""
    import uvicorn

    from opencdp.web.app import create_app

    settings = _settings()
    if "ingest_processes" not in settings.model_fields_set and (os.cpu_count() or 1) >= 2:
        settings = settings.model_copy(update={"ingest_processes": 2})
    host = host or settings.host
    port = port or settings.port
    try:
        credentials = _dev_credentials(settings) if dev_keys else {}
        application = create_app(settings)
    except OpenCDPError as error:
        raise _fail(error) from None
    url = f"http://{host}:{port}"
    say = functools.partial(console.print, soft_wrap=True, highlight=False)  # URLs and keys on one line
    say(f"[bold green]opencdp[/bold green] on {settings.backend} ({settings.data_dir})")
    say(f"  API:          {url}/v1/track, {url}/v1/batch, {url}/api/v1/...")
    say(f"  OpenAPI docs: {url}/docs")
    if credentials:
        say(f"  write key:    [bold]{credentials['write_key']}[/bold]  (Basic auth username)")
        say(f"  admin key:    [bold]{credentials['admin_key']}[/bold]  (Authorization: Bearer ...)")
        say(f"  (kept in {settings.data_dir / 'credentials.json'})")
    write_server_file(settings, url, application.state.local_token)
    _tune_gc()
    _bound_arrow_memory()
    try:
        uvicorn.run(
            application,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            limit_concurrency=2048,
            backlog=4096,
            timeout_graceful_shutdown=10,
        )
    finally:
        remove_server_file(settings)


def _bound_arrow_memory() -> None:
    """Arrow buffers from the system allocator: mimalloc (Arrow's default) keeps freed
    pages, so a long-running server's RSS would creep up to its biggest loader batch."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    # glibc gives each thread (event loop, log writer, loader, DuckDB and Arrow pools)
    # its own malloc arena that it rarely returns; two arenas bound that.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections for a server that allocates many short-lived dicts.

    Every event decodes into a handful of dicts; with the default threshold (700) the
    collector runs every few events and regularly walks all long-lived objects. Objects
    made at start-up are frozen (never scanned again) and young collections are rarer.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@app.command("import")
def import_(
    kind: Annotated[str, typer.Argument(help="customers, orders, catalog or events")],
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet or JSON Lines file")],
    format: Annotated[str | None, typer.Option(help="csv, parquet or jsonl (default: from the file suffix)")] = None,
    mapping: Annotated[Path | None, typer.Option(exists=True, help="Column-mapping file (TOML or YAML)")] = None,
    rejects: Annotated[Path | None, typer.Option(help="Where to write rejected rows (default: <file>.rejects.csv)")] = None,
) -> None:
    """Import a CRM, POS, catalogue or events file; bad rows go to a reject file."""
    from opencdp.ingest.imports import import_file, load_mapping

    settings = _settings()
    try:
        columns = load_mapping(mapping) if mapping else None
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                query = f"?format={format or ''}&filename={_quote(path.name)}"
                if columns:
                    query += "&mapping=" + _quote(json.dumps(columns.to_dict()))
                report: dict[str, Any] = target.call("POST", f"/api/v1/imports/{kind}{query}", path.read_bytes(), "application/octet-stream")
            else:
                with _progress(f"importing {path.name}", None) as advance:
                    result = import_file(
                        target, path, kind,  # type: ignore[arg-type]
                        settings=settings, format=format, mapping=columns, reject_path=rejects, progress=advance,
                    )
                report = result.to_dict()
    except OpenCDPError as error:
        raise _fail(error) from None
    _print_report(report)
    if report.get("rejected"):
        raise typer.Exit(3)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text)


def _print_report(report: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        if key != "rejects":
            table.add_row(str(key), str(value))
    console.print(table)


class _progress:
    """A rich progress bar whose callback takes the number of rows done so far."""

    def __init__(self, label: str, total: int | None) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        )
        self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> Any:
        self.bar.start()
        return lambda done, total=None: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@demo_app.command("generate")
def demo_generate(
    out: Annotated[Path, typer.Argument(help="Directory to write the demo files into")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files)")] = 42,
) -> None:
    """Write a realistic furniture retailer: catalogue, CRM, POS orders, web/app events."""
    from opencdp.demo import DemoConfig, generate

    with _progress("generating customers", customers) as advance:
        summary = generate(out, DemoConfig(customers=customers, seed=seed), progress=advance)
    console.print(summary)


@demo_app.command("load")
def demo_load(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 42,
    if_empty: Annotated[bool, typer.Option(help="Skip when the store already has events")] = False,
) -> None:
    """Generate the demo shop and import it into the store."""
    from opencdp.demo import DemoConfig, generate
    from opencdp.ingest.imports import import_file
    from opencdp.storage import open_backend

    settings = _settings()
    try:
        with open_backend(settings) as backend:
            if if_empty and backend.scalar("SELECT count(*) FROM events"):
                console.print("store already has events; demo not loaded again")
                return
            out = settings.data_dir / "demo"
            with _progress("generating demo shop", customers) as advance:
                summary = generate(out, DemoConfig(customers=customers, seed=seed), progress=advance)
            files = [("catalog", out / "catalog.csv"), ("customers", out / "customers.csv"), ("orders", out / "pos_orders.csv")]
            files += [("events", path) for path in sorted(out.glob("events-*.parquet"))]
            for kind, path in files:
                with _progress(f"importing {path.name}", None) as advance:
                    report = import_file(backend, path, kind, settings=settings, progress=advance)  # type: ignore[arg-type]
                written = f"{report.products_upserted} products" if kind == "catalog" else f"{report.events_written} events"
                console.print(f"  {path.name}: {written}, {report.rejected} rejected")
            from opencdp.recommendations.blocks import seed_demo_blocks

            blocks = seed_demo_blocks(backend)
            if blocks:
                console.print(f"  recommendation blocks: {', '.join(blocks)}")
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"demo shop loaded: {summary.customers} customers, {summary.products} products")


@keys_app.command("create")
def keys_create(
    kind: Annotated[str, typer.Argument(help="write (a tracking source) or admin")],
    name: Annotated[str, typer.Argument(help="Source name, e.g. website, ios-app")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="Admin keys: read, write, admin or pii:mask; repeat for several (default: admin). "
            "admin implies write and read, write implies read, pii:mask masks personal data.",
        ),
    ] = None,
) -> None:
    """Create a key. An admin key's secret is shown only now."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                request: dict[str, Any] = {"kind": kind, "name": name}
                if scope:
                    request["scopes"] = scope
                body = target.call("POST", "/api/v1/keys", json.dumps(request).encode())
                key_id, plain, scopes = body["key_id"], body["key"], body.get("scopes")
            else:
                key, plain = KeyRing(target).create(kind, name, scopes=scope or None)  # type: ignore[arg-type]
                key_id, scopes = key.key_id, key.scopes
    except OpenCDPError as error:
        raise _fail(error) from None
    granted = f" with scopes {', '.join(scopes)}" if scopes else ""
    console.print(f"{kind} key [bold]{key_id}[/bold] for {name!r}{granted}:", highlight=False, emoji=False)
    console.print(plain, highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (admin secrets are never shown)."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                rows = target.call("GET", "/api/v1/keys")
            else:
                rows = [
                    {"key_id": k.key_id, "kind": k.kind, "name": k.name, "created_at": str(k.created_at),
                     "revoked_at": str(k.revoked_at or ""), "key": k.secret if k.kind == "write" else "",
                     "scopes": list(k.effective_scopes) if k.kind == "admin" else None}
                    for k in KeyRing(target).all()
                ]
    except OpenCDPError as error:
        raise _fail(error) from None
    table = Table("key id", "kind", "name", "scopes", "created", "revoked", "write key")
    for row in rows:
        table.add_row(
            row["key_id"], row["kind"], row["name"], Text(",".join(row.get("scopes") or [])),  # no :emoji: codes
            str(row["created_at"])[:19], str(row.get("revoked_at") or "")[:19], row.get("key") or "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id shown by `keys list`")]) -> None:
    """Revoke a key; it stops working within seconds, also on a running server."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                target.call("DELETE", f"/api/v1/keys/{key_id}")
            else:
                KeyRing(target).revoke(key_id)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"revoked {key_id}")


@identity_app.command("dedupe")
def identity_dedupe(
    auto_merge_at: Annotated[float, typer.Option(help="merge pairs at least this likely")] = 0.95,
    review_at: Annotated[float, typer.Option(help="queue pairs at least this likely for review")] = 0.70,
    apply: Annotated[bool, typer.Option("--apply/--review-only", help="merge sure pairs, or queue everything")] = True,
) -> None:
    """Find profiles of the same person without a shared identifier (names, birthday, city, contacts)."""
    settings = _settings()
    body = {"auto_merge_at": auto_merge_at, "review_at": review_at, "apply": apply}
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                report = target.call("POST", "/api/v1/identity/dedupe", json.dumps(body).encode())
            else:
                from opencdp.identity.dedupe import DedupeSettings
                from opencdp.identity.review import run_dedupe

                if review_at > auto_merge_at:
                    raise _fail(OpenCDPError(f"--review-at ({review_at}) must not be above --auto-merge-at ({auto_merge_at})"))
                with console.status("matching profiles"):
                    result = run_dedupe(target, DedupeSettings(auto_merge_at=auto_merge_at, review_at=review_at), apply=apply)
                report = dataclasses.asdict(result)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(
        f"{report['profiles']:,} profiles, {report['pairs']:,} likely pairs: {report['merged']:,} merged, "
        f"{report['queued']:,} queued for review, {report['refused']:,} refused by merge protection, "
        f"{report['skipped']:,} already decided"
    )


@profiles_app.command("export")
def profiles_export(
    profile_id: Annotated[str, typer.Argument(help="the profile id (a merged id works too)")],
    out: Annotated[Path | None, typer.Option(help="write the JSON here instead of printing it")] = None,
) -> None:
    """Everything held about a person, as JSON (right of access)."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                data = target.call("GET", f"/api/v1/profiles/{profile_id}/export")
            else:
                from opencdp.privacy.erasure import export_profile

                data = export_profile(target, profile_id, requested_by="cli")
    except OpenCDPError as error:
        raise _fail(error) from None
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


@profiles_app.command("erase")
def profiles_erase(
    profile_id: Annotated[str, typer.Argument(help="the profile id (a merged id works too)")],
    yes: Annotated[bool, typer.Option("--yes", help="do it without asking")] = False,
) -> None:
    """Erase a person from every table (right to erasure); their identifiers stay blocked."""
    if not yes and not typer.confirm(f"Erase profile {profile_id} and all its events for good?"):
        raise typer.Exit(1)
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                report = target.call("DELETE", f"/api/v1/profiles/{profile_id}")
            else:
                from opencdp.privacy.erasure import erase_profile, privacy_salt

                result = erase_profile(
                    target, profile_id, mode=settings.erased_events, salt=privacy_salt(settings.data_dir), requested_by="cli"
                )
                report = dataclasses.asdict(result)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print_json(json.dumps(report, default=str))


# -- computed traits ----------------------------------------------------------------------------
_TRAITS = "/api/v1/computed-traits"


@traits_app.command("list")
def traits_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every computed trait: built-in, from computed_traits_file, declared in the store."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                items = target.call("GET", _TRAITS)["traits"]
            else:
                from opencdp.profiles.definitions import declared

                items = [item.to_dict() for item in declared(target)]
    except OpenCDPError as error:
        raise _fail(error) from None
    if as_json:
        print(json.dumps(items, ensure_ascii=False, indent=2, default=str))
        return
    table = Table("name", "origin", "aggregation", "description")
    for item in items:
        definition = item["definition"]
        table.add_row(item["name"], item["origin"], definition["aggregation"], definition.get("description", ""))
    console.print(table)


@traits_app.command("add")
def traits_add(
    file: Annotated[Path, typer.Argument(help="a TOML file of [[traits]] tables, or JSON {\"traits\": [...]}")],
    replace: Annotated[bool, typer.Option("--replace", help="replace traits of the same name declared before")] = False,
) -> None:
    """Declare the file's computed traits in the store (as POST /api/v1/computed-traits)."""
    from opencdp.profiles.computed import load_traits

    settings = _settings()
    try:
        traits = load_traits(file)
        with store_or_server(settings) as target:
            for trait in traits:
                if isinstance(target, ServerClient):
                    body = json.dumps(trait.to_dict()).encode()
                    if replace:
                        target.call("PUT", f"{_TRAITS}/{trait.name}", body)
                    else:
                        target.call("POST", _TRAITS, body)
                else:
                    from opencdp.profiles import definitions

                    definitions.declare(target, definitions.parse(target, trait.to_dict()), replace=replace)
                console.print(f"declared {trait.name}")
    except OpenCDPError as error:
        raise _fail(error) from None


@traits_app.command("remove")
def traits_remove(name: Annotated[str, typer.Argument(help="the trait's name")]) -> None:
    """Stop computing a trait declared in the store (built-in and file traits stay)."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                target.call("DELETE", f"{_TRAITS}/{name}")
            else:
                from opencdp.profiles.definitions import remove

                remove(target, name)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"removed {name}")


# -- segments -----------------------------------------------------------------------------------
# Each command works on the store, or through the admin API when a running server holds it;
# a bad definition exits with 2 and shows where (line, column, caret) and how to fix it.

_SEGMENTS = "/api/v1/segments"


def _segment_fail(error: OpenCDPError) -> typer.Exit:
    where = f" ({error.field})" if error.field else ""
    message = Text(f"error{where}: ", style="red")
    message.append(error.detail, style="default")  # Text, not markup: definitions hold [lists]
    err.print(message)
    suggestion = getattr(error, "suggestion", None)
    if suggestion:
        err.print(Text(f"did you mean: {suggestion}"))
    bad_input = isinstance(error, TerminalError) and error.status in (400, 404, 409, 422)
    return typer.Exit(2 if bad_input and not isinstance(error, StoreLockedError) else 1)


def _api(client: ServerClient, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
    """Call the server's segments API; its error answers come back as the errors they were."""
    import urllib.error
    import urllib.request

    from opencdp.segments.ast import SegmentError

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(client.url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {client.token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            payload = response.read()
    except urllib.error.HTTPError as failure:
        try:
            answer = json.loads(failure.read())
        except ValueError:
            answer = {"detail": failure.reason}
        error = SegmentError(
            str(answer.get("detail", failure.reason)), field=answer.get("field"),
            line=answer.get("line"), column=answer.get("column"), suggestion=answer.get("suggestion"),
        )
        error.code = str(answer.get("error", "server_error"))
        error.status = failure.code
        raise error from None
    return payload if raw else json.loads(payload or b"null")


def _definition(text: str | None, file: Path | None) -> str:
    from opencdp.segments.ast import SegmentError

    if (text is None) == (file is None):
        raise SegmentError("give the definition as text or with --file FILE (one of them)", field="definition")
    return file.read_text(encoding="utf-8") if file is not None else str(text)


def _params(pairs: list[str] | None) -> dict[str, Any]:
    from opencdp.segments.ast import SegmentError

    found: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SegmentError(f"--param {pair!r} is not NAME=VALUE, e.g. --param category=Cosmetics", field="param")
        try:
            found[name.strip()] = json.loads(value)  # numbers, true/false, ["lists"]
        except ValueError:
            found[name.strip()] = value
    return found


def _print_segment(found: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("id", "name", "kind", "status", "problem", "size", "parameters", "definition", "description", "alerts", "updated_at"):
        value = found.get(key)
        if value not in (None, "", []):
            table.add_row(key, Text(", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    change = found.get("change")
    if change:
        table.add_row("evaluated", f"{change['entered']} entered, {change['exited']} exited")
        for alert in change.get("alerts") or []:
            table.add_row("alert", Text(alert, style="yellow"))
    for warning in found.get("warnings") or []:
        table.add_row("warning", Text(warning, style="yellow"))
    console.print(table)


@segments_app.command("list")
def segments_list() -> None:
    """All segments with kind, status and size."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                rows = _api(target, "GET", _SEGMENTS)["segments"]
            else:
                from opencdp.segments.exports import describe
                from opencdp.segments.store import list_segments

                rows = [describe(target, s) for s in list_segments(target)]
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    table = Table("id", "name", "kind", "status", "size", "definition")
    for row in rows:
        status = Text(row["status"], style="red" if row["status"] != "active" else "")
        if row.get("problem"):
            status.append(f" ({row['problem']})")
        size = "parametric" if row.get("parametric") else f"{row['size']:,}"
        table.add_row(row["id"], Text(row["name"]), row["kind"], status, size, Text((row.get("definition") or "")[:80]))
    console.print(table)


@segments_app.command("create")
def segments_create(
    segment_id: Annotated[str, typer.Argument(help="a slug: letters, digits, '_' and '-'")],
    definition: Annotated[str | None, typer.Option("--definition", "-d", help="the segment in the text form")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False, help="read the definition from a file")] = None,
    name: Annotated[str | None, typer.Option(help="what marketers see (default: the id)")] = None,
    description: Annotated[str, typer.Option(help="a longer description")] = "",
) -> None:
    """Create a segment; a dynamic one is evaluated at once."""
    settings = _settings()
    try:
        text = _definition(definition, file)
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                body = {"id": segment_id, "name": name, "description": description, "definition": text}
                found = _api(target, "POST", _SEGMENTS, body)
            else:
                import datetime as dt

                from opencdp.segments import store
                from opencdp.segments.exports import SegmentExists, evaluate_saved

                store.check_id(segment_id)
                if store.get(target, segment_id) is not None:
                    raise SegmentExists(f"segment `{segment_id}` exists already; delete it first or pick another id", field="id")
                now = dt.datetime.now(dt.UTC)
                segment, warnings = store.save(target, segment_id, name=name, description=description, definition=text, now=now)
                found = evaluate_saved(target, segment, warnings, now, "created")
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    _print_segment(found)


@segments_app.command("show")
def segments_show(segment_id: Annotated[str, typer.Argument(help="the segment id")]) -> None:
    """One segment: definition, status, size."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                found = _api(target, "GET", f"{_SEGMENTS}/{_quote(segment_id)}")
            else:
                from opencdp.segments.exports import describe, require

                found = describe(target, require(target, segment_id))
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    _print_segment(found)


@segments_app.command("validate")
def segments_validate(
    definition: Annotated[str | None, typer.Argument(help="the segment in the text form")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False, help="read it from a file")] = None,
) -> None:
    """Check a definition against the store; prints its canonical text."""
    settings = _settings()
    try:
        text = _definition(definition, file)
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                found = _api(target, "POST", f"{_SEGMENTS}/validate", {"definition": text})
            else:
                from opencdp.segments.store import validate

                checked = validate(target, text)
                found = {"text": checked.text, "warnings": checked.warnings}
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    console.print(Text("valid: ", style="green") + Text(found["text"]))
    for warning in found["warnings"]:
        err.print(Text(f"warning: {warning}", style="yellow"))


@segments_app.command("preview")
def segments_preview(
    definition: Annotated[str | None, typer.Argument(help="the segment in the text form")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False, help="read it from a file")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE for a $parameter; repeat")] = None,
    sample: Annotated[int, typer.Option(min=0, max=1000, help="how many member ids to show")] = 20,
) -> None:
    """Size and a sample of a draft segment's members (nothing is saved)."""
    settings = _settings()
    try:
        text, params = _definition(definition, file), _params(param)
        body = {"definition": text, "params": params, "sample": sample}
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                found = _api(target, "POST", f"{_SEGMENTS}/preview", body)
            else:
                from opencdp.segments.exports import preview

                found = preview(target, text, params=params, sample=sample)
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    console.print(f"{found['size']:,} members ({found['took_ms']} ms)")
    for profile in found["sample"]:
        console.print(Text(f"  {profile}"))


@segments_app.command("refresh")
def segments_refresh(
    segment_id: Annotated[str, typer.Argument(help="the segment id")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="a parametric segment's NAME=VALUE; repeat")] = None,
) -> None:
    """Evaluate a segment over all profiles now and store the changes."""
    settings = _settings()
    try:
        params = _params(param)
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                found = _api(target, "POST", f"{_SEGMENTS}/{_quote(segment_id)}/refresh", {"params": params})
            else:
                import datetime as dt

                from opencdp.segments.exports import change_dict, parameters, require
                from opencdp.segments.membership import refresh
                from opencdp.segments.sql import members
                from opencdp.segments.store import catalogue

                segment = require(target, segment_id)
                now = dt.datetime.now(dt.UTC)
                if parameters(segment) and segment.tree is not None:
                    size = len(members(target, segment.tree, now, params=params, catalogue=catalogue(target)))
                    found = {"size": size, "parametric": True}
                else:
                    found = change_dict(refresh(target, segment, now, reason="manual refresh"))
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    if found.get("parametric"):
        console.print(f"{segment_id}: {found['size']:,} members for these values (parametric: not stored)")
        return
    console.print(f"{segment_id}: {found['size']:,} members ({found['entered']:,} entered, {found['exited']:,} exited)")
    for alert in found.get("alerts") or []:
        err.print(Text(f"alert: {alert}", style="yellow"))


@segments_app.command("members")
def segments_members(
    segment_id: Annotated[str, typer.Argument(help="the segment id")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="members per page")] = 100,
    cursor: Annotated[str | None, typer.Option(help="start after this profile id (the `next` of a page)")] = None,
) -> None:
    """Members by profile id, one page."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                query = f"?limit={limit}" + (f"&cursor={_quote(cursor)}" if cursor else "")
                page = _api(target, "GET", f"{_SEGMENTS}/{_quote(segment_id)}/members{query}")
            else:
                from opencdp.segments.exports import members_page

                page = members_page(target, segment_id, limit=limit, cursor=cursor)
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    table = Table("profile id", "since")
    for member in page["members"]:
        table.add_row(Text(member["profile_id"]), str(member["since"])[:19])
    console.print(table)
    if page["next"]:
        console.print(Text(f"more: --cursor {page['next']}"))


@segments_app.command("export")
def segments_export(
    segment_id: Annotated[str, typer.Argument(help="the segment id")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="the file to write")],
    format: Annotated[str, typer.Option(help="csv, parquet or jsonl")] = "csv",
    identifiers: Annotated[bool, typer.Option("--identifiers", help="add email, phone and user_id")] = False,
) -> None:
    """Write all members to a CSV, Parquet or JSON Lines file."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                query = f"?format={_quote(format)}" + ("&include=identifiers" if identifiers else "")
                output.write_bytes(_api(target, "GET", f"{_SEGMENTS}/{_quote(segment_id)}/export{query}", raw=True))
            else:
                from opencdp.segments.exports import export

                chunks = export(target, segment_id, format, include_identifiers=identifiers)
                with output.open("wb") as handle:
                    for chunk in chunks:
                        handle.write(chunk)
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    console.print(f"wrote {output}")


@segments_app.command("delete")
def segments_delete(segment_id: Annotated[str, typer.Argument(help="the segment id")]) -> None:
    """Delete a segment; segments that referred to it are marked broken."""
    settings = _settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                found = _api(target, "DELETE", f"{_SEGMENTS}/{_quote(segment_id)}")
            else:
                import datetime as dt

                from opencdp.segments import membership, store

                now = dt.datetime.now(dt.UTC)
                found = {"broken": store.delete(target, segment_id, now)}
                membership.clear(target, segment_id, now)
    except OpenCDPError as error:
        raise _segment_fail(error) from None
    console.print(f"deleted {segment_id}")
    if found["broken"]:
        err.print(Text(f"now broken (they referred to it): {', '.join(found['broken'])}", style="yellow"))


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Store size, event counts and ingest lag."""
    from opencdp.status import collect_status

    settings = _settings()
    try:
        with store_or_server(settings) as target:
            report = target.call("GET", "/api/v1/status") if isinstance(target, ServerClient) else collect_status(target)
    except OpenCDPError as error:
        raise _fail(error) from None
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    table = Table(show_header=False, box=None)
    table.add_row("backend", str(report["backend"]))
    table.add_row("store size", f"{report['store_bytes'] / 1_048_576:.1f} MB")
    for name, count in report["rows"].items():
        table.add_row(f"rows: {name}", f"{count:,}")
    table.add_row("last event received", str(report["last_received_at"]))
    ingest = report.get("ingest")
    if ingest:
        table.add_row("ingest lag", f"{ingest['lag_bytes']:,} bytes not yet loaded")
        table.add_row("loader error", str(ingest["last_error"] or "none"))
    else:
        table.add_row("server", "not running")
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
