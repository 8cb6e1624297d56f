"""Mapping files: TOML and YAML, renamed columns, defaults, options, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencdp.errors import TerminalError
from opencdp.ingest.imports import Mapping, load_mapping
from tests.imports.conftest import Store, iso_ms, ms, write

EXPORT = """
client_code;E-mail;Телефон;Создан;Уровень
K1;Ivan@Mail.RU;8 (912) 345-67-89;01.05.2024 12:30;gold
K2;;+44 20 7946 0958;02.05.2024 08:00;
"""
TOML = """
[columns]
customer_id = "client_code"
email = "E-mail"
phone = "Телефон"
created_at = "Создан"

[defaults]
country = "RU"

[options]
default_region = "RU"
timestamp_format = "%d.%m.%Y %H:%M"
delimiter = ";"
timezone = "Europe/Moscow"
"""
YAML = """
columns:
  customer_id: client_code
  email: E-mail
  phone: Телефон
  created_at: Создан
defaults:
  country: RU
options:
  default_region: RU
  timestamp_format: "%d.%m.%Y %H:%M"
  delimiter: ";"
  timezone: Europe/Moscow
"""


@pytest.mark.parametrize(("name", "text"), [("map.toml", TOML), ("map.yaml", YAML)])
def test_mapping_file_renames_columns_and_sets_options(store: Store, name: str, text: str) -> None:
    mapping = load_mapping(write(store.dir / name, text))
    assert mapping.columns["email"] == "E-mail" and mapping.defaults == {"country": "RU"}
    assert mapping.options.delimiter == ";" and mapping.options.timezone == "Europe/Moscow"

    report = store.run(write(store.dir / "export.csv", EXPORT), "customers", mapping=mapping)
    assert (report.events_written, report.rejected) == (2, 0)
    k1, k2 = store.events()
    assert k1["user_id"] == "K1" and ms(k1["timestamp"]) == iso_ms("2024-05-01T09:30:00Z")
    assert k1["traits"] == {
        "email": "ivan@mail.ru",
        "phone": "+79123456789",
        "country": "RU",
        "created_at": "2024-05-01T09:30:00Z",
        "Уровень": "gold",  # unmapped column kept as a custom trait, Cyrillic name and all
    }
    assert k2["traits"]["phone"] == "+442079460958"


def test_unknown_targets_are_named_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(TerminalError) as error:
        load_mapping(write(tmp_path / "m.toml", '[columns]\nemial = "E-mail"\n'))
    detail = error.value.detail
    assert "unknown target(s) emial" in detail and "customers: customer_id, email, phone" in detail
    assert error.value.field == "emial"

    with pytest.raises(TerminalError) as error:
        load_mapping(write(tmp_path / "m.yaml", 'kind: orders\ncolumns:\n  birthday: "ДР"\n'))
    assert "unknown target(s) birthday; valid targets for orders: order_id, ordered_at" in error.value.detail


def test_mapping_targets_are_checked_against_the_kind(store: Store) -> None:
    path = write(store.dir / "o.csv", "order_id\nR1\n")
    with pytest.raises(TerminalError, match="unknown target\\(s\\) first_name; valid targets for orders"):
        store.run(path, "orders", mapping=Mapping(columns={"first_name": "x"}))
    with pytest.raises(TerminalError, match="the mapping is for customers, not orders"):
        store.run(path, "orders", mapping=Mapping(kind="customers"))


def test_mapped_column_missing_from_the_file(store: Store) -> None:
    path = write(store.dir / "c.csv", "client,mail\nK1,a@b.ru\n")
    with pytest.raises(TerminalError) as error:
        store.run(path, "customers", mapping=Mapping(columns={"customer_id": "client", "email": "E-mail"}))
    assert error.value.detail == "mapping: column `E-mail` (for `email`) is not in the file; the file has: `client`, `mail`"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[options]\nseparator = ";"\n', "unknown option(s) separator; valid options: default_region"),
        ('[colums]\nemail = "x"\n', "unknown section(s) colums"),
        ("[columns]\nemail = 3\n", "`email` must be a column name"),
        ('[options]\ndelimiter = ";;"\n', "`delimiter` must be one character"),
        ("[columns\n", "not valid TOML"),
    ],
)
def test_malformed_mapping_files(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(TerminalError, match=None) as error:
        load_mapping(write(tmp_path / "m.toml", text))
    assert fragment in error.value.detail


def test_bad_options_are_reported_at_import(store: Store) -> None:
    from opencdp.ingest.imports import Options

    path = write(store.dir / "c.csv", "customer_id\nK1\n")
    with pytest.raises(TerminalError, match="timezone 'Mars/Base' is not a known time zone"):
        store.run(path, "customers", mapping=Mapping(options=Options(timezone="Mars/Base")))
    with pytest.raises(TerminalError, match="default_region 'XX' is not a known region"):
        store.run(path, "customers", mapping=Mapping(options=Options(default_region="XX")))


def test_to_dict_round_trips(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path / "m.toml", TOML))
    assert Mapping.from_dict(mapping.to_dict()) == mapping
    assert mapping.to_dict()["options"] == {
        "default_region": "RU",
        "timestamp_format": "%d.%m.%Y %H:%M",
        "delimiter": ";",
        "timezone": "Europe/Moscow",
    }
