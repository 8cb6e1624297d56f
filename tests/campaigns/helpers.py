"""Seed data and a fake channel for campaign tests."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from opencdp.campaigns import store, templates
from opencdp.campaigns.channels.base import Channel, Message, SendResult
from opencdp.campaigns.registry import Channels
from opencdp.campaigns.sender import Sender, SenderOptions
from opencdp.campaigns.tracking import Signer
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # 15:00 in Moscow: outside quiet hours


def event(profile_id: str, *, type: str = "track", name: str = "", traits: Mapping[str, Any] | None = None,
          properties: Mapping[str, Any] | None = None, at: dt.datetime | None = None, **columns: Any) -> dict[str, Any]:
    at = at or NOW - dt.timedelta(days=1)
    return {
        "message_id": columns.pop("message_id", uuid.uuid4().hex), "type": type, "event": name, "timestamp": at,
        "received_at": at, "source": "test", "channel": "web", "lsn": 0, "profile_id": profile_id,
        "traits": json.dumps(traits) if traits is not None else None,
        "properties": json.dumps(properties) if properties is not None else None, **columns,
    }


def load(backend: Backend, rows: list[dict[str, Any]]) -> None:
    """Store events as the pipeline would have resolved them (each profile its own canonical id)."""
    table = pa.Table.from_pylist(rows, schema=EVENTS.arrow_schema)
    backend.load(LoadBatch(table, ORDER_LINES.empty()))
    ids = sorted({r["profile_id"] for r in rows})
    mapping = [{"profile_id": i, "canonical_id": i, "updated_at": NOW - dt.timedelta(days=30)} for i in ids]
    backend.upsert(PROFILE_MAP, pa.Table.from_pylist(mapping, schema=PROFILE_MAP.arrow_schema))


def person(profile_id: str, *, email: str | None = None, consent: bool | None = True, **traits: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"email": email or f"{profile_id}@shop.test", **traits}
    if consent is not None:
        values["email_consent"] = consent
    return event(profile_id, type="identify", traits=values)


class FakeChannel(Channel):
    """Records every hand-off; dedupes by message id like a provider with idempotency keys."""

    name = "fake"

    def __init__(self, answers: list[SendResult] | None = None, crash_after: int | None = None) -> None:
        self.calls: list[Message] = []
        self.accepted: dict[str, Message] = {}
        self.answers = list(answers or [])
        self.crash_after = crash_after
        self.lock = threading.Lock()

    def send(self, message: Message) -> SendResult:
        with self.lock:
            if self.crash_after is not None and len(self.calls) >= self.crash_after:
                raise Crash("the process died")
            self.calls.append(message)
            answer = self.answers.pop(0) if self.answers else SendResult.sent(f"p-{message.message_id}")
            if answer.ok:
                self.accepted.setdefault(message.message_id, message)
            return answer


class Crash(BaseException):
    """Stands for the process dying mid-send (not an Exception: nothing catches it)."""


def channels(fake: Channel, kind: str = "email") -> Channels:
    return Channels({"email": {"kind": kind}}, factory=lambda k, c: fake)


def sender(backend: Backend, fake: Channel, tmp_secret: bytes = b"k" * 32, **options: Any) -> Sender:
    opts = SenderOptions(**{"threads": 2, "batch": 50, **options})
    return Sender(backend, channels(fake), Signer(tmp_secret), opts, clock=lambda: NOW)


def save_template(backend: Backend, template_id: str = "t1", **parts: Any) -> None:
    data = {"channel": "email", "subject": "Hi {{ profile.first_name | default('friend') }}",
            "html": '<html><body><p>Hello {{ profile.first_name | default("friend") }}</p>'
                    '<a href="https://shop.test/sale">Sale</a></body></html>', **parts}
    template = templates.Template.from_dict(data, template_id)
    store.save(backend, store.TEMPLATE, template_id, template_id, template.to_dict(), status=store.ACTIVE)
