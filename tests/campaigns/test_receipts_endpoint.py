"""``POST /m/receipts/{channel}`` over HTTP: who may post (Twilio and Viber signatures, the mail receipt
secret), what a bad body answers, idempotent events, and a Viber -> SMS cascade woken by a receipt."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from opencdp.campaigns import outbox
from opencdp.campaigns.channels import build_channel
from opencdp.campaigns.channels.cascade import Cascade
from opencdp.campaigns.channels.receipts import RECEIPTS, twilio_signature
from opencdp.campaigns.channels.webhook import SIGNATURE_HEADER
from opencdp.config import Settings
from opencdp.consent import suppressions
from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.campaigns.channels.conftest import provider  # noqa: F401  (the fake Viber/Twilio server fixture)
from tests.campaigns.channels.support import FakeProvider, Request, json_reply, message
from tests.campaigns.channels.test_receipts_cascade import BOUNCE
from tests.campaigns.helpers import NOW, load, person
from tests.conftest import BACKENDS, close_test_backend, open_test_backend

VIBER_TOKEN = "viber-bot-token"
TWILIO_TOKEN = "twilio-auth-token"
PUBLIC_CALLBACK = "https://cdp.shop.example/m/receipts/sms"
CHANNELS: dict[str, dict[str, Any]] = {
    "email": {"kind": "email", "host": "127.0.0.1", "port": 2525, "security": "none", "from": "news@shop.test",
              "receipt_secret": "bounce-secret"},
    "plain_email": {"kind": "email", "host": "127.0.0.1", "port": 2525, "security": "none", "from": "news@shop.test"},
    "viber": {"kind": "viber", "token": VIBER_TOKEN, "sender_name": "Shop"},
    "sms": {"kind": "sms", "account_sid": "AC1", "auth_token": TWILIO_TOKEN, "from": "+15005550006",
            "status_callback": PUBLIC_CALLBACK},
    "sms_direct": {"kind": "sms", "account_sid": "AC1", "auth_token": TWILIO_TOKEN, "from": "+15005550006"},
    "push": {"kind": "webhook", "url": "https://hooks.shop.test/x", "secret": "s"},
}


@dataclass
class App:
    """The app under test, seen by one test: its profiles, addresses and campaign carry ``prefix``.

    The store and app are shared by the tests of this module on each engine (building them is most of
    a test's time on a loaded machine), so each test keeps to its own profiles and campaign.
    """

    client: TestClient
    backend: Backend
    admin_key: str
    prefix: str = ""

    def post(self, path: str, body: bytes, **headers: str) -> Any:
        return self.client.post(path, content=body, headers=headers)

    def pid(self, name: str) -> str:
        return self.prefix + name

    def mail(self, name: str) -> str:
        return f"{self.pid(name)}@shop.test"

    @property
    def campaign(self) -> str:
        return self.pid("c1")

    def sent(self, channel: str, sends: dict[str, tuple[str, str]]) -> dict[str, str]:
        """Outbox rows in state ``sent`` for profile -> (provider message id, address); returns profile -> message id."""
        profiles = sorted(self.pid(p) for p in sends)
        load(self.backend, [person(p) for p in profiles])
        n = len(profiles)
        outbox.plan(self.backend, campaign_id=self.campaign, step_id="send", profile_ids=profiles, variants=["A"] * n,
                    channels=[channel] * n, templates=["t1"] * n, not_before=[NOW] * n, now=NOW)
        rows = [{**row, "state": outbox.SENT, "provider_message_id": sends[self.short(row["profile_id"])][0],
                 "address": sends[self.short(row["profile_id"])][1], "sent_at": NOW}
                for row in outbox.rows_of(self.backend, self.campaign)]
        outbox.write(self.backend, rows, NOW)
        return {self.short(r["profile_id"]): r["message_id"] for r in rows}

    def short(self, profile_id: str) -> str:
        return profile_id.removeprefix(self.prefix)

    def states(self) -> dict[str, str]:
        return {self.short(r["profile_id"]): r["state"] for r in outbox.rows_of(self.backend, self.campaign)}

    def events(self, name: str) -> list[dict[str, Any]]:
        rows = self.backend.rows(f"SELECT profile_id, properties FROM events WHERE event = '{name}' ORDER BY profile_id")
        return [{**r, "profile_id": self.short(r["profile_id"])} for r in rows if r["profile_id"].startswith(self.prefix)]


def make_app(backend: Backend, tmp_path: Path, channels: dict[str, dict[str, Any]]) -> Iterator[App]:
    settings = Settings(data_dir=tmp_path / "data", loader_interval_s=3600, campaign_interval_s=0,
                        campaign_quiet_hours=[], campaign_channels=channels)
    app = create_app(settings, backend=backend)
    with TestClient(app) as client:
        _, admin_key = app.state.keys.create("admin", "bounce processor")
        yield App(client, backend, admin_key)


@pytest.fixture(scope="module", params=BACKENDS)
def shared_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               chdb_data_dir: Path) -> Iterator[App]:
    tmp_path = tmp_path_factory.mktemp("receipts")
    backend = open_test_backend(request.param, tmp_path, chdb_data_dir)
    try:
        yield from make_app(backend, tmp_path, CHANNELS)
    finally:
        close_test_backend(backend)


_tests = itertools.count()


@pytest.fixture
def api(shared_app: App) -> App:
    return dataclasses.replace(shared_app, prefix=f"t{next(_tests)}-")


def viber_event(event: str, token: int | str, **extra: Any) -> bytes:
    return json.dumps({"event": event, "timestamp": 1457764197627, "message_token": token,
                       "user_id": "viber-user-1", **extra}).encode()


def viber_signature(body: bytes, token: str = VIBER_TOKEN) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


# -- Viber -----------------------------------------------------------------------------------------
def test_viber_signature_is_checked_with_the_bot_token(api: App) -> None:
    api.sent("viber", {"a": ("4912661846655238145", "viber-user-1")})
    body = viber_event("delivered", 4912661846655238145)
    missing = api.post("/m/receipts/viber", body)
    assert missing.status_code == 401 and missing.json()["field"] == "X-Viber-Content-Signature"
    forged = api.post("/m/receipts/viber", body, **{"X-Viber-Content-Signature": viber_signature(body, "guess")})
    assert forged.status_code == 403 and forged.json()["field"] == "X-Viber-Content-Signature"
    assert api.events("Message Delivered") == [] and api.states()["a"] == "sent"
    ok = api.post("/m/receipts/viber", body, **{"X-Viber-Content-Signature": viber_signature(body)})
    assert ok.status_code == 200 and ok.json()["delivered"] == 1
    assert api.states()["a"] == "delivered" and [e["profile_id"] for e in api.events("Message Delivered")] == ["a"]
    assert RECEIPTS.get("4912661846655238145") is not None  # what a cascade waits on


def test_the_same_receipt_twice_writes_one_delivered_event(api: App) -> None:
    api.sent("viber", {"a": ("777001", "viber-user-1")})
    delivered, seen = viber_event("delivered", 777001), viber_event("seen", 777001)
    for body in (delivered, delivered, seen):
        answer = api.post("/m/receipts/viber", body, **{"X-Viber-Content-Signature": viber_signature(body)})
        assert answer.status_code == 200, answer.text
    [event] = api.events("Message Delivered")
    assert event["profile_id"] == "a" and json.loads(event["properties"])["channel"] == "viber"


def test_retried_and_concurrent_callbacks_write_one_event(api: App) -> None:
    """Providers retry on timeouts, sometimes in parallel: one Message Bounced, one suppression, whatever the count."""
    ids = api.sent("email", {"a": (f"<{api.pid('a')}@x>", api.mail("a")), "b": (f"<{api.pid('b')}@x>", api.mail("b"))})
    body = bounce_for(ids["a"], api.mail("a"))
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(
        api.post("/m/receipts/email?secret=bounce-secret", body).status_code)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert api.post("/m/receipts/email?secret=bounce-secret", body).status_code == 200
    assert answers == [200] * 4
    assert [e["profile_id"] for e in api.events("Message Bounced")] == ["a"]
    assert [s.address for s in suppressions.list_suppressions(api.backend, channel="email", limit=10_000)
            if s.address.startswith(api.prefix)] == [api.mail("a")]
    deferred = bounce_for(ids["b"], api.mail("b")).replace(b"Action: failed", b"Action: delayed").replace(
        b"Status: 5.1.1", b"Status: 4.4.1")
    assert api.post("/m/receipts/email?secret=bounce-secret", deferred).json()["ignored"] == 1
    assert api.states() == {"a": "failed", "b": "sent"}  # a deferral is no bounce


def test_viber_bad_bodies_are_4xx_naming_the_field(api: App) -> None:
    def post(body: bytes) -> Any:
        return api.post("/m/receipts/viber", body, **{"X-Viber-Content-Signature": viber_signature(body)})

    for body, status, field in ((b"not json", 422, "body"), (b"[1, 2]", 422, "event"), (b"", 400, "body"),
                                (b'{"event": "delivered", "timestamp": 1}', 422, "message_token")):
        answer = post(body)
        assert (answer.status_code, answer.json()["field"]) == (status, field), body
    # Events that are no receipt (the webhook check Viber makes when it is set, a new subscriber) are fine.
    for event in ({"event": "webhook", "timestamp": 1, "message_token": 1}, {"event": "conversation_started", "user": {}}):
        assert post(json.dumps(event).encode()).status_code == 200
    unknown = post(viber_event("delivered", 123456789))  # not a message of ours: accepted, not retried forever
    assert unknown.status_code == 200 and unknown.json()["unknown"] == 1


# -- Twilio ----------------------------------------------------------------------------------------
def twilio_form(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC1", "To": "+79161234501", **extra}


def post_twilio(api: App, channel: str, form: dict[str, str], signed_url: str | None) -> Any:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed_url is not None:
        headers["X-Twilio-Signature"] = twilio_signature(TWILIO_TOKEN, signed_url, form)
    return api.post(f"/m/receipts/{channel}", urlencode(form).encode(), **headers)


def test_twilio_signature_is_checked_against_the_public_status_callback(api: App) -> None:
    """Behind a proxy the server sees http://testserver/...; Twilio signed the public status_callback URL."""
    api.sent("sms", {"a": ("SM1", "+79161234501"), "b": ("SM2", "+79161234502")})
    form = twilio_form("SM1", "delivered")
    assert post_twilio(api, "sms", form, None).status_code == 401
    wrong = post_twilio(api, "sms", form, "http://testserver/m/receipts/sms")
    assert wrong.status_code == 403 and wrong.json()["field"] == "X-Twilio-Signature"
    assert post_twilio(api, "sms", form, PUBLIC_CALLBACK).json()["delivered"] == 1
    dead = post_twilio(api, "sms", twilio_form("SM2", "undelivered", ErrorCode="30006", To="+79161234502"), PUBLIC_CALLBACK)
    assert dead.json()["bounced"] == 1
    assert api.states() == {"a": "delivered", "b": "failed"}
    assert suppressions.is_suppressed(api.backend, "sms", "+79161234502")


def test_twilio_without_status_callback_uses_the_request_url_and_names_missing_fields(api: App) -> None:
    assert post_twilio(api, "sms_direct", twilio_form("SM9", "delivered"), "http://testserver/m/receipts/sms_direct").json()["unknown"] == 1
    answer = post_twilio(api, "sms", {"MessageStatus": "delivered"}, PUBLIC_CALLBACK)
    assert (answer.status_code, answer.json()["field"]) == (422, "MessageSid")
    future = post_twilio(api, "sms", twilio_form("SM9", "some_new_status"), PUBLIC_CALLBACK)
    assert future.status_code == 200  # a status Twilio adds later is accepted and ignored


# -- mail bounces and complaints ---------------------------------------------------------------------
def bounce_for(message_id: str, address: str) -> bytes:
    return BOUNCE.replace(b"<c1-s1-p1@shop.example>", f"<{message_id}@shop.test>".encode()).replace(
        b"gone@example.org", address.encode())


def test_mail_receipts_need_the_receipt_secret(api: App) -> None:
    ids = api.sent("email", {p: (f"<{api.pid(p)}@x>", api.mail(p)) for p in ("a", "b", "c", "d", "e", "f")})
    body = bounce_for(ids["a"], api.mail("a"))
    anonymous = api.post("/m/receipts/email", body)
    assert anonymous.status_code == 401 and anonymous.json()["field"] == "secret"
    assert "receipt_secret" in anonymous.json()["detail"]
    assert api.post("/m/receipts/email?secret=guess", body).status_code == 403
    assert api.post("/m/receipts/email", body, Authorization="Bearer guess").status_code == 403
    assert not suppressions.is_suppressed(api.backend, "email", api.mail("a"))  # nobody can fake a bounce

    assert api.post("/m/receipts/email?secret=bounce-secret", body).json()["bounced"] == 1
    basic = "Basic " + base64.b64encode(b"bounces:bounce-secret").decode()
    assert api.post("/m/receipts/email", bounce_for(ids["b"], api.mail("b")), Authorization=basic).json()["bounced"] == 1
    assert api.post("/m/receipts/email", bounce_for(ids["c"], api.mail("c")),
                    Authorization="Bearer bounce-secret").json()["bounced"] == 1
    signed = bounce_for(ids["d"], api.mail("d"))
    t = int(time.time())
    v1 = hmac.new(b"bounce-secret", f"{t}.".encode() + signed, hashlib.sha256).hexdigest()
    assert api.post("/m/receipts/email", signed, **{SIGNATURE_HEADER: f"t={t},v1={v1}"}).json()["bounced"] == 1
    stale = api.post("/m/receipts/email", signed, **{SIGNATURE_HEADER: f"t={t - 3600},v1={v1}"})
    assert stale.status_code == 403 and stale.json()["field"] == SIGNATURE_HEADER
    admin = api.post("/m/receipts/email", bounce_for(ids["e"], api.mail("e")), Authorization=f"Bearer {api.admin_key}")
    assert admin.json()["bounced"] == 1
    assert all(suppressions.is_suppressed(api.backend, "email", api.mail(p)) for p in "abcde")
    assert not suppressions.is_suppressed(api.backend, "email", api.mail("f"))
    assert len(api.events("Message Bounced")) == 5


def test_mail_channel_without_a_secret_takes_admin_keys_and_says_how_to_set_one(api: App) -> None:
    answer = api.post("/m/receipts/plain_email", BOUNCE)
    assert answer.status_code == 401 and "campaign_channels.plain_email.receipt_secret" in answer.json()["detail"]
    assert api.post("/m/receipts/plain_email?secret=", BOUNCE).status_code == 401
    ok = api.post("/m/receipts/plain_email", BOUNCE, **{"X-API-Key": api.admin_key})
    assert ok.status_code == 200 and ok.json()["unknown"] == 1


def test_bad_mail_bodies_and_channels(api: App) -> None:
    secret = "?secret=bounce-secret"
    empty = api.post(f"/m/receipts/email{secret}", b"")
    assert (empty.status_code, empty.json()["field"]) == (400, "body")
    chat = api.post(f"/m/receipts/email{secret}", b"Subject: out of office\r\n\r\nback Monday")
    assert (chat.status_code, chat.json()["field"]) == (422, "body") and "multipart/report" in chat.json()["detail"]
    garbage = api.post(f"/m/receipts/email{secret}", bytes(range(256)) * 4)
    assert garbage.status_code == 422
    huge = api.post(f"/m/receipts/email{secret}", b"x" * (11 * 2**20))
    assert (huge.status_code, huge.json()["field"]) == (413, "body")
    for path in ("/m/receipts/nope", "/m/receipts/push", "/m/receipts/viber/sms"):
        answer = api.post(path, b"{}")
        assert (answer.status_code, answer.json()["field"]) in ((404, "channel"), (404, "step")), path


# -- a cascade woken by a receipt over HTTP --------------------------------------------------------
def test_viber_to_sms_cascade_completes_on_a_receipt_posted_to_the_endpoint(
        backend: Backend, tmp_path: Path, provider: FakeProvider) -> None:  # noqa: F811
    def respond(request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.path == "/pa/send_message":
            return json_reply(200, {"status": 0, "status_message": "ok", "message_token": 5550001})
        return json_reply(201, {"sid": "SM5550001", "status": "queued"})

    provider.responder = respond
    viber = {"token": VIBER_TOKEN, "sender_name": "Shop", "base_url": provider.url}
    notify = {"kind": "cascade", "steps": [
        {"kind": "viber", "config": viber, "wait_s": 10},
        {"kind": "sms", "config": {"account_sid": "AC1", "auth_token": TWILIO_TOKEN, "from": "+15005550006",
                                   "base_url": provider.url}}]}
    app = make_app(backend, tmp_path, {"notify": notify})
    api = next(app)
    try:
        cascade = build_channel("cascade", notify)
        assert isinstance(cascade, Cascade) and cascade.receipts is RECEIPTS
        results: list[Any] = []
        started = time.monotonic()
        worker = threading.Thread(target=lambda: results.append(cascade.send(message(
            "cascade", "", data={"addresses": {"viber": "viber-user-1", "sms": "+79161234501"}}))))
        worker.start()
        deadline = time.monotonic() + 5
        while not provider.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        body = viber_event("delivered", 5550001)
        answer = api.post("/m/receipts/notify/viber", body, **{"X-Viber-Content-Signature": viber_signature(body)})
        assert answer.status_code == 200, answer.text
        worker.join(timeout=10)
        [result] = results
        assert (result.status, result.channel, result.provider_message_id) == ("delivered", "viber", "5550001")
        assert time.monotonic() - started < 5  # woken by the receipt, not by the 10 s wait
        assert [r.path for r in provider.requests] == ["/pa/send_message"]  # no SMS
        cascade.close()
    finally:
        next(app, None)


def test_receipts_without_an_outbox_row_change_nothing(api: App) -> None:
    """A receipt for a message id that is not ours is accepted (200) and writes nothing."""
    body = viber_event("failed", 999, desc="no suitable device")
    answer = api.post("/m/receipts/viber", body, **{"X-Viber-Content-Signature": viber_signature(body)})
    assert answer.status_code == 200 and answer.json()["unknown"] == 1
    assert api.events("Message Bounced") == [] and api.events("Message Delivered") == []


def test_a_viber_user_leaving_the_bot_opts_out_of_viber(api: App) -> None:
    from opencdp.consent.store import consent_of

    api.sent("viber", {"a": ("888001", api.pid("viber-user-1")), "b": ("888002", api.pid("viber-user-2"))})
    body = json.dumps({"event": "unsubscribed", "timestamp": 1457764197627, "user_id": api.pid("viber-user-1")}).encode()
    for _ in range(2):  # Viber retries: the second changes nothing
        answer = api.post("/m/receipts/viber", body, **{"X-Viber-Content-Signature": viber_signature(body)})
        assert answer.status_code == 200 and answer.json()["unsubscribed"] == 1
    assert consent_of(api.backend, [api.pid("a"), api.pid("b")], "viber") == {api.pid("a"): "opted_out", api.pid("b"): "unknown"}
    assert consent_of(api.backend, [api.pid("a")], "viber", "transactional") == {api.pid("a"): "opted_out"}
    assert [e["profile_id"] for e in api.events("Unsubscribed")] == ["a", "a"]  # marketing and transactional
    assert [e["profile_id"] for e in api.events("Message Unsubscribed")] == ["a"]
    stranger = json.dumps({"event": "unsubscribed", "timestamp": 1, "user_id": "someone-else"}).encode()
    answer = api.post("/m/receipts/viber", stranger, **{"X-Viber-Content-Signature": viber_signature(stranger)})
    assert answer.status_code == 200 and answer.json()["unsubscribed"] == 0
