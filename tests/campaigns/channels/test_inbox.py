"""The in-app inbox on both engines: idempotent sends, newest first, read state, removal, expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opencdp.campaigns.channels import ChannelConfigError, build_channel
from opencdp.campaigns.channels.inbox import inbox_for, mark_read, remove, unread_count
from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.api.conftest import Api, make_settings

from .support import message


def test_inbox_round_trip(backend: Backend) -> None:
    channel = build_channel("inbox", {"backend": backend})
    first = channel.send(message("inbox", "p1", message_id="m1", subject="Welcome", text="Hi",
                                 html="<p>Hi</p>", data={"image": "/i.png"}))
    assert first.status == "delivered" and first.provider_message_id == "m1"
    results = channel.send_many([
        message("inbox", "p1", message_id="m2", subject="Sale", text="-20%"),
        message("inbox", "p2", message_id="m3", text="Other profile"),
        message("inbox", "", profile_id=None, message_id="m4"),
    ])
    assert [r.status for r in results] == ["delivered", "delivered", "permanent"]

    rows = inbox_for(backend, "p1")
    assert [r["message_id"] for r in rows] == ["m2", "m1"] or [r["message_id"] for r in rows] == ["m1", "m2"]
    by_id = {r["message_id"]: r for r in rows}
    assert by_id["m1"]["subject"] == "Welcome" and by_id["m1"]["html"] == "<p>Hi</p>"
    assert by_id["m1"]["data"] == {"image": "/i.png"} and by_id["m1"]["campaign_id"] == "c1"
    assert not by_id["m1"]["read"] and unread_count(backend, "p1") == 2

    assert mark_read(backend, "p1", ["m1", "m3"]) == 1  # m3 belongs to p2: not touched
    assert mark_read(backend, "p1", ["m1"]) == 0  # already read: the first reading time stays
    assert unread_count(backend, "p1") == 1 and unread_count(backend, "p2") == 1
    assert [r["message_id"] for r in inbox_for(backend, "p1", unread_only=True)] == ["m2"]

    # A resend after a crash (same message id) neither duplicates nor marks the message unread again.
    channel.send(message("inbox", "p1", message_id="m1", subject="Welcome", text="Hi"))
    assert len(inbox_for(backend, "p1")) == 2 and unread_count(backend, "p1") == 1

    assert remove(backend, "p1", ["m2"]) == 1
    assert [r["message_id"] for r in inbox_for(backend, "p1")] == ["m1"]


def test_inbox_order_and_expiry(backend: Backend) -> None:
    channel = build_channel("inbox", {"backend": backend})
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    channel.send(message("inbox", "p1", message_id="old"))
    channel.send(message("inbox", "p1", message_id="offer", data={"expires_at": soon.timestamp()}))
    rows = inbox_for(backend, "p1")
    assert [r["message_id"] for r in rows] == ["offer", "old"]
    assert rows[0]["data"] == {}
    later = soon + dt.timedelta(minutes=1)
    assert [r["message_id"] for r in inbox_for(backend, "p1", now=later)] == ["old"]
    assert [r["message_id"] for r in inbox_for(backend, "p1", limit=1)] == ["offer"]


def test_inbox_needs_the_store() -> None:
    with pytest.raises(ChannelConfigError) as info:
        build_channel("inbox", {})
    assert info.value.field == "backend"


@pytest.fixture
def api(backend: Backend, tmp_path: Path) -> Iterator[Api]:
    app = create_app(make_settings(tmp_path, loader_interval_s=3600), backend=backend)
    with TestClient(app) as client:
        _, write_key = app.state.keys.create("write", "website")
        _, admin_key = app.state.keys.create("admin", "tests")
        yield Api(client, backend, write_key, admin_key)


def test_inbox_api(api: Api) -> None:
    api.post("/v1/identify", {"userId": "u1", "messageId": "e1", "traits": {"email": "anna@example.org"}})
    api.flush()
    profile_id = api.client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=api.admin).json()["profile_id"]
    channel = build_channel("inbox", {"backend": api.backend})
    channel.send_many([message("inbox", profile_id, message_id="m1", subject="Welcome", text="Hi"),
                       message("inbox", profile_id, message_id="m2", subject="Sale", text="-20%")])

    url = f"/api/v1/profiles/{profile_id}/inbox"
    listed = api.client.get(url, headers=api.admin).json()
    assert listed["unread"] == 2 and {m["message_id"] for m in listed["messages"]} == {"m1", "m2"}
    assert all(m["read_at"] is None and m["created_at"] for m in listed["messages"])
    marked = api.client.post(url + "/read", json={"message_ids": ["m1"]}, headers=api.admin).json()
    assert marked == {"marked": 1, "unread": 1}
    unread = api.client.get(url, params={"unread_only": True}, headers=api.admin).json()["messages"]
    assert [m["message_id"] for m in unread] == ["m2"]
    assert api.client.delete(url + "/m2", headers=api.admin).json() == {"removed": 1}
    assert [m["message_id"] for m in api.client.get(url, headers=api.admin).json()["messages"]] == ["m1"]

    missing = api.client.get("/api/v1/profiles/nobody/inbox", headers=api.admin)
    assert missing.status_code == 404 and missing.json()["field"] == "profile_id"
    assert api.client.post(url + "/read", json={"message_ids": []}, headers=api.admin).status_code == 422
    assert api.client.get(url).status_code == 401
