"""Webhooks: a signed JSON POST to the receiver's URL, Stripe-style.

The body is ``{"id", "campaign_id", "profile_id", "channel", "subject", "text", "html", "data"}``.
Headers: ``OpenCDP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`` and
``Idempotency-Key: <message id>`` so a receiver can drop a resend. The timestamp is in the signed
text, which makes a captured request useless after the tolerance window (replay protection);
:func:`verify_signature` is what a receiver runs. ``Message.to`` is the URL; when it is empty the
channel's configured ``url`` is used. A 2xx answer means the receiver has it: ``delivered``.

Targets inside the installation's networks are refused (``urlguard``: loopback, private,
link-local, metadata), at configuration for ``url`` and at every send, where the name is
resolved, checked and the request pinned to the checked address; ``allowed_networks`` (CIDRs,
from ``Settings.campaign_webhook_allowed_networks``) lets chosen internal receivers through.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from opencdp.campaigns.channels import _http, urlguard
from opencdp.campaigns.channels.base import (
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    require,
)

SIGNATURE_HEADER = "OpenCDP-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old or does not match."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for ``body`` at ``timestamp`` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str | None, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> int:
    """Check a webhook signature; returns its timestamp or raises SignatureError saying why.

    Several ``v1`` values may be present (while a secret is being rotated); one match is enough.
    Comparison is constant-time.
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as e:
                raise SignatureError(f"timestamp {value!r} is not an integer") from e
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("signature header needs t=<timestamp> and v1=<signature>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is outside the {tolerance_s} s tolerance")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match the body")
    return timestamp


class WebhookChannel(Channel):
    name = "webhook"

    def __init__(self, secret: str, *, url: str | None = None, headers: Mapping[str, str] | None = None,
                 config: Mapping[str, Any] | None = None, allowed_networks: tuple[urlguard.Network, ...] = ()) -> None:
        self.secret = secret
        self.url = url
        self.allowed = allowed_networks
        self.headers = dict(headers or {})
        self.client = _http.make_client(config or {}, self.name)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WebhookChannel:
        secret = str(require(config, "secret", "webhook", "the shared secret the receiver verifies signatures with"))
        if len(secret) < 16:
            raise ChannelConfigError("webhook channel: secret must be at least 16 characters", field="secret")
        try:
            allowed = urlguard.networks(config.get("allowed_networks") or ())
        except urlguard.UnsafeUrl as error:
            raise ChannelConfigError(f"webhook channel: allowed_networks: {error}", field="allowed_networks") from None
        url = config.get("url")
        if url:
            try:
                urlguard.check(str(url), allowed)
            except urlguard.UnsafeUrl as error:
                raise ChannelConfigError(f"webhook channel: url {error}", field="url") from None
        return cls(secret, url=url, headers=config.get("headers"), config=config, allowed_networks=allowed)

    @staticmethod
    def body(message: Message) -> bytes:
        return json.dumps({
            "id": message.message_id, "campaign_id": message.campaign_id, "profile_id": message.profile_id,
            "channel": message.channel, "subject": message.subject, "text": message.text, "html": message.html,
            "data": dict(message.data),
        }, separators=(",", ":"), default=str).encode()

    def send(self, message: Message) -> SendResult:
        # ``to`` is the URL when the message names one; a campaign's webhook channel sends to its ``url``
        url = message.to if message.to.startswith(("http://", "https://")) or not self.url else self.url
        if not url or not url.startswith(("http://", "https://")):
            return SendResult.permanent(f"webhook address {url!r} is not an http(s) URL")
        try:
            target = urlguard.pin(url, self.allowed)
        except urlguard.UnsafeUrl as error:
            return SendResult.permanent(f"refused: {error}")
        except OSError as error:
            return SendResult.transient(f"cannot resolve {url}: {error}")
        body = self.body(message)
        headers = {**self.headers, **message.headers, "Content-Type": "application/json",
                   "Idempotency-Key": message.message_id, SIGNATURE_HEADER: sign(self.secret, body),
                   "Host": target.host_header}
        extensions = {"sni_hostname": target.sni} if url.startswith("https://") else {}
        response = _http.post(self.client, target.url, content=body, headers=headers, extensions=extensions)
        if isinstance(response, SendResult):
            return response
        if response.is_success:
            return SendResult.delivered(response.headers.get("x-request-id") or message.message_id)
        return _http.classify(response)

    def close(self) -> None:
        self.client.close()
