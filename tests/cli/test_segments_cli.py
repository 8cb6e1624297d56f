"""`opencdp segments ...` on both engines, on the store and through a running server."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opencdp.cli import main
from opencdp.cli.local import ServerClient
from opencdp.config import Settings
from opencdp.storage import open_backend
from opencdp.storage.base import Backend
from tests.segments.test_membership import people

runner = CliRunner()


@pytest.fixture(params=["duckdb", "chdb"])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path, chdb_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A store on each engine with the people of tests/segments/test_membership.py."""
    monkeypatch.setenv("OPENCDP_BACKEND", request.param)
    if request.param == "chdb":
        monkeypatch.setenv("OPENCDP_DATA_DIR", str(chdb_data_dir))
        monkeypatch.setenv("OPENCDP_CLICKHOUSE_DATABASE", f"cliseg_{tmp_path.name.replace('-', '_')}")
    else:
        monkeypatch.setenv("OPENCDP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open_backend(settings) as backend:
        backend.create_schema()
        people(backend)
    yield settings
    if request.param == "chdb":
        backend = open_backend(settings, create=False)
        backend.drop_database()  # type: ignore[attr-defined]
        backend.close()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(main.app, ["segments", *args])
    return result.exit_code, result.output


def test_create_list_show_members_refresh_delete(cli_env: Settings, tmp_path: Path) -> None:
    code, output = run("create", "buyers", "--definition", 'count("Order Completed")>=1', "--name", "Buyers")
    assert code == 0, output
    assert "3 entered" in output and 'count("Order Completed") >= 1' in output
    definition = tmp_path / "kazan.seg"
    definition.write_text('traits.city in ["Kazan"]\n')
    code, output = run("create", "kazan", "--file", str(definition))
    assert code == 0, output
    code, output = run("list")
    assert code == 0 and "buyers" in output and "Buyers" in output and '["Kazan"]' in output  # [lists] are not markup
    code, output = run("show", "kazan")
    assert code == 0 and "size" in output and "2" in output
    code, output = run("members", "buyers", "--limit", "2")
    assert code == 0 and "p1" in output and "p2" in output and "--cursor p2" in output
    code, output = run("members", "buyers", "--cursor", "p2")
    assert code == 0 and "p5" in output and "p1" not in output
    code, output = run("refresh", "buyers")
    assert code == 0 and "3 members (0 entered, 0 exited)" in output, output
    code, output = run("create", "kazan_buyers", "--definition", 'in_segment("kazan") and in_segment("buyers")')
    assert code == 0, output
    code, output = run("delete", "kazan")
    assert code == 0 and "kazan_buyers" in output
    code, output = run("list")
    assert "broken" in output
    code, output = run("show", "nope")
    assert code == 2 and "no segment `nope`" in output


def test_bad_definitions_exit_2_with_line_column_and_caret(cli_env: Settings) -> None:
    code, output = run("validate", 'count("Order Completed") >=')
    assert code == 2
    assert "line 1, column 28" in output and "^" in output
    code, output = run("create", "bad", "--definition", 'in_segment("nope")')
    assert code == 2 and "nope" in output
    code, output = run("create", "bad")
    assert code == 2 and "--file" in output
    code, output = run("list")
    assert "bad" not in output
    code, output = run("validate", 'traits.city = "Kazan"')
    assert code == 0 and 'valid: traits.city = "Kazan"' in output


def test_preview_with_params(cli_env: Settings) -> None:
    code, output = run("preview", "traits.city = $city", "--param", "city=Kazan", "--sample", "5")
    assert code == 0, output
    assert "2 members" in output and "p1" in output and "p3" in output
    code, output = run("preview", "traits.city = $city")
    assert code == 2 and "$city" in output
    code, output = run("preview", "count() > 0", "--param", "oops")
    assert code == 2 and "NAME=VALUE" in output


def test_export(cli_env: Settings, tmp_path: Path) -> None:
    assert run("create", "kazan", "--definition", 'traits.city = "Kazan"')[0] == 0
    out = tmp_path / "kazan.csv"
    code, output = run("export", "kazan", "--format", "csv", "--output", str(out), "--identifiers")
    assert code == 0, output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["profile_id"], r["email"]) for r in rows] == [("p1", "anna@example.ru"), ("p3", "vera@example.ru")]
    code, output = run("export", "kazan", "--format", "xlsx", "--output", str(out))
    assert code == 2 and "csv, parquet, jsonl" in output


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """A server holding the store: the CLI must go through its API."""
    import uvicorn

    from opencdp.storage.duckdb import DuckDBBackend
    from opencdp.web.app import create_app

    backend = DuckDBBackend(tmp_path / "store.duckdb")
    backend.create_schema()
    people(backend)
    monkeypatch.setenv("OPENCDP_DATA_DIR", str(tmp_path / "data"))
    app = create_app(Settings(data_dir=tmp_path / "data", segment_realtime_interval_s=0), backend=backend, fsync=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    client = ServerClient(f"http://127.0.0.1:{port}", app.state.local_token)

    @contextmanager
    def through_server(settings: Settings) -> Iterator[ServerClient]:
        yield client

    monkeypatch.setattr(main, "store_or_server", through_server)
    try:
        yield backend
    finally:
        instance.should_exit = True
        thread.join(timeout=10)
        backend.close()


def test_through_the_running_server(server: Backend, tmp_path: Path) -> None:
    code, output = run("create", "buyers", "--definition", 'count("Order Completed") >= 1')
    assert code == 0 and "3 entered" in output, output
    code, output = run("list")
    assert code == 0 and "buyers" in output
    code, output = run("validate", 'count("Order Complted") >=')
    assert code == 2 and "line 1, column 27" in output and "^" in output, output
    code, output = run("preview", "traits.city = $city", "--param", "city=Moscow")
    assert code == 0 and "1 members" in output and "p2" in output
    code, output = run("refresh", "buyers")
    assert code == 0 and "3 members" in output
    code, output = run("members", "buyers")
    assert code == 0 and "p5" in output
    out = tmp_path / "buyers.jsonl"
    code, output = run("export", "buyers", "--format", "jsonl", "--output", str(out))
    assert code == 0 and len(out.read_text().splitlines()) == 3
    code, output = run("delete", "buyers")
    assert code == 0
    code, output = run("show", "buyers")
    assert code == 2 and "no segment" in output
