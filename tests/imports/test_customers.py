"""Customers: identify events from a CRM export, normalised, idempotent, with rejects kept."""

from __future__ import annotations

import json
from pathlib import Path

from opencdp.ingest.segment import Envelope, normalize
from tests.imports.conftest import Store, iso_ms, ms, rejects_file, write

HEADER = (
    "customer_id,email,phone,first_name,last_name,gender,birthday,city,timezone,country,"
    "loyalty_card,bonus_balance,bonus_expires_at,email_consent,sms_consent,created_at,vip_level"
)


def customers_csv(directory: Path) -> Path:
    return write(
        directory / "customers.csv",
        f"""
        {HEADER}
        C1, Ivan.Petrov@Mail.RU ,8 (912) 345-67-89,Иван,Петров,м,15.03.1985,Москва,Europe/Moscow,ru,2000000000017,"1 500,50",2025-12-31,да,0,2023-01-10T09:00:00Z,gold
        C2,not-an-email,+79123456780,Пётр,Сидоров,m,1990-01-01,Казань,Europe/Moscow,RU,,0,,true,false,2023-02-01T00:00:00Z,
        C3,c3@example.com,12,Олег,Орлов,m,1990-01-01,Казань,Europe/Moscow,RU,,0,,true,false,2023-02-01T00:00:00Z,
        ,Anna@Example.com,,Анна,Смирнова,ж,,Самара,Europe/Samara,RU,,,,,,2023-03-01T10:00:00Z,
        ,,,Без,Контактов,,,,,,,,,,,2023-03-01T10:00:00Z,
        C6,,+7 495 123-45-67,Ольга,Ким,f,,,,,,12,,,,2023-04-01 12:00:00,silver
        """,
    )


def test_customers_become_identify_events_with_normalised_traits(store: Store) -> None:
    report = store.run(customers_csv(store.dir), "customers")

    assert (report.rows_read, report.events_written, report.rejected) == (6, 3, 3)
    events = {e["user_id"] or e["anonymous_id"]: e for e in store.events()}
    assert set(events) == {"C1", "email:anna@example.com", "C6"}
    ivan = events["C1"]
    assert ivan["type"] == "identify" and ivan["event"] == "" and ivan["channel"] == "crm"
    assert ivan["source"] == "import:customers"
    assert ivan["message_id"].startswith("imp:customers:")
    assert ivan["anonymous_id"] is None
    assert ms(ivan["timestamp"]) == iso_ms("2023-01-10T09:00:00Z")
    assert ivan["traits"] == {
        "email": "ivan.petrov@mail.ru",
        "phone": "+79123456789",
        "firstName": "Иван",
        "lastName": "Петров",
        "gender": "male",
        "birthday": "1985-03-15",
        "city": "Москва",
        "timezone": "Europe/Moscow",
        "country": "RU",
        "loyalty_card": "2000000000017",
        "bonus_balance": 1500.5,
        "bonus_expires_at": "2025-12-31T00:00:00Z",
        "email_consent": True,
        "sms_consent": False,
        "created_at": "2023-01-10T09:00:00Z",
        "vip_level": "gold",  # an unmapped column, kept as a custom trait
    }
    assert ivan["context"] == {
        "externalIds": [{"id": "2000000000017", "type": "loyalty_card", "collection": "users", "encoding": "none"}]
    }
    anna = events["email:anna@example.com"]
    assert anna["user_id"] is None
    assert anna["traits"] == {
        "email": "anna@example.com",
        "firstName": "Анна",
        "lastName": "Смирнова",
        "gender": "female",
        "city": "Самара",
        "timezone": "Europe/Samara",
        "country": "RU",
        "created_at": "2023-03-01T10:00:00Z",
    }
    assert anna["context"] is None
    olga = events["C6"]
    assert olga["traits"]["phone"] == "+74951234567" and olga["traits"]["bonus_balance"] == 12
    assert ms(olga["timestamp"]) == iso_ms("2023-04-01T12:00:00Z")  # no zone: UTC


def test_bad_rows_are_rejected_with_line_and_column_and_kept(store: Store) -> None:
    path = customers_csv(store.dir)
    report = store.run(path, "customers")

    quarantine = store.quarantine()
    assert [(q["position"], q["error"], q["field"]) for q in quarantine] == [
        (3, "invalid_email", "email"),
        (4, "invalid_phone", "phone"),
        (6, "missing_identifier", "customer_id"),
    ]
    assert all(q["source"] == "import:customers:customers.csv" for q in quarantine)
    assert quarantine[0]["detail"] == (
        "column `email`: 'not-an-email' is not a valid e-mail address; write it as name@example.com"
    )
    assert quarantine[1]["detail"] == (
        "column `phone`: '12' is not a valid phone number for region RU; "
        "write it with a country code, e.g. +7 912 345-67-89"
    )
    assert json.loads(quarantine[0]["payload"])["customer_id"] == "C2"

    assert report.reject_file == str(store.dir / "customers.rejects.csv")
    rejects = rejects_file(store.dir / "customers.rejects.csv")
    assert [r["line"] for r in rejects] == ["3", "4", "6"]
    assert [r["field"] for r in rejects] == ["email", "phone", "customer_id"]
    assert rejects[1]["detail"] == quarantine[1]["detail"]
    row = json.loads(rejects[2]["row"])
    assert row["first_name"] == "Без" and row["last_name"] == "Контактов"  # Cyrillic kept as is
    assert [r.line for r in report.sample_rejects] == [3, 4, 6]


def test_reimport_adds_nothing_and_a_changed_row_adds_one_event(store: Store) -> None:
    path = customers_csv(store.dir)
    first = store.run(path, "customers")
    again = store.run(path, "customers")
    assert (again.events_written, again.duplicates) == (0, first.events_written)
    assert store.count("events") == 3

    path.write_text(path.read_text(encoding="utf-8").replace("Москва", "Тверь"), encoding="utf-8")
    changed = store.run(path, "customers")
    assert (changed.events_written, changed.duplicates) == (1, 2)
    cities = sorted(e["traits"].get("city", "") for e in store.events("user_id = 'C1'"))
    assert cities == ["Москва", "Тверь"]


def test_event_time_prefers_updated_at_then_created_at_then_import_time(store: Store) -> None:
    path = write(
        store.dir / "crm.csv",
        """
        customer_id,created_at,updated_at
        A,2023-01-01T00:00:00Z,2024-02-02T00:00:00Z
        B,2023-01-01T00:00:00Z,
        C,,
        """,
    )
    store.run(path, "customers")
    stamps = {e["user_id"]: ms(e["timestamp"]) for e in store.events()}
    assert stamps["A"] == iso_ms("2024-02-02T00:00:00Z")
    assert stamps["B"] == iso_ms("2023-01-01T00:00:00Z")
    received = {e["user_id"]: ms(e["received_at"]) for e in store.events()}
    assert stamps["C"] == received["C"]
    # An import-time timestamp is not part of the id: a re-import is still a duplicate.
    assert store.run(path, "customers").duplicates == 3


def test_matches_what_normalize_makes_of_the_same_message(store: Store) -> None:
    store.run(customers_csv(store.dir), "customers")
    for stored in store.events():
        message = {
            "type": "identify",
            "messageId": stored["message_id"],
            "userId": stored["user_id"],
            "anonymousId": stored["anonymous_id"],
            "timestamp": stored["timestamp"],
            "channel": "crm",
            "traits": stored["traits"],
            "context": stored["context"],
        }
        expected = normalize(message, Envelope(received_at_ms=ms(stored["received_at"]) or 0, source="import:customers"))
        for column in ("type", "event", "user_id", "anonymous_id", "channel", "source", "order_id", "total"):
            assert stored[column] == expected[column], column
        assert ms(stored["timestamp"]) == expected["timestamp"]
        raw = store.backend.rows(f"SELECT traits, context FROM events WHERE message_id = '{stored['message_id']}'")[0]
        assert raw["traits"] == expected["traits"] and raw["context"] == expected["context"]


def test_times_normalize_would_refuse_are_rejected_naming_the_column(store: Store) -> None:
    path = write(
        store.dir / "crm.csv",
        """
        customer_id,created_at,updated_at
        A,2023-01-01T00:00:00Z,2999-01-01T00:00:00Z
        B,1800-01-01T00:00:00Z,
        C,yesterday,
        """,
    )
    report = store.run(path, "customers")
    assert (report.events_written, report.rejected) == (0, 3)
    rejects = [(q["position"], q["field"]) for q in store.quarantine()]
    assert rejects == [(2, "updated_at"), (3, "created_at"), (4, "created_at")]
    details = [q["detail"] for q in store.quarantine()]
    assert "'2999-01-01T00:00:00Z' is in the future" in details[0]
    assert "is before 1900" in details[1]
    assert details[2] == (
        "column `created_at`: 'yesterday' is not a date-time; write ISO 8601 such as 2024-05-01T12:30:00Z, "
        "or set options.timestamp_format"
    )
