"""The in-app inbox API: what the shop's app shows in its message centre.

``GET /api/v1/profiles/{id}/inbox`` lists the profile's messages newest first (``unread_only``,
``limit``) with the unread count for the badge; ``POST .../inbox/read`` marks messages read and
``DELETE .../inbox/{message_id}`` removes one. A merged profile answers under any of its ids, with
the messages sent to each of them. Storage and rules are in ``opencdp.campaigns.channels.inbox``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from opencdp.campaigns.channels import inbox
from opencdp.errors import TerminalError
from opencdp.identity.profiles import resolve
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1/profiles", tags=["inbox"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]


class InboxProfileNotFound(TerminalError):
    code = "profile_not_found"
    status = 404


class ReadBody(BaseModel):
    message_ids: list[str] = Field(min_length=1, max_length=1000, description="the messages the profile opened")


def _members(request: Request, profile_id: str) -> tuple[Backend, list[str]]:
    backend: Backend = request.app.state.backend
    resolved = resolve(backend, profile_id)
    if resolved is None:
        raise InboxProfileNotFound(f"there is no profile {profile_id[:80]!r}", field="profile_id")
    return backend, resolved[1]


@router.get("/{profile_id}/inbox", summary="The profile's in-app messages, newest first")
def get_inbox(request: Request, principal: Reader, profile_id: str, unread_only: bool = False,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    backend, members = _members(request, profile_id)
    messages = inbox.inbox_for(backend, members, unread_only=unread_only, limit=limit)
    for m in messages:
        for key in ("created_at", "expires_at", "read_at"):
            m[key] = m[key].isoformat() if m[key] is not None else None
    return {"profile_id": profile_id, "unread": inbox.unread_count(backend, members), "messages": messages}


@router.post("/{profile_id}/inbox/read", summary="Mark in-app messages read")
def read_messages(request: Request, principal: Writer, profile_id: str, body: ReadBody) -> dict[str, int]:
    backend, members = _members(request, profile_id)
    return {"marked": inbox.mark_read(backend, members, body.message_ids),
            "unread": inbox.unread_count(backend, members)}


@router.delete("/{profile_id}/inbox/{message_id}", summary="Remove an in-app message")
def remove_message(request: Request, principal: Writer, profile_id: str, message_id: str) -> dict[str, int]:
    backend, members = _members(request, profile_id)
    return {"removed": inbox.remove(backend, members, [message_id])}
