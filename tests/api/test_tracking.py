"""The Segment-compatible tracking API: every call, every error path."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.api.conftest import Api, basic, make_settings

CALLS = {
    "identify": {"userId": "u1", "traits": {"email": "anna@example.com", "firstName": "Анна"}},
    "track": {"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "P1", "price": 990}},
    "page": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}},
    "screen": {"userId": "u1", "name": "Cart"},
    "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "ACME"}},
    "alias": {"userId": "u1", "previousId": "a1"},
}


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_each_call_is_stored(api: Api, kind: str) -> None:
    response = api.post(f"/v1/{kind}", {**CALLS[kind], "messageId": f"m-{kind}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    [event] = api.events()
    assert event["message_id"] == f"m-{kind}"
    assert event["type"] == kind
    assert event["source"] == "website"
    assert event["received_at"] is not None


def test_track_extracts_ecommerce_columns_and_order_lines(api: Api) -> None:
    order = {
        "userId": "u1",
        "event": "Order Completed",
        "messageId": "order-1",
        "properties": {
            "order_id": "O-1",
            "total": "4 990".replace(" ", ""),
            "revenue": 4500,
            "currency": "RUB",
            "products": [
                {"product_id": "P1", "category": "Kitchen > Chairs", "price": 1500, "quantity": 2},
                {"product_id": "P2", "category": "Kitchen > Tables", "price": 1990, "quantity": 1},
                "not an object",
            ],
        },
    }
    assert api.post("/v1/track", order).status_code == 200
    [event] = api.events()
    assert (event["order_id"], event["total"], event["revenue"], event["currency"]) == ("O-1", 4990.0, 4500.0, "RUB")
    lines = api.backend.rows("SELECT * FROM order_lines ORDER BY line_no")
    assert [(line["line_no"], line["product_id"], line["price"], line["quantity"], line["order_id"]) for line in lines] == [
        (0, "P1", 1500.0, 2.0, "O-1"),
        (1, "P2", 1990.0, 1.0, "O-1"),
    ]
    assert json.loads(event["properties"])["products"][2] == "not an object"  # kept verbatim


def test_batch_accepts_good_events_and_reports_bad_ones_by_index(api: Api) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "A", "messageId": "good-1"},
        {"type": "track", "userId": "u1"},  # no event name
        {"type": "identify", "traits": {}},  # no ids
        {"type": "track", "userId": ["x"], "event": "A"},  # wrong type
        {"type": "bogus", "userId": "u1"},
        {"type": "page", "anonymousId": "a1", "messageId": "good-2"},
        {"type": "track", "userId": "u1", "event": "A", "properties": [1, 2]},
        {"type": "track", "userId": "u1", "event": "A", "properties": {"x": "y" * 33_000}},
    ]
    response = api.post("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    by_index = {r["index"]: r for r in body["rejected"]}
    assert sorted(by_index) == [1, 2, 3, 4, 6, 7]
    assert by_index[1]["field"] == "event"
    assert by_index[2]["field"] == "userId" and "anonymousId" in by_index[2]["detail"]
    assert by_index[3]["field"] == "userId" and "an array" in by_index[3]["detail"]
    assert by_index[4]["field"] == "type"
    assert by_index[6]["field"] == "properties"
    assert by_index[7]["error"] == "event_too_large"
    assert {e["message_id"] for e in api.events()} == {"good-1", "good-2"}
    quarantined = api.quarantine()
    assert sorted(q["position"] for q in quarantined) == [1, 2, 3, 4, 6, 7]
    assert all(q["detail"] and q["payload"] for q in quarantined)
    assert json.loads(next(q for q in quarantined if q["position"] == 3)["payload"])["userId"] == ["x"]


def test_batch_with_only_bad_events_is_400_with_every_reason(api: Api) -> None:
    response = api.post("/v1/batch", {"batch": [{"type": "track", "userId": "u"}, {"type": "alias", "userId": "u"}]})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_event" and body["index"] == 0
    assert [r["field"] for r in body["rejected"]] == ["event", "previousId"]


def test_retried_batch_creates_no_duplicates(api: Api) -> None:
    batch = {"batch": [{"type": "track", "userId": "u1", "event": "A", "messageId": f"m{i}"} for i in range(50)]}
    for _ in range(3):
        assert api.post("/v1/batch", batch).status_code == 200
        api.flush()
    duplicate_inside = {"batch": [{"type": "track", "userId": "u1", "event": "B", "messageId": "same"}] * 2}
    assert api.post("/v1/batch", duplicate_inside).status_code == 200
    events = api.events()
    assert len(events) == 51
    assert len({e["message_id"] for e in events}) == 51


def test_clock_skew_is_corrected_from_sent_at(api: Api) -> None:
    # The device clock is 1 hour behind: it sent 5 s after the event by its own clock.
    device_now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    message = {
        "userId": "u1",
        "event": "A",
        "originalTimestamp": (device_now - dt.timedelta(seconds=5)).isoformat(),
        "sentAt": device_now.isoformat(),
    }
    assert api.post("/v1/track", message).status_code == 200
    [event] = api.events()
    lag = event["received_at"] - event["timestamp"]
    assert dt.timedelta(seconds=4.9) <= lag <= dt.timedelta(seconds=5.1)
    assert event["original_timestamp"] < event["timestamp"] - dt.timedelta(minutes=59)


def test_explicit_historical_timestamp_is_kept(api: Api) -> None:
    assert api.post("/v1/track", {"userId": "u1", "event": "A", "timestamp": "2021-03-04T05:06:07.250+03:00"}).status_code == 200
    [event] = api.events()
    assert event["timestamp"] == dt.datetime(2021, 3, 4, 2, 6, 7, 250000, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"userId": "u1", "event": "A", "timestamp": "2999-01-01T00:00:00Z"}, "timestamp", "future"),
        ({"userId": "u1", "event": "A", "timestamp": "yesterday"}, "timestamp", "ISO 8601"),
        ({"userId": "u1", "event": "A", "sentAt": 5 == 5}, "sentAt", "boolean"),
        ({"userId": "u1", "event": ""}, "event", "required"),
        ({"userId": "u1", "event": 42}, "event", "required"),
        ({"event": "A"}, "userId", "anonymousId"),
        ({"userId": {"id": 1}, "event": "A"}, "userId", "an object"),
        ({"userId": "u1", "event": "A", "context": "web"}, "context", "JSON object"),
        ({"userId": "u1", "event": "A", "type": "page"}, "type", "/v1/page"),
        ({"userId": "u1", "event": "A", "messageId": ["m"]}, "messageId", "string"),
    ],
)
def test_single_call_errors_name_the_field(api: Api, body: dict[str, object], field: str, fragment: str) -> None:
    response = api.post("/v1/track", body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["field"] == field
    assert fragment in error["detail"]
    assert error["index"] == 0
    assert api.events() == []
    assert len(api.quarantine()) == 1


def test_unreadable_bodies_are_4xx_and_quarantined(api: Api) -> None:
    cases = [
        ("/v1/batch", b"{not json", {}, 400, "invalid_json"),
        ("/v1/batch", b'{"batch": 5}', {}, 400, "invalid_batch"),
        ("/v1/batch", b'{"batch": []}', {}, 400, "invalid_batch"),
        ("/v1/track", b"[1, 2]", {}, 400, "invalid_event"),
        ("/v1/track", '{"userId":"u","event":"\xff"}'.encode("latin-1"), {}, 400, "invalid_encoding"),
        ("/v1/batch", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
        ("/v1/batch", gzip.compress(b'{"batch": [')[:-4], {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
        ("/v1/batch", b"x", {"Content-Encoding": "br"}, 400, "unsupported_encoding"),
    ]
    for path, content, headers, status, code in cases:
        response = api.post(path, content=content, headers=headers)
        assert response.status_code == status, (content, response.text)
        assert response.json()["error"] == code, response.text
        assert response.json()["detail"]
    assert len(api.quarantine()) == len(cases)


def test_size_limits(api: Api) -> None:
    big_event = {"userId": "u1", "event": "A", "properties": {"blob": "x" * 33_000}}
    response = api.post("/v1/track", big_event)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"

    too_many = {"batch": [{"type": "track", "userId": "u", "event": "A"}] * 2501}
    response = api.post("/v1/batch", too_many)
    assert response.status_code in (400, 413)
    assert response.json()["error"] in ("too_many_events", "payload_too_large")

    fits = {"batch": [{"type": "track", "userId": "u", "event": "A", "messageId": f"m{i}"} for i in range(2500)]}
    assert api.post("/v1/batch", fits).status_code == 200

    oversize = {"batch": [{"type": "track", "userId": "u", "event": "A", "properties": {"x": "y" * 20_000}}] * 30}
    response = api.post("/v1/batch", oversize)
    assert response.status_code == 413

    bomb = gzip.compress(json.dumps(oversize).encode())
    response = api.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "decompressed" in response.json()["detail"]


def test_gzip_body_is_accepted(api: Api) -> None:
    body = gzip.compress(json.dumps({"batch": [{"type": "track", "userId": "u", "event": "Gz"}]}).encode())
    assert api.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert [e["event"] for e in api.events()] == ["Gz"]


def test_write_key_rules(api: Api) -> None:
    message = {"userId": "u1", "event": "A"}
    assert api.client.post("/v1/track", json=message).status_code == 401
    assert api.client.post("/v1/track", json=message, headers=basic("wk_wrong")).status_code == 401
    bad_scheme = api.client.post("/v1/track", json=message, headers={"Authorization": "Token abc"})
    assert bad_scheme.status_code == 401 and bad_scheme.json()["field"] == "Authorization"
    assert api.client.post("/v1/track", json={**message, "writeKey": api.write_key}).status_code == 200
    batch = {"batch": [{"type": "track", **message}], "writeKey": api.write_key}
    assert api.client.post("/v1/batch", json=batch).status_code == 200

    [key] = [k for k in api.client.app.state.keys.all() if k.secret == api.write_key]  # type: ignore[attr-defined]
    revoked = api.client.delete(f"/api/v1/keys/{key.key_id}", headers=api.admin)
    assert revoked.status_code == 200
    response = api.client.post("/v1/track", json=message, headers=basic(api.write_key))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    # Unauthenticated garbage is not stored.
    api.client.post("/v1/batch", content=b"{{{", headers=basic("wk_wrong"))
    assert len(api.events()) == 2


def test_batch_level_context_and_channel(api: Api) -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "messageId": "1"},
            {"type": "track", "userId": "u", "event": "B", "messageId": "2", "context": {"library": {"name": "analytics-ios"}}},
        ],
        "context": {"library": {"name": "analytics.js"}, "userAgent": "Mozilla"},
    }
    assert api.post("/v1/batch", body).status_code == 200
    channels = {e["message_id"]: e["channel"] for e in api.events()}
    assert channels == {"1": "web", "2": "app"}


def test_cors_preflight_and_browser_settings(api: Api) -> None:
    preflight = api.client.options(
        "/v1/track",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    settings = api.client.get(f"/v1/projects/{api.write_key}/settings")
    assert settings.status_code == 200
    assert settings.json()["integrations"]["Segment.io"]["apiKey"] == api.write_key
    assert api.client.get("/v1/projects/wk_unknown/settings").status_code == 401


def test_openapi_documents_every_call(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    for path in ["/v1/identify", "/v1/track", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/v1/batch"]:
        operation = spec["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]
        assert "400" in operation["responses"]


def test_backlog_answers_503_with_retry_after(api: Api) -> None:
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    assert api.post("/v1/track", {"userId": "u", "event": "A"}).status_code == 200
    original = settings.max_lag_bytes
    settings.max_lag_bytes = 0  # the loader is idle in these tests, so any unloaded byte is "behind"
    try:
        response = api.post("/v1/track", {"userId": "u", "event": "B"})
    finally:
        settings.max_lag_bytes = original
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == "backlog"
    assert [e["event"] for e in api.events()] == ["A"]


def test_batches_validated_in_worker_processes_match_inline(backend: Backend, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, loader_interval_s=3600, ingest_processes=1), backend=backend)
    with TestClient(app) as client:
        _, key = app.state.keys.create("write", "website")
        batch = [{"type": "track", "userId": f"u{i}", "event": "Product Viewed", "messageId": f"m{i}"} for i in range(40)]
        batch[7] = {"type": "track", "userId": "u7"}  # no event name
        response = client.post("/v1/batch", json={"batch": batch}, headers=basic(key))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 39
        assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(7, "event")]
        app.state.collector.flush()
    assert backend.scalar("SELECT count(*) FROM events") == 39
    assert backend.scalar("SELECT count(*) FROM quarantine") == 1
