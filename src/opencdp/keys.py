"""API keys: write keys identify a source (public, as in Segment), admin keys are secrets.

Admin keys are stored as their SHA-256 only; the plain key is shown once, when
created. Lookups hit an in-memory cache that is refreshed from the store every
few seconds, so a revocation made by another process takes effect quickly and
the hot path never queries the store.

Admin keys carry scopes: ``read`` (look), ``write`` (change data, e.g. imports),
``admin`` (manage keys) and the modifier ``pii:mask`` (personal data in answers is
masked). ``admin`` implies ``write``, and ``write`` implies ``read``. Keys made
before scopes existed have none stored and act as ``admin``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import pyarrow as pa

from opencdp.errors import TerminalError
from opencdp.storage.base import Backend
from opencdp.storage.schema import API_KEYS

KeyKind = Literal["write", "admin"]
_PREFIX = {"write": "wk_", "admin": "ak_"}

SCOPES = ("read", "write", "admin", "pii:mask")
"""Every scope an admin key can hold, in the order they are stored and shown."""
_IMPLIED = {"read": {"read"}, "write": {"write", "read"}, "admin": {"admin", "write", "read"}, "pii:mask": {"pii:mask"}}
FULL_ACCESS = ("admin",)
"""The scopes of an admin key created without any, and of keys made before scopes existed."""


def normalise_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes in canonical order, checked; items may themselves be comma-separated ("read,pii:mask")."""
    given = {part.strip().lower() for item in scopes for part in item.split(",") if part.strip()}
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise TerminalError(
            f"unknown scope {', '.join(map(repr, unknown))}; the scopes are {', '.join(SCOPES)} "
            "(admin implies write and read, write implies read, pii:mask masks personal data)",
            field="scopes",
        )
    if not given & {"read", "write", "admin"}:
        raise TerminalError(
            "an admin key needs read, write or admin"
            + (" besides pii:mask (it only changes what the others show)" if given else ""),
            field="scopes",
        )
    return tuple(scope for scope in SCOPES if scope in given)


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether keys holding ``scopes`` may do what needs ``needed`` (with implied scopes)."""
    return any(needed in _IMPLIED.get(scope, ()) for scope in scopes)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    kind: str
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    secret: str
    scopes: tuple[str, ...] | None = None
    """Admin keys: the scopes as granted (None for keys made before scopes: full access). Write keys: None."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        """What the key may do: its scopes, or full access for an admin key stored without any."""
        if self.kind != "admin":
            return ()
        return self.scopes if self.scopes is not None else FULL_ACCESS


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyRing:
    def __init__(self, backend: Backend, *, refresh_s: float = 5.0) -> None:
        self.backend = backend
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._write: dict[str, str] = {}
        self._admin: dict[str, ApiKey] = {}

    def all(self) -> list[ApiKey]:
        rows = self.backend.current(API_KEYS).to_pylist()
        keys = [
            ApiKey(
                r["key_id"], r["kind"], r["name"], r["created_at"], r["revoked_at"], r["secret"],
                tuple(r["scopes"].split(",")) if r.get("scopes") else None,
            )
            for r in rows
        ]
        return sorted(keys, key=lambda k: k.created_at)

    def create(self, kind: KeyKind, name: str, *, scopes: Iterable[str] | None = None) -> tuple[ApiKey, str]:
        """Create a key; return it with the plain secret (shown only now for admin keys).

        ``scopes`` apply to admin keys only; without them an admin key has full access.
        """
        if kind not in _PREFIX:
            raise TerminalError(f"key kind must be 'write' or 'admin', got {kind!r}", field="kind")
        if not name.strip():
            raise TerminalError("a key needs a name (for write keys: the source, e.g. 'website')", field="name")
        if kind == "write" and scopes is not None:
            raise TerminalError(
                "scopes are for admin keys; a write key can only send events to the tracking API", field="scopes"
            )
        granted = normalise_scopes(scopes) if kind == "admin" and scopes is not None else None
        plain = _PREFIX[kind] + secrets.token_urlsafe(24 if kind == "write" else 32)
        key_id = "key_" + secrets.token_hex(6)
        now = dt.datetime.now(dt.UTC)
        stored = plain if kind == "write" else digest(plain)
        key = ApiKey(key_id, kind, name.strip(), now, None, stored, granted or (FULL_ACCESS if kind == "admin" else None))
        self._save(key, now)
        return key, plain

    def revoke(self, key_id: str) -> ApiKey:
        for key in self.all():
            if key.key_id == key_id:
                now = dt.datetime.now(dt.UTC)
                revoked = replace(key, revoked_at=key.revoked_at or now)
                self._save(revoked, now)
                return revoked
        raise TerminalError(f"no key with id {key_id!r}; `opencdp keys list` shows the ids", field="key_id", code="not_found")

    def _save(self, key: ApiKey, now: dt.datetime) -> None:
        row = {
            "key_id": key.key_id,
            "kind": key.kind,
            "name": key.name,
            "secret": key.secret,
            "created_at": key.created_at,
            "revoked_at": key.revoked_at,
            "scopes": ",".join(key.scopes) if key.scopes is not None else None,
            "updated_at": now,
        }
        self.backend.upsert(API_KEYS, pa.Table.from_pylist([row], schema=API_KEYS.arrow_schema))
        self._loaded_at = 0.0  # refresh on next lookup

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.refresh_s:
            return
        with self._lock:
            keys = [k for k in self.all() if k.active]
            self._write = {k.secret: k.name for k in keys if k.kind == "write"}
            self._admin = {k.secret: k for k in keys if k.kind == "admin"}
            self._loaded_at = time.monotonic()

    def source_of(self, write_key: str) -> str | None:
        """The source name of an active write key, else None."""
        self._refresh()
        return self._write.get(write_key)

    def admin_key(self, key: str) -> ApiKey | None:
        """The active admin key whose plain secret is ``key``, else None."""
        self._refresh()
        return self._admin.get(digest(key))

    def is_admin(self, key: str) -> bool:
        return self.admin_key(key) is not None
