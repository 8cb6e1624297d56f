"""Normalising Segment messages: field rules, timestamps, typed columns."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencdp.ingest.segment import Envelope, Rejected, normalize, to_ms

NOW = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
ENVELOPE = Envelope(received_at_ms=NOW, source="test")


def norm(message: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return normalize(message, Envelope(received_at_ms=NOW, source="test", **envelope))


def test_userid_numbers_become_strings_and_blank_ids_do_not_count() -> None:
    row = norm({"type": "identify", "userId": 12345, "anonymousId": "  "})
    assert row["user_id"] == "12345" and row["anonymous_id"] is None
    with pytest.raises(Rejected) as error:
        norm({"type": "identify", "userId": "", "anonymousId": ""})
    assert error.value.field == "userId"


def test_booleans_are_not_ids() -> None:
    with pytest.raises(Rejected, match="string or a number"):
        norm({"type": "identify", "userId": True})


def test_timestamp_precedence() -> None:
    skewed = norm({"type": "track", "event": "A", "userId": "u", "originalTimestamp": "2020-01-01T00:00:00Z", "sentAt": "2020-01-01T00:00:02Z", "timestamp": "2019-01-01T00:00:00Z"})
    assert skewed["timestamp"] == NOW - 2000
    explicit = norm({"type": "track", "event": "A", "userId": "u", "timestamp": "2019-01-01T00:00:00Z"})
    assert explicit["timestamp"] == to_ms("2019-01-01T00:00:00Z", "t")
    batch_sent_at = norm({"type": "track", "event": "A", "userId": "u", "originalTimestamp": "2020-01-01T00:00:00Z"}, sent_at="2020-01-01T00:00:01Z")
    assert batch_sent_at["timestamp"] == NOW - 1000
    assert norm({"type": "track", "event": "A", "userId": "u"})["timestamp"] == NOW


def test_timestamps_without_zone_are_utc_and_epoch_numbers_work() -> None:
    assert to_ms("2024-05-01T12:00:00", "t") == to_ms("2024-05-01T12:00:00Z", "t")
    assert to_ms(1714564800, "t") == to_ms("2024-05-01T12:00:00Z", "t")
    assert to_ms(1714564800000, "t") == to_ms("2024-05-01T12:00:00Z", "t")


def test_future_limit_is_configurable() -> None:
    ahead = dt.datetime.fromtimestamp(NOW / 1000 + 7200, dt.UTC).isoformat()
    norm({"type": "track", "event": "A", "userId": "u", "timestamp": ahead})
    with pytest.raises(Rejected, match="future"):
        norm({"type": "track", "event": "A", "userId": "u", "timestamp": ahead}, max_future_ms=3_600_000)


def test_typed_columns_tolerate_strings_and_ignore_garbage() -> None:
    row = norm({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"orderId": 77, "value": "1999,90", "price": "n/a", "quantity": True}})
    assert row["order_id"] == "77" and row["total"] == 1999.9
    assert row["price"] is None and row["quantity"] is None
    assert '"price":"n/a"' in row["properties"]  # the raw value is never lost


def test_identify_traits_in_context_are_understood() -> None:
    row = norm({"type": "identify", "userId": "u", "context": {"traits": {"email": "a@b.c"}}})
    assert row["traits"] == '{"email":"a@b.c"}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
messages = st.dictionaries(
    st.sampled_from(["type", "userId", "anonymousId", "event", "properties", "traits", "context", "timestamp", "sentAt", "originalTimestamp", "messageId", "groupId", "previousId", "name"]),
    json_values,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(messages)
def test_any_json_message_is_either_a_row_or_a_named_rejection(message: dict[str, Any]) -> None:
    try:
        row = normalize(message, ENVELOPE)
    except Rejected as error:
        assert error.field and error.detail
    else:
        assert row["type"] in {"track", "identify", "page", "screen", "group", "alias"}
        assert row["user_id"] or row["anonymous_id"]
        assert isinstance(row["timestamp"], int)
