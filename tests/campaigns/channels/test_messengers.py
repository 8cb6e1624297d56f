"""Telegram, SMS (Twilio and a generic gateway), Viber and webhooks against local fakes that speak
each provider's documented request and answer formats."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from opencdp.campaigns.channels import ChannelConfigError, build_channel
from opencdp.campaigns.channels.webhook import SignatureError, sign, verify_signature

from .support import FakeProvider, json_reply, message

# -- Telegram -----------------------------------------------------------------------------------


def test_telegram_send_message_request_and_delivered(provider: FakeProvider) -> None:
    provider.responder = lambda r: json_reply(200, {"ok": True, "result": {"message_id": 77, "chat": {"id": 42}}})
    channel = build_channel("telegram", {"token": "123:ABC", "base_url": provider.url})
    result = channel.send(message("telegram", "42", text="<b>Sale</b> today"))
    assert result.status == "delivered" and result.provider_message_id == "77"
    request = provider.last
    assert request.path == "/bot123:ABC/sendMessage"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"chat_id": "42", "text": "<b>Sale</b> today", "parse_mode": "HTML"}


@pytest.mark.parametrize(("status", "body", "expected", "retry"), [
    (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
           "parameters": {"retry_after": 7}}, "transient", 7.0),
    (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, "permanent", None),
    (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
     "permanent", None),
    (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}, "transient", None),
])
def test_telegram_errors(provider: FakeProvider, status: int, body: dict[str, object], expected: str,
                         retry: float | None) -> None:
    provider.responder = lambda r: json_reply(status, body)
    result = build_channel("telegram", {"token": "t", "base_url": provider.url}).send(message("telegram", "42"))
    assert result.status == expected and result.retry_after_s == retry
    assert str(body["description"]) in result.error


def test_unreachable_and_slow_providers_are_transient(provider: FakeProvider) -> None:
    down = build_channel("telegram", {"token": "t", "base_url": "http://127.0.0.1:9"})
    assert down.send(message("telegram", "1")).status == "transient"

    def slow(request: object) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.5)
        return json_reply(200, {"ok": True, "result": {"message_id": 1}})

    provider.responder = slow
    result = build_channel("telegram", {"token": "t", "base_url": provider.url, "timeout_s": 0.1}).send(
        message("telegram", "1"))
    assert result.status == "transient" and "timeout" in result.error


def test_missing_config_names_the_field() -> None:
    with pytest.raises(ChannelConfigError) as info:
        build_channel("telegram", {})
    assert info.value.field == "token"
    with pytest.raises(ChannelConfigError) as info:
        build_channel("carrier-pigeon", {})
    assert info.value.field == "kind"
    with pytest.raises(ChannelConfigError) as info:
        build_channel("sms", {"account_sid": "AC1", "auth_token": "x"})
    assert info.value.field == "from"


# -- SMS: Twilio --------------------------------------------------------------------------------

TWILIO = {"provider": "twilio", "account_sid": "AC0123", "auth_token": "secret", "from": "+15005550006",
          "status_callback": "https://cdp.example/receipts/twilio"}


def test_twilio_request_format_and_sid(provider: FakeProvider) -> None:
    provider.responder = lambda r: json_reply(201, {"sid": "SM9f2e", "status": "queued", "to": "+447700900123"})
    channel = build_channel("sms", {**TWILIO, "base_url": provider.url})
    result = channel.send(message("sms", "+447700900123", text="Your order has shipped"))
    assert result.status == "sent" and result.provider_message_id == "SM9f2e"
    request = provider.last
    assert request.path == "/2010-04-01/Accounts/AC0123/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC0123:secret").decode()
    assert request.form() == {"To": "+447700900123", "From": "+15005550006", "Body": "Your order has shipped",
                              "StatusCallback": "https://cdp.example/receipts/twilio"}


@pytest.mark.parametrize(("status", "body", "headers", "expected", "retry"), [
    (400, {"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.",
           "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}, {}, "permanent", None),
    (429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "3"}, "transient", 3.0),
    (500, {"code": 20500, "message": "Internal Server Error", "status": 500}, {}, "transient", None),
    (401, {"code": 20003, "message": "Authenticate", "status": 401}, {}, "transient", 300.0),
])
def test_twilio_errors(provider: FakeProvider, status: int, body: dict[str, object], headers: dict[str, str],
                       expected: str, retry: float | None) -> None:
    provider.responder = lambda r: json_reply(status, body, headers)
    result = build_channel("sms", {**TWILIO, "base_url": provider.url}).send(message("sms", "+447700900123"))
    assert (result.status, result.retry_after_s) == (expected, retry)
    assert str(body["code"]) in result.error


def test_sms_refuses_a_number_that_is_not_e164_without_a_request(provider: FakeProvider) -> None:
    result = build_channel("sms", {**TWILIO, "base_url": provider.url}).send(message("sms", "8 (900) 123"))
    assert result.status == "permanent" and provider.requests == []


def test_generic_http_gateway(provider: FakeProvider) -> None:
    provider.responder = lambda r: json_reply(200, {"result": {"id": "g-1"}})
    channel = build_channel("sms", {
        "provider": "http", "url": provider.url + "/send", "headers": {"X-Api-Key": "k"},
        "body": {"phone": "{to}", "message": "{text}", "ref": "{message_id}", "sender": "Shop"},
        "id_field": "result.id"})
    result = channel.send(message("sms", "+79001234567", text="Code {to} stays literal? no: {text}"))
    assert result.status == "sent" and result.provider_message_id == "g-1"
    assert provider.last.headers["x-api-key"] == "k"
    assert provider.last.json() == {"phone": "+79001234567", "message": "Code {to} stays literal? no: {text}",
                                    "ref": "c1-s1-p1", "sender": "Shop"}
    provider.responder = lambda r: (503, {"Retry-After": "10"}, b"busy")
    assert channel.send(message("sms", "+79001234567")).retry_after_s == 10.0


# -- Viber --------------------------------------------------------------------------------------

VIBER = {"token": "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9", "sender_name": "Home & Living"}


def test_viber_send_message_format(provider: FakeProvider) -> None:
    provider.responder = lambda r: json_reply(200, {"status": 0, "status_message": "ok",
                                                    "message_token": 5741311803571721087, "chat_hostname": "SN-CHAT-01"})
    channel = build_channel("viber", {**VIBER, "base_url": provider.url})
    result = channel.send(message("viber", "01234567890A=", text="New sofas are in"))
    assert result.status == "sent" and result.provider_message_id == "5741311803571721087"
    request = provider.last
    assert request.path == "/pa/send_message"
    assert request.headers["x-viber-auth-token"] == VIBER["token"]
    assert request.json() == {"receiver": "01234567890A=", "min_api_version": 1, "sender": {"name": "Home & Living"},
                              "tracking_data": "c1-s1-p1", "type": "text", "text": "New sofas are in"}


@pytest.mark.parametrize(("status", "name", "expected"), [
    (6, "receiverNotSubscribed", "permanent"), (5, "receiverNotRegistered", "permanent"),
    (12, "tooManyRequests", "transient"), (2, "invalidAuthToken", "transient"), (3, "badData", "permanent"),
])
def test_viber_status_codes_inside_http_200(provider: FakeProvider, status: int, name: str, expected: str) -> None:
    provider.responder = lambda r: json_reply(200, {"status": status, "status_message": name})
    result = build_channel("viber", {**VIBER, "base_url": provider.url}).send(message("viber", "u1"))
    assert result.status == expected and name in result.error


# -- Webhook ------------------------------------------------------------------------------------

SECRET = "whsec_0123456789abcdef"
LOCAL = ["127.0.0.0/8"]
"""The local fake provider is an internal address: allowed on purpose, as the setting documents."""


def test_webhook_is_signed_and_verifiable(provider: FakeProvider) -> None:
    provider.responder = lambda r: (204, {}, b"")
    channel = build_channel("webhook", {"secret": SECRET, "headers": {"X-Team": "crm"}, "allowed_networks": LOCAL})
    url = provider.url + "/hook"
    result = channel.send(message("webhook", url, data={"order_id": "o-1", "items": [1, 2]}))
    assert result.status == "delivered"
    request = provider.last
    assert request.headers["idempotency-key"] == "c1-s1-p1" and request.headers["x-team"] == "crm"
    body = request.json()
    assert body["id"] == "c1-s1-p1" and body["data"] == {"order_id": "o-1", "items": [1, 2]}
    timestamp = verify_signature(SECRET, request.body, request.headers["opencdp-signature"])
    assert abs(timestamp - time.time()) < 5
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, request.body + b" ", request.headers["opencdp-signature"])
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("another-secret-123", request.body, request.headers["opencdp-signature"])


def test_webhook_signature_replay_window_and_rotation() -> None:
    body = json.dumps({"a": 1}).encode()
    old = sign(SECRET, body, timestamp=int(time.time()) - 600)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, body, old)
    rotated = sign("previous-secret-xyz", body) + "," + sign(SECRET, body).split(",")[1]
    assert verify_signature(SECRET, body, rotated)
    with pytest.raises(SignatureError):
        verify_signature(SECRET, body, None)
    with pytest.raises(SignatureError):
        verify_signature(SECRET, body, "v1=abc")


@pytest.mark.parametrize(("status", "expected"), [(410, "permanent"), (429, "transient"), (500, "transient")])
def test_webhook_errors(provider: FakeProvider, status: int, expected: str) -> None:
    provider.responder = lambda r: (status, {"Retry-After": "2"}, b"no")
    result = build_channel("webhook", {"secret": SECRET, "allowed_networks": LOCAL}).send(message("webhook", provider.url))
    assert result.status == expected
    assert build_channel("webhook", {"secret": SECRET}).send(message("webhook", "ftp://x")).status == "permanent"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/hook", "http://localhost:{port}/hook", "http://[::1]:{port}/hook", "http://10.1.2.3/x",
    "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:{port}/", "http://0.0.0.0:{port}/",
    "http://metadata.google.internal/computeMetadata/v1/", "http://100.64.0.1/", "http://[fd00:ec2::254]/",
])
def test_webhook_refuses_internal_targets(provider: FakeProvider, url: str) -> None:
    """SSRF: loopback, private, link-local, metadata and mapped forms are refused at send time; nothing arrives."""
    provider.responder = lambda r: (204, {}, b"")
    target = url.format(port=provider.url.rsplit(":", 1)[1])
    result = build_channel("webhook", {"secret": SECRET}).send(message("webhook", target))
    assert result.status == "permanent" and "internal address" in result.error
    assert provider.requests == []


def test_webhook_url_refused_at_configuration_unless_allowed() -> None:
    from opencdp.campaigns.channels import urlguard

    with pytest.raises(ChannelConfigError) as error:
        build_channel("webhook", {"secret": SECRET, "url": "http://192.168.1.10/hook"})
    assert error.value.field == "url" and "campaign_webhook_allowed_networks" in error.value.detail
    build_channel("webhook", {"secret": SECRET, "url": "http://192.168.1.10/hook", "allowed_networks": ["192.168.1.0/24"]})
    with pytest.raises(ChannelConfigError) as bad:
        build_channel("webhook", {"secret": SECRET, "allowed_networks": ["not a network"]})
    assert bad.value.field == "allowed_networks"
    urlguard.check("https://hooks.unresolvable.example/x")  # unknown names pass validation; the send checks again
    pinned = urlguard.pin("http://127.0.0.1:81/a?b=1", urlguard.networks(LOCAL))
    assert (pinned.url, pinned.host_header) == ("http://127.0.0.1:81/a?b=1", "127.0.0.1:81")


def test_http_date_retry_after() -> None:
    from opencdp.campaigns.channels._http import retry_after

    when = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after(when, now=1445412480 - 30) == 30.0
    assert retry_after(httpx.Headers({"Retry-After": "soon"})) is None
