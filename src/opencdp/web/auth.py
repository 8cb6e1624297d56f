"""Who is calling the admin API, and may they: ``Depends(require_scope("read"))``.

An admin key (``ak_...``) is sent as ``Authorization: Bearer <key>``, as the
username of Basic auth, or as ``X-API-Key``. The server's local token (which the CLI
on the same machine reads from ``server.json``) is a full-admin caller. Write keys
(``wk_...``) are public and only open the tracking API.

Routers using these dependencies set ``route_class=AuthRoute`` so a 401 carries
``WWW-Authenticate``: the app-wide error handlers answer with the JSON error shape
but have no way to add headers.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from opencdp.errors import AuthError, TerminalError
from opencdp.keys import FULL_ACCESS, SCOPES, KeyRing, grants
from opencdp.privacy import mask_record
from opencdp.web.body import basic_auth_user
from opencdp.web.errors import error_response

T = TypeVar("T")
_CHALLENGE = 'Bearer realm="opencdp admin API"'
_HOW = "the admin API takes an admin key as `Authorization: Bearer ak_...` (create one with `opencdp keys create admin NAME`)"


@dataclass(frozen=True)
class Principal:
    """The caller of an admin endpoint: which key, and what it may do."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    """As granted to the key (``admin`` also allows what ``write`` and ``read`` allow)."""

    @property
    def mask_pii(self) -> bool:
        """Personal data in answers to this caller must be masked (``opencdp.privacy``)."""
        return "pii:mask" in self.scopes

    def allows(self, scope: str) -> bool:
        return grants(self.scopes, scope)

    def mask(self, body: T) -> T:
        """``body`` with personal data masked if this caller has ``pii:mask``, else unchanged."""
        return mask_record(body) if self.mask_pii else body


LOCAL = Principal("local", "local CLI", FULL_ACCESS)
"""The server's local token: full access, as the operator on the machine."""


class Unauthenticated(AuthError):
    """No usable admin credential: 401 with ``WWW-Authenticate``."""

    def __init__(self, detail: str, *, challenge: str = _CHALLENGE) -> None:
        super().__init__(detail, field="Authorization")
        self.challenge = challenge


class Forbidden(TerminalError):
    """A valid admin key without the scope an endpoint needs."""

    code = "forbidden"
    status = 403


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """A dependency admitting admin keys that hold ``scope`` (directly or implied); returns the caller."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    return _dependency(scope)


@functools.cache  # one callable per scope, so FastAPI resolves it once per request
def _dependency(scope: str) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        if not principal.allows(scope):
            raise Forbidden(
                f"this endpoint needs the `{scope}` scope; key {principal.key_id} ({principal.name!r}) has "
                f"{', '.join(principal.scopes)} — use a key with {scope}, or create one with "
                f"`opencdp keys create admin NAME --scope {scope}`",
                field="Authorization",
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def authenticate(request: Request) -> Principal:
    """The caller behind the request's admin credential; raises ``Unauthenticated`` if there is none."""
    token = _presented_key(request)
    if not token:
        raise Unauthenticated(f"no admin key was sent; {_HOW}")
    local: str | None = getattr(request.app.state, "local_token", None)
    if local and secrets.compare_digest(token.encode(), local.encode()):
        return LOCAL
    keys: KeyRing = request.app.state.keys
    key = keys.admin_key(token)
    if key is not None:
        return Principal(key.key_id, key.name, key.effective_scopes)
    if token.startswith("wk_") or keys.source_of(token) is not None:
        raise Unauthenticated(
            f"a write key cannot open the admin API: write keys are only for the tracking API (/v1/*); {_HOW}",
            challenge=_CHALLENGE + ', error="invalid_token"',
        )
    raise Unauthenticated(
        f"the admin key is unknown or revoked; {_HOW}",
        challenge=_CHALLENGE + ', error="invalid_token"',
    )


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "").strip()
    if not header:
        return request.headers.get("x-api-key", "").strip() or None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        return basic_auth_user(request) or None
    raise Unauthenticated(f"the Authorization scheme {scheme!r} is not supported here; {_HOW}")


class AuthRoute(APIRoute):
    """A route answering authentication failures with a 401 that carries ``WWW-Authenticate``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthError as error:  # Unauthenticated, or a malformed Basic header
                response = error_response(error.status, error.code, error.detail, field=error.field)
                response.headers["WWW-Authenticate"] = getattr(error, "challenge", _CHALLENGE)
                return response

        return route
