"""The official Python SDKs (Segment's and RudderStack's) work against opencdp unchanged.

Both SDKs post ``{"batch": [...], "sentAt": ...}`` to ``<host>/v1/batch`` with the
write key as the Basic auth username (Segment also puts ``writeKey`` in the body;
RudderStack gzips the body by default). Each SDK makes every call it has, once
synchronously and once through its background consumer; then the server is stopped
and the stored rows are compared with the messages the SDK built.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import rudderstack.analytics.request as rudder_request
import segment.analytics.request as segment_request
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.e2e.server import ServerProcess, running_server

SDKS = ("segment", "rudder")
KINDS = ("identify", "track", "page", "screen", "group", "alias")
HISTORICAL = dt.datetime(2025, 3, 4, 5, 6, 7, 891_000, tzinfo=dt.UTC)
ASYNC_EVENTS = 30


@dataclass
class Delivered:
    """What each SDK call returned (the message it built), and the store afterwards."""

    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    batched: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[Any] = field(default_factory=list)
    rejections: dict[str, BaseException | None] = field(default_factory=dict)  # what a 400 raised in each SDK
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))




def _user(sdk: str) -> str:
    return f"{sdk}-user-1"


def _calls(sdk: str) -> dict[str, Callable[[Any], tuple[bool, dict[str, Any]]]]:
    """One call of each kind, with the arguments a real integration would pass."""
    user, anonymous = _user(sdk), f"{sdk}-anon-1"
    context = {"ip": "203.0.113.5", "locale": "ru-RU"}
    return {
        "identify": lambda c: c.identify(
            user_id=user,
            anonymous_id=anonymous,
            traits={"email": f"{user}@example.ru", "firstName": "Анна", "loyalty": {"tier": "gold", "points": 120}},
            context=dict(context),
            timestamp=HISTORICAL,
        ),
        "track": lambda c: c.track(
            user_id=user,
            event="Order Completed",
            properties={
                "order_id": f"O-{sdk}-1",
                "total": 4990.5,
                "currency": "RUB",
                "coupon": None,
                "placed_at": HISTORICAL,
                "discount": Decimal("99.90"),
                "products": [
                    {"product_id": "P1", "category": "Kitchen > Chairs", "price": 1500, "quantity": 2},
                    {"product_id": "P2", "price": 1990.5, "quantity": 1},
                ],
            },
            context=dict(context),
        ),
        "page": lambda c: c.page(
            user_id=user, category="Catalog", name="Sofas", properties={"path": "/catalog/sofas", "title": "Диваны"}
        ),
        "screen": lambda c: c.screen(user_id=user, name="Cart", properties={"items": 2}),
        "group": lambda c: c.group(user_id=user, group_id=f"{sdk}-company-42", traits={"name": "ACME", "employees": 120}),
        "alias": lambda c: c.alias(previous_id=anonymous, user_id=user),
    }


def _clients(server: ServerProcess, errors: list[Any]) -> dict[str, tuple[Any, Any]]:
    """Per SDK: a synchronous client and one with its background consumer (batching)."""

    def on_error(error: Exception, batch: Any) -> None:
        errors.append((error, batch))

    return {
        "segment": (
            SegmentClient(write_key=server.write_key, host=server.url, sync_mode=True),
            SegmentClient(write_key=server.write_key, host=server.url, upload_interval=0.05, on_error=on_error, max_retries=1),
        ),
        "rudder": (
            RudderClient(write_key=server.write_key, host=server.url, sync_mode=True),
            RudderClient(write_key=server.write_key, host=server.url, upload_interval=0.05, on_error=on_error, max_retries=1),
        ),
    }


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    result = Delivered()
    with running_server(tmp_path_factory.mktemp("sdk") / "data") as server:
        for sdk, (sync_client, async_client) in _clients(server, result.errors).items():
            for kind, call in _calls(sdk).items():
                ok, message = call(sync_client)
                assert ok
                result.messages[(sdk, kind)] = message
            run = uuid.uuid4().hex[:6]
            result.batched[sdk] = [
                async_client.track(user_id=f"{sdk}-batch-{run}", event="Product Viewed", properties={"n": n})[1]
                for n in range(ASYNC_EVENTS)
            ]
            async_client.flush()
            async_client.join()
            try:
                sync_client.track(user_id=_user(sdk), event="   ")  # a blank event name: 400 invalid_event
                result.rejections[sdk] = None
            except Exception as error:
                result.rejections[sdk] = error
        result.finished = dt.datetime.now(dt.UTC)
        server.wait_drained()
        server.stop()
        with server.store() as store:
            result.rows = {r["message_id"]: r for r in store.rows("SELECT * FROM events")}
            result.quarantine = store.rows("SELECT * FROM quarantine")
    yield result


def _ms(value: str) -> dt.datetime:
    """An SDK's ISO timestamp at the store's millisecond precision."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000).astimezone(dt.UTC)


def _as_sent(value: Any) -> Any:
    """A message part as it went over the wire (the SDKs serialise dates as ISO strings)."""
    return json.loads(json.dumps(value, cls=segment_request.DatetimeSerializer))


def test_only_the_deliberately_bad_events_were_rejected(delivered: Delivered) -> None:
    assert delivered.errors == []  # the background consumers met no error
    quarantined = sorted((q["error"], q["field"], json.loads(q["payload"])["userId"]) for q in delivered.quarantine)
    assert quarantined == sorted(("invalid_event", "event", _user(sdk)) for sdk in SDKS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sdk", SDKS)
def test_every_call_is_stored_as_sent(delivered: Delivered, sdk: str, kind: str) -> None:
    message = delivered.messages[(sdk, kind)]
    row = delivered.rows.get(message["messageId"])
    assert row is not None, f"{sdk} {kind} {message['messageId']} not stored"
    assert row["type"] == kind
    assert row["source"] == "demo-website"
    assert row["user_id"] == _user(sdk)
    assert row["anonymous_id"] == message.get("anonymousId")
    assert row["event"] == ("Order Completed" if kind == "track" else "")
    assert row["name"] == {"page": "Sofas", "screen": "Cart"}.get(kind)
    assert row["group_id"] == (f"{sdk}-company-42" if kind == "group" else None)
    assert row["previous_id"] == (f"{sdk}-anon-1" if kind == "alias" else None)
    assert row["channel"] == "server"  # analytics-python is a server-side library

    context = json.loads(row["context"])
    assert context["library"]["name"] == "analytics-python"
    if kind in ("identify", "track"):
        assert (context["ip"], context["locale"]) == ("203.0.113.5", "ru-RU")

    # Timestamps: the SDK's event time as is (no originalTimestamp is sent), the batch's
    # sentAt, and a receipt time within the test run.
    assert row["timestamp"] == _ms(message["timestamp"])
    assert row["original_timestamp"] is None
    assert delivered.started - dt.timedelta(seconds=1) <= row["sent_at"] <= delivered.finished
    assert delivered.started - dt.timedelta(seconds=1) <= row["received_at"] <= delivered.finished + dt.timedelta(seconds=1)
    if kind == "identify":
        assert row["timestamp"] == HISTORICAL


@pytest.mark.parametrize("sdk", SDKS)
def test_traits_and_properties_are_kept_verbatim(delivered: Delivered, sdk: str) -> None:
    identify = delivered.messages[(sdk, "identify")]
    # RudderStack's SDK moves identify traits into context.traits; both must land in `traits`.
    sent_traits = identify.get("traits") or identify["context"]["traits"]
    assert json.loads(delivered.rows[identify["messageId"]]["traits"]) == _as_sent(sent_traits)
    assert json.loads(delivered.rows[identify["messageId"]]["traits"])["firstName"] == "Анна"

    group = delivered.messages[(sdk, "group")]
    assert json.loads(delivered.rows[group["messageId"]]["traits"]) == {"name": "ACME", "employees": 120}

    track = delivered.messages[(sdk, "track")]
    row = delivered.rows[track["messageId"]]
    properties = json.loads(row["properties"])
    assert properties == _as_sent(track["properties"])
    assert properties["placed_at"] == HISTORICAL.isoformat() and properties["discount"] == 99.9
    assert (row["order_id"], row["total"], row["currency"]) == (f"O-{sdk}-1", 4990.5, "RUB")

    page = delivered.messages[(sdk, "page")]
    assert json.loads(delivered.rows[page["messageId"]]["properties"])["title"] == "Диваны"


@pytest.mark.parametrize("sdk", SDKS)
def test_integrations_are_kept(delivered: Delivered, sdk: str) -> None:
    message = delivered.messages[(sdk, "track")]
    stored = delivered.rows[message["messageId"]]["integrations"]
    expected = message.get("integrations") or None  # RudderStack defaults to {"All": true}; Segment sends {}
    assert (json.loads(stored) if stored else None) == expected


@pytest.mark.parametrize("sdk", SDKS)
def test_background_consumer_batches_arrive_once(delivered: Delivered, sdk: str) -> None:
    sent = delivered.batched[sdk]
    assert len(sent) == ASYNC_EVENTS
    for message in sent:
        row = delivered.rows.get(message["messageId"])
        assert row is not None, f"{sdk} batched message {message['messageId']} missing"
        assert json.loads(row["properties"]) == message["properties"]
        assert row["user_id"] == message["userId"]


@pytest.mark.parametrize("sdk", SDKS)
def test_page_category_is_kept(delivered: Delivered, sdk: str) -> None:
    row = delivered.rows[delivered.messages[(sdk, "page")]["messageId"]]
    assert json.loads(row["properties"]).get("category") == "Catalog"
    assert row["category"] == "Catalog"


@pytest.mark.parametrize("sdk", SDKS)
def test_rejections_reach_the_sdk_as_api_errors(delivered: Delivered, sdk: str) -> None:
    error = delivered.rejections[sdk]
    api_error = segment_request.APIError if sdk == "segment" else rudder_request.APIError
    assert isinstance(error, api_error), f"{sdk} raised {error!r}"
    assert error.status == 400
    assert error.code == "invalid_event"
    assert "event" in error.message
