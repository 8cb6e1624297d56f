"""The `opencdp` command line, on both storage engines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opencdp.cli.main import app
from opencdp.config import Settings
from opencdp.storage import open_backend

runner = CliRunner()


@pytest.fixture(params=["duckdb", "chdb"])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path, chdb_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Environment for CLI runs: a fresh store on each engine."""
    monkeypatch.setenv("OPENCDP_BACKEND", request.param)
    if request.param == "chdb":
        # One chDB engine per process: share its directory, isolate by database.
        database = f"cli_{tmp_path.name.replace('-', '_')}"
        monkeypatch.setenv("OPENCDP_DATA_DIR", str(chdb_data_dir))
        monkeypatch.setenv("OPENCDP_CLICKHOUSE_DATABASE", database)
    else:
        monkeypatch.setenv("OPENCDP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    yield settings
    if request.param == "chdb":
        backend = open_backend(settings, create=False)
        backend.drop_database()  # type: ignore[attr-defined]
        backend.close()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_init_is_repeatable(cli_env: Settings) -> None:
    assert run("init")[0] == 0
    code, output = run("init")
    assert code == 0 and "store ready" in output


def test_keys_create_list_revoke(cli_env: Settings) -> None:
    run("init")
    code, output = run("keys", "create", "write", "website")
    assert code == 0
    write_key = output.strip().splitlines()[-1]
    assert write_key.startswith("wk_")
    code, output = run("keys", "create", "admin", "ops")
    assert code == 0 and output.strip().splitlines()[-1].startswith("ak_")
    code, listing = run("keys", "list")
    assert code == 0 and "website" in listing and "ops" in listing
    key_id = next(line.split()[1] for line in listing.splitlines() if "website" in line)
    with open_backend(cli_env) as backend:
        from opencdp.keys import KeyRing

        full_id = next(k.key_id for k in KeyRing(backend).all() if k.name == "website")
    assert full_id.startswith(key_id.rstrip("…"))
    code, output = run("keys", "revoke", full_id)
    assert code == 0
    with open_backend(cli_env) as backend:
        from opencdp.keys import KeyRing

        assert KeyRing(backend).source_of(write_key) is None


def test_keys_create_with_scopes(cli_env: Settings) -> None:
    from opencdp.keys import KeyRing

    run("init")
    code, output = run("keys", "create", "admin", "analyst", "--scope", "pii:mask", "--scope", "read")
    assert code == 0, output
    assert "with scopes read, pii:mask" in output and output.strip().splitlines()[-1].startswith("ak_")
    code, output = run("keys", "create", "admin", "ops")
    assert code == 0 and "with scopes admin" in output
    with open_backend(cli_env) as backend:
        scopes = {k.name: k.scopes for k in KeyRing(backend).all()}
    assert scopes == {"analyst": ("read", "pii:mask"), "ops": ("admin",)}
    code, listing = run("keys", "list")
    assert code == 0 and "scopes" in listing
    assert "read," in next(line for line in listing.splitlines() if "analyst" in line)
    code, output = run("keys", "create", "admin", "x", "--scope", "owner")
    assert code == 1 and "'owner'" in output and "pii:mask" in output
    code, output = run("keys", "create", "write", "website", "--scope", "read")
    assert code == 1 and "scopes are for admin keys" in output


def test_bad_input_gets_a_clear_error(cli_env: Settings) -> None:
    run("init")
    code, output = run("keys", "create", "root", "x")
    assert code == 1 and "write" in output and "admin" in output
    code, output = run("keys", "revoke", "key_nope")
    assert code == 1 and "keys list" in output


def test_status_reports_counts(cli_env: Settings) -> None:
    run("init")
    code, output = run("status", "--json")
    assert code == 0
    report = json.loads(output)
    assert report["rows"]["events"] == 0
    assert report["backend"] in ("duckdb", "chdb")
    code, output = run("status")
    assert code == 0 and "rows: events" in output and "not running" in output


def test_demo_generate_writes_the_files(tmp_path: Path) -> None:
    code, output = run("demo", "generate", str(tmp_path / "demo"), "--customers", "200", "--seed", "7")
    assert code == 0, output
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"catalog.csv", "customers.csv", "pos_orders.csv"} <= names
    assert any(name.startswith("events-") for name in names)


def test_bad_configuration_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCDP_BACKEND", "oracle")
    code, output = run("status")
    assert code == 2 and "backend" in output


def test_profiles_export_and_erase(cli_env: Settings) -> None:
    from opencdp.storage import open_backend
    from tests.identity.test_stage import send

    assert run("init")[0] == 0
    store = open_backend(cli_env)
    try:
        [profile_id] = send(store, {"type": "identify", "userId": "u-cli", "traits": {"email": "cli@example.ru"},
                                    "messageId": "m-cli", "timestamp": "2024-05-01T10:00:00Z"})
    finally:
        store.close()
    assert profile_id is not None
    code, out = run("profiles", "export", profile_id)
    assert code == 0 and "cli@example.ru" in out and "m-cli" in out
    code, out = run("profiles", "erase", profile_id, "--yes")
    assert code == 0 and '"events": 1' in out
    code, out = run("profiles", "export", profile_id)
    assert code != 0 and "no profile" in out
