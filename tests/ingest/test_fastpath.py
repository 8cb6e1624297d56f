"""The typed fast path gives exactly the row the general normaliser gives, or steps aside."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencdp.ingest.fastpath import normalize_json
from opencdp.ingest.segment import Envelope, Rejected, normalize

ENVELOPE = Envelope(
    received_at_ms=1_700_000_000_000, source="web", sent_at="2023-11-14T22:13:20.500Z"
)
JSON_COLUMNS = ("properties", "traits", "context", "integrations")


def general(message: Any, envelope: Envelope = ENVELOPE) -> dict[str, Any] | None:
    try:
        return normalize(msgspec.json.decode(msgspec.json.encode(message)), envelope)
    except Rejected:
        return None


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    if row["message_id"].startswith("ocdp-"):
        row["message_id"] = "generated"
    for column in JSON_COLUMNS:
        row[column] = json.loads(row[column]) if row[column] is not None else None
    return row


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["", " ", "x", " padded ", "1,5", "12.50", "Cosmetics", "2024-05-01T12:30:00Z", "P-1"]
    ),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
timestamps = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2024-05-01T12:30:00Z",
            "2024-05-01T12:30:00.123+03:00",
            "2024-05-01 12:30:00",
            "2024-05-01T12:30:00.1234567z",
            " 2024-05-01T12:30:00Z ",
            "2999-01-01T00:00:00Z",
            "1850-01-01T00:00:00Z",
            "yesterday",
            "",
        ]
    ),
    st.integers(-(10**14), 10**14),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
ids = st.one_of(
    st.none(),
    st.sampled_from(["u1", " u1", "u1 ", "", "x" * 600, "анон"]),
    st.integers(-5, 5),
    st.booleans(),
)
line = st.dictionaries(
    st.sampled_from(
        [
            "product_id",
            "productId",
            "id",
            "sku",
            "name",
            "category",
            "brand",
            "price",
            "quantity",
            "discount",
            "x",
        ]
    ),
    values,
    max_size=5,
)
properties = st.dictionaries(
    st.sampled_from(
        [
            "order_id",
            "orderId",
            "revenue",
            "total",
            "value",
            "currency",
            "product_id",
            "productId",
            "category",
            "price",
            "quantity",
            "store_id",
            "storeId",
            "path",
            "products",
        ]
    ),
    values | st.lists(line | scalars, max_size=3),
    max_size=6,
)
context = st.dictionaries(
    st.sampled_from(["library", "channel", "app", "page", "userAgent", "traits", "ip"]),
    values
    | st.fixed_dictionaries(
        {"name": st.sampled_from(["analytics.js", "analytics-ios", "custom", ""])}
    ),
    max_size=4,
)
objects = {
    "properties": properties | values,
    "traits": st.dictionaries(st.text(max_size=5), values, max_size=3) | values,
    "context": context | values,
    "integrations": st.dictionaries(st.text(max_size=5), values, max_size=2),
}
good_ids = st.sampled_from(["u1", "u2", "анон-1", "a" * 512])
good_times = st.sampled_from(
    ["2023-11-14T22:13:20Z", "2023-11-14T20:13:20.250+03:00", "2023-11-14 22:13:20"]
)
good_objects = {
    "properties": properties,
    "traits": st.dictionaries(
        st.sampled_from(["email", "name", "phone"]), st.text(max_size=6), max_size=3
    ),
    "context": context,
    "integrations": st.dictionaries(
        st.sampled_from(["All", "Mixpanel"]), st.booleans(), max_size=2
    ),
}
# Mostly well-formed messages (so the fast path is exercised), each field sometimes odd.
messages = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "track", "identify", "page", "screen", "group", "alias"]),
        "event": st.sampled_from(["Order Completed", "Product Viewed", " Padded "]),
        "userId": good_ids,
        "groupId": good_ids,
        "previousId": good_ids,
    },
    optional={
        "anonymousId": good_ids | ids,
        "messageId": good_ids | ids,
        "name": st.sampled_from(["Home", "Catalog"]) | values,
        "channel": st.sampled_from(["Web", "", "pos"]) | values,
        "category": st.sampled_from(["Docs", ""]) | values,
        "timestamp": good_times | timestamps,
        "originalTimestamp": good_times | timestamps,
        "sentAt": good_times | timestamps,
        **{name: strategy | strategy | objects[name] for name, strategy in good_objects.items()},
    },
).flatmap(
    lambda message: st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["Track", "", "bogus"]) | values,
            "event": st.sampled_from(["", "x" * 201]) | values,
            "userId": ids,
            "groupId": ids,
            "previousId": ids,
        },
    ).map(lambda odd: {**message, **odd})
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_fast_path_equals_general_path(message: dict[str, Any]) -> None:
    fast = normalize_json(msgspec.json.encode(message), ENVELOPE)
    if fast is None:
        return  # stepped aside: the general path decides
    slow = general(message)
    assert slow is not None, "the fast path accepted a message the general path rejects"
    assert comparable(fast) == comparable(slow)


@pytest.mark.parametrize(
    "message",
    [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "messageId": "m1",
            "originalTimestamp": "2023-11-14T22:13:20Z",
            "context": {"library": {"name": "analytics.js"}, "page": {"path": "/"}},
            "properties": {
                "order_id": "O1",
                "total": 2500.5,
                "currency": "RUB",
                "products": [
                    {"product_id": "P1", "category": "Cosmetics", "price": 1250.25, "quantity": 2}
                ],
            },
        },
        {
            "type": "identify",
            "anonymousId": "a1",
            "traits": {"email": "a@b.ru"},
            "timestamp": "2023-11-14T20:00:00+03:00",
        },
        {
            "type": "page",
            "userId": "u1",
            "name": "Home",
            "properties": {"path": "/"},
            "context": {"app": {"name": "x"}},
        },
        {"type": "alias", "userId": "u1", "previousId": "a1"},
        {"type": "group", "userId": "u1", "groupId": "g1", "traits": {}},
    ],
)
def test_common_messages_take_the_fast_path(message: dict[str, Any]) -> None:
    fast = normalize_json(msgspec.json.encode(message), ENVELOPE)
    assert fast is not None
    slow = general(message)
    assert slow is not None
    assert comparable(fast) == comparable(slow)


def test_raw_json_is_kept_as_sent_and_invalid_utf8_goes_the_general_way() -> None:
    raw = b'{"type":"track","event":"E","userId":"u","properties":{"a": 1 , "b":"\\u0416"}}'
    row = normalize_json(raw, ENVELOPE)
    assert row is not None and json.loads(row["properties"]) == {"a": 1, "b": "Ж"}
    assert (
        normalize_json(b'{"type":"track","event":"E","userId":"u","junk":"\xff"}', ENVELOPE) is None
    )
