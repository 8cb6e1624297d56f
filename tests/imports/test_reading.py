"""Reading files: formats, encodings, line numbers, and files that cannot be read."""

from __future__ import annotations

import gzip
import json

import pytest

from opencdp.errors import TerminalError
from tests.imports.conftest import Store, rejects_file, write

# Physical lines: a quoted value spanning lines, a blank line, a short row; the bad
# e-mails sit after each of them, so their reported lines show the counting is right.
TRICKY = """
customer_id,email,first_name
C1,c1@example.com,"Анна
Мария"
C2,bad-2,Пётр

C3,c3@example.com,Иван
C4,bad-6
C5,bad-7,Олег
C6,c6@example.com,"a
b
c"
C7,bad-11,Ян
"""


@pytest.mark.parametrize("batches", ["default", "small"])
def test_csv_line_numbers_count_physical_lines(store: Store, batches: str, request: pytest.FixtureRequest) -> None:
    if batches == "small":
        request.getfixturevalue("small_batches")
    report = store.run(write(store.dir / "crm.csv", TRICKY), "customers")
    assert (report.rows_read, report.events_written) == (7, 3)
    assert [(q["position"], q["error"]) for q in store.quarantine()] == [
        (4, "invalid_email"),
        (7, "invalid_csv_row"),
        (8, "invalid_email"),
        (12, "invalid_email"),
    ]
    short = store.quarantine()[1]
    assert short["payload"] == "C4,bad-6" and "the line has 2 field(s) but the header has 3" in short["detail"]
    names = sorted(e["traits"].get("firstName", "") for e in store.events())
    assert names == ["a\nb\nc", "Анна\nМария", "Иван"]


def test_semicolon_cp1251_csv_with_mapping_options(store: Store) -> None:
    from opencdp.ingest.imports import Mapping, Options

    path = write(
        store.dir / "crm.csv",
        """
        Код клиента;Телефон;Дата регистрации
        K1;8 (912) 345-67-89;01.05.2024 12:30
        """,
        encoding="cp1251",
    )
    mapping = Mapping(
        columns={"customer_id": "Код клиента", "phone": "Телефон", "created_at": "Дата регистрации"},
        options=Options(encoding="cp1251", timezone="Europe/Moscow"),
    )
    store.run(path, "customers", mapping=mapping)
    [event] = store.events()
    assert event["user_id"] == "K1" and event["traits"]["phone"] == "+79123456789"
    assert event["traits"]["created_at"] == "2024-05-01T09:30:00Z"  # Moscow time, stored in UTC


def test_bom_and_gzip(store: Store) -> None:
    path = store.dir / "crm.csv.gz"
    path.write_bytes(gzip.compress("\ufeffcustomer_id,email\nC1,A@B.RU\n".encode()))
    report = store.run(path, "customers")
    assert report.events_written == 1 and report.reject_file is None
    assert store.events()[0]["traits"] == {"email": "a@b.ru"}


def test_json_array_files(store: Store) -> None:
    path = store.dir / "crm.json"
    path.write_text(json.dumps([{"customer_id": "C1", "bonus_balance": 10}, {"customer_id": "C2", "phone": "1"}]))
    report = store.run(path, "customers")
    assert (report.events_written, report.rejected) == (1, 1)
    assert store.quarantine()[0]["position"] == 2


def test_clean_reimport_removes_the_stale_reject_file(store: Store) -> None:
    path = write(store.dir / "crm.csv", "customer_id,email\nC1,bad\n")
    assert store.run(path, "customers").reject_file == str(store.dir / "crm.rejects.csv")
    assert rejects_file(store.dir / "crm.rejects.csv")[0]["line"] == "2"
    write(path, "customer_id,email\nC1,good@example.com\n")
    assert store.run(path, "customers").reject_file is None
    assert not (store.dir / "crm.rejects.csv").exists()


def test_reject_path_is_honoured(store: Store) -> None:
    path = write(store.dir / "crm.csv", "customer_id,email\nC1,bad\n")
    target = store.dir / "out" / "bad-rows.csv"
    assert store.run(path, "customers", reject_path=target).reject_file == str(target)
    assert rejects_file(target)[0]["error"] == "invalid_email"


def test_files_that_cannot_be_read(store: Store) -> None:
    with pytest.raises(TerminalError, match="file not found"):
        store.run(store.dir / "missing.csv", "customers")
    with pytest.raises(TerminalError, match="unknown format 'xlsx'; use one of csv, parquet, jsonl"):
        store.run(write(store.dir / "a.csv", "customer_id\nC1\n"), "customers", format="xlsx")
    with pytest.raises(TerminalError, match="cannot tell the format"):
        store.run(write(store.dir / "a.xls", "customer_id\nC1\n"), "customers")
    with pytest.raises(TerminalError, match="is empty"):
        store.run(write(store.dir / "empty.csv", ""), "customers")
    with pytest.raises(TerminalError, match="as Parquet"):
        store.run(write(store.dir / "fake.parquet", "customer_id\nC1\n"), "customers")
    with pytest.raises(TerminalError) as error:
        store.run(write(store.dir / "b.csv", "name,city\nA,B\n"), "customers")
    assert error.value.detail.startswith(
        "missing required column(s) for customers: `customer_id` or `email` or `phone`. The file has: `name`, `city`."
    )
    with pytest.raises(TerminalError, match="unknown import kind"):
        store.run(write(store.dir / "c.csv", "customer_id\nC1\n"), "people")
    assert store.count("events") == 0


def test_invalid_utf8_names_the_encoding_fix(store: Store) -> None:
    path = write(store.dir / "crm.csv", "customer_id,first_name\nC1,Иван\n", encoding="cp1251")
    with pytest.raises(TerminalError, match='encoding = "cp1251"'):
        store.run(path, "customers")


def test_progress_is_reported_per_batch(store: Store, small_batches: int) -> None:
    path = write(store.dir / "crm.csv", "customer_id\n" + "".join(f"CUSTOMER-{i:05d}\n" for i in range(40)))
    seen: list[int] = []
    store.run(path, "customers", progress=seen.append)
    assert seen[-1] == 40 and seen == sorted(seen) and len(seen) >= 3
