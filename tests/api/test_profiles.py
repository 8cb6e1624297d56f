"""Profiles API: lookup by any identifier, the 360° profile, the timeline; on both engines."""

from __future__ import annotations

from pathlib import Path

from opencdp.keys import KeyRing
from tests.api.conftest import Api


def send_journey(api: Api) -> None:
    api.post("/v1/batch", {"batch": [
        {"type": "page", "anonymousId": "a1", "name": "Kitchens", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z"},
        {"type": "identify", "anonymousId": "a1", "userId": "u1", "messageId": "m2", "timestamp": "2024-05-01T10:05:00Z",
         "traits": {"email": "Anna@Example.ru", "phone": "8 916 123-45-67", "firstName": "Анна", "city": "Казань"}},
        {"type": "identify", "userId": "u1", "messageId": "m3", "timestamp": "2024-05-02T09:00:00Z", "traits": {"city": "Москва"}},
        {"type": "track", "anonymousId": "loyalty:7700123", "event": "Order Completed", "messageId": "m4",
         "timestamp": "2024-05-03T12:00:00Z", "properties": {"order_id": "O1", "total": 3000},
         "context": {"externalIds": [{"id": "7700123", "type": "loyalty_card"}], "traits": {"phone": "+79161234567"}}},
    ]})
    api.flush()


def test_lookup_by_any_identifier_finds_one_profile(api: Api) -> None:
    send_journey(api)
    found = {
        api.client.get("/api/v1/profiles", params=params, headers=api.admin).json()["profile_id"]
        for params in ({"email": " anna@example.RU"}, {"phone": "+7 (916) 123-45-67"}, {"user_id": "u1"},
                       {"anonymous_id": "a1"}, {"loyalty_card": "7700123"})
    }
    assert len(found) == 1


def test_profile_has_identifiers_latest_traits_and_activity(api: Api) -> None:
    send_journey(api)
    profile = api.client.get("/api/v1/profiles", params={"user_id": "u1", "include": "activity"}, headers=api.admin).json()
    assert {(i["kind"], i["value"]) for i in profile["identifiers"]} >= {
        ("user_id", "u1"), ("anonymous_id", "a1"), ("email", "anna@example.ru"), ("phone", "+79161234567"),
        ("loyalty_card", "7700123"),
    }
    assert profile["traits"]["city"]["value"] == "Москва"  # the latest by event time wins
    assert profile["traits"]["firstName"]["value"] == "Анна"
    assert profile["events"] == 4
    same = api.client.get(f"/api/v1/profiles/{profile['profile_id']}", headers=api.admin).json()
    assert same["profile_id"] == profile["profile_id"]
    for merged in profile["merged_ids"]:  # an absorbed id answers with the survivor
        assert api.client.get(f"/api/v1/profiles/{merged}", headers=api.admin).json()["profile_id"] == profile["profile_id"]


def test_lookup_answers_the_first_screen_of_the_profile(api: Api) -> None:
    send_journey(api)
    found = api.client.get("/api/v1/profiles", params={"email": "anna@example.ru"}, headers=api.admin).json()
    assert set(found) == {"profile_id", "merged_ids", "identifiers", "traits", "events", "first_seen", "last_seen"}
    assert ("email", "anna@example.ru") in {(i["kind"], i["value"]) for i in found["identifiers"]}
    assert found["first_seen"].startswith("2024-05-01T10:00:00") and found["last_seen"].startswith("2024-05-03T12:00:00")
    full = api.client.get(f"/api/v1/profiles/{found['profile_id']}", headers=api.admin).json()
    full.pop("computed")  # computed traits and stored scores are on the full profile only
    full.pop("scores")
    assert full == found
    params = {"email": "anna@example.ru", "include": "activity"}  # what clients asked for before: the same answer
    assert api.client.get("/api/v1/profiles", params=params, headers=api.admin).json() == found
    response = api.client.get("/api/v1/profiles", params={"email": "anna@example.ru", "include": "events"}, headers=api.admin)
    assert response.status_code == 422 and response.json()["field"] == "include" and "activity" in response.json()["detail"]


def test_timeline_is_newest_first_and_paginated(api: Api) -> None:
    send_journey(api)
    profile_id = api.client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=api.admin).json()["profile_id"]
    first = api.client.get(f"/api/v1/profiles/{profile_id}/events", params={"limit": 3}, headers=api.admin).json()
    assert [e["message_id"] for e in first["events"]] == ["m4", "m3", "m2"]
    rest = api.client.get(
        f"/api/v1/profiles/{profile_id}/events", params={"limit": 3, "before": first["next"]}, headers=api.admin
    ).json()
    assert [e["message_id"] for e in rest["events"]] == ["m1"] and rest["next"] is None


def test_bad_lookups_are_clear_4xx(api: Api) -> None:
    send_journey(api)
    cases = [
        ({}, 422, "exactly one"),
        ({"email": "a@b.ru", "phone": "+79161234567"}, 422, "exactly one"),
        ({"email": "not-an-email"}, 422, "not a usable email"),
        ({"email": "nobody@example.ru"}, 404, "no profile"),
    ]
    for params, status, words in cases:
        response = api.client.get("/api/v1/profiles", params=params, headers=api.admin)
        assert response.status_code == status, (params, response.text)
        assert words in response.json()["detail"]
    assert api.client.get("/api/v1/profiles/p_nope", headers=api.admin).status_code == 404
    assert api.client.get("/api/v1/profiles", params={"user_id": "u1"}).status_code == 401


def test_pii_is_masked_for_masked_keys(api: Api) -> None:
    send_journey(api)
    keys: KeyRing = api.client.app.state.keys  # type: ignore[attr-defined]
    masked = keys.create("admin", "analyst", scopes=["read", "pii:mask"])[1]
    params = {"user_id": "u1", "include": "activity"}
    profile = api.client.get("/api/v1/profiles", params=params, headers={"Authorization": f"Bearer {masked}"}).json()
    text = str(profile)
    assert "anna@example.ru" not in text and "+79161234567" not in text and "Анна" not in text


def test_a_wrong_merge_is_undone_and_stays_undone(api: Api) -> None:
    api.post("/v1/batch", {"batch": [
        {"type": "identify", "anonymousId": "wife", "traits": {"email": "wife@example.ru", "phone": "+79160000011"},
         "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z"},
        {"type": "identify", "anonymousId": "husband", "traits": {"email": "husband@example.ru"},
         "messageId": "m2", "timestamp": "2024-05-02T10:00:00Z"},
        # The husband types his wife's phone at the till: the two profiles merge.
        {"type": "identify", "anonymousId": "husband", "traits": {"phone": "+79160000011"},
         "messageId": "m3", "timestamp": "2024-05-03T10:00:00Z"},
    ]})
    api.flush()
    merged = api.client.get("/api/v1/profiles", params={"email": "husband@example.ru"}, headers=api.admin).json()
    assert len(merged["merged_ids"]) == 1
    split_id = merged["merged_ids"][0]
    response = api.client.post(f"/api/v1/profiles/{merged['profile_id']}/unmerge", json={"merged_id": split_id}, headers=api.admin)
    assert response.status_code == 200, response.text
    assert set(response.json()["moved_identifiers"]) == {"anonymous_id:husband", "email:husband@example.ru"}
    husband = api.client.get("/api/v1/profiles", params={"email": "husband@example.ru"}, headers=api.admin).json()
    wife = api.client.get("/api/v1/profiles", params={"email": "wife@example.ru"}, headers=api.admin).json()
    assert husband["profile_id"] == split_id != wife["profile_id"]
    # The same shared phone again does not merge them back.
    api.post("/v1/track", {"anonymousId": "husband", "event": "Order Completed", "messageId": "m4",
                           "timestamp": "2024-05-04T10:00:00Z", "context": {"traits": {"phone": "+79160000011"}}})
    api.flush()
    again = api.client.get("/api/v1/profiles", params={"email": "husband@example.ru"}, headers=api.admin).json()
    assert again["profile_id"] == split_id and again["merged_ids"] == []
    bad = api.client.post(f"/api/v1/profiles/{wife['profile_id']}/unmerge", json={"merged_id": "p_nope"}, headers=api.admin)
    assert bad.status_code == 409 and "merged_ids" in bad.json()["detail"]


def test_full_profile_has_computed_traits_builtin_and_configured(api: Api, tmp_path: Path) -> None:
    send_journey(api)
    traits_file = tmp_path / "traits.toml"
    traits_file.write_text(
        '[[traits]]\nname = "pages_seen"\naggregation = "count"\nwhere = [{ field = "type", op = "=", value = "page" }]\n'
    )
    api.client.app.state.settings.computed_traits_file = traits_file  # type: ignore[attr-defined]
    profile_id = api.client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=api.admin).json()["profile_id"]
    computed = api.client.get(f"/api/v1/profiles/{profile_id}", headers=api.admin).json()["computed"]
    assert computed["orders"] == 1 and computed["revenue"] == 3000
    assert computed["pages_seen"] == 1


def test_full_profile_lists_stored_scores(api: Api) -> None:
    from opencdp.profiles.scores import write_scores

    send_journey(api)
    profile_id = api.client.get("/api/v1/profiles", params={"user_id": "u1"}, headers=api.admin).json()["profile_id"]
    write_scores(api.backend, "churn_probability", [profile_id, "someone_else"], [0.83, 0.1], model_version="v1")
    write_scores(api.backend, "rfm_cell", [profile_id], ["at_risk"], model_version="v1")
    scores = api.client.get(f"/api/v1/profiles/{profile_id}", headers=api.admin).json()["scores"]
    assert scores == {"churn_probability": 0.83, "rfm_cell": "at_risk"}
