"""The contract between campaigns and the providers that carry messages.

A campaign renders one :class:`Message` per (campaign, step, profile) and hands it to a
:class:`Channel`; the channel answers with a :class:`SendResult` whose ``status`` tells the caller
what to do next, without it knowing anything about SMTP codes or HTTP APIs:

- ``sent``: the provider accepted the message (the usual answer; delivery is reported later
  through a receipt, see :mod:`opencdp.campaigns.channels.receipts`);
- ``delivered``: the protocol says synchronously that it reached the recipient (the inbox, a
  webhook that answered 2xx);
- ``transient``: try again later, after ``retry_after_s`` when the provider said (timeouts,
  connection errors, HTTP 5xx and 429, SMTP 4xx);
- ``permanent``: retrying will fail the same way (invalid address, recipient refused, unknown
  chat); the caller suppresses the address.

``Message.message_id`` is deterministic (one per campaign, step and profile), so a resend after a
crash carries the same id: adapters pass it as the provider's idempotency key or as the email
``Message-ID`` wherever the protocol lets the provider recognise a duplicate.

Adapters are built from plain config dicts with :func:`build_channel`; a missing or invalid
setting raises :class:`ChannelConfigError` naming the field at construction, never at the
first send.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from opencdp.errors import ConfigError

Status = Literal["sent", "delivered", "transient", "permanent"]
NOT_SENT = "not sent: "
"""Prefix of a permanent error that is not the address's fault (a template error, a server that cannot
carry this address): the sender never suppresses the address for it."""
STATUSES: tuple[str, ...] = ("sent", "delivered", "transient", "permanent")


class ChannelConfigError(ConfigError):
    """A channel's configuration is missing a setting or has an invalid one (``field`` names it)."""

    code = "channel_config_error"


@dataclass(frozen=True)
class Message:
    """One rendered message for one recipient.

    ``to`` is the channel's address: an email address, an E.164 phone number, a Telegram chat
    id, a Viber user id, a push registration token, a Web Push subscription (JSON text with
    ``endpoint`` and ``keys``), a webhook URL, or the profile id for the inbox.
    """

    message_id: str
    channel: str
    to: str
    text: str = ""
    subject: str | None = None
    html: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    list_unsubscribe: str | None = None
    list_unsubscribe_post: bool = False
    profile_id: str | None = None
    campaign_id: str | None = None
    transactional: bool = False


@dataclass(frozen=True)
class SendResult:
    """What the provider said about one message; ``error`` is the provider's own words."""

    status: Status
    provider_message_id: str | None = None
    error: str = ""
    retry_after_s: float | None = None
    channel: str | None = None
    """Which channel carried it, set by a Cascade (None: the channel that was called)."""

    @property
    def ok(self) -> bool:
        """Accepted or delivered: nothing more to do for this message now."""
        return self.status in ("sent", "delivered")

    @classmethod
    def sent(cls, provider_message_id: str | None = None) -> SendResult:
        return cls("sent", provider_message_id)

    @classmethod
    def delivered(cls, provider_message_id: str | None = None) -> SendResult:
        return cls("delivered", provider_message_id)

    @classmethod
    def transient(cls, error: str, retry_after_s: float | None = None) -> SendResult:
        return cls("transient", None, error, retry_after_s)

    @classmethod
    def permanent(cls, error: str) -> SendResult:
        return cls("permanent", None, error)


class Channel(ABC):
    """A way to reach a person. ``send`` is synchronous and safe to call from many threads."""

    name: ClassVar[str]

    @abstractmethod
    def send(self, message: Message) -> SendResult:
        """Hand one message to the provider; never raises for a provider's answer."""

    def send_many(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send a batch, one result per message in order; adapters that can batch override it."""
        return [self.send(m) for m in messages]

    def close(self) -> None:
        """Release connections; the default has none."""
        return None

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# kind -> "module:Class"; each class has ``from_config(config) -> Channel``. Imported lazily so
# that a deployment without, say, push credentials never imports the push code.
ADAPTERS: dict[str, str] = {
    "email": "opencdp.campaigns.channels.smtp:SmtpChannel",
    "sms": "opencdp.campaigns.channels.sms:SmsChannel",
    "viber": "opencdp.campaigns.channels.viber:ViberChannel",
    "telegram": "opencdp.campaigns.channels.telegram:TelegramChannel",
    "push": "opencdp.campaigns.channels.push:FcmChannel",
    "webpush": "opencdp.campaigns.channels.webpush:WebPushChannel",
    "webhook": "opencdp.campaigns.channels.webhook:WebhookChannel",
    "inbox": "opencdp.campaigns.channels.inbox:InboxChannel",
    "cascade": "opencdp.campaigns.channels.cascade:Cascade",
}


def build_channel(kind: str, config: Mapping[str, Any]) -> Channel:
    """Build the adapter for ``kind`` from its settings; raises ChannelConfigError naming the field.

    The inbox needs the store: pass it as ``config["backend"]``. A cascade takes
    ``{"steps": [{"kind": ..., "config": {...}, "wait_s": ...}, ...]}``.
    """
    target = ADAPTERS.get(kind)
    if target is None:
        raise ChannelConfigError(
            f"unknown channel kind {kind!r}; use one of {', '.join(sorted(ADAPTERS))}", field="kind"
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    channel: Channel = cls.from_config(dict(config))
    return channel


def require(config: Mapping[str, Any], key: str, kind: str, what: str) -> Any:
    """A setting that must be there, or a ChannelConfigError that says which and what it is."""
    value = config.get(key)
    if value is None or value == "":
        raise ChannelConfigError(f"{kind} channel needs {key!r}: {what}", field=key)
    return value
