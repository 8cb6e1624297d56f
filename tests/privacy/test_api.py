"""Export and erasure over HTTP (``opencdp.web.privacy``), on both engines."""

from __future__ import annotations

import json

from opencdp.keys import KeyRing
from tests.api.conftest import Api
from tests.privacy.test_erasure import scan

ANNA_VALUES = ["anna-42", "web-anna-7f3", "anna.petrova@example.ru", "+79161234567", "7700111222"]


def send_people(api: Api) -> None:
    response = api.post("/v1/batch", {"batch": [
        {"type": "page", "anonymousId": "web-anna-7f3", "messageId": "a1", "timestamp": "2024-05-01T10:00:00Z"},
        {"type": "identify", "anonymousId": "web-anna-7f3", "userId": "anna-42", "messageId": "a2",
         "timestamp": "2024-05-01T10:05:00Z",
         "traits": {"email": "Anna.Petrova@Example.ru", "phone": "8 916 123-45-67", "firstName": "Анна"}},
        {"type": "track", "anonymousId": "loyalty:7700111222", "event": "Order Completed", "messageId": "a3",
         "timestamp": "2024-05-03T12:00:00Z", "context": {"externalIds": [{"id": "7700111222", "type": "loyalty_card"}],
                                                          "traits": {"phone": "+79161234567"}},
         "properties": {"order_id": "O1", "total": 3000, "products": [{"product_id": "P1", "price": 3000, "quantity": 1}]}},
        {"type": "track", "userId": "anna-42", "traits": {"email": "anna.petrova@example.ru"}, "messageId": "bad"},
        {"type": "identify", "userId": "boris-7", "messageId": "b1", "timestamp": "2024-05-02T10:00:00Z",
         "traits": {"email": "boris@example.org"}},
    ]})
    assert response.status_code == 200 and len(response.json()["rejected"]) == 1
    api.flush()


def anna(api: Api) -> str:
    response = api.client.get("/api/v1/profiles", params={"user_id": "anna-42"}, headers=api.admin)
    assert response.status_code == 200, response.text
    return str(response.json()["profile_id"])


def test_export_then_erase_over_http(api: Api) -> None:
    send_people(api)
    profile_id = anna(api)
    export = api.client.get(f"/api/v1/profiles/{profile_id}/export", headers=api.admin)
    assert export.status_code == 200, export.text
    body = export.json()
    assert [e["message_id"] for e in body["tables"]["events"]] == ["a1", "a2", "a3"]
    assert ("email", "anna.petrova@example.ru") in {(i["kind"], i["value"]) for i in body["identifiers"]}
    assert body["tables"]["events"][1]["traits"]["firstName"] == "Анна" and len(body["tables"]["quarantine"]) == 1

    # Acknowledged but not loaded yet: the erasure flushes the pipeline first.
    api.post("/v1/track", {"userId": "anna-42", "event": "Product Viewed", "messageId": "a4", "timestamp": "2024-05-04T10:00:00Z"})
    erased = api.client.delete(f"/api/v1/profiles/{profile_id}", headers=api.admin)
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["profile_id"] == profile_id and report["mode"] == "drop"
    assert report["removed"]["events"] == 4 and report["removed"]["quarantine"] == 1

    texts = scan(api.backend)
    assert {name: [v for v in ANNA_VALUES if v in text] for name, text in texts.items() if any(v in text for v in ANNA_VALUES)} == {}
    assert "boris-7" in texts["events"] and "boris@example.org" in texts["identities"]
    audit = api.backend.rows('SELECT action, subject_id, requested_by, counts FROM privacy_audit ORDER BY "at"')
    assert [a["action"] for a in audit] == ["export", "erase"]
    assert all(a["subject_id"] == profile_id and a["requested_by"].startswith("key_") for a in audit)
    assert json.loads(audit[1]["counts"])["removed"]["events"] == 4

    for path in (f"/api/v1/profiles/{profile_id}", f"/api/v1/profiles/{profile_id}/export"):
        assert api.client.get(path, headers=api.admin).status_code == 404
    again = api.client.delete(f"/api/v1/profiles/{profile_id}", headers=api.admin)
    assert again.status_code == 404 and again.json()["error"] == "profile_not_found"
    assert api.client.get("/api/v1/profiles", params={"email": "anna.petrova@example.ru"}, headers=api.admin).status_code == 404

    # A later event carrying an erased identifier does not bring the person back.
    api.post("/v1/identify", {"anonymousId": "new-device", "traits": {"email": "Anna.Petrova@example.ru"}, "messageId": "a5"})
    api.flush()
    assert api.client.get("/api/v1/profiles", params={"email": "anna.petrova@example.ru"}, headers=api.admin).status_code == 404
    assert api.backend.scalar("SELECT count(*) FROM events WHERE message_id = 'a5'") == 0


def test_unknown_profiles_and_weaker_keys_are_refused(api: Api) -> None:
    send_people(api)
    profile_id = anna(api)
    missing = api.client.delete("/api/v1/profiles/p_nobody", headers=api.admin)
    assert missing.status_code == 404 and "no profile 'p_nobody'" in missing.json()["detail"]
    assert api.client.get("/api/v1/profiles/p_nobody/export", headers=api.admin).status_code == 404
    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    reader = keys.create("admin", "analyst", scopes=["read"])[1]
    masked = keys.create("admin", "masked", scopes=["admin", "pii:mask"])[1]
    for key in (reader, masked):
        headers = {"Authorization": f"Bearer {key}"}
        assert api.client.get(f"/api/v1/profiles/{profile_id}/export", headers=headers).status_code == 403
    read_only = {"Authorization": f"Bearer {reader}"}
    assert api.client.delete(f"/api/v1/profiles/{profile_id}", headers=read_only).status_code == 403
    assert api.client.delete(f"/api/v1/profiles/{profile_id}").status_code == 401
    assert anna(api) == profile_id  # nothing was erased
    # A masked admin may erase: the report holds no personal data.
    erased = api.client.delete(f"/api/v1/profiles/{profile_id}", headers={"Authorization": f"Bearer {masked}"})
    assert erased.status_code == 200 and "anna" not in erased.text.lower()
