"""The admin API (``Authorization: Bearer <admin key>``): keys and store status."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from opencdp.errors import AuthError
from opencdp.keys import ApiKey, KeyRing
from opencdp.status import collect_status
from opencdp.web.body import bearer_token


def require_admin(request: Request) -> None:
    token = bearer_token(request)
    if not token:
        raise AuthError("send an admin key as `Authorization: Bearer <key>`", field="Authorization")
    keys: KeyRing = request.app.state.keys
    if not keys.is_admin(token) and token != request.app.state.local_token:
        raise AuthError("the admin key is unknown or revoked", field="Authorization")


router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(require_admin)])


class KeyIn(BaseModel):
    kind: Literal["write", "admin"] = Field(description="`write` for a tracking source, `admin` for this API")
    name: str = Field(min_length=1, max_length=200, description="Source name for write keys (e.g. website)")


def _public(key: ApiKey, plain: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key_id": key.key_id,
        "kind": key.kind,
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }
    if key.kind == "write":
        body["key"] = key.secret  # write keys are public by design (they ship in web pages)
    if plain is not None:
        body["key"] = plain
    return body


@router.get("/keys", summary="List API keys (admin secrets are never shown)")
def list_keys(request: Request) -> list[dict[str, Any]]:
    return [_public(k) for k in request.app.state.keys.all()]


@router.post("/keys", status_code=201, summary="Create a key; an admin key's secret is shown only in this answer")
def create_key(body: KeyIn, request: Request) -> dict[str, Any]:
    key, plain = request.app.state.keys.create(body.kind, body.name)
    return _public(key, plain)


@router.delete("/keys/{key_id}", summary="Revoke a key")
def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    return _public(request.app.state.keys.revoke(key_id))


@router.get("/status", summary="Store size, event counts, ingest lag")
def status(request: Request) -> dict[str, Any]:
    return collect_status(request.app.state.backend, request.app.state.collector)
