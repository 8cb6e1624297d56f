"""Identity API: probabilistic dedupe and the review queue, on both engines."""

from __future__ import annotations

from opencdp.keys import KeyRing
from tests.api.conftest import Api


def test_dedupe_queue_and_decisions(api: Api) -> None:
    api.post("/v1/batch", {"batch": [
        {"type": "identify", "anonymousId": "a", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
         "traits": {"firstName": "Анна", "lastName": "Петрова", "birthday": "1990-04-12", "city": "Казань"}},
        {"type": "identify", "anonymousId": "b", "messageId": "m2", "timestamp": "2024-05-01T11:00:00Z",
         "traits": {"firstName": "Anna", "lastName": "Petrova", "birthday": "1990-04-12", "city": "Kazan"}},
    ]})
    api.flush()
    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    reader = {"Authorization": f"Bearer {keys.create('admin', 'reader', scopes=['read'])[1]}"}
    assert api.client.post("/api/v1/identity/dedupe", json={}, headers=reader).status_code == 403
    bad = api.client.post("/api/v1/identity/dedupe", json={"review_at": 0.99, "auto_merge_at": 0.9}, headers=api.admin)
    assert bad.status_code == 400 and bad.json()["field"] == "review_at"
    report = api.client.post("/api/v1/identity/dedupe", json={"apply": False}, headers=api.admin).json()
    assert report["queued"] == 1 and report["merged"] == 0
    [pair] = api.client.get("/api/v1/identity/candidates", headers=reader).json()
    path = f"/api/v1/identity/candidates/{pair['profile_id_l']}/{pair['profile_id_r']}"
    assert pair["evidence"]
    accepted = api.client.post(f"{path}/accept", headers=api.admin)
    assert accepted.status_code == 200 and accepted.json()["status"] == "merged"
    assert api.client.post(f"{path}/reject", headers=api.admin).status_code == 404
    profile = api.client.get("/api/v1/profiles", params={"anonymous_id": "b"}, headers=api.admin).json()
    assert len(profile["merged_ids"]) == 1
    assert api.client.post("/api/v1/identity/candidates/x/y/maybe", headers=api.admin).status_code == 422
