"""Admin API authentication and scopes (``opencdp.web.auth``), on both storage engines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from opencdp.errors import TerminalError
from opencdp.keys import KeyRing, digest, grants, normalise_scopes
from opencdp.storage.base import Backend
from opencdp.storage.schema import API_KEYS
from opencdp.web import errors
from opencdp.web.auth import AuthRoute, Principal, require_scope
from tests.api.conftest import Api, basic

CSV = {"content": b"", "params": {"format": "csv"}}  # empty: answered 400 once past authentication


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def admin_key(api: Api, *scopes: str, name: str = "scoped") -> str:
    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    return keys.create("admin", name, scopes=list(scopes))[1]


# -- 401: no usable credential ------------------------------------------------------


def test_no_key_is_401_with_a_challenge_and_how_to_authenticate(api: Api) -> None:
    response = api.client.get("/api/v1/status")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="opencdp admin API"'
    body = response.json()
    assert body["error"] == "unauthorized" and body["field"] == "Authorization"
    assert "Authorization: Bearer ak_" in body["detail"] and "opencdp keys create admin" in body["detail"]


@pytest.mark.parametrize("path", ["/api/v1/status", "/api/v1/keys"])
def test_unknown_key_is_401_invalid_token(api: Api, path: str) -> None:
    response = api.client.get(path, headers=bearer("ak_nope"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "unknown or revoked" in response.json()["detail"]


def test_revoked_key_is_401(api: Api) -> None:
    key = admin_key(api, "read")
    assert api.client.get("/api/v1/status", headers=bearer(key)).status_code == 200
    key_id = next(k["key_id"] for k in api.client.get("/api/v1/keys", headers=api.admin).json() if k["name"] == "scoped")
    api.client.delete(f"/api/v1/keys/{key_id}", headers=api.admin)
    response = api.client.get("/api/v1/status", headers=bearer(key))
    assert response.status_code == 401 and "unknown or revoked" in response.json()["detail"]


def test_unsupported_scheme_and_bad_basic_header_are_401(api: Api) -> None:
    response = api.client.get("/api/v1/status", headers={"Authorization": f"Token {api.admin_key}"})
    assert response.status_code == 401 and "'Token' is not supported" in response.json()["detail"]
    assert "WWW-Authenticate" in response.headers
    response = api.client.get("/api/v1/status", headers={"Authorization": "Basic !!!"})
    assert response.status_code == 401 and "base64" in response.json()["detail"]
    assert "WWW-Authenticate" in response.headers
    response = api.client.get("/api/v1/status", headers={"Authorization": "Bearer "})
    assert response.status_code == 401 and "no admin key was sent" in response.json()["detail"]


@pytest.mark.parametrize("how", ["bearer", "basic", "x-api-key"])
def test_a_write_key_is_only_for_the_tracking_api(api: Api, how: str) -> None:
    headers = {"bearer": bearer(api.write_key), "basic": basic(api.write_key), "x-api-key": {"X-API-Key": api.write_key}}
    response = api.client.get("/api/v1/status", headers=headers[how])
    assert response.status_code == 401
    assert "write keys are only for the tracking API" in response.json()["detail"]
    assert "WWW-Authenticate" in response.headers


def test_an_unknown_write_key_gets_the_same_hint(api: Api) -> None:
    response = api.client.post("/api/v1/imports/customers", headers=bearer("wk_unknown"), **CSV)
    assert response.status_code == 401 and "only for the tracking API" in response.json()["detail"]


# -- accepted credentials ------------------------------------------------------------


@pytest.mark.parametrize("how", ["bearer", "basic", "x-api-key"])
def test_an_admin_key_is_accepted_three_ways(api: Api, how: str) -> None:
    headers = {"bearer": api.admin, "basic": basic(api.admin_key), "x-api-key": {"X-API-Key": api.admin_key}}
    assert api.client.get("/api/v1/status", headers=headers[how]).status_code == 200


def test_the_local_token_has_full_access(api: Api) -> None:
    token = bearer(api.client.app.state.local_token)  # type: ignore[attr-defined]
    assert api.client.get("/api/v1/status", headers=token).status_code == 200
    assert api.client.get("/api/v1/keys", headers=token).status_code == 200
    assert api.client.post("/api/v1/imports/customers", headers=token, **CSV).status_code == 400


def test_keys_made_before_scopes_have_full_access(api: Api, backend: Backend) -> None:
    # A store from before scopes: no `scopes` column, a key row without it.
    backend.execute("ALTER TABLE api_keys DROP COLUMN scopes")
    now = dt.datetime.now(dt.UTC)
    old = {"key_id": "key_old", "kind": "admin", "name": "old", "secret": digest("ak_old"),
           "created_at": now, "revoked_at": None, "updated_at": now}
    schema = pa.schema([f for f in API_KEYS.arrow_schema if f.name != "scopes"])
    backend.insert("api_keys", pa.Table.from_pylist([old], schema=schema))
    backend.create_schema()  # the upgrade adds the column, empty for the old row
    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    keys.refresh_s = 0
    assert next(k for k in keys.all() if k.key_id == "key_old").scopes is None
    assert api.client.get("/api/v1/status", headers=bearer("ak_old")).status_code == 200
    listed = api.client.get("/api/v1/keys", headers=bearer("ak_old"))
    assert listed.status_code == 200
    assert next(k for k in listed.json() if k["key_id"] == "key_old")["scopes"] == ["admin"]


# -- 403: the key lacks the scope -------------------------------------------------------


def test_a_read_key_reads_but_cannot_manage_keys_or_import(api: Api) -> None:
    key = admin_key(api, "read")
    assert api.client.get("/api/v1/status", headers=bearer(key)).status_code == 200
    for response in (
        api.client.get("/api/v1/keys", headers=bearer(key)),
        api.client.post("/api/v1/keys", json={"kind": "admin", "name": "x"}, headers=bearer(key)),
        api.client.delete("/api/v1/keys/key_x", headers=bearer(key)),
    ):
        assert response.status_code == 403
        body = response.json()
        assert body["error"] == "forbidden"
        assert "needs the `admin` scope" in body["detail"] and "'scoped') has read" in body["detail"]
    response = api.client.post("/api/v1/imports/customers", headers=bearer(key), **CSV)
    assert response.status_code == 403 and "needs the `write` scope" in response.json()["detail"]


def test_write_implies_read_and_admin_implies_both(api: Api) -> None:
    writer = admin_key(api, "write")
    assert api.client.get("/api/v1/status", headers=bearer(writer)).status_code == 200
    assert api.client.post("/api/v1/imports/customers", headers=bearer(writer), **CSV).status_code == 400
    assert api.client.get("/api/v1/keys", headers=bearer(writer)).status_code == 403
    admin = admin_key(api, "admin")
    assert api.client.get("/api/v1/status", headers=bearer(admin)).status_code == 200
    assert api.client.post("/api/v1/imports/customers", headers=bearer(admin), **CSV).status_code == 400
    assert api.client.get("/api/v1/keys", headers=bearer(admin)).status_code == 200


@pytest.mark.parametrize(
    ("scopes", "needed", "allowed"),
    [
        (["read"], "read", True),
        (["read"], "write", False),
        (["write"], "read", True),
        (["write"], "admin", False),
        (["admin"], "write", True),
        (["admin"], "read", True),
        (["admin"], "pii:mask", False),
        (["read", "pii:mask"], "pii:mask", True),
    ],
)
def test_scope_implication(scopes: list[str], needed: str, allowed: bool) -> None:
    assert grants(scopes, needed) is allowed


# -- creating keys with scopes ---------------------------------------------------------


def test_keys_are_created_with_scopes_over_http(api: Api) -> None:
    created = api.client.post(
        "/api/v1/keys", json={"kind": "admin", "name": "analyst", "scopes": ["pii:mask", "read"]}, headers=api.admin
    )
    assert created.status_code == 201 and created.json()["scopes"] == ["read", "pii:mask"]
    assert api.client.get("/api/v1/status", headers=bearer(created.json()["key"])).status_code == 200
    default = api.client.post("/api/v1/keys", json={"kind": "admin", "name": "ops"}, headers=api.admin).json()
    assert default["scopes"] == ["admin"]
    write = api.client.post("/api/v1/keys", json={"kind": "write", "name": "app"}, headers=api.admin).json()
    assert write["scopes"] is None


def test_bad_scopes_are_refused_with_the_allowed_ones(api: Api) -> None:
    bad = api.client.post("/api/v1/keys", json={"kind": "admin", "name": "x", "scopes": ["reed"]}, headers=api.admin)
    assert bad.status_code == 400 and bad.json()["field"] == "scopes"
    assert "'reed'" in bad.json()["detail"] and "read, write, admin, pii:mask" in bad.json()["detail"]
    only_mask = api.client.post(
        "/api/v1/keys", json={"kind": "admin", "name": "x", "scopes": ["pii:mask"]}, headers=api.admin
    )
    assert only_mask.status_code == 400 and "needs read, write or admin" in only_mask.json()["detail"]
    on_write = api.client.post("/api/v1/keys", json={"kind": "write", "name": "x", "scopes": ["read"]}, headers=api.admin)
    assert on_write.status_code == 400 and "scopes are for admin keys" in on_write.json()["detail"]


def test_scope_validation() -> None:
    assert normalise_scopes(["pii:mask", " READ ", "read"]) == ("read", "pii:mask")
    assert normalise_scopes(["read,pii:mask"]) == ("read", "pii:mask")
    with pytest.raises(TerminalError, match=r"unknown scope 'root'.*read, write, admin, pii:mask"):
        normalise_scopes(["read", "root"])
    with pytest.raises(TerminalError, match="needs read, write or admin"):
        normalise_scopes([])
    with pytest.raises(ValueError, match="unknown scope 'owner'"):
        require_scope("owner")


def test_a_masked_key_cannot_create_an_unmasked_key(api: Api) -> None:
    key = admin_key(api, "admin", "pii:mask")
    refused = api.client.post("/api/v1/keys", json={"kind": "admin", "name": "x"}, headers=bearer(key))
    assert refused.status_code == 403 and "add pii:mask" in refused.json()["detail"]
    created = api.client.post(
        "/api/v1/keys", json={"kind": "admin", "name": "x", "scopes": ["read", "pii:mask"]}, headers=bearer(key)
    )
    assert created.status_code == 201


# -- the principal an endpoint receives ----------------------------------------------------


@pytest.fixture
def whoami(backend: Backend) -> Iterator[tuple[TestClient, KeyRing]]:
    """A small app with one endpoint that shows its caller and masks a profile for it."""
    router = APIRouter(route_class=AuthRoute)

    @router.get("/whoami")
    def endpoint(principal: Principal = Depends(require_scope("read"))) -> dict[str, Any]:
        profile = {"traits": {"email": "anna.petrova@example.ru", "city": "Тверь"}}
        return {"key_id": principal.key_id, "name": principal.name, "scopes": list(principal.scopes),
                "mask_pii": principal.mask_pii, "profile": principal.mask(profile)}

    app = FastAPI()
    app.state.keys = KeyRing(backend)
    app.state.local_token = "local-secret"
    errors.install(app)
    app.include_router(router)
    with TestClient(app) as client:
        yield client, app.state.keys


def test_the_principal_carries_the_masking_flag(whoami: tuple[TestClient, KeyRing]) -> None:
    client, keys = whoami
    masked, plain = keys.create("admin", "analyst", scopes=["read", "pii:mask"])
    body = client.get("/whoami", headers=bearer(plain)).json()
    assert body == {"key_id": masked.key_id, "name": "analyst", "scopes": ["read", "pii:mask"], "mask_pii": True,
                    "profile": {"traits": {"email": "a***@example.ru", "city": "Тверь"}}}
    _, full = keys.create("admin", "ops")
    body = client.get("/whoami", headers=bearer(full)).json()
    assert body["mask_pii"] is False and body["profile"]["traits"]["email"] == "anna.petrova@example.ru"
    local = client.get("/whoami", headers=bearer("local-secret")).json()
    assert local["key_id"] == "local" and local["scopes"] == ["admin"] and local["mask_pii"] is False


def test_basic_auth_takes_the_key_as_username(whoami: tuple[TestClient, KeyRing]) -> None:
    client, keys = whoami
    key, plain = keys.create("admin", "ops", scopes=["read"])
    assert client.get("/whoami", headers=basic(plain)).json()["key_id"] == key.key_id
