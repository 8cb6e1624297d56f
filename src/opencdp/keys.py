"""API keys: write keys identify a source (public, as in Segment), admin keys are secrets.

Admin keys are stored as their SHA-256 only; the plain key is shown once, when
created. Lookups hit an in-memory cache that is refreshed from the store every
few seconds, so a revocation made by another process takes effect quickly and
the hot path never queries the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from opencdp.errors import TerminalError
from opencdp.storage.base import Backend
from opencdp.storage.schema import API_KEYS

KeyKind = Literal["write", "admin"]
_PREFIX = {"write": "wk_", "admin": "ak_"}


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    kind: str
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    secret: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyRing:
    def __init__(self, backend: Backend, *, refresh_s: float = 5.0) -> None:
        self.backend = backend
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._write: dict[str, str] = {}
        self._admin: set[str] = set()

    def all(self) -> list[ApiKey]:
        rows = self.backend.current(API_KEYS).to_pylist()
        keys = [ApiKey(r["key_id"], r["kind"], r["name"], r["created_at"], r["revoked_at"], r["secret"]) for r in rows]
        return sorted(keys, key=lambda k: k.created_at)

    def create(self, kind: KeyKind, name: str) -> tuple[ApiKey, str]:
        """Create a key; return it with the plain secret (shown only now for admin keys)."""
        if kind not in _PREFIX:
            raise TerminalError(f"key kind must be 'write' or 'admin', got {kind!r}", field="kind")
        if not name.strip():
            raise TerminalError("a key needs a name (for write keys: the source, e.g. 'website')", field="name")
        plain = _PREFIX[kind] + secrets.token_urlsafe(24 if kind == "write" else 32)
        key_id = "key_" + secrets.token_hex(6)
        now = dt.datetime.now(dt.UTC)
        stored = plain if kind == "write" else digest(plain)
        key = ApiKey(key_id, kind, name.strip(), now, None, stored)
        self._save(key, now)
        return key, plain

    def revoke(self, key_id: str) -> ApiKey:
        for key in self.all():
            if key.key_id == key_id:
                now = dt.datetime.now(dt.UTC)
                revoked = ApiKey(key.key_id, key.kind, key.name, key.created_at, key.revoked_at or now, key.secret)
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
            self._admin = {k.secret for k in keys if k.kind == "admin"}
            self._loaded_at = time.monotonic()

    def source_of(self, write_key: str) -> str | None:
        """The source name of an active write key, else None."""
        self._refresh()
        return self._write.get(write_key)

    def is_admin(self, key: str) -> bool:
        self._refresh()
        return digest(key) in self._admin
