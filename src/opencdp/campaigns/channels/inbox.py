"""The in-app inbox: messages stored per profile in the ``inbox`` table, read by the app.

Sending writes a row keyed by (profile, message id), so a resend after a crash is the same row
and never a duplicate; a message already in the inbox is left as it is (its read state too). The
app reads with :func:`inbox_for` (newest first, unread ones counted by :func:`unread_count`) and
reports opening and removing with :func:`mark_read` and :func:`remove`. ``Message.to`` is the
canonical profile id (``Message.profile_id`` when ``to`` is empty); ``data["expires_at"]``
(unix seconds) hides a message after that time, e.g. an offer that ends.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.campaigns.channels.base import Channel, ChannelConfigError, Message, SendResult
from opencdp.storage.base import Backend
from opencdp.storage.schema import INBOX


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ids(profile: str | Sequence[str]) -> list[str]:
    return [profile] if isinstance(profile, str) else list(profile)


def _profile_rows(backend: Backend, profile: str | Sequence[str], message_ids: Iterable[str] | None = None,
                  ) -> list[dict[str, Any]]:
    where: exp.Condition = exp.column("profile_id").isin(*(exp.Literal.string(p) for p in _ids(profile)))
    if message_ids is not None:
        ids = list(message_ids)
        if not ids:
            return []
        where = exp.and_(where, exp.column("message_id").isin(*(exp.Literal.string(i) for i in ids)))
    return backend.select(exp.select("*").from_(backend.table_ref(INBOX)).where(where)).to_pylist()


def _existing(backend: Backend, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    query = (exp.select("profile_id", "message_id").from_(backend.table_ref(INBOX))
             .where(exp.column("message_id").isin(*(exp.Literal.string(m) for _, m in keys))))
    return {(r["profile_id"], r["message_id"]) for r in backend.select(query).to_pylist()}


class InboxChannel(Channel):
    name = "inbox"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()  # one writer at a time: embedded stores are not safe for concurrent writes

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> InboxChannel:
        backend = config.get("backend")
        if not isinstance(backend, Backend):
            raise ChannelConfigError("inbox channel needs the store: config['backend'] = an open Backend",
                                     field="backend")
        return cls(backend)

    def send(self, message: Message) -> SendResult:
        return self.send_many([message])[0]

    def send_many(self, messages: Sequence[Message]) -> list[SendResult]:
        """One write for the whole batch; messages already in an inbox are not written again."""
        results: list[SendResult] = []
        keys: list[tuple[str, str]] = []
        for m in messages:
            profile = m.to or m.profile_id
            if not profile:
                results.append(SendResult.permanent("inbox message has no profile id (to or profile_id)"))
            else:
                results.append(SendResult.delivered(m.message_id))
                keys.append((profile, m.message_id))
        now = _now()
        with self._lock:
            existing = _existing(self.backend, keys)
            rows = []
            for m in messages:
                profile = m.to or m.profile_id
                if not profile or (profile, m.message_id) in existing:
                    continue
                expires = m.data.get("expires_at")
                rows.append({
                    "profile_id": profile, "message_id": m.message_id, "campaign_id": m.campaign_id,
                    "subject": m.subject, "text": m.text, "html": m.html,
                    "data": json.dumps({k: v for k, v in m.data.items() if k != "expires_at"}, default=str),
                    "created_at": now,
                    "expires_at": dt.datetime.fromtimestamp(float(expires), dt.UTC) if expires is not None else None,
                    "read_at": None, "deleted": False, "updated_at": now,
                })
                existing.add((profile, m.message_id))
            if rows:
                self.backend.upsert(INBOX, pa.Table.from_pylist(rows, schema=INBOX.arrow_schema))
        return results


def inbox_for(backend: Backend, profile_id: str | Sequence[str], *, unread_only: bool = False, limit: int = 50,
              now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The profile's inbox, newest first: not removed, not expired; ``data`` decoded.

    ``profile_id`` may be all the ids of a merged profile (``identity.profiles.resolve``): messages
    sent before a merge were stored under the id the profile had then.
    """
    at = now or _now()
    out = []
    for row in _profile_rows(backend, profile_id):
        if row["deleted"] or (row["expires_at"] is not None and row["expires_at"] <= at):
            continue
        if unread_only and row["read_at"] is not None:
            continue
        row["data"] = json.loads(row["data"]) if row["data"] else {}
        row["read"] = row["read_at"] is not None
        del row["deleted"], row["updated_at"]
        out.append(row)
    out.sort(key=lambda r: (r["created_at"], r["message_id"]), reverse=True)
    return out[:limit]


def unread_count(backend: Backend, profile_id: str | Sequence[str], now: dt.datetime | None = None) -> int:
    return len(inbox_for(backend, profile_id, unread_only=True, limit=1_000_000, now=now))


def _rewrite(backend: Backend, rows: list[dict[str, Any]], at: dt.datetime, **change: Any) -> int:
    """Upsert changed copies of ``rows``; the newer version must win even within the same millisecond."""
    changed = [{**row, **change, "updated_at": max(at, row["updated_at"] + dt.timedelta(milliseconds=1))}
               for row in rows]
    if changed:
        backend.upsert(INBOX, pa.Table.from_pylist(changed, schema=INBOX.arrow_schema))
    return len(changed)


def mark_read(backend: Backend, profile_id: str | Sequence[str], message_ids: Iterable[str], now: dt.datetime | None = None) -> int:
    """Mark messages read (the first reading time is kept); returns how many changed."""
    at = now or _now()
    rows = [r for r in _profile_rows(backend, profile_id, message_ids) if not r["deleted"] and r["read_at"] is None]
    return _rewrite(backend, rows, at, read_at=at)


def remove(backend: Backend, profile_id: str | Sequence[str], message_ids: Iterable[str], now: dt.datetime | None = None) -> int:
    """Remove messages from the profile's inbox; returns how many were removed."""
    rows = [r for r in _profile_rows(backend, profile_id, message_ids) if not r["deleted"]]
    return _rewrite(backend, rows, now or _now(), deleted=True)
