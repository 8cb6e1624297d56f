"""Stored memberships on every engine: refresh writes the difference as Segment Entered/Exited
events and a size point; alerts fire when a segment gets small; parametric segments are
never materialised.

The data set is a handful of people written inline; ``PEOPLE`` says who is who.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from opencdp.segments import membership, store
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, IDENTITIES, ORDER_LINES, PROFILE_MAP

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PEOPLE = """
p1    3 orders, Kazan, anna@example.ru, +79161234567, user_id u1; p1-old (anna.old@example.ru) merged into it
p2    1 order, Moscow, boris@example.ru
p3    no orders, Kazan, vera@example.ru
p5    2 orders, no traits
p6    nothing at all (in profile_map only)
"""
PROFILES = ("p1", "p2", "p3", "p5", "p6")


def table_of(schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def event(message_id: str, profile_id: str, name: str, *, at: dt.datetime | None = None, kind: str = "track", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "message_id": message_id,
        "type": kind,
        "event": name,
        "timestamp": at or NOW - dt.timedelta(days=1),
        "received_at": at or NOW - dt.timedelta(days=1),
        "source": "tests",
        "channel": "web",
        "lsn": 1,
        "profile_id": profile_id,
    }
    for column, value in fields.items():
        row[column] = json.dumps(value) if isinstance(value, dict) else value
    return row


def load_events(backend: Backend, rows: list[dict[str, Any]]) -> None:
    backend.load(LoadBatch(table_of(EVENTS.arrow_schema, rows), ORDER_LINES.empty()))


def orders(profile: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [event(f"o-{profile}-{start + i}", profile, "Order Completed", properties={"total": 100 * (i + 1)}) for i in range(n)]


def identify(profile: str, **traits: Any) -> dict[str, Any]:
    return event(f"id-{profile}", profile, "", kind="identify", traits=traits)


def identity(identifier: str, profile: str) -> dict[str, Any]:
    kind, _, value = identifier.partition(":")
    stamp = NOW - dt.timedelta(days=10)
    return {"identifier": identifier, "kind": kind, "value": value, "profile_id": profile, "first_seen": stamp, "message_id": "m", "updated_at": stamp, "deleted": False}


def people(backend: Backend) -> Backend:
    """Write the people of ``PEOPLE`` into ``backend``."""
    load_events(
        backend,
        [
            *orders("p1", 3),
            *orders("p2", 1),
            *orders("p5", 2),
            identify("p1", city="Kazan", email="anna@example.ru"),
            identify("p2", city="Moscow", email="boris@example.ru"),
            identify("p3", city="Kazan", email="vera@example.ru"),
        ],
    )
    stamp = NOW - dt.timedelta(days=30)
    mapping = [{"profile_id": p, "canonical_id": p, "updated_at": stamp} for p in PROFILES]
    mapping.append({"profile_id": "p1-old", "canonical_id": "p1", "updated_at": stamp})
    backend.upsert(PROFILE_MAP, table_of(PROFILE_MAP.arrow_schema, mapping))
    ids = [
        identity("email:anna@example.ru", "p1"),
        identity("phone:+79161234567", "p1"),
        identity("user_id:u1", "p1"),
        identity("email:anna.old@example.ru", "p1-old"),
        identity("email:boris@example.ru", "p2"),
        identity("email:vera@example.ru", "p3"),
    ]
    backend.upsert(IDENTITIES, table_of(IDENTITIES.arrow_schema, ids))
    return backend


@pytest.fixture
def shop(backend: Backend) -> Backend:
    return people(backend)


def segment_events(backend: Backend, segment_id: str) -> list[dict[str, Any]]:
    rows = backend.rows("SELECT event, profile_id, properties FROM events WHERE source = 'segments' ORDER BY event, profile_id")
    return [{**r, "properties": json.loads(r["properties"])} for r in rows if json.loads(r["properties"])["segment_id"] == segment_id]


def test_refresh_writes_entered_and_exited_events_and_sizes(shop: Backend) -> None:
    segment, _ = store.save(shop, "buyers", definition='count("Order Completed") >= 2')
    change = membership.refresh(shop, segment, NOW, reason="created")
    assert (change.entered, change.exited, change.size) == (["p1", "p5"], [], 2)
    assert membership.stored_members(shop, "buyers") == {"p1", "p5"}
    assert segment_events(shop, "buyers") == []  # the first evaluation is the baseline: nobody "entered"

    load_events(shop, orders("p3", 2, start=20))
    change = membership.refresh(shop, segment, NOW + dt.timedelta(seconds=30), reason="refresh")
    assert (change.entered, change.size) == (["p3"], 3)
    entered = segment_events(shop, "buyers")
    assert [(e["event"], e["profile_id"], e["properties"]["reason"]) for e in entered] == [("Segment Entered", "p3", "refresh")]

    load_events(shop, orders("p2", 1, start=10))  # p2 now has 2 orders
    later = NOW + dt.timedelta(minutes=1)
    changed, _ = store.save(shop, "buyers", definition='count("Order Completed") >= 2 and traits.city exists')
    change = membership.refresh(shop, changed, later, reason="definition changed")
    assert (change.entered, change.exited, change.size) == (["p2"], ["p5"], 3)
    events = [(e["event"], e["profile_id"], e["properties"]["reason"]) for e in segment_events(shop, "buyers")]
    assert ("Segment Exited", "p5", "definition changed") in events and ("Segment Entered", "p2", "definition changed") in events
    sizes = membership.history(shop, "buyers")
    assert [(s["size"], s["entered"], s["exited"]) for s in sizes] == [(2, 2, 0), (3, 1, 0), (3, 1, 1)]
    assert len(membership.history(shop, "buyers", since=later - dt.timedelta(seconds=1))) == 1


def test_a_second_refresh_without_changes_writes_no_events(shop: Backend) -> None:
    segment, _ = store.save(shop, "kazan", definition='traits.city = "Kazan"')
    assert membership.refresh(shop, segment, NOW).entered == ["p1", "p3"]
    again = membership.refresh(shop, segment, NOW + dt.timedelta(seconds=1))
    assert (again.entered, again.exited, again.size) == ([], [], 2)
    assert segment_events(shop, "kazan") == []


def test_refresh_of_some_profiles_only_touches_those(shop: Backend) -> None:
    segment, _ = store.save(shop, "buyers", definition='count("Order Completed") >= 1')
    change = membership.refresh(shop, segment, NOW, profiles=["p1-old", "p3"])
    assert change.entered == ["p1"]  # the merged-away id evaluates its surviving profile
    assert membership.stored_members(shop, "buyers") == {"p1"}


def test_parametric_segments_are_stored_but_not_materialised(shop: Backend) -> None:
    segment, _ = store.save(shop, "by_city", definition="traits.city = $city")
    change = membership.refresh(shop, segment, NOW)
    assert change.parametric and change.size == 0 and not change.entered
    assert membership.stored_members(shop, "by_city") == set()


def test_clear_forgets_members_without_events(shop: Backend) -> None:
    segment, _ = store.save(shop, "kazan", definition='traits.city = "Kazan"')
    membership.refresh(shop, segment, NOW)
    assert membership.clear(shop, "kazan", NOW + dt.timedelta(seconds=1)) == 2
    assert membership.stored_members(shop, "kazan") == set() and segment_events(shop, "kazan") == []
    assert membership.history(shop, "kazan")[-1]["size"] == 0


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def test_alert_below_min_size_is_logged_and_posted(shop: Backend, webhook: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture) -> None:
    url, received = webhook
    segment, _ = store.save(shop, "buyers", definition='count("Order Completed") >= 1', alerts=[{"min_size": 5, "webhook": url}])
    with caplog.at_level("WARNING", logger="opencdp.segments.membership"):
        change = membership.refresh(shop, segment, NOW)
    assert change.size == 3
    assert change.alerts == ["segment buyers has 3 members, below its alert of 5"]
    assert "below its alert of 5" in caplog.text
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received and received[0]["segment_id"] == "buyers" and received[0]["size"] == 3
    # it fires when the size crosses the line, not on every refresh below it
    assert membership.refresh(shop, segment, NOW + dt.timedelta(seconds=1)).alerts == []


def test_alert_on_a_drop(shop: Backend) -> None:
    segment, _ = store.save(shop, "buyers", definition='count("Order Completed") >= 1', alerts=[{"drop_percent": 50}])
    assert membership.refresh(shop, segment, NOW).alerts == []
    narrower, _ = store.save(shop, "buyers", definition='count("Order Completed") >= 3', alerts=[{"drop_percent": 50}])
    alerts = membership.refresh(shop, narrower, NOW + dt.timedelta(seconds=1)).alerts
    assert alerts and "fell 66.7% (3 -> 1)" in alerts[0]
