from __future__ import annotations

from tests.api.conftest import Api


def test_admin_api_requires_an_admin_key(api: Api) -> None:
    assert api.client.get("/api/v1/status").status_code == 401
    assert api.client.get("/api/v1/status", headers={"Authorization": "Bearer ak_nope"}).status_code == 401
    # A write key is not an admin key.
    assert api.client.get("/api/v1/status", headers={"Authorization": f"Bearer {api.write_key}"}).status_code == 401


def test_keys_lifecycle(api: Api) -> None:
    created = api.client.post("/api/v1/keys", json={"kind": "write", "name": "ios-app"}, headers=api.admin)
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("wk_")
    listed = api.client.get("/api/v1/keys", headers=api.admin).json()
    assert {k["name"] for k in listed} >= {"ios-app", "website", "tests"}
    assert all("key" not in k for k in listed if k["kind"] == "admin")  # admin secrets never shown again
    stored = [k for k in api.client.app.state.keys.all() if k.kind == "admin"]  # type: ignore[attr-defined]
    assert all(len(k.secret) == 64 and not k.secret.startswith("ak_") for k in stored)  # hashed
    assert api.client.delete(f"/api/v1/keys/{key['key_id']}", headers=api.admin).json()["revoked_at"]
    missing = api.client.delete("/api/v1/keys/key_missing", headers=api.admin)
    assert missing.status_code == 400 and missing.json()["field"] == "key_id"
    bad = api.client.post("/api/v1/keys", json={"kind": "root", "name": "x"}, headers=api.admin)
    assert bad.status_code == 422 and bad.json()["field"] == "kind"


def test_status_reports_counts_and_lag(api: Api) -> None:
    api.post("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "A"}] * 3})
    before = api.client.get("/api/v1/status", headers=api.admin).json()
    assert before["ingest"]["lag_bytes"] > 0
    api.flush()
    after = api.client.get("/api/v1/status", headers=api.admin).json()
    assert after["rows"]["events"] == 3
    assert after["ingest"]["lag_bytes"] == 0
