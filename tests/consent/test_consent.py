"""Consent per channel and topic, derived from events; the suppression list; the consent API. Every engine."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from opencdp.config import Settings
from opencdp.consent import suppressions
from opencdp.consent.model import ConsentError, Status, parse_event, permits
from opencdp.consent.store import consent_of, current_consents, history
from opencdp.identity.stage import stage_for
from opencdp.ingest.imports import import_file
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from opencdp.keys import KeyRing
from opencdp.storage.base import Backend, LoadBatch
from tests.api.conftest import Api
from tests.imports.conftest import write

ENVELOPE = Envelope(received_at_ms=1_750_000_000_000, source="website")


def send(backend: Backend, *messages: dict[str, Any]) -> list[str]:
    """Store events as the loader does (identity stage first); their profile ids."""
    rows = [{**normalize(m, ENVELOPE), "lsn": 0} for m in messages]
    events, lines = stage_for(backend).resolve(*events_and_lines(rows))
    backend.load(LoadBatch(events, lines))
    return [str(p) for p in events.column("profile_id").to_pylist()]


def identify(user: str, traits: dict[str, Any], message_id: str, at: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits, "messageId": message_id, "timestamp": at}


def track(user: str, event: str, properties: dict[str, Any], message_id: str, at: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "properties": properties, "messageId": message_id, "timestamp": at}


def states(backend: Backend, profile_id: str) -> dict[tuple[str, str], str]:
    return {(c.channel, c.topic): c.status.value for c in current_consents(backend, profile_id)}


# -- the model ---------------------------------------------------------------------
def test_transactional_messages_need_no_marketing_consent() -> None:
    assert permits("unknown", "transactional") and permits("opted_in", "transactional")
    assert not permits("opted_out", "transactional")
    assert permits("opted_in", "marketing")
    assert not any(permits(s, "marketing") for s in ("unknown", "pending", "opted_out"))


def test_rows_without_consent_record_nothing() -> None:
    row = {"message_id": "m", "type": "track", "event": "Order Completed", "timestamp": dt.datetime(2024, 5, 1),
           "source": "web", "properties": '{"channel": "email", "status": "opted_in"}', "traits": None}
    assert parse_event(row).changes == [] and parse_event(row).ignored == []


# -- consent from events -------------------------------------------------------------
def test_unknown_by_default(backend: Backend) -> None:
    [profile] = send(backend, identify("u1", {"email": "anna@example.ru"}, "m1"))
    assert current_consents(backend, profile) == []
    assert consent_of(backend, [profile, "p_nobody"], "email") == {profile: "unknown", "p_nobody": "unknown"}


def test_identify_traits_in_the_consents_shape_and_flat_flags(backend: Backend) -> None:
    [profile] = send(backend, identify("u1", {
        "consents": {"email": {"marketing": "opted_in", "news": "Pending"}, "sms": "opted_out", "push": True},
        "whatsapp_opt_in": True, "viberOptIn": False, "telegramConsent": "opted_in", "web_push_consent": True,
    }, "m1"))
    assert states(backend, profile) == {
        ("email", "marketing"): "opted_in", ("email", "news"): "pending", ("sms", "marketing"): "opted_out",
        ("push", "marketing"): "opted_in", ("whatsapp", "marketing"): "opted_in", ("viber", "marketing"): "opted_out",
        ("telegram", "marketing"): "opted_in", ("web_push", "marketing"): "opted_in",
    }
    [change] = [c for c in current_consents(backend, profile) if c.channel == "email" and c.topic == "news"]
    assert change.via == "traits.consents.email.news" and change.source == "website" and change.message_id == "m1"
    assert change.at.replace(tzinfo=dt.UTC) == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)


def test_consents_object_wins_over_a_flag_in_the_same_event_and_unsubscribed_opts_out_of_email(backend: Backend) -> None:
    profile = send(
        backend,
        identify("u1", {"email_opt_in": True, "consents": {"email": "opted_out"}, "sms_consent": True}, "m1"),
        identify("u1", {"unsubscribed": False}, "m2", "2024-05-02T00:00:00Z"),  # no proof of anything: ignored
    )[0]
    assert states(backend, profile) == {("email", "marketing"): "opted_out", ("sms", "marketing"): "opted_in"}
    send(backend, identify("u1", {"emailOptIn": True}, "m3", "2024-05-03T00:00:00Z"))
    assert states(backend, profile)[("email", "marketing")] == "opted_in"
    send(backend, identify("u1", {"unsubscribed": True}, "m4", "2024-05-04T00:00:00Z"))
    assert states(backend, profile)[("email", "marketing")] == "opted_out"


def test_each_consent_event(backend: Backend) -> None:
    [profile] = send(backend, identify("u1", {"email": "anna@example.ru"}, "m0", "2024-05-01T00:00:00Z"))
    send(backend, track("u1", "Consent Updated", {"channel": "email", "topic": "news", "status": "pending",
                                                  "source": "footer_form", "evidence": {"form": "/subscribe"}}, "m1", "2024-05-02T00:00:00Z"))
    [news] = current_consents(backend, profile)
    assert (news.status, news.source, news.evidence, news.via) == (Status.PENDING, "footer_form", {"form": "/subscribe"}, "event:Consent Updated")
    send(backend, track("u1", "Double Opt-in Confirmed", {"topic": "news"}, "m2", "2024-05-03T00:00:00Z"))
    assert states(backend, profile) == {("email", "news"): "opted_in"}
    send(
        backend,
        track("u1", "Consent Updated", {"channel": "sms", "status": "opted_in"}, "m3", "2024-05-04T00:00:00Z"),
        track("u1", "Consent Updated", {"channel": "push", "status": True}, "m4", "2024-05-04T00:00:00Z"),
        track("u1", "Double Opt-in Confirmed", {"channel": "viber"}, "m5", "2024-05-04T00:00:00Z"),
    )
    send(
        backend,
        track("u1", "Email Unsubscribed", {"topic": "news"}, "m6", "2024-05-05T00:00:00Z"),
        track("u1", "Unsubscribed", {"channel": "sms"}, "m7", "2024-05-05T00:00:00Z"),
        track("u1", "Unsubscribed", {}, "m8", "2024-05-05T00:00:00Z"),  # email, marketing
    )
    assert states(backend, profile) == {
        ("email", "news"): "opted_out", ("email", "marketing"): "opted_out", ("sms", "marketing"): "opted_out",
        ("push", "marketing"): "opted_in", ("viber", "marketing"): "opted_in",
    }


def test_consent_from_the_customers_import(backend: Backend, tmp_path: Path) -> None:
    file = write(tmp_path / "crm.csv", """
        customer_id,email,email_consent,sms_consent,created_at
        C1,ivan@mail.ru,да,0,2023-01-10T09:00:00Z
        C2,petr@mail.ru,false,yes,2023-01-10T09:00:00Z
        C3,oleg@mail.ru,,,2023-01-10T09:00:00Z
        """)
    report = import_file(backend, file, "customers", settings=Settings(data_dir=tmp_path / "data"))
    assert report.events_written == 3
    profiles = {row["user_id"]: row["profile_id"] for row in backend.rows("SELECT user_id, profile_id FROM events")}
    ids = [profiles["C1"], profiles["C2"], profiles["C3"]]
    assert list(consent_of(backend, ids, "email").values()) == ["opted_in", "opted_out", "unknown"]
    assert list(consent_of(backend, ids, "sms").values()) == ["opted_out", "opted_in", "unknown"]
    [email, _sms] = current_consents(backend, profiles["C1"])
    assert (email.source, email.via) == ("import:customers", "traits.email_consent")


def test_the_latest_change_by_event_time_wins_even_when_it_arrives_first(backend: Backend) -> None:
    [profile] = send(backend, track("u1", "Consent Updated", {"channel": "email", "status": "opted_in"}, "m2", "2024-05-02T00:00:00Z"))
    send(backend, track("u1", "Consent Updated", {"channel": "email", "status": "opted_out"}, "m1", "2024-05-01T00:00:00Z"))
    assert consent_of(backend, [profile], "email") == {profile: "opted_in"}
    # Same time: the larger message id wins, on every engine and whatever the arrival order.
    send(
        backend,
        track("u1", "Consent Updated", {"channel": "sms", "status": "opted_in"}, "t-b", "2024-05-03T00:00:00Z"),
        track("u1", "Consent Updated", {"channel": "sms", "status": "opted_out"}, "t-a", "2024-05-03T00:00:00Z"),
    )
    assert consent_of(backend, [profile], "sms") == {profile: "opted_in"}


def test_topics_are_independent(backend: Backend) -> None:
    profile = send(
        backend,
        track("u1", "Consent Updated", {"channel": "email", "topic": "marketing", "status": "opted_in"}, "m1"),
        track("u1", "Consent Updated", {"channel": "email", "topic": "News", "status": "opted_out"}, "m2", "2024-05-02T00:00:00Z"),
    )[0]
    assert consent_of(backend, [profile], "email", "marketing") == {profile: "opted_in"}
    assert consent_of(backend, [profile], "email", "news") == {profile: "opted_out"}
    assert consent_of(backend, [profile], "email", "loyalty") == {profile: "unknown"}
    assert consent_of(backend, [profile], "sms", "marketing") == {profile: "unknown"}


def test_consent_given_on_one_device_counts_after_a_merge(backend: Backend) -> None:
    [phone] = send(backend, {"type": "track", "anonymousId": "a-phone", "event": "Consent Updated", "messageId": "m1",
                             "timestamp": "2024-05-01T00:00:00Z", "properties": {"channel": "push", "status": "opted_in"}})
    [laptop] = send(backend, identify("u1", {"consents": {"email": "opted_in"}}, "m2", "2024-05-02T00:00:00Z"))
    assert phone != laptop
    [merged] = send(backend, {"type": "identify", "anonymousId": "a-phone", "userId": "u1", "messageId": "m3",
                              "timestamp": "2024-05-03T00:00:00Z"})
    expected = {("push", "marketing"): "opted_in", ("email", "marketing"): "opted_in"}
    assert states(backend, phone) == states(backend, laptop) == states(backend, merged) == expected
    assert consent_of(backend, [phone, laptop], "push") == {phone: "opted_in", laptop: "opted_in"}


def test_bad_consent_values_are_ignored_with_a_reason_and_the_event_kept(backend: Backend) -> None:
    profile = send(
        backend,
        identify("u1", {"consents": {"fax": "opted_in", "email": {"Bad Topic!": "opted_in", "marketing": "maybe"}},
                        "sms_opt_in": "yes", "unsubscribed": "no", "email": "anna@example.ru"}, "m1"),
        track("u1", "Consent Updated", {"channel": "email"}, "m2"),
        track("u1", "Consent Updated", {"channel": "pigeon", "status": "opted_in"}, "m3"),
        track("u1", "Unsubscribed", {"channel": "sms", "evidence": "a string"}, "m4"),
        identify("u1", {"consents": ["email"]}, "m5"),
        # Traits other calls carry (context.traits) are an SDK's cache: never read as consent.
        {**track("u1", "Product Viewed", {}, "m6"), "context": {"traits": {"email_opt_in": True}}},
    )[0]
    assert backend.scalar("SELECT count(*) FROM events") == 6
    found = history(backend, [profile])[profile]
    assert [(c.channel, c.status.value) for c in found.current()] == [("sms", "opted_out")]
    reasons = {i.field: i.reason for i in found.ignored}
    assert set(reasons) == {
        "traits.consents.fax", "traits.consents.email.Bad Topic!", "traits.consents.email.marketing",
        "traits.sms_opt_in", "traits.unsubscribed", "properties.status", "properties.channel",
        "properties.evidence", "traits.consents",
    }
    assert "use one of email, sms" in reasons["traits.consents.fax"]
    assert "opted_in, pending, opted_out" in reasons["properties.status"]


def test_consent_of_names_a_bad_channel_or_topic(backend: Backend) -> None:
    with pytest.raises(ConsentError, match="`channel` is 'fax'; use one of email"):
        consent_of(backend, ["p1"], "fax")
    with pytest.raises(ConsentError, match=r"`topic`.*lowercase slug"):
        consent_of(backend, ["p1"], "email", "no spaces")


# -- suppressions --------------------------------------------------------------------
def test_suppressions_add_check_list_remove(backend: Backend) -> None:
    entry = suppressions.add(backend, "email", " Anna@Example.RU ", "hard_bounce", source="esp")
    assert (entry.address, entry.reason) == ("anna@example.ru", "hard_bounce")
    suppressions.add(backend, "sms", "8 916 123-45-67", "complaint")
    suppressions.add(backend, "push", "tok-1")
    assert suppressions.is_suppressed(backend, "email", "anna@example.ru")
    assert suppressions.is_suppressed(backend, "sms", "+7 (916) 123-45-67")
    assert not suppressions.is_suppressed(backend, "whatsapp", "+79161234567")  # per channel
    assert suppressions.suppressed(backend, "email", ["ANNA@example.ru", "bob@example.ru", "not an email"]) == {"ANNA@example.ru"}
    listed = [(s.channel, s.address, s.reason) for s in suppressions.list_suppressions(backend)]
    assert listed == [("email", "anna@example.ru", "hard_bounce"), ("push", "tok-1", "manual"), ("sms", "+79161234567", "complaint")]
    page = suppressions.list_suppressions(backend, after=("email", "anna@example.ru"), limit=1)
    assert [s.channel for s in page] == ["push"]

    removed = suppressions.remove(backend, "email", "ANNA@example.ru")
    assert removed is not None and removed.reason == "hard_bounce"
    assert not suppressions.is_suppressed(backend, "email", "anna@example.ru")
    assert suppressions.remove(backend, "email", "anna@example.ru") is None
    suppressions.add(backend, "email", "anna@example.ru", "complaint")  # back on the list
    assert suppressions.is_suppressed(backend, "email", "anna@example.ru")
    assert len(suppressions.list_suppressions(backend, channel="email")) == 1


def test_suppressions_name_the_bad_field(backend: Backend) -> None:
    cases = [
        (lambda: suppressions.add(backend, "fax", "x"), "channel"),
        (lambda: suppressions.add(backend, "email", "not-an-email"), "address"),
        (lambda: suppressions.add(backend, "sms", "12"), "address"),
        (lambda: suppressions.add(backend, "push", "  "), "address"),
        (lambda: suppressions.add(backend, "email", "a@b.ru", "spam"), "reason"),
        (lambda: suppressions.list_suppressions(backend, address="a@b.ru"), "channel"),
    ]
    for call, field in cases:
        with pytest.raises(ConsentError) as error:
            call()
        assert error.value.field == field and error.value.status == 422


# -- the API ---------------------------------------------------------------------------
def _profile(api: Api, **params: str) -> str:
    response = api.client.get("/api/v1/profiles", params=params, headers=api.admin)
    assert response.status_code == 200, response.text
    return str(response.json()["profile_id"])


def test_api_put_then_get_consents(api: Api) -> None:
    api.post("/v1/identify", {"userId": "u1", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
                              "traits": {"email": "anna@example.ru", "consents": {"email": "opted_out"}}})
    api.flush()
    profile = _profile(api, user_id="u1")
    url = f"/api/v1/profiles/{profile}/consents"
    before = api.client.get(url, headers=api.admin).json()
    assert before["default"] == "unknown"
    assert [(c["channel"], c["topic"], c["status"]) for c in before["consents"]] == [("email", "marketing", "opted_out")]

    response = api.client.put(url, headers=api.admin, json=[
        {"channel": "Email", "status": "opted_in", "source": "checkout", "evidence": {"ip": "203.0.113.42"}},
        {"channel": "sms", "topic": "news", "status": "pending"},
    ])
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["profile_id"] == profile and answer["user_id"] == "u1"
    assert [(r["channel"], r["topic"], r["status"], r["source"]) for r in answer["recorded"]] == [
        ("email", "marketing", "opted_in", "checkout"), ("sms", "news", "pending", "admin-api")]
    api.flush()
    after = {(c["channel"], c["topic"]): c for c in api.client.get(url, headers=api.admin).json()["consents"]}
    assert {k: c["status"] for k, c in after.items()} == {("email", "marketing"): "opted_in", ("sms", "news"): "pending"}
    assert after[("email", "marketing")]["source"] == "checkout"
    assert after[("email", "marketing")]["evidence"]["ip"] == "203.0.113.42"
    assert after[("sms", "news")]["message_id"] == answer["recorded"][1]["message_id"]
    timeline = api.client.get(f"/api/v1/profiles/{profile}/events", headers=api.admin).json()["events"]
    assert [e["event"] for e in timeline[:2]] == ["Consent Updated", "Consent Updated"]  # in the history, as any event

    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    masked = keys.create("admin", "analyst", scopes=["read", "pii:mask"])[1]
    shown = api.client.get(url, headers={"Authorization": f"Bearer {masked}"}).json()
    assert "203.0.113.42" not in str(shown)


def test_api_put_for_an_anonymous_profile_sends_its_anonymous_id(api: Api) -> None:
    api.post("/v1/page", {"anonymousId": "a1", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z"})
    api.flush()
    profile = _profile(api, anonymous_id="a1")
    response = api.client.put(f"/api/v1/profiles/{profile}/consents", headers=api.admin,
                              json=[{"channel": "web_push", "status": True}])
    assert response.status_code == 202 and response.json()["anonymous_id"] == "a1"
    api.flush()
    assert consent_of(api.backend, [profile], "web_push") == {profile: "opted_in"}
    consents = api.client.get(f"/api/v1/profiles/{profile}/consents", headers=api.admin).json()["consents"]
    assert consents[0]["evidence"]["recorded_by"].startswith("key_")


def test_api_consent_bad_input_is_a_clear_4xx(api: Api) -> None:
    api.post("/v1/identify", {"userId": "u1", "messageId": "m1", "traits": {"consents": {"fax": "opted_in"}}})
    api.flush()
    profile = _profile(api, user_id="u1")
    url = f"/api/v1/profiles/{profile}/consents"
    assert api.client.get(url, headers=api.admin).json()["ignored"][0]["field"] == "traits.consents.fax"
    cases: list[tuple[Any, int, str, str]] = [
        ([{"channel": "fax", "status": "opted_in"}], 422, "0.channel", "use one of email"),
        ([{"channel": "email", "status": "yes please"}], 422, "0.status", "opted_in, pending, opted_out"),
        ([{"channel": "email", "status": "opted_in"}, {"channel": "sms", "topic": "Not a slug", "status": "opted_in"}],
         422, "1.topic", "lowercase slug"),
        ([{"channel": "email", "status": "opted_in"}, {"channel": "EMAIL", "topic": "marketing", "status": "opted_out"}],
         422, "1.topic", "one per channel and topic"),
        ([], 422, "$", "empty list"),
        ([{"status": "opted_in"}], 422, "0.channel", "required"),
        ([{"channel": "email", "status": 5}], 422, "0.status", ""),
        ({"channel": "email", "status": "opted_in"}, 422, "$", "JSON list"),
        ([["email"]], 422, "0", "valid dictionary"),
        ([{"channel": "email", "status": "opted_in"}] * 101, 422, "$", "at most 100"),
        ([{"channel": "email", "status": "opted_in", "evidence": {"text": "x" * 40_000}}], 422, "0.evidence", "shorten"),
    ]
    for body, status, field, words in cases:
        response = api.client.put(url, headers=api.admin, json=body)
        assert response.status_code == status, (body, response.text)
        assert (response.json().get("field") or "") == field and words in response.json()["detail"], (body, response.json())
    good = [{"channel": "email", "status": "opted_in"}]
    assert api.client.put("/api/v1/profiles/p_nope/consents", headers=api.admin, json=good).status_code == 404
    assert api.client.get("/api/v1/profiles/p_nope/consents", headers=api.admin).json()["field"] == "profile_id"
    assert api.client.put(url, json=good).status_code == 401
    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    reader = {"Authorization": f"Bearer {keys.create('admin', 'reader', scopes=['read'])[1]}"}
    assert api.client.put(url, headers=reader, json=good).status_code == 403
    assert api.client.get(url, headers=reader).status_code == 200
    api.flush()
    assert api.backend.scalar("SELECT count(*) FROM events WHERE event = 'Consent Updated'") == 0  # nothing half-done


def test_api_suppressions(api: Api) -> None:
    created = api.client.post("/api/v1/suppressions", headers=api.admin,
                              json={"channel": "email", "address": "Anna@Example.ru", "reason": "hard_bounce"})
    assert created.status_code == 201, created.text
    assert created.json()["suppressions"][0]["address"] == "anna@example.ru"
    assert created.json()["suppressions"][0]["source"] == "admin:tests"
    many = api.client.post("/api/v1/suppressions", headers=api.admin, json=[
        {"channel": "sms", "address": "8 916 123-45-67", "reason": "complaint", "source": "sms-gateway"},
        {"channel": "web_push", "address": "https://push.example/send/abc"},
    ])
    assert many.status_code == 201 and [s["address"] for s in many.json()["suppressions"]] == [
        "+79161234567", "https://push.example/send/abc"]

    first = api.client.get("/api/v1/suppressions", headers=api.admin, params={"limit": 2}).json()
    assert [s["channel"] for s in first["suppressions"]] == ["email", "sms"] and first["next"] == "sms:+79161234567"
    rest = api.client.get("/api/v1/suppressions", headers=api.admin, params={"limit": 2, "after": first["next"]}).json()
    assert [s["channel"] for s in rest["suppressions"]] == ["web_push"] and rest["next"] is None
    check = api.client.get("/api/v1/suppressions", headers=api.admin, params={"channel": "sms", "address": "+7 916 1234567"})
    assert [s["reason"] for s in check.json()["suppressions"]] == ["complaint"]

    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    masked = {"Authorization": f"Bearer {keys.create('admin', 'analyst', scopes=['read', 'pii:mask'])[1]}"}
    shown = api.client.get("/api/v1/suppressions", headers=masked).json()["suppressions"]
    assert [s["address"] for s in shown[:2]] == ["a***@example.ru", "+7916*****67"]
    assert api.client.post("/api/v1/suppressions", headers=masked, json={"channel": "email", "address": "b@c.ru"}).status_code == 403

    assert api.client.delete("/api/v1/suppressions/email/ANNA@example.ru", headers=api.admin).status_code == 200
    assert api.client.delete("/api/v1/suppressions/web_push/https://push.example/send/abc", headers=api.admin).status_code == 200
    gone = api.client.delete("/api/v1/suppressions/email/anna@example.ru", headers=api.admin)
    assert gone.status_code == 404 and "not on the suppression list" in gone.json()["detail"]
    left = api.client.get("/api/v1/suppressions", headers=api.admin).json()["suppressions"]
    assert [s["channel"] for s in left] == ["sms"]


def test_api_suppressions_bad_input_is_a_clear_4xx(api: Api) -> None:
    post_cases: list[tuple[Any, str, str]] = [
        ({"channel": "fax", "address": "a@b.ru"}, "channel", "use one of email"),
        ({"channel": "email", "address": "nope"}, "address", "not a valid e-mail address"),
        ({"channel": "sms", "address": "12"}, "address", "international form"),
        ({"channel": "email", "address": "a@b.ru", "reason": "spam"}, "reason", "hard_bounce, complaint"),
        ([{"channel": "email", "address": "a@b.ru"}, {"channel": "email", "address": ""}], "1.address", "required"),
        ([], "$", "empty list"),
        ({"channel": "email"}, "address", "required"),
    ]
    for body, field, words in post_cases:
        response = api.client.post("/api/v1/suppressions", headers=api.admin, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field and words in response.json()["detail"], (body, response.json())
    assert api.client.get("/api/v1/suppressions", headers=api.admin).json()["suppressions"] == []  # all or nothing
    get_cases = [
        ({"address": "a@b.ru"}, "channel"),
        ({"channel": "fax"}, "channel"),
        ({"after": "nonsense"}, "after"),
        ({"limit": 0}, "limit"),
    ]
    for params, field in get_cases:
        response = api.client.get("/api/v1/suppressions", headers=api.admin, params=params)
        assert response.status_code == 422 and response.json()["field"] == field, (params, response.text)
    assert api.client.delete("/api/v1/suppressions/fax/x", headers=api.admin).json()["field"] == "channel"
    assert api.client.delete("/api/v1/suppressions/email/nope", headers=api.admin).json()["field"] == "address"
    assert api.client.get("/api/v1/suppressions").status_code == 401
