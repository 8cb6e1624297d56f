"""Helpers shared by the channel tests: recorded requests, canned replies, a message factory."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from opencdp.campaigns.channels import Message


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query))


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[Request], Reply]


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


@dataclass
class FakeProvider:
    """Records every request; ``responder`` decides the answer (default: 200 {})."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    responder: Responder = field(default=lambda request: json_reply(200, {}))

    @property
    def last(self) -> Request:
        return self.requests[-1]


def message(channel: str, to: str, **fields: Any) -> Message:
    values: dict[str, Any] = {"message_id": "c1-s1-p1", "channel": channel, "to": to, "text": "Hello",
                              "profile_id": "p1", "campaign_id": "c1"}
    values.update(fields)
    return Message(**values)
