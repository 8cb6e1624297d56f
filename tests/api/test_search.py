"""Search by trait: the latest value across merged profiles, exact or by prefix, cursor pages; on both engines."""

from __future__ import annotations

from typing import Any

from opencdp.storage.schema import EVENTS
from tests.api.conftest import Api


def identify(message_id: str, at: str, traits: dict[str, Any], **ids: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "timestamp": at, "traits": traits, **ids}


def search(api: Api, headers: dict[str, str] | None = None, **params: Any) -> Any:
    return api.client.get("/api/v1/profiles/search", params=params, headers=headers or api.admin)


def profile_of(api: Api, **params: str) -> str:
    return str(api.client.get("/api/v1/profiles", params=params, headers=api.admin).json()["profile_id"])


def test_matches_the_latest_value_by_event_time_across_merged_profiles(api: Api) -> None:
    api.post("/v1/batch", {"batch": [
        identify("m1", "2024-05-01T10:00:00Z", {"city": "Казань", "points": 42}, userId="u1"),
        identify("m2", "2024-05-03T10:00:00Z", {"city": "Москва"}, userId="u1"),
        identify("m3", "2024-05-02T10:00:00Z", {"city": "Тула"}, userId="u2"),  # older than the anonymous one
        identify("m4", "2024-05-04T10:00:00Z", {"city": "Омск"}, anonymousId="a2"),
        {"type": "alias", "messageId": "m5", "timestamp": "2024-05-05T10:00:00Z", "userId": "u2", "previousId": "a2"},
        identify("m6", "2024-05-06T10:00:00Z", {"city": "Казань"}, userId="u3"),
        identify("m7", "2024-05-07T10:00:00Z", {"city": None}, userId="u3"),  # cleared: matches nothing now
        identify("m8", "2024-05-01T10:00:00Z", {"city": "Казань", "email": "k@example.ru"}, userId="u4"),
    ]})
    api.flush()
    u1, u2, u4 = profile_of(api, user_id="u1"), profile_of(api, user_id="u2"), profile_of(api, user_id="u4")
    assert profile_of(api, anonymous_id="a2") == u2  # merged

    def ids(**params: Any) -> list[str]:
        response = search(api, trait="city", **params)
        assert response.status_code == 200, response.text
        return [p["profile_id"] for p in response.json()["profiles"]]

    assert ids(value="Москва") == [u1]
    assert ids(value="Казань") == [u4]  # u1 moved on, u3 was cleared
    assert ids(value="Омск") == [u2] and ids(value="Тула") == []  # the merged profile's later write wins
    assert ids(value="казань") == []  # exact: case matters
    assert sorted(ids(prefix="М")) == [u1]
    assert sorted(ids(prefix="Ка")) == [u4]
    numbers = search(api, trait="points", value="42").json()
    assert [p["profile_id"] for p in numbers["profiles"]] == [u1] and numbers["profiles"][0]["traits"] == {"points": "42"}
    hit = search(api, trait="city", value="Омск").json()["profiles"][0]
    assert hit["traits"] == {"city": "Омск"} and hit["updated_at"].startswith("2024-05-04T10:00:00")
    assert search(api, trait="nothing_has_this", value="x").json() == {"trait": "nothing_has_this", "profiles": [], "next": None}


def test_cursor_pages_are_ordered_by_profile_id_without_gaps_or_repeats(api: Api) -> None:
    api.post("/v1/batch", {"batch": [
        identify(f"m{i}", f"2024-05-01T10:0{i}:00Z", {"tier": "gold"}, userId=f"u{i}") for i in range(7)
    ]})
    api.flush()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"trait": "tier", "value": "gold", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = search(api, **params).json()
        seen += [p["profile_id"] for p in body["profiles"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and seen == sorted(seen) and len(set(seen)) == 7


def test_bad_input_gets_422_naming_the_parameter(api: Api) -> None:
    cases = [
        ({"value": "x"}, "trait"),
        ({"trait": "city"}, "value"),
        ({"trait": "city", "value": "x", "prefix": "x"}, "value"),
        ({"trait": "city", "prefix": ""}, "prefix"),
        ({"trait": " ", "value": "x"}, "trait"),
        ({"trait": "c" * 201, "value": "x"}, "trait"),
        ({"trait": "city", "value": "x", "limit": 0}, "limit"),
        ({"trait": "city", "value": "x", "limit": 1001}, "limit"),
        ({"trait": "city", "value": "x", "limit": "ten"}, "limit"),
        ({"trait": "city", "value": "x", "cursor": "not a cursor!"}, "cursor"),
    ]
    for params, field in cases:
        response = search(api, **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["field"] == field, (params, response.json())


def test_values_are_parameters_not_sql(api: Api) -> None:
    api.post("/v1/batch", {"batch": [identify("m1", "2024-05-01T10:00:00Z", {"it's": "o'k", "a/b~c": "1"}, userId="u1")]})
    api.flush()
    u1 = profile_of(api, user_id="u1")
    assert [p["profile_id"] for p in search(api, trait="it's", value="o'k").json()["profiles"]] == [u1]
    assert [p["profile_id"] for p in search(api, trait="a/b~c", value="1").json()["profiles"]] == [u1]
    for trait, value in (("city') OR 1=1 --", "x"), ("city", "x' OR '1'='1"), ("city", "{value:String}"), ("$.city", "$value")):
        response = search(api, trait=trait, value=value)
        assert response.status_code == 200 and response.json()["profiles"] == [], (trait, value, response.text)
    assert api.backend.count(EVENTS) == 1


def test_personal_data_is_masked_for_pii_mask_keys(api: Api) -> None:
    api.post("/v1/batch", {"batch": [identify("m1", "2024-05-01T10:00:00Z", {"email": "anna@example.ru"}, userId="u1")]})
    api.flush()
    _, key = api.client.app.state.keys.create("admin", "analyst", scopes=["read", "pii:mask"])  # type: ignore[attr-defined]
    body = search(api, {"Authorization": f"Bearer {key}"}, trait="email", value="anna@example.ru").json()
    assert body["profiles"][0]["traits"] == {"email": "a***@example.ru"}
    assert api.client.get("/api/v1/profiles/search", params={"trait": "email", "value": "x"}).status_code == 401
