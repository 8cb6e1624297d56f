"""The identity stage between the log and the store, on every engine."""

from __future__ import annotations

from typing import Any

from opencdp.identity.stage import IdentityStage, stage_for
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from opencdp.storage.base import Backend, LoadBatch

ENVELOPE = Envelope(received_at_ms=1_750_000_000_000, source="web")


def send(backend: Backend, *messages: dict[str, Any], stage: IdentityStage | None = None) -> list[str | None]:
    rows = [{**normalize(m, ENVELOPE), "lsn": 0} for m in messages]
    events, lines = events_and_lines(rows)
    events, lines = (stage or stage_for(backend)).resolve(events, lines)
    backend.load(LoadBatch(events, lines))
    return events.column("profile_id").to_pylist()


def profile_of_events(backend: Backend) -> dict[str, str]:
    """message id -> canonical profile, read the way segments and reports read it."""
    from sqlglot import exp

    from opencdp.storage.schema import PROFILE_MAP

    query = (
        exp.select(exp.column("message_id", "e").as_("m"), exp.func("coalesce", exp.column("canonical_id", "pm"), exp.column("profile_id", "e")).as_("p"))
        .from_(exp.to_table("events").as_("e"))
        .join(backend.aliased_ref(PROFILE_MAP, "pm"), on="pm.profile_id = e.profile_id", join_type="left")
    )
    return {r["m"]: r["p"] for r in backend.rows(query)}


def test_anonymous_browsing_is_attributed_after_login(backend: Backend) -> None:
    browse = send(
        backend,
        {"type": "page", "anonymousId": "a1", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z"},
        {"type": "track", "anonymousId": "a1", "event": "Product Viewed", "messageId": "m2", "timestamp": "2024-05-01T10:01:00Z"},
    )
    login = send(
        backend,
        {"type": "identify", "anonymousId": "a1", "userId": "u1", "traits": {"email": " Anna@Example.RU "},
         "messageId": "m3", "timestamp": "2024-05-01T10:05:00Z"},
    )
    assert browse[0] == browse[1] == login[0]
    assert backend.scalar("SELECT profile_id FROM identities WHERE identifier = 'email:anna@example.ru'") == login[0]


def test_till_purchase_with_a_loyalty_card_lands_on_the_online_profile(backend: Backend) -> None:
    online = send(
        backend,
        {"type": "identify", "userId": "u7", "traits": {"loyalty_card": "7700 1234 5678"}, "messageId": "m1",
         "timestamp": "2024-05-01T10:00:00Z"},
    )
    # What the POS orders import writes for a purchase without a customer id.
    till = send(
        backend,
        {"type": "track", "event": "Order Completed", "anonymousId": "loyalty:770012345678", "messageId": "o1",
         "timestamp": "2024-05-02T12:00:00Z", "context": {"externalIds": [{"id": "770012345678", "type": "loyalty_card"}]},
         "properties": {"order_id": "O1", "total": 5000, "products": [{"product_id": "P1", "price": 5000, "quantity": 1}]}},
    )
    assert till == online
    assert backend.scalar("SELECT profile_id FROM order_lines WHERE message_id = 'o1'") == online[0]


def test_a_shared_phone_merges_two_profiles_and_history_follows(backend: Backend) -> None:
    web = send(backend, {"type": "track", "anonymousId": "web-1", "event": "Product Viewed", "messageId": "m1",
                         "timestamp": "2024-05-01T10:00:00Z"})
    app = send(backend, {"type": "identify", "anonymousId": "app-1", "traits": {"phone": "8 (916) 123-45-67"},
                         "messageId": "m2", "timestamp": "2024-05-02T10:00:00Z"})
    assert web != app
    send(backend, {"type": "identify", "anonymousId": "web-1", "traits": {"phone": "+7 916 123 45 67"}, "messageId": "m3",
                   "timestamp": "2024-05-03T10:00:00Z"})
    owners = profile_of_events(backend)
    assert owners["m1"] == owners["m2"] == owners["m3"] == web[0]  # the older profile survives
    merge = backend.rows("SELECT merged_id, into_id, message_id, reason FROM profile_merges")
    assert merge == [{"merged_id": app[0], "into_id": web[0], "message_id": "m3", "reason": "shared_identifier"}]


def test_conflicting_user_ids_are_recorded_not_merged(backend: Backend) -> None:
    anna = send(backend, {"type": "identify", "userId": "anna", "traits": {"email": "family@example.ru"}, "messageId": "m1",
                          "timestamp": "2024-05-01T10:00:00Z"})
    boris = send(backend, {"type": "identify", "userId": "boris", "traits": {"email": "family@example.ru"}, "messageId": "m2",
                           "timestamp": "2024-05-02T10:00:00Z"})
    assert anna != boris
    conflicts = backend.rows("SELECT message_id, identifier, profile_id, other_profile_id, reason FROM identity_conflicts")
    assert conflicts == [
        {"message_id": "m2", "identifier": "email:family@example.ru", "profile_id": anna[0], "other_profile_id": boris[0],
         "reason": "user_id_conflict"}
    ]


def test_invalid_and_placeholder_identifiers_never_link_profiles(backend: Backend) -> None:
    first = send(backend, {"type": "identify", "anonymousId": "a1", "traits": {"email": "not-an-email", "phone": "undefined"},
                           "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z"})
    second = send(backend, {"type": "identify", "anonymousId": "a2", "traits": {"email": "not-an-email", "phone": "undefined"},
                            "messageId": "m2", "timestamp": "2024-05-01T11:00:00Z"})
    assert first != second
    assert backend.scalar("SELECT count(*) FROM identities WHERE kind IN ('email', 'phone')") == 0
    assert "not-an-email" in backend.scalar("SELECT traits FROM events WHERE message_id = 'm1'")  # kept as sent


def test_a_restarted_stage_continues_the_stored_graph(backend: Backend) -> None:
    first = send(backend, {"type": "identify", "anonymousId": "a1", "userId": "u1", "messageId": "m1",
                           "timestamp": "2024-05-01T10:00:00Z"})
    restarted = IdentityStage(backend)
    again = send(backend, {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m2",
                           "timestamp": "2024-05-02T10:00:00Z"}, stage=restarted)
    assert again == first


def test_an_unmerge_holds_after_a_restart(backend: Backend) -> None:
    stage = IdentityStage(backend)
    [wife] = send(backend, {"type": "identify", "anonymousId": "wife", "traits": {"phone": "+79160000011"},
                            "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z"}, stage=stage)
    [husband] = send(backend, {"type": "identify", "anonymousId": "husband", "traits": {"email": "h@example.ru"},
                               "messageId": "m2", "timestamp": "2024-05-02T10:00:00Z"}, stage=stage)
    send(backend, {"type": "identify", "anonymousId": "husband", "traits": {"phone": "+79160000011"}, "messageId": "m3",
                   "timestamp": "2024-05-03T10:00:00Z"}, stage=stage)
    assert stage.graph.canonical(husband) == wife
    assert set(stage.unmerge(wife, husband)) == {"anonymous_id:husband", "email:h@example.ru"}
    restarted = IdentityStage(backend)
    [again] = send(backend, {"type": "identify", "anonymousId": "husband", "traits": {"phone": "+79160000011"},
                             "messageId": "m4", "timestamp": "2024-05-04T10:00:00Z"}, stage=restarted)
    # The phone outranks the anonymous id: the event is the wife's; the two stay apart.
    assert again == wife
    assert restarted.graph.canonical(husband) == husband != restarted.graph.canonical(wife)
    assert restarted.graph.profile_of("anonymous_id:husband") == husband
    reasons = backend.rows("SELECT identifier, reason FROM identity_conflicts WHERE message_id = 'm4'")
    assert reasons == [{"identifier": "anonymous_id:husband", "reason": "kept_apart"}]
