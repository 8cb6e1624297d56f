from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from opencdp.config import Settings


def test_defaults_work_on_a_laptop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.backend == "duckdb"
    assert settings.store_path == Path("data/opencdp.duckdb")
    assert settings.max_batch_events == 2500 and settings.max_event_bytes == 32 * 1024


def test_toml_file_then_environment_take_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cdp.toml"
    config.write_text('port = 9000\ndefault_region = "KZ"\ndata_dir = "/srv/cdp"\n')
    monkeypatch.setenv("OPENCDP_CONFIG", str(config))
    monkeypatch.setenv("OPENCDP_PORT", "9100")
    settings = Settings()
    assert settings.port == 9100  # environment beats the file
    assert settings.default_region == "KZ"
    assert settings.data_dir == Path("/srv/cdp")
    assert Settings(port=9200).port == 9200  # arguments beat both


def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCDP_BACKEND", "postgres")
    with pytest.raises(ValidationError, match="backend"):
        Settings()


def test_unknown_keys_in_the_file_are_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cdp.toml"
    config.write_text("prot = 9000\n")
    monkeypatch.setenv("OPENCDP_CONFIG", str(config))
    with pytest.raises(ValidationError, match="prot"):
        Settings()


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
