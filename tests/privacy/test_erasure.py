"""Export and erasure of a person (GDPR / 152-FZ), on every engine.

Anna shops on the web, in the app and at the till; Boris shares her family tablet
and once typed her e-mail. Erasing Anna must leave none of her identifiers in any
table, and Boris's data as it was, minus her identifiers.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from opencdp.identity.identifiers import Rules
from opencdp.identity.stage import stage_for
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from opencdp.privacy import erasure
from opencdp.privacy.erasure import (
    ErasedIdentifiers,
    UnknownProfile,
    apply_to_events,
    apply_to_lines,
    erase_profile,
    export_profile,
    find_subject,
    privacy_salt,
)
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import QUARANTINE, TABLES, Column, T, Table

ENVELOPE = Envelope(received_at_ms=1_750_000_000_000, source="web")
ANNA_EMAIL = "anna.petrova@example.ru"
ANNA_VALUES = [
    "anna-42", "web-anna-7f3", "app-anna-91c", ANNA_EMAIL, "+79161234567", "9161234567", "7700111222",
    "push-anna-token-123", "Петрова",
]
BORIS_VALUES = ["boris-7", "web-boris-55a", "boris@example.org"]

ANNA = [
    {"type": "page", "anonymousId": "web-anna-7f3", "name": "Sofas", "messageId": "a1", "timestamp": "2024-05-01T10:00:00Z"},
    {"type": "screen", "anonymousId": "app-anna-91c", "name": "Home", "messageId": "a2", "channel": "app",
     "timestamp": "2024-05-01T11:00:00Z", "context": {"device": {"token": "push-anna-token-123"}, "ip": "10.1.2.3"}},
    {"type": "identify", "anonymousId": "web-anna-7f3", "userId": "anna-42", "messageId": "a3", "timestamp": "2024-05-02T10:00:00Z",
     "traits": {"email": "Anna.Petrova@Example.ru", "phone": "8 916 123-45-67", "firstName": "Анна", "lastName": "Петрова",
                "loyalty_card": "7700 111 222"}},
    # The app profile shares the phone: merged into the web one (the older).
    {"type": "identify", "anonymousId": "app-anna-91c", "messageId": "a4", "timestamp": "2024-05-03T10:00:00Z",
     "traits": {"phone": "+7 916 123 45 67"}},
    {"type": "track", "event": "Order Completed", "anonymousId": "loyalty:7700111222", "messageId": "a5", "channel": "pos",
     "timestamp": "2024-05-04T12:00:00Z", "context": {"externalIds": [{"id": "7700111222", "type": "loyalty_card"}]},
     "properties": {"order_id": "O-1", "total": 7000, "currency": "RUB", "products": [
         {"product_id": "P1", "price": 5000, "quantity": 1}, {"product_id": "P2", "price": 1000, "quantity": 2}]}},
]
BORIS = [
    {"type": "identify", "userId": "boris-7", "anonymousId": "web-boris-55a", "messageId": "b1",
     "timestamp": "2024-05-01T09:00:00Z", "traits": {"email": "boris@example.org", "firstName": "Борис"}},
    # On Anna's tablet with her e-mail: merge protection keeps both apart (two conflicts).
    {"type": "identify", "userId": "boris-7", "anonymousId": "web-anna-7f3", "messageId": "b2",
     "timestamp": "2024-05-05T09:00:00Z", "traits": {"email": ANNA_EMAIL, "city": "Тверь"}},
    {"type": "track", "event": "Order Completed", "userId": "boris-7", "messageId": "b3", "timestamp": "2024-05-06T09:00:00Z",
     "properties": {"order_id": "O-2", "total": 900, "products": [{"product_id": "P3", "price": 900, "quantity": 1}]}},
]


def send(backend: Backend, *messages: dict[str, Any]) -> list[str | None]:
    rows = [{**normalize(m, ENVELOPE), "lsn": 0} for m in messages]
    events, lines = events_and_lines(rows)
    events, lines = stage_for(backend).resolve(events, lines)
    backend.load(LoadBatch(events, lines))
    return events.column("profile_id").to_pylist()


def quarantine(backend: Backend, payload: dict[str, Any]) -> None:
    row = {"received_at": dt.datetime(2024, 5, 7, tzinfo=dt.UTC), "source": "api:web", "error": "invalid_event",
           "detail": "`event` is required for track calls", "field": "event", "position": 0,
           "payload": json.dumps(payload, ensure_ascii=False)}
    backend.insert(QUARANTINE.name, pa.Table.from_pylist([row], schema=QUARANTINE.arrow_schema))


def build(backend: Backend) -> dict[str, str]:
    """Anna and Boris in the store; their profile ids."""
    ids = send(backend, *ANNA[:2])
    web, app = ids[0], ids[1]
    send(backend, *ANNA[2:])
    boris = send(backend, *BORIS)[0]
    quarantine(backend, {"type": "track", "userId": "anna-42", "traits": {"email": "Anna.Petrova@Example.ru"}})
    quarantine(backend, {"type": "track", "userId": "boris-7"})
    assert web and app and boris and web != app
    return {"anna": web, "anna_app": app, "boris": boris}


def scan(backend: Backend) -> dict[str, str]:
    """Every stored row of every table (every version on ClickHouse), as lower-case text."""
    return {
        table.name: json.dumps(backend.rows(f"SELECT * FROM {table.name}"), default=str, ensure_ascii=False).lower()
        for table in TABLES
    }


def found(texts: dict[str, str], values: list[str]) -> dict[str, list[str]]:
    hits = {name: [v for v in values if v.lower() in text] for name, text in texts.items()}
    return {name: values for name, values in hits.items() if values}


@pytest.fixture
def salt(tmp_path: Path) -> str:
    return privacy_salt(tmp_path)


def test_the_graph_and_the_store_hold_both_people(backend: Backend) -> None:
    ids = build(backend)
    assert find_subject(backend, ids["anna_app"]).canonical_id == ids["anna"]
    conflicts = backend.rows("SELECT identifier, profile_id, other_profile_id FROM identity_conflicts ORDER BY identifier")
    assert [c["identifier"] for c in conflicts] == ["anonymous_id:web-anna-7f3", f"email:{ANNA_EMAIL}"]
    assert all(c["profile_id"] == ids["anna"] and c["other_profile_id"] == ids["boris"] for c in conflicts)
    assert set(found(scan(backend), ANNA_VALUES)) >= {"events", "order_lines", "identities", "identity_conflicts", "quarantine"}


def test_erasure_leaves_no_identifier_of_the_person_in_any_table(backend: Backend, salt: str) -> None:
    ids = build(backend)
    boris_before = backend.rows(
        "SELECT identifier, profile_id FROM identities WHERE profile_id = '" + ids["boris"] + "' ORDER BY identifier"
    )
    report = erase_profile(backend, ids["anna_app"], salt=salt, requested_by="key_test")  # a merged id finds her too

    assert report.profile_id == ids["anna"] and set(report.profile_ids) == {ids["anna"], ids["anna_app"]}
    assert report.removed["events"] == 5 and report.removed["order_lines"] == 2
    assert report.removed["profile_map"] == 2 and report.removed["profile_merges"] == 1
    assert report.removed["identity_conflicts"] == 2 and report.removed["quarantine"] == 1
    assert report.removed["identities"] == report.identifiers == 8  # with the till's anonymous id
    assert report.scrubbed == {"events": 1}

    texts = scan(backend)
    assert found(texts, ANNA_VALUES) == {}
    assert found({k: v for k, v in texts.items() if k != "privacy_audit"}, [ids["anna"], ids["anna_app"]]) == {}
    # Boris is as he was, minus Anna's identifiers on the tablet event.
    events = {e["message_id"]: e for e in backend.rows("SELECT * FROM events")}
    assert set(events) == {"b1", "b2", "b3"} and {e["profile_id"] for e in events.values()} == {ids["boris"]}
    assert events["b2"]["user_id"] == "boris-7" and events["b2"]["anonymous_id"] is None
    assert json.loads(events["b2"]["traits"]) == {"city": "Тверь"}
    assert backend.rows(
        "SELECT identifier, profile_id FROM identities WHERE profile_id = '" + ids["boris"] + "' ORDER BY identifier"
    ) == boris_before
    assert backend.scalar("SELECT count(*) FROM order_lines WHERE profile_id = '" + ids["boris"] + "'") == 1
    assert "boris-7" in texts["quarantine"]
    assert set(found(texts, BORIS_VALUES)) >= {"events", "identities"}

    audit = backend.rows("SELECT * FROM privacy_audit")
    assert len(audit) == 1 and audit[0]["action"] == "erase" and audit[0]["subject_id"] == ids["anna_app"]
    assert audit[0]["requested_by"] == "key_test" and json.loads(audit[0]["counts"])["removed"]["events"] == 5
    assert backend.scalar("SELECT count(*) FROM erased_identifiers") == 8


def test_erasing_twice_or_an_unknown_profile_is_not_found(backend: Backend, salt: str) -> None:
    ids = build(backend)
    with pytest.raises(UnknownProfile, match="no profile 'p_nobody'"):
        erase_profile(backend, "p_nobody", salt=salt)
    erase_profile(backend, ids["anna"], salt=salt)
    for profile_id in (ids["anna"], ids["anna_app"]):
        with pytest.raises(UnknownProfile):
            erase_profile(backend, profile_id, salt=salt)
    with pytest.raises(UnknownProfile):
        export_profile(backend, ids["anna"])


def test_the_identity_graph_forgets_the_person(backend: Backend, salt: str) -> None:
    ids = build(backend)
    erase_profile(backend, ids["anna"], salt=salt)
    graph = stage_for(backend).graph
    assert graph.profile_of(f"email:{ANNA_EMAIL}") is None and ids["anna"] not in graph.profiles
    # Without the erased-identifier check, she would come back as somebody new, not as her old profile.
    again = send(backend, {"type": "identify", "userId": "anna-42", "messageId": "a9", "timestamp": "2024-06-01T10:00:00Z"})
    assert again[0] not in (ids["anna"], ids["anna_app"], None)


def test_later_events_with_an_erased_identifier_are_dropped_or_anonymised(backend: Backend, salt: str) -> None:
    ids = build(backend)
    erase_profile(backend, ids["anna"], salt=salt)
    erased = ErasedIdentifiers.load(backend, salt)
    assert erased.is_erased(f"email:{ANNA_EMAIL}") and not erased.is_erased("email:boris@example.org")
    later = [
        {"type": "track", "event": "Order Completed", "anonymousId": "new-device-1", "messageId": "n1",
         "timestamp": "2024-06-01T10:00:00Z", "context": {"traits": {"email": ANNA_EMAIL}, "ip": "10.9.9.9"},
         "traits": {"email": " ANNA.PETROVA@example.ru"},
         "properties": {"order_id": "O-3", "total": 100, "products": [{"product_id": "P1", "price": 100, "quantity": 1}]}},
        {"type": "track", "event": "Order Completed", "userId": "boris-7", "messageId": "n2", "timestamp": "2024-06-01T11:00:00Z",
         "properties": {"order_id": "O-4", "total": 50, "products": [{"product_id": "P2", "price": 50, "quantity": 1}]}},
    ]
    events, lines = events_and_lines([{**normalize(m, ENVELOPE), "lsn": 0} for m in later])

    kept, dropped = apply_to_events(events, erased, Rules(), "drop")
    assert dropped == 1 and kept.column("message_id").to_pylist() == ["n2"]
    assert apply_to_lines(lines, kept).column("message_id").to_pylist() == ["n2"]

    anonymised, count = apply_to_events(events, erased, Rules(), "anonymise")
    assert count == 1 and anonymised.num_rows == 2
    row = anonymised.to_pylist()[0]
    assert row["anonymous_id"] is None and row["user_id"] is None and row["traits"] is None
    assert "anna" not in (row["context"] or "") and "10.9.9.9" not in (row["context"] or "")
    assert json.loads(row["properties"])["total"] == 100 and row["total"] == 100
    anonymous_lines = apply_to_lines(lines, anonymised).to_pylist()
    assert [line["anonymous_id"] for line in anonymous_lines] == [None, None]
    assert apply_to_events(events, ErasedIdentifiers(salt), Rules(), "drop") == (events, 0)


def test_anonymise_mode_keeps_the_sales_without_the_person(backend: Backend, salt: str) -> None:
    ids = build(backend)
    report = erase_profile(backend, ids["anna"], salt=salt, mode="anonymise")
    assert report.anonymised == {"events": 5, "order_lines": 2} and "events" not in report.removed
    assert found(scan(backend), ANNA_VALUES) == {}
    assert backend.scalar("SELECT count(*) FROM events WHERE profile_id IS NULL") == 5
    assert backend.scalar("SELECT sum(total) FROM events WHERE message_id = 'a5'") == 7000
    assert backend.scalar("SELECT count(*) FROM order_lines WHERE user_id IS NULL AND anonymous_id IS NULL") == 2
    assert "10.1.2.3" not in scan(backend)["events"]


def test_export_holds_everything_about_the_person_only(backend: Backend) -> None:
    ids = build(backend)
    export = export_profile(backend, ids["anna_app"], requested_by="key_test")
    assert export["profile_id"] == ids["anna"] and export["merged_ids"] == [ids["anna_app"]]
    assert {(i["kind"], i["value"]) for i in export["identifiers"]} >= {
        ("user_id", "anna-42"), ("email", ANNA_EMAIL), ("phone", "+79161234567"), ("loyalty_card", "7700111222"),
        ("device_token", "push-anna-token-123"),
    }
    tables = export["tables"]
    assert [e["message_id"] for e in tables["events"]] == ["a1", "a2", "a3", "a4", "a5"]
    assert tables["events"][2]["traits"]["firstName"] == "Анна"  # JSON columns decoded
    assert len(tables["order_lines"]) == 2 and len(tables["profile_merges"]) == 1
    assert len(tables["identity_conflicts"]) == 2 and len(tables["quarantine"]) == 1
    text = json.dumps(export, default=str, ensure_ascii=False)
    assert "boris-7" not in text and "boris@example.org" not in text  # Boris's rows are not hers
    audit = backend.rows("SELECT action, subject_id, requested_by FROM privacy_audit")
    assert audit == [{"action": "export", "subject_id": ids["anna_app"], "requested_by": "key_test"}]


def test_the_salt_is_made_once_per_data_dir(tmp_path: Path) -> None:
    first = privacy_salt(tmp_path / "data")
    assert first == privacy_salt(tmp_path / "data") and len(first) == 64
    assert (tmp_path / "data" / "privacy_salt").stat().st_mode & 0o077 == 0
    assert privacy_salt(tmp_path / "other") != first


SENDS = Table(
    "test_sends",
    (Column("send_id", T.STRING, False), Column("profile_id", T.STRING), Column("address", T.STRING),
     Column("sent_at", T.TIMESTAMP, False)),
    order_by=("sent_at",),
    doc="A table a later stage might add: found by its column names, not by its name.",
)
_FILL = {T.STRING: "x", T.LOW_CARD: "x", T.INT: 0, T.FLOAT: 0.0, T.BOOL: False, T.JSON: "{}",
         T.TIMESTAMP: dt.datetime(2024, 5, 8, tzinfo=dt.UTC), T.DATE: dt.date(2024, 5, 8)}


def add_row(backend: Backend, table: Table, **values: Any) -> None:
    row = {c.name: values.get(c.name, None if c.nullable else _FILL[c.type]) for c in table.columns}
    data = pa.Table.from_pylist([row], schema=table.arrow_schema)
    backend.upsert(table, data) if table.key else backend.insert(table.name, data)


def test_tables_added_later_are_covered_by_their_column_names(
    backend: Backend, salt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = build(backend)
    backend.execute(backend.create_table_sql(SENDS))
    monkeypatch.setattr(erasure, "TABLES", (*TABLES, SENDS))
    add_row(backend, SENDS, send_id="s1", profile_id=ids["anna_app"], address=ANNA_EMAIL)
    add_row(backend, SENDS, send_id="s2", address="+79161234567")  # to her phone, before it had a profile
    add_row(backend, SENDS, send_id="s3", profile_id=ids["boris"], address="boris@example.org")
    known = {t.name: t for t in TABLES}
    if {"channel", "address"} <= set(getattr(known.get("suppressions"), "column_names", ())):
        add_row(backend, known["suppressions"], channel="email", address=ANNA_EMAIL)
        add_row(backend, known["suppressions"], channel="email", address="boris@example.org")
    if {"profile_id_l", "profile_id_r"} <= set(getattr(known.get("match_candidates"), "column_names", ())):
        add_row(backend, known["match_candidates"], profile_id_l=ids["anna"], profile_id_r=ids["boris"],
                evidence=json.dumps({"email": [ANNA_EMAIL, "boris@example.org"]}))

    report = erase_profile(backend, ids["anna"], salt=salt)
    assert report.removed["test_sends"] == 2
    assert [r["send_id"] for r in backend.rows("SELECT send_id FROM test_sends")] == ["s3"]
    texts = scan(backend) | {SENDS.name: json.dumps(backend.rows("SELECT * FROM test_sends"), default=str).lower()}
    assert found(texts, ANNA_VALUES) == {}
    if "suppressions" in known:
        assert "boris@example.org" in texts["suppressions"]
