"""`opencdp reports ...` and `opencdp bi ...` on both engines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opencdp.cli.main import app
from opencdp.config import Settings
from opencdp.storage import open_backend
from tests.analytics import dataset

runner = CliRunner()


@pytest.fixture(params=["duckdb", "chdb"])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path, chdb_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A store on each engine holding the hand-built shop."""
    monkeypatch.setenv("OPENCDP_BACKEND", request.param)
    if request.param == "chdb":
        monkeypatch.setenv("OPENCDP_DATA_DIR", str(chdb_data_dir))
        monkeypatch.setenv("OPENCDP_CLICKHOUSE_DATABASE", f"cli_{tmp_path.name.replace('-', '_')}")
    else:
        monkeypatch.setenv("OPENCDP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    backend = open_backend(settings)
    dataset.load(backend)
    backend.close()
    yield settings
    if request.param == "chdb":
        backend = open_backend(settings, create=False)
        backend.drop_database()  # type: ignore[attr-defined]
        backend.close()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_reports_show_json_html_and_errors(cli_env: Settings, tmp_path: Path) -> None:
    code, out = run("reports", "show", "sales", "-p", "from=2026-05-20", "-p", "to=2026-05-25", "--as-of", "2026-06-01", "--json")
    assert code == 0, out
    assert json.loads(out)["series"][0]["points"][0] == ["2026-05-20", 500]
    page = tmp_path / "rfm.html"
    code, out = run("reports", "show", "rfm", "-p", "method=fixed", "--as-of", "2026-06-01", "--html", str(page))
    assert code == 0, out
    text = page.read_text()
    assert "<svg" in text and "champions" in text and "<script" not in text
    code, out = run("reports", "show", "sales", "-p", "interval=hour")
    assert code == 1 and "interval" in out


def test_reports_score_and_bi(cli_env: Settings, tmp_path: Path) -> None:
    code, out = run("reports", "score", "rfm", "--as-of", "2026-06-01", "--method", "fixed")
    assert code == 0, out
    assert json.loads(out)["cells"]["at_risk"] == 1
    code, out = run("bi", "views")
    assert code == 0 and "bi_scores" in out
    code, out = run("bi", "export", "--to", str(tmp_path / "bi"), "--format", "csv", "-d", "bi_orders")
    assert code == 0, out
    assert len(list((tmp_path / "bi" / "bi_orders").glob("date=*/*.csv"))) == len({o[1].date() for o in dataset.ORDERS})
