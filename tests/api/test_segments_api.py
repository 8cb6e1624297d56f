"""The segments API on every engine: CRUD, validation errors, preview, members, exports,
snapshots, uploads, scopes, and real-time membership through /v1/track."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.api.conftest import Api, make_settings
from tests.segments.test_membership import load_events, orders, people, segment_events

BASE = "/api/v1/segments"


@pytest.fixture
def shop(api: Api) -> Api:
    people(api.backend)
    return api


def admin_key(api: Api, *scopes: str) -> dict[str, str]:
    _, key = api.client.app.state.keys.create("admin", "-".join(scopes), scopes=list(scopes))  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}"}


def create(api: Api, segment_id: str, definition: Any, **fields: Any) -> Any:
    answer = api.client.post(BASE, json={"id": segment_id, "definition": definition, **fields}, headers=api.admin)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_create_list_get_update_delete(shop: Api) -> None:
    created = create(shop, "buyers", 'count("Order Completed")>=1', name="Buyers")
    assert created["size"] == 3 and created["kind"] == "dynamic" and created["status"] == "active"
    assert created["definition"] == 'count("Order Completed") >= 1'  # canonical text
    assert created["change"]["entered"] == 3 and created["warnings"] == []
    again = shop.client.post(BASE, json={"id": "buyers", "definition": "count() > 0"}, headers=shop.admin)
    assert again.status_code == 409 and again.json()["field"] == "id"

    listing = shop.client.get(BASE, headers=shop.admin).json()["segments"]
    assert [(s["id"], s["name"], s["size"]) for s in listing] == [("buyers", "Buyers", 3)]
    one = shop.client.get(f"{BASE}/buyers", headers=shop.admin).json()
    assert one["tree"]["type"] and one["size"] == 3

    changed = shop.client.put(f"{BASE}/buyers", json={"definition": 'count("Order Completed") >= 2'}, headers=shop.admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["size"] == 2 and changed.json()["change"]["exited"] == 1 and changed.json()["name"] == "Buyers"
    renamed = shop.client.put(f"{BASE}/buyers", json={"name": "Regulars"}, headers=shop.admin).json()
    assert renamed["name"] == "Regulars" and renamed["definition"] == 'count("Order Completed") >= 2' and "change" not in renamed
    exits = [e for e in segment_events(shop.backend, "buyers") if e["event"] == "Segment Exited"]
    assert [(e["profile_id"], e["properties"]["reason"]) for e in exits] == [("p2", "definition changed")]

    gone = shop.client.delete(f"{BASE}/buyers", headers=shop.admin)
    assert gone.json() == {"deleted": "buyers", "broken": []}
    assert shop.client.get(f"{BASE}/buyers", headers=shop.admin).status_code == 404
    assert shop.client.get(BASE, headers=shop.admin).json()["segments"] == []
    # the id can be used again, starting empty
    assert create(shop, "buyers", "count() > 100")["size"] == 0


def test_invalid_definitions_are_never_saved(shop: Api) -> None:
    answer = shop.client.post(BASE, json={"id": "bad", "definition": 'count("Order Completed") >='}, headers=shop.admin)
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "invalid_segment" and body["line"] == 1 and body["column"] == 28 and "expected a value" in body["detail"]
    bad_json = shop.client.post(BASE, json={"id": "bad", "definition": {"type": "nonsense"}}, headers=shop.admin)
    assert bad_json.status_code == 422 and bad_json.json()["error"] == "invalid_segment"
    bad_id = shop.client.post(BASE, json={"id": "no spaces", "definition": "count() > 1"}, headers=shop.admin)
    assert bad_id.status_code == 422 and bad_id.json()["field"] == "id"
    bad_alert = shop.client.post(BASE, json={"id": "a", "definition": "count() > 1", "alerts": [{"min_size": -1}]}, headers=shop.admin)
    assert bad_alert.status_code == 422 and bad_alert.json()["field"] == "alerts[0].min_size"
    assert shop.client.get(BASE, headers=shop.admin).json()["segments"] == []


def test_unknown_segments_and_cycles_are_rejected(shop: Api) -> None:
    unknown = shop.client.post(BASE, json={"id": "x", "definition": 'in_segment("nope")'}, headers=shop.admin)
    assert unknown.status_code == 422 and "nope" in unknown.json()["detail"]
    create(shop, "a", 'traits.city = "Kazan"')
    create(shop, "b", 'in_segment("a") and count("Order Completed") >= 1')
    cycle = shop.client.put(f"{BASE}/a", json={"definition": 'in_segment("b")'}, headers=shop.admin)
    assert cycle.status_code == 422 and "cycle" in cycle.json()["detail"].lower(), cycle.text
    itself = shop.client.put(f"{BASE}/a", json={"definition": 'in_segment("a")'}, headers=shop.admin)
    assert itself.status_code == 422 and "itself" in itself.json()["detail"]
    assert shop.client.get(f"{BASE}/a", headers=shop.admin).json()["definition"] == 'traits.city = "Kazan"'


def test_deleting_a_referenced_segment_marks_the_other_broken(shop: Api) -> None:
    create(shop, "kazan", 'traits.city = "Kazan"')
    create(shop, "kazan_buyers", 'in_segment("kazan") and count("Order Completed") >= 1')
    assert shop.client.get(f"{BASE}/kazan_buyers", headers=shop.admin).json()["size"] == 1
    answer = shop.client.delete(f"{BASE}/kazan", headers=shop.admin).json()
    assert answer["broken"] == ["kazan_buyers"]
    listed = {s["id"]: s for s in shop.client.get(BASE, headers=shop.admin).json()["segments"]}
    assert listed["kazan_buyers"]["status"] == "broken" and "kazan" in listed["kazan_buyers"]["problem"]
    refresh = shop.client.post(f"{BASE}/kazan_buyers/refresh", headers=shop.admin)
    assert refresh.status_code == 422 and "broken" in refresh.json()["detail"]
    fixed = shop.client.put(f"{BASE}/kazan_buyers", json={"definition": 'count("Order Completed") >= 1'}, headers=shop.admin)
    assert fixed.json()["status"] == "active" and fixed.json()["size"] == 3


def test_validate_and_schema(shop: Api) -> None:
    ok = shop.client.post(f"{BASE}/validate", json={"definition": 'traits.city="Kazan"  and count() >= 1'}, headers=shop.admin)
    assert ok.status_code == 200
    body = ok.json()
    assert body["valid"] and body["text"] == 'traits.city = "Kazan" and count() >= 1' and body["tree"]["type"]
    round_trip = shop.client.post(f"{BASE}/validate", json={"definition": body["tree"]}, headers=shop.admin).json()
    assert round_trip["text"] == body["text"]
    bad = shop.client.post(f"{BASE}/validate", json={"definition": "traits.city = \n  = 3"}, headers=shop.admin)
    assert bad.status_code == 422 and bad.json()["line"] == 2
    schema = shop.client.get(f"{BASE}/schema", headers=shop.admin).json()
    assert "$defs" in schema or "definitions" in schema or "oneOf" in schema or "anyOf" in schema


def test_preview_and_parametric_segments(shop: Api) -> None:
    draft = shop.client.post(f"{BASE}/preview", json={"definition": "traits.city = $city", "params": {"city": "Kazan"}, "sample": 1}, headers=shop.admin)
    assert draft.status_code == 200, draft.text
    assert draft.json()["size"] == 2 and draft.json()["sample"] == ["p1"] and draft.json()["took_ms"] >= 0
    missing = shop.client.post(f"{BASE}/preview", json={"definition": "traits.city = $city"}, headers=shop.admin)
    assert missing.status_code == 422 and missing.json()["field"] == "city"
    assert shop.client.get(BASE, headers=shop.admin).json()["segments"] == []  # nothing saved

    saved = create(shop, "by_city", "traits.city = $city")
    assert saved["parametric"] and saved["parameters"] == ["city"] and saved["size"] is None and "change" not in saved
    bound = shop.client.post(f"{BASE}/by_city/refresh", json={"params": {"city": "Moscow"}}, headers=shop.admin).json()
    assert bound["size"] == 1 and bound["stored"] is False
    unbound = shop.client.post(f"{BASE}/by_city/refresh", headers=shop.admin)
    assert unbound.status_code == 422 and unbound.json()["field"] == "params"
    assert shop.client.get(f"{BASE}/by_city/members", headers=shop.admin).status_code == 422


def test_members_are_paginated_by_profile_id(shop: Api) -> None:
    create(shop, "everyone", "count() >= 0")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = shop.client.get(f"{BASE}/everyone/members", params=params, headers=shop.admin).json()
        seen += [m["profile_id"] for m in page["members"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ["p1", "p2", "p3", "p5", "p6"] and pages == 3
    assert shop.client.get(f"{BASE}/nope/members", headers=shop.admin).status_code == 404


def test_refresh_and_history(shop: Api) -> None:
    create(shop, "buyers", 'count("Order Completed") >= 2')
    load_events(shop.backend, orders("p2", 1, start=10))
    change = shop.client.post(f"{BASE}/buyers/refresh", headers=shop.admin).json()
    assert (change["entered"], change["exited"], change["size"]) == (1, 0, 3)
    history = shop.client.get(f"{BASE}/buyers/history", headers=shop.admin).json()["sizes"]
    assert [h["size"] for h in history] == [2, 3]
    later = shop.client.get(f"{BASE}/buyers/history", params={"since": "2999-01-01T00:00:00Z"}, headers=shop.admin).json()
    assert later["sizes"] == []
    bad = shop.client.get(f"{BASE}/buyers/history", params={"since": "yesterday"}, headers=shop.admin)
    assert bad.status_code == 422 and bad.json()["field"] == "since"


def test_alert_fires_on_refresh(shop: Api) -> None:
    created = create(shop, "buyers", 'count("Order Completed") >= 1', alerts=[{"min_size": 5}])
    assert created["change"]["alerts"] == ["segment buyers has 3 members, below its alert of 5"]


def test_export_in_every_format(shop: Api) -> None:
    create(shop, "kazan", 'traits.city = "Kazan"')
    csv_answer = shop.client.get(f"{BASE}/kazan/export", params={"format": "csv", "include": "identifiers"}, headers=shop.admin)
    assert csv_answer.status_code == 200 and csv_answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_answer.text)))
    assert [(r["profile_id"], r["email"], r["phone"], r["user_id"]) for r in rows] == [
        ("p1", "anna@example.ru", "+79161234567", "u1"),
        ("p3", "vera@example.ru", "", ""),
    ]
    assert rows[0]["since"].endswith("Z")
    lines = shop.client.get(f"{BASE}/kazan/export", params={"format": "jsonl"}, headers=shop.admin).text.splitlines()
    assert [json.loads(line)["profile_id"] for line in lines] == ["p1", "p3"] and set(json.loads(lines[0])) == {"profile_id", "since"}
    parquet = shop.client.get(f"{BASE}/kazan/export", params={"format": "parquet", "include": "identifiers"}, headers=shop.admin)
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column("profile_id").to_pylist() == ["p1", "p3"] and table.column("email").to_pylist() == ["anna@example.ru", "vera@example.ru"]
    masked = shop.client.get(f"{BASE}/kazan/export", params={"format": "csv", "include": "identifiers"}, headers=admin_key(shop, "read", "pii:mask"))
    first = next(csv.DictReader(io.StringIO(masked.text)))
    assert first["email"] == "a***@example.ru" and first["phone"] != "+79161234567" and first["phone"].endswith("67")
    unknown = shop.client.get(f"{BASE}/kazan/export", params={"format": "xlsx"}, headers=shop.admin)
    assert unknown.status_code == 422 and unknown.json()["field"] == "format"
    assert shop.client.get(f"{BASE}/nope/export", headers=shop.admin).status_code == 404


def test_export_of_many_members_streams_in_pages(shop: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from opencdp.segments import exports

    monkeypatch.setattr(exports, "PAGE", 2)
    create(shop, "everyone", "count() >= 0")
    for format in ("csv", "jsonl", "parquet"):
        answer = shop.client.get(f"{BASE}/everyone/export", params={"format": format}, headers=shop.admin)
        if format == "parquet":
            ids = pq.read_table(io.BytesIO(answer.content)).column("profile_id").to_pylist()
        elif format == "csv":
            ids = [r["profile_id"] for r in csv.DictReader(io.StringIO(answer.text))]
        else:
            ids = [json.loads(line)["profile_id"] for line in answer.text.splitlines()]
        assert ids == ["p1", "p2", "p3", "p5", "p6"], format


def test_snapshot_stays_frozen(shop: Api) -> None:
    create(shop, "buyers", 'count("Order Completed") >= 1')
    snap = shop.client.post(f"{BASE}/buyers/snapshot", json={"id": "buyers_june", "name": "June buyers"}, headers=shop.admin)
    assert snap.status_code == 201, snap.text
    assert snap.json()["kind"] == "static" and snap.json()["size"] == 3 and snap.json()["name"] == "June buyers"
    load_events(shop.backend, orders("p3", 1, start=10))
    assert shop.client.post(f"{BASE}/buyers/refresh", headers=shop.admin).json()["size"] == 4
    assert shop.client.post(f"{BASE}/buyers_june/refresh", headers=shop.admin).json()["size"] == 3
    members = shop.client.get(f"{BASE}/buyers_june/members", headers=shop.admin).json()["members"]
    assert [m["profile_id"] for m in members] == ["p1", "p2", "p5"]
    again = shop.client.post(f"{BASE}/buyers/snapshot", json={"id": "buyers_june"}, headers=shop.admin)
    assert again.status_code == 409
    # a static list can be used by dynamic segments
    derived = create(shop, "june_in_kazan", 'in_segment("buyers_june") and traits.city = "Kazan"')
    assert derived["size"] == 1


def test_upload_reports_unmatched_rows(shop: Api) -> None:
    body = "E-mail\nANNA@example.ru\n boris@example.ru\nnot-an-email\n\nnobody@example.ru\nanna.old@example.ru\n"
    answer = shop.client.post(
        f"{BASE}/upload", params={"id": "vip_list", "identifier": "email", "name": "VIPs"}, content=body.replace("E-mail", "email"), headers=shop.admin
    )
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert report["segment"]["kind"] == "uploaded" and report["segment"]["size"] == 2  # anna (twice, once merged) and boris
    assert report["rows"] == 5 and report["matched"] == 3
    assert report["unmatched"] == [
        {"line": 4, "value": "not-an-email", "reason": "not a valid email"},
        {"line": 6, "value": "nobody@example.ru", "reason": "no profile has this email"},
    ]
    members = shop.client.get(f"{BASE}/vip_list/members", headers=shop.admin).json()["members"]
    assert [m["profile_id"] for m in members] == ["p1", "p2"]
    phones = shop.client.post(f"{BASE}/upload", params={"id": "phones", "identifier": "phone"}, content="8 (916) 123-45-67\n", headers=shop.admin).json()
    assert phones["segment"]["size"] == 1 and phones["unmatched"] == []
    ids = shop.client.post(f"{BASE}/upload", params={"id": "ids", "identifier": "profile_id"}, content="id,profile_id\n1,p3\n2,p-nobody\n", headers=shop.admin).json()
    assert ids["segment"]["size"] == 1 and ids["unmatched"] == [{"line": 3, "value": "p-nobody", "reason": "no profile has this profile id"}]
    two_columns = shop.client.post(f"{BASE}/upload", params={"id": "x", "identifier": "email"}, content="a,b\n1,2\n", headers=shop.admin)
    assert two_columns.status_code == 422 and "header" in two_columns.json()["detail"]
    bad_kind = shop.client.post(f"{BASE}/upload", params={"id": "x", "identifier": "fax"}, content="1\n", headers=shop.admin)
    assert bad_kind.status_code == 422 and bad_kind.json()["field"] == "identifier"


def test_scopes(shop: Api) -> None:
    reader = admin_key(shop, "read")
    create(shop, "buyers", 'count("Order Completed") >= 1')
    assert shop.client.get(BASE, headers=reader).status_code == 200
    assert shop.client.post(f"{BASE}/preview", json={"definition": "count() > 0"}, headers=reader).status_code == 200
    denied = shop.client.post(BASE, json={"id": "x", "definition": "count() > 0"}, headers=reader)
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    for method, path in (("delete", f"{BASE}/buyers"), ("post", f"{BASE}/buyers/refresh"), ("put", f"{BASE}/buyers")):
        assert getattr(shop.client, method)(path, headers=reader).status_code == 403, path
    assert shop.client.get(BASE).status_code == 401
    assert shop.client.get(BASE, headers=shop.auth).status_code == 401  # a write key is not an admin key


@pytest.fixture
def live(backend: Backend, tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(tmp_path, loader_interval_s=0.05, segment_realtime_interval_s=0.1)
    app = create_app(settings, backend=backend, fsync=False)
    with TestClient(app) as client:
        _, write_key = app.state.keys.create("write", "website")
        _, admin = app.state.keys.create("admin", "tests")
        yield Api(client, backend, write_key, admin)


def test_realtime_membership_from_a_tracked_event(live: Api) -> None:
    created = create(live, "buyers", 'count("Order Completed") >= 1')
    assert created["size"] == 0
    sent = live.post("/v1/track", {"userId": "u-42", "event": "Order Completed", "properties": {"total": 10}, "messageId": "m-42"})
    assert sent.status_code == 200, sent.text
    deadline = time.monotonic() + 30  # generous: the loader and the ticks share two cores with the rest of the suite
    members: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        members = live.client.get(f"{BASE}/buyers/members", headers=live.admin).json()["members"]
        if members:
            break
        time.sleep(0.1)
    assert len(members) == 1, live.client.app.state.segments.stats  # type: ignore[attr-defined]
    entered = segment_events(live.backend, "buyers")
    while not entered and time.monotonic() < deadline:  # stored just after the membership row
        time.sleep(0.1)
        entered = segment_events(live.backend, "buyers")
    assert [(e["event"], e["profile_id"]) for e in entered] == [("Segment Entered", members[0]["profile_id"])]
    assert entered[0]["properties"]["reason"].startswith("event: Order Completed")
