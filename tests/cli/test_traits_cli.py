"""`opencdp traits list|add|remove` on the store, on both engines."""

from __future__ import annotations

import json
from pathlib import Path

from opencdp.config import Settings
from tests.cli.test_cli import cli_env, run

__all__ = ["cli_env"]  # the fixture, shared with test_cli


def test_add_list_remove(cli_env: Settings, tmp_path: Path) -> None:
    traits = tmp_path / "traits.toml"
    traits.write_text(
        '[[traits]]\nname = "pages_seen"\naggregation = "count"\ndescription = "Pages"\n'
        'where = [{ field = "type", op = "=", value = "page" }]\n'
    )
    code, output = run("traits", "add", str(traits))
    assert code == 0 and "declared pages_seen" in output, output
    code, output = run("traits", "add", str(traits))
    assert code == 1 and "exists" in output and "PUT" in output
    assert run("traits", "add", str(traits), "--replace")[0] == 0
    code, output = run("traits", "list", "--json")
    listed = {item["name"]: item["origin"] for item in json.loads(output)}
    assert listed["pages_seen"] == "api" and listed["orders"] == "builtin"
    assert "pages_seen" in run("traits", "list")[1]
    assert run("traits", "remove", "pages_seen")[0] == 0
    code, output = run("traits", "remove", "pages_seen")
    assert code == 1 and "no computed trait" in output
    code, output = run("traits", "remove", "orders")
    assert code == 1 and "built in" in output


def test_bad_files_are_reported(cli_env: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[traits]]\nname = "x"\naggregation = "median"\n')
    code, output = run("traits", "add", str(bad))
    assert code == 1 and "aggregation" in output
    code, output = run("traits", "add", str(tmp_path / "missing.toml"))
    assert code == 1 and "cannot read" in output
