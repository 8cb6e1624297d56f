"""The data subject's rights over HTTP: export a person's data, erase a person.

Both need the ``admin`` scope. An export is made for the person it describes, so it
is never masked: keys with ``pii:mask`` get 403 for it (an erasure report holds no
personal data, so they may erase). Both are recorded in ``privacy_audit``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from opencdp.config import Settings
from opencdp.privacy.erasure import erase_profile, export_profile, privacy_salt
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Forbidden, Principal, require_scope

router = APIRouter(prefix="/api/v1/profiles", tags=["privacy"], route_class=AuthRoute)
Admin = Annotated[Principal, Depends(require_scope("admin"))]


def _unmasked(principal: Principal) -> None:
    if principal.mask_pii:
        raise Forbidden(
            f"key {principal.key_id} has `pii:mask`, so it may not export a person's unmasked data; "
            "use an admin key without it",
            field="Authorization",
        )


@router.get("/{profile_id}/export", summary="Everything held about a person (right of access), as JSON")
def export(request: Request, principal: Admin, profile_id: str) -> Any:
    _unmasked(principal)
    backend: Backend = request.app.state.backend
    request.app.state.collector.flush()  # acknowledged events are part of what is held
    return export_profile(backend, profile_id, requested_by=principal.key_id)


@router.delete("/{profile_id}", summary="Erase a person from every table (right to erasure)")
def erase(request: Request, principal: Admin, profile_id: str) -> Any:
    backend: Backend = request.app.state.backend
    settings: Settings = request.app.state.settings
    # No acknowledged event of the person may still wait in the write-ahead log.
    request.app.state.collector.flush()
    report = erase_profile(
        backend,
        profile_id,
        mode=settings.erased_events,
        salt=privacy_salt(settings.data_dir),
        requested_by=principal.key_id,
    )
    return report.to_dict()
