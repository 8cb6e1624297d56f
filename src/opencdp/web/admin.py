"""The admin API (``Authorization: Bearer <admin key>``): keys and store status.

Each endpoint asks for the least scope that fits (see ``opencdp.web.auth``):
the status needs ``read``, managing keys needs ``admin``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from opencdp.keys import FULL_ACCESS, ApiKey, normalise_scopes
from opencdp.status import collect_status
from opencdp.web.auth import AuthRoute, Forbidden, Principal, require_scope

require_admin = require_scope("admin")
"""Full access (kept under this name for routers written before scopes)."""

router = APIRouter(prefix="/api/v1", tags=["admin"], route_class=AuthRoute)


class KeyIn(BaseModel):
    kind: Literal["write", "admin"] = Field(description="`write` for a tracking source, `admin` for this API")
    name: str = Field(min_length=1, max_length=200, description="Source name for write keys (e.g. website)")
    scopes: list[str] | None = Field(
        None,
        description="Admin keys only: any of read, write, admin, pii:mask (admin implies write and read, "
        "write implies read; pii:mask masks personal data in answers). Default: admin",
        examples=[["read", "pii:mask"]],
    )


def _public(key: ApiKey, plain: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key_id": key.key_id,
        "kind": key.kind,
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "scopes": list(key.effective_scopes) if key.kind == "admin" else None,
    }
    if key.kind == "write":
        body["key"] = key.secret  # write keys are public by design (they ship in web pages)
    if plain is not None:
        body["key"] = plain
    return body


@router.get("/keys", summary="List API keys (admin secrets are never shown)", dependencies=[Depends(require_admin)])
def list_keys(request: Request) -> list[dict[str, Any]]:
    return [_public(k) for k in request.app.state.keys.all()]


@router.post("/keys", status_code=201, summary="Create a key; an admin key's secret is shown only in this answer")
def create_key(body: KeyIn, request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    if principal.mask_pii and body.kind == "admin":
        # Otherwise a masked key could mint itself an unmasked one.
        scopes = normalise_scopes(body.scopes) if body.scopes is not None else FULL_ACCESS
        if "pii:mask" not in scopes:
            raise Forbidden(
                f"key {principal.key_id} has pii:mask, so the admin keys it creates must have it too; "
                "add pii:mask to `scopes`",
                field="scopes",
            )
    key, plain = request.app.state.keys.create(body.kind, body.name, scopes=body.scopes)
    return _public(key, plain)


@router.delete("/keys/{key_id}", summary="Revoke a key", dependencies=[Depends(require_admin)])
def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    return _public(request.app.state.keys.revoke(key_id))


@router.get("/status", summary="Store size, event counts, ingest lag", dependencies=[Depends(require_scope("read"))])
def status(request: Request) -> dict[str, Any]:
    return collect_status(request.app.state.backend, request.app.state.collector)
