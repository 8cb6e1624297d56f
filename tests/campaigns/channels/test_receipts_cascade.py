"""Delivery callbacks normalised per provider, bounce and complaint parsing, and the Viber -> SMS
cascade that waits for a delivery receipt."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

import pytest

from opencdp.campaigns.channels import ChannelConfigError, Message, build_channel
from opencdp.campaigns.channels.cascade import Cascade
from opencdp.campaigns.channels.receipts import (
    RECEIPTS,
    Receipt,
    ReceiptRegistry,
    parse_dsn,
    parse_twilio,
    parse_viber,
    twilio_signature,
    verify_twilio,
    verify_viber,
)

from .support import FakeProvider, Reply, Request, json_reply, message

# -- parsing ------------------------------------------------------------------------------------


def test_twilio_status_callbacks() -> None:
    assert parse_twilio({"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+447700900123"}) == [
        Receipt("SM1", "delivered", False, "", "+447700900123")]
    dead = parse_twilio({"MessageSid": "SM2", "MessageStatus": "undelivered", "ErrorCode": "30006"})[0]
    assert dead.status == "failed" and dead.permanent and "30006" in dead.error
    busy = parse_twilio({"MessageSid": "SM3", "MessageStatus": "undelivered", "ErrorCode": "30003"})[0]
    assert busy.status == "failed" and not busy.permanent  # unreachable handset: may work later
    assert parse_twilio({"MessageSid": "SM4", "MessageStatus": "sent"})[0].status == "sent"
    assert parse_twilio({"MessageStatus": "delivered"}) == []


def test_twilio_signature_as_documented() -> None:
    # The example from Twilio's "Validating requests" documentation.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030",
              "To": "+18005551212"}
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert verify_twilio("12345", url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not verify_twilio("12345", url, {**params, "Digits": "9"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_viber_callbacks_and_signature() -> None:
    delivered = {"event": "delivered", "timestamp": 1457764197627, "chat_hostname": "SN-CHAT-02",
                 "message_token": 4912661846655238145, "user_id": "01234567890A="}
    assert parse_viber(delivered) == [Receipt("4912661846655238145", "delivered", False, "", "01234567890A=",
                                              1457764197.627)]
    assert parse_viber({**delivered, "event": "seen"})[0].status == "read"
    failed = parse_viber({**delivered, "event": "failed", "desc": "failure description"})[0]
    assert failed.status == "failed" and failed.error == "failure description"
    gone = parse_viber({"event": "unsubscribed", "timestamp": 1457764197627, "user_id": "01234567890A="})[0]
    assert gone.permanent and gone.recipient == "01234567890A="
    assert parse_viber({"event": "conversation_started", "user": {}}) == []
    body = b'{"event":"delivered"}'
    signature = hmac.new(b"token", body, hashlib.sha256).hexdigest()
    assert verify_viber("token", body, signature) and not verify_viber("token", body + b" ", signature)
    assert not verify_viber("token", body, None)


BOUNCE = b"""\
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r
To: bounces@shop.example\r
Subject: Undelivered Mail Returned to Sender\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\r
\r
--B1\r
Content-Type: text/plain\r
\r
I'm sorry to have to inform you that your message could not be delivered.\r
--B1\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.org\r
Arrival-Date: Wed, 2 Dec 2026 10:00:00 +0000\r
\r
Final-Recipient: rfc822; gone@example.org\r
Original-Recipient: rfc822;gone@example.org\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected\r
\r
--B1\r
Content-Type: text/rfc822-headers\r
\r
From: news@shop.example\r
To: gone@example.org\r
Subject: Sofas\r
Message-ID: <c1-s1-p1@shop.example>\r
\r
--B1--\r
"""


def test_dsn_bounce() -> None:
    [receipt] = parse_dsn(BOUNCE)
    assert receipt.provider_message_id == "<c1-s1-p1@shop.example>"
    assert receipt.status == "failed" and receipt.permanent and receipt.recipient == "gone@example.org"
    assert "5.1.1" in receipt.error
    delayed = BOUNCE.replace(b"Action: failed", b"Action: delayed").replace(b"Status: 5.1.1", b"Status: 4.4.1")
    assert parse_dsn(delayed)[0].status == "deferred" and not parse_dsn(delayed)[0].permanent
    # With the whole original attached (message/rfc822) instead of its headers.
    attached = BOUNCE.replace(b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822").replace(
        b"Message-ID: <c1-s1-p1@shop.example>\r\n\r\n", b"Message-ID: <c1-s1-p1@shop.example>\r\n\r\nHello\r\n")
    assert parse_dsn(attached)[0].provider_message_id == "<c1-s1-p1@shop.example>"
    assert parse_dsn(b"Subject: hi\r\n\r\nnot a report") == []


def test_arf_complaint() -> None:
    complaint = BOUNCE.replace(b"report-type=delivery-status", b"report-type=feedback-report").replace(
        b"message/delivery-status", b"message/feedback-report")
    [receipt] = parse_dsn(complaint)
    assert receipt.status == "complained" and receipt.permanent


def test_registry_waits_and_keeps_the_final_status() -> None:
    registry = ReceiptRegistry(max_entries=3)
    threading.Timer(0.05, registry.record, [Receipt("m1", "delivered")]).start()
    started = time.monotonic()
    assert registry.wait("m1", 2.0) == Receipt("m1", "delivered")
    assert time.monotonic() - started < 1.0
    registry.record(Receipt("m1", "sent"))  # a late, out-of-order "sent"
    assert registry.get("m1") == Receipt("m1", "delivered")
    assert registry.wait("m2", 0.05) is None
    for i in range(5):
        registry.record(Receipt(f"x{i}", "sent"))
    assert registry.get("m1") is None  # bounded


# -- cascade ------------------------------------------------------------------------------------

VIBER = {"token": "viber-token", "sender_name": "Shop"}
TWILIO = {"account_sid": "AC1", "auth_token": "t", "from": "+15005550006"}


class Providers:
    """Viber and Twilio behind one local server; ``viber`` is the Viber answer to give."""

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.viber: Reply = json_reply(200, {"status": 0, "status_message": "ok", "message_token": 111})
        provider.responder = self.respond

    def respond(self, request: Request) -> Reply:
        if request.path == "/pa/send_message":
            return self.viber
        return json_reply(201, {"sid": "SM222", "status": "queued"})

    def paths(self) -> list[str]:
        return ["viber" if r.path == "/pa/send_message" else "sms" for r in self.provider.requests]


def cascade(provider: FakeProvider, registry: ReceiptRegistry, wait_s: float) -> Cascade:
    channel = build_channel("cascade", {"receipts": registry, "steps": [
        {"kind": "viber", "config": {**VIBER, "base_url": provider.url}, "wait_s": wait_s},
        {"kind": "sms", "config": {**TWILIO, "base_url": provider.url}}]})
    assert isinstance(channel, Cascade)
    return channel


def cascade_message() -> Message:
    return message("cascade", "", text="Your sofa ships today",
                   data={"addresses": {"viber": "viber-user-1", "sms": "+447700900123"},
                         "texts": {"sms": "Sofa ships today"}})


def test_cascade_stops_when_the_receipt_arrives_in_time(provider: FakeProvider) -> None:
    fake, registry = Providers(provider), ReceiptRegistry()
    channel = cascade(provider, registry, 3.0)
    # The Viber webhook gets the delivery callback shortly after the send.
    threading.Timer(0.2, lambda: [registry.record(r) for r in parse_viber(
        {"event": "delivered", "message_token": 111, "user_id": "viber-user-1", "timestamp": 1})]).start()
    started = time.monotonic()
    result = channel.send(cascade_message())
    assert 0.15 < time.monotonic() - started < 2.0
    assert (result.status, result.channel, result.provider_message_id) == ("delivered", "viber", "111")
    assert fake.paths() == ["viber"]
    assert provider.last.json()["receiver"] == "viber-user-1"


def test_cascade_falls_back_when_no_receipt_within_t(provider: FakeProvider) -> None:
    fake, registry = Providers(provider), ReceiptRegistry()
    started = time.monotonic()
    result = cascade(provider, registry, 0.3).send(cascade_message())
    assert 0.3 <= time.monotonic() - started < 2.0
    assert (result.status, result.channel, result.provider_message_id) == ("sent", "sms", "SM222")
    assert fake.paths() == ["viber", "sms"]
    assert provider.last.form()["To"] == "+447700900123" and provider.last.form()["Body"] == "Sofa ships today"


def test_cascade_falls_back_at_once_on_a_failed_receipt_or_send(provider: FakeProvider) -> None:
    fake, registry = Providers(provider), ReceiptRegistry()
    registry.record(Receipt("111", "failed", error="no suitable device"))
    started = time.monotonic()
    assert cascade(provider, registry, 5.0).send(cascade_message()).channel == "sms"
    assert time.monotonic() - started < 2.0
    fake.viber = json_reply(200, {"status": 6, "status_message": "receiverNotSubscribed"})
    result = cascade(provider, ReceiptRegistry(), 5.0).send(cascade_message())
    assert result.channel == "sms" and fake.paths() == ["viber", "sms", "viber", "sms"]


def test_cascade_result_when_every_step_fails(provider: FakeProvider) -> None:
    fake = Providers(provider)
    fake.viber = json_reply(200, {"status": 6, "status_message": "receiverNotSubscribed"})
    msg = message("cascade", "", data={"addresses": {"viber": "v", "sms": "not-a-number"}})
    result = cascade(provider, ReceiptRegistry(), 1.0).send(msg)
    assert result.status == "permanent" and "viber" in result.error and "sms" in result.error
    fake.viber = json_reply(200, {"status": 12, "status_message": "tooManyRequests"})
    assert cascade(provider, ReceiptRegistry(), 1.0).send(msg).status == "transient"


def test_cascade_send_many_waits_in_parallel(provider: FakeProvider) -> None:
    Providers(provider)
    channel = cascade(provider, ReceiptRegistry(), 0.3)
    started = time.monotonic()
    results = channel.send_many([cascade_message() for _ in range(8)])
    assert [r.channel for r in results] == ["sms"] * 8
    assert time.monotonic() - started < 2.5  # 8 waits of 0.3 s overlap


def test_cascade_config() -> None:
    with pytest.raises(ChannelConfigError) as info:
        build_channel("cascade", {"steps": []})
    assert info.value.field == "steps"
    shared = build_channel("cascade", {"steps": [{"kind": "viber", "config": VIBER, "wait_s": 5}]})
    assert isinstance(shared, Cascade) and shared.receipts is RECEIPTS  # what the receipt endpoints fill
    with pytest.raises(ChannelConfigError) as info:
        build_channel("cascade", {"steps": [{"kind": "viber", "config": {}}]})
    assert info.value.field == "token"
