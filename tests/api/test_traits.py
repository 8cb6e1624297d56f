"""Computed traits API: declared, read, changed and removed through HTTP, computed on profiles; on both engines."""

from __future__ import annotations

from pathlib import Path

from opencdp.profiles.computed import BUILTIN
from opencdp.profiles.definitions import all_traits
from tests.api.conftest import Api
from tests.api.test_profiles import send_journey

PAGES = {"name": "pages_seen", "aggregation": "count", "where": [{"field": "type", "op": "=", "value": "page"}]}


def _key(api: Api, *scopes: str) -> dict[str, str]:
    _, key = api.client.app.state.keys.create("admin", "scoped", scopes=list(scopes))  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}"}


def test_declared_trait_is_listed_computed_on_profiles_and_resolvable_by_name(api: Api) -> None:
    send_journey(api)
    created = api.client.post("/api/v1/computed-traits", json=PAGES, headers=api.admin)
    assert created.status_code == 201, created.text
    assert created.json()["origin"] == "api" and created.json()["definition"]["aggregation"] == "count"
    listed = api.client.get("/api/v1/computed-traits", headers=api.admin).json()["traits"]
    origins = {t["name"]: t["origin"] for t in listed}
    assert origins["pages_seen"] == "api" and origins["orders"] == "builtin"
    assert [t.name for t in all_traits(api.backend)] == [*(t.name for t in BUILTIN), "pages_seen"]
    profile_id = api.client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=api.admin).json()["profile_id"]
    computed = api.client.get(f"/api/v1/profiles/{profile_id}", headers=api.admin).json()["computed"]
    assert computed["pages_seen"] == 1 and computed["orders"] == 1


def test_put_replaces_or_creates_and_delete_stops_computing(api: Api) -> None:
    send_journey(api)
    first = api.client.put("/api/v1/computed-traits/pages_seen", json={**PAGES, "name": "pages_seen"}, headers=api.admin)
    assert first.status_code == 201
    identifies = {"aggregation": "count", "where": [{"field": "type", "op": "=", "value": "identify"}]}
    replaced = api.client.put("/api/v1/computed-traits/pages_seen", json=identifies, headers=api.admin)  # name from the URL
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["created_at"] == first.json()["created_at"]
    assert api.client.get("/api/v1/computed-traits/pages_seen", headers=api.admin).json()["definition"]["where"][0]["value"] == "identify"
    profile_id = api.client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=api.admin).json()["profile_id"]
    assert api.client.get(f"/api/v1/profiles/{profile_id}", headers=api.admin).json()["computed"]["pages_seen"] == 2
    assert api.client.delete("/api/v1/computed-traits/pages_seen", headers=api.admin).status_code == 204
    assert "pages_seen" not in api.client.get(f"/api/v1/profiles/{profile_id}", headers=api.admin).json()["computed"]
    gone = api.client.get("/api/v1/computed-traits/pages_seen", headers=api.admin)
    assert gone.status_code == 404 and gone.json()["error"] == "trait_not_found"
    assert api.client.delete("/api/v1/computed-traits/pages_seen", headers=api.admin).status_code == 404
    again = api.client.post("/api/v1/computed-traits", json=PAGES, headers=api.admin)  # a removed name is free again
    assert again.status_code == 201


def test_invalid_definitions_get_422_naming_the_field(api: Api) -> None:
    cases = [
        ({"name": "x", "aggregation": "median"}, "aggregation"),
        ({"name": "x", "aggregation": "sum"}, "value"),
        ({"name": "bad name", "aggregation": "count"}, "name"),
        ({"name": "x", "aggregation": "count", "window": "fortnight"}, "window"),
        ({"name": "x", "aggregation": "count", "colour": "red"}, "colour"),
        ({"name": "x", "aggregation": "count", "where": [{"field": "type", "op": "~", "value": "page"}]}, "where[0].op"),
    ]
    for body, field in cases:
        response = api.client.post("/api/v1/computed-traits", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, (body, response.json())
        assert field.split("[")[0] in response.json()["detail"]
    for raw in (b"[1, 2]", b"not json", b'"text"'):
        response = api.client.post(
            "/api/v1/computed-traits", content=raw, headers={**api.admin, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (raw, response.text)
    mismatch = api.client.put("/api/v1/computed-traits/a", json={"name": "b", "aggregation": "count"}, headers=api.admin)
    assert mismatch.status_code == 422 and mismatch.json()["field"] == "name"
    assert api.client.get("/api/v1/computed-traits", headers=api.admin).json()["traits"][-1]["origin"] == "builtin"


def test_names_of_builtin_file_and_existing_traits_conflict(api: Api, tmp_path: Path) -> None:
    traits_file = tmp_path / "traits.toml"
    traits_file.write_text('[[traits]]\nname = "from_file"\naggregation = "count"\n')
    api.client.app.state.settings.computed_traits_file = traits_file  # type: ignore[attr-defined]
    assert api.client.post("/api/v1/computed-traits", json=PAGES, headers=api.admin).status_code == 201
    again = api.client.post("/api/v1/computed-traits", json=PAGES, headers=api.admin)
    assert again.status_code == 409 and "PUT" in again.json()["detail"]
    for name in ("orders", "from_file"):
        body = {"name": name, "aggregation": "count"}
        for response in (
            api.client.post("/api/v1/computed-traits", json=body, headers=api.admin),
            api.client.put(f"/api/v1/computed-traits/{name}", json=body, headers=api.admin),
            api.client.delete(f"/api/v1/computed-traits/{name}", headers=api.admin),
        ):
            assert response.status_code == 409 and response.json()["field"] == "name", response.text
    assert api.client.get("/api/v1/computed-traits/from_file", headers=api.admin).json()["origin"] == "file"


def test_scopes_read_to_read_write_to_change(api: Api) -> None:
    reader = _key(api, "read")
    assert api.client.get("/api/v1/computed-traits", headers=reader).status_code == 200
    assert api.client.post("/api/v1/computed-traits", json=PAGES, headers=reader).status_code == 403
    assert api.client.post("/api/v1/computed-traits", json=PAGES, headers=_key(api, "write")).status_code == 201
    assert api.client.delete("/api/v1/computed-traits/pages_seen", headers=reader).status_code == 403
    assert api.client.get("/api/v1/computed-traits").status_code == 401
