"""Delivery receipts and bounces, normalised: what each provider's callback says, as one shape.

Providers report delivery later and each in its own format: Twilio posts a form to the
``StatusCallback`` URL, Viber posts JSON events to the bot's webhook, mail servers send a
delivery status notification (RFC 3464) or a complaint (RFC 5965 ARF) back to the Return-Path.
``parse_*`` turn each into :class:`Receipt` rows (provider message id, normalised status); the
campaign code writes the events and suppresses ``permanent`` failures, and the webhook endpoint
puts them in a :class:`ReceiptRegistry`, which a :class:`~.cascade.Cascade` waits on.

Normalised statuses: ``sent`` (accepted downstream), ``delivered``, ``read``, ``deferred``
(temporarily failed, the provider retries), ``failed`` (``permanent`` says whether the address is
dead), ``complained`` (marked as spam: always permanent for marketing).
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import Any

RECEIPT_STATUSES = ("sent", "delivered", "read", "deferred", "failed", "complained")
FINAL = frozenset({"delivered", "read", "failed", "complained"})


@dataclass(frozen=True)
class Receipt:
    provider_message_id: str
    status: str
    permanent: bool = False
    error: str = ""
    recipient: str | None = None
    at: float | None = None  # unix seconds the provider gave, when it gave one


# -- Twilio -----------------------------------------------------------------------------------------
_TWILIO = {"accepted": "sent", "scheduled": "sent", "queued": "sent", "sending": "sent", "sent": "sent",
           "delivered": "delivered", "read": "read", "undelivered": "failed", "failed": "failed",
           "canceled": "failed", "receiving": "sent", "received": "delivered"}
# Delivery error codes that say the number itself cannot get SMS: unknown or landline number,
# unreachable carrier for the number, or the recipient opted out (replied STOP).
TWILIO_DEAD_NUMBER = frozenset({"30005", "30006", "21610", "21614", "21211"})


def parse_twilio(form: Mapping[str, str]) -> list[Receipt]:
    """A Twilio status callback (form fields MessageSid, MessageStatus, ErrorCode, To)."""
    sid, raw_status = form.get("MessageSid"), form.get("MessageStatus", "")
    if not sid or raw_status not in _TWILIO:
        return []
    status = _TWILIO[raw_status]
    code = form.get("ErrorCode") or ""
    return [Receipt(sid, status, status == "failed" and code in TWILIO_DEAD_NUMBER,
                    f"twilio error {code}" if code else "", form.get("To"))]


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by the sorted POST fields' names and values."""
    text = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def verify_twilio(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(twilio_signature(auth_token, url, params), signature or "")


# -- Viber ------------------------------------------------------------------------------------------
_VIBER = {"delivered": "delivered", "seen": "read", "failed": "failed"}


def parse_viber(event: Mapping[str, Any]) -> list[Receipt]:
    """A Viber callback ``{"event": "delivered"|"seen"|"failed", "message_token", "user_id", "timestamp"}``.

    ``unsubscribed`` carries no message token but means the user left the bot: reported as a
    permanent failure of the address with an empty message id, so the caller can suppress it.
    """
    kind = event.get("event")
    at = float(event["timestamp"]) / 1000 if isinstance(event.get("timestamp"), int | float) else None
    if kind == "unsubscribed":
        return [Receipt("", "failed", True, "user unsubscribed from the bot", event.get("user_id"), at)]
    if kind not in _VIBER or event.get("message_token") is None:
        return []
    return [Receipt(str(event["message_token"]), _VIBER[kind], False, str(event.get("desc", "")),
                    event.get("user_id"), at)]


def verify_viber(auth_token: str, body: bytes, signature: str | None) -> bool:
    """X-Viber-Content-Signature: hex HMAC-SHA256 of the raw body keyed with the bot's token."""
    expected = hmac.new(auth_token.encode(), body, hashlib.sha256).hexdigest()
    return bool(signature) and hmac.compare_digest(expected, signature or "")


# -- email bounces and complaints -------------------------------------------------------------------
def parse_dsn(raw: bytes) -> list[Receipt]:
    """A bounce (RFC 3464 ``multipart/report; report-type=delivery-status``) or an ARF complaint.

    The provider message id is the ``Message-ID`` of the returned original (our adapter sets it
    to ``<message_id@domain>``, the id its send result carried). Status 5.x.x is a permanent
    failure, 4.x.x a deferral; ``Action: delivered`` / ``relayed`` are positive receipts.
    """
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    if mail.get_content_type() != "multipart/report":
        return []
    report_type = mail.get_param("report-type")
    original = _original_message_id(mail)
    if original is None:
        return []
    if report_type == "feedback-report":
        return [Receipt(original, "complained", True, "recipient marked the message as spam")]
    if report_type != "delivery-status":
        return []
    receipts = []
    for recipient in _recipient_fields(mail):
        action = recipient.get("action", "").lower()
        code = recipient.get("status", "")
        rcpt = recipient.get("final-recipient", "").partition(";")[2].strip() or None
        diagnostic = recipient.get("diagnostic-code", "")
        if action in ("delivered", "relayed", "expanded"):
            receipts.append(Receipt(original, "delivered", False, "", rcpt))
        elif action == "delayed" or code.startswith("4"):
            receipts.append(Receipt(original, "deferred", False, f"{code} {diagnostic}".strip(), rcpt))
        elif action == "failed" or code.startswith("5"):
            receipts.append(Receipt(original, "failed", True, f"{code} {diagnostic}".strip(), rcpt))
    return receipts


def _original_message_id(report: Message) -> str | None:
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) else payload
            if isinstance(inner, Message) and inner.get("Message-ID"):
                return str(inner["Message-ID"]).strip()
        elif ctype == "text/rfc822-headers":
            headers = email.message_from_bytes(_bytes(part), policy=email.policy.default)
            if headers.get("Message-ID"):
                return str(headers["Message-ID"]).strip()
    return None


def _recipient_fields(report: Message) -> Iterable[dict[str, str]]:
    """The per-recipient field groups of the message/delivery-status part (the first group is per-message)."""
    for part in report.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            # The email package parses each field group as a headers-only message.
            groups = [{k.lower(): str(v) for k, v in g.items()} for g in payload if isinstance(g, Message)]
        else:
            text = _bytes(part).decode(errors="replace").replace("\r\n", "\n")
            groups = [_fields(block) for block in text.split("\n\n") if block.strip()]
        yield from (g for g in groups if "final-recipient" in g or "original-recipient" in g)


def _fields(block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _bytes(part: Message) -> bytes:
    if isinstance(part, EmailMessage):
        content = part.get_content()
        return content.encode() if isinstance(content, str) else bytes(content)
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# -- the registry a cascade waits on -----------------------------------------------------------------
class ReceiptRegistry:
    """The latest receipt per provider message id, in memory, with waiting (thread-safe).

    The receipt webhook endpoint calls :meth:`record`; a cascade calls :meth:`wait`. It keeps the
    newest ``max_entries`` ids (a cascade only waits minutes); receipts are also written as events
    by the campaign code, which is the durable record.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._receipts: OrderedDict[str, Receipt] = OrderedDict()
        self._cond = threading.Condition()
        self.max_entries = max_entries

    def record(self, receipt: Receipt) -> None:
        with self._cond:
            previous = self._receipts.get(receipt.provider_message_id)
            # A late "sent" must not hide a "delivered" that overtook it.
            if previous is not None and previous.status in FINAL and receipt.status not in FINAL:
                return
            self._receipts[receipt.provider_message_id] = receipt
            self._receipts.move_to_end(receipt.provider_message_id)
            while len(self._receipts) > self.max_entries:
                self._receipts.popitem(last=False)
            self._cond.notify_all()

    def get(self, provider_message_id: str) -> Receipt | None:
        with self._cond:
            return self._receipts.get(provider_message_id)

    def wait(self, provider_message_id: str, timeout_s: float) -> Receipt | None:
        """The final receipt (delivered, read, failed, complained) once it arrives, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                receipt = self._receipts.get(provider_message_id)
                if receipt is not None and receipt.status in FINAL:
                    return receipt
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


RECEIPTS = ReceiptRegistry()
"""The process's registry: the receipt endpoints (web/receipts.py) fill it, cascades wait on it."""
