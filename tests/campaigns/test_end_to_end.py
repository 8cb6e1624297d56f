"""Through the HTTP API with the real email channel against a local aiosmtpd server: a template with
preview, a broadcast to a segment, the click redirect tying a new browser to the profile, the open
pixel, one-click unsubscribe honoured by the next send, and the report."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from fastapi.testclient import TestClient

from opencdp.config import Settings
from opencdp.consent.store import consent_of
from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.api.conftest import basic


class Inbox:
    def __init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 2.0.0 queued"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), _port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_broadcast_over_smtp_click_open_unsubscribe(backend: Backend, tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    settings = Settings(
        data_dir=tmp_path / "data", loader_interval_s=3600, campaign_interval_s=0, campaign_quiet_hours=[],
        campaign_channels={"email": {"kind": "email", "host": "127.0.0.1", "port": port, "security": "none",
                                     "from": "news@shop.example"}},
    )
    app = create_app(settings, backend=backend)
    with TestClient(app) as client:
        _, write_key = app.state.keys.create("write", "website")
        _, admin_key = app.state.keys.create("admin", "tests")
        admin = {"Authorization": f"Bearer {admin_key}"}
        people = [("u1", "anna@shop.example", True), ("u2", "boris@shop.example", True), ("u3", "vera@shop.example", False)]
        batch = [{"type": "identify", "userId": u, "traits": {"email": e, "email_consent": c, "first_name": u.upper(), "plan": "news"}}
                 for u, e, c in people]
        assert client.post("/v1/batch", json={"batch": batch}, headers=basic(write_key)).status_code == 200
        app.state.collector.flush()
        segment = {"id": "news", "definition": 'traits.plan = "news"'}
        assert client.post("/api/v1/segments", json=segment, headers=admin).status_code in (200, 201)

        template = {"id": "spring", "channel": "email", "subject": "Spring for {{ profile.first_name | default('you') }}",
                    "html": '<html><body><p>Hi {{ profile.first_name }}</p><a href="https://shop.example/sale?x=1">Sale</a>'
                            '<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>'}
        assert client.post("/api/v1/templates", json=template, headers=admin).status_code == 201
        bad = client.post("/api/v1/templates", json={**template, "id": "bad", "html": "{{ profil.name }}"}, headers=admin)
        assert bad.status_code == 422 and bad.json()["field"] == "html"
        profile_id = client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=admin).json()["profile_id"]
        preview = client.post("/api/v1/templates/spring/preview", json={"profile_id": profile_id}, headers=admin).json()
        assert preview["subject"] == "Spring for U1" and preview["check"]["undefined"] == []

        missing = client.post("/api/v1/campaigns", json={"id": "c", "segment": "news", "channel": "sms", "template": "spring"}, headers=admin)
        assert missing.status_code == 422 and missing.json()["field"] == "channel"
        campaign = {"id": "spring1", "name": "Spring sale", "segment": "news", "channel": "email", "template": "spring"}
        assert client.post("/api/v1/campaigns", json=campaign, headers=admin).status_code == 201
        answer = client.post("/api/v1/campaigns/spring1/activate", headers=admin)
        assert answer.status_code == 202 and answer.json()["status"] == "planning"  # planned in the background
        runtime = app.state.campaigns
        runtime.wait_planned("spring1", timeout=60)
        polled = client.get(answer.json()["poll"], headers=admin).json()
        assert polled["status"] == "active" and polled["planning"]["state"] == "done"
        assert (polled["planning"]["audience"], polled["planning"]["planned"]) == (3, 3)
        assert sum(polled["outbox"]["A"].values()) == 3
        runtime.sender.run_until_idle()
        assert sorted(r for e in inbox.received for r in e.rcpt_tos) == ["anna@shop.example", "boris@shop.example"]

        anna = next(e for e in inbox.received if e.rcpt_tos == ["anna@shop.example"])
        parsed = email.message_from_bytes(anna.original_content or b"", policy=email.policy.default)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
        links = [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]
        click = next(link for link in links if "/m/c/" in link)
        path = urlsplit(click)
        client.cookies.set("ajs_anonymous_id", "anon-mail")
        answer = client.get(path.path + "?" + path.query, follow_redirects=False)
        client.cookies.clear()
        assert answer.status_code == 302
        target = answer.headers["location"]
        assert target.startswith("https://shop.example/sale?") and "utm_campaign=spring1" in target and "ocdp_click=" in target
        tampered = client.get(path.path + "?" + path.query.replace("sale", "evil"), follow_redirects=False)
        assert tampered.status_code == 404

        # a new browser arrives with the click token in the URL: recognised as Anna without logging in
        page = {"type": "page", "anonymousId": "new-browser", "context": {"page": {"url": target}}}
        assert client.post("/v1/page", json=page, headers=basic(write_key)).status_code == 200
        app.state.collector.flush()
        owner = backend.rows("SELECT profile_id FROM events WHERE anonymous_id = 'new-browser'")[0]["profile_id"]
        resolved = client.get("/api/v1/profiles", params={"anonymous_id": "new-browser"}, headers=admin).json()["profile_id"]
        assert resolved == profile_id, owner

        pixel = re.search(r'src="http://localhost:8000(/m/o/[^"]+)"', html)
        assert pixel is not None
        assert client.get(pixel.group(1)).headers["content-type"] == "image/gif"
        client.get(pixel.group(1))  # a second open is not a second event

        unsubscribe = parsed["List-Unsubscribe"].strip("<>").split(">,")[0].strip("<>")
        one_click = urlsplit(unsubscribe)
        assert client.post(one_click.path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert consent_of(backend, [profile_id], "email")[profile_id] == "opted_out"

        report = client.get("/api/v1/campaigns/spring1/report", headers=admin).json()["variants"]["A"]
        assert (report["sent"], report["opened"], report["clicked"], report["unsubscribed"], report["skipped"]) == (2, 1, 1, 1, 1)

        again = {**campaign, "id": "spring2"}
        client.post("/api/v1/campaigns", json=again, headers=admin)
        client.post("/api/v1/campaigns/spring2/activate", headers=admin)
        runtime.wait_planned("spring2", timeout=60)
        before = len(inbox.received)
        runtime.sender.run_until_idle()
        assert [e.rcpt_tos for e in inbox.received[before:]] == [["boris@shop.example"]]  # Anna unsubscribed
        rows: dict[str, Any] = client.get("/api/v1/campaigns/spring2", headers=admin).json()["outbox"]
        assert rows["A"] == {"sent": 1, "skipped": 2}


def test_smtp_server_down_then_up_retries_without_loss_or_duplicate(backend: Backend) -> None:
    import datetime as dt

    from opencdp.campaigns import outbox
    from opencdp.campaigns.registry import Channels
    from opencdp.campaigns.sender import Sender, SenderOptions
    from opencdp.campaigns.tracking import Signer
    from tests.campaigns.helpers import NOW, load, person, save_template

    load(backend, [person(f"p{i}") for i in range(5)])
    save_template(backend)
    ids = [f"p{i}" for i in range(5)]
    outbox.plan(backend, campaign_id="c", step_id="send", profile_ids=ids, variants=["A"] * 5, channels=["email"] * 5,
                templates=["t1"] * 5, not_before=[NOW] * 5, now=NOW)
    port = _port()  # nothing listens yet: the provider is down
    channels = Channels({"email": {"kind": "email", "host": "127.0.0.1", "port": port, "security": "none",
                                   "from": "news@shop.example", "timeout_s": 2}})
    clock = [NOW]
    sender = Sender(backend, channels, Signer(b"k" * 32), SenderOptions(retry_base_s=60, caps={}, quiet_hours=[]),
                    clock=lambda: clock[0])
    first = sender.run_until_idle()
    assert first.retried == 5 and first.sent == 0
    assert {r["state"] for r in outbox.rows_of(backend, "c")} == {"planned"}
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert sender.run_until_idle().claimed == 0  # not before the backoff
        clock[0] = NOW + dt.timedelta(seconds=61)
        assert sender.run_until_idle().sent == 5
        clock[0] = NOW + dt.timedelta(hours=2)
        assert sender.run_until_idle().claimed == 0
    finally:
        sender.close()
        channels.close()
        controller.stop()
    assert sorted(r for e in inbox.received for r in e.rcpt_tos) == sorted(f"{p}@shop.test" for p in ids)
