"""The recommendations API on every engine: blocks, serving with write and admin keys, rate limits,
session freshness through /v1/track, the block report with A/B variants."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opencdp.storage.base import Backend
from opencdp.web.app import create_app
from tests.api.conftest import Api, basic, make_settings
from tests.recommendations.conftest import write_shop

BASE = "/api/v1/recommendations"


@pytest.fixture
def api(backend: Backend, tmp_path: Path) -> Iterator[Api]:
    write_shop(backend)
    settings = make_settings(tmp_path, loader_interval_s=3600, recs_public_rate_per_s=5, recs_personal_algorithm="item_knn",
                             recs_train_in_subprocess=False)
    app = create_app(settings, backend=backend)
    with TestClient(app) as client:
        _, write_key = app.state.keys.create("write", "website")
        _, admin_key = app.state.keys.create("admin", "tests")
        yield Api(client, backend, write_key, admin_key)


def create(api: Api, body: dict[str, Any]) -> Any:
    answer = api.client.post(f"{BASE}/blocks", json=body, headers=api.admin)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_blocks_crud_and_validation(api: Api) -> None:
    created = create(api, {"id": "for_you", "algorithm": "personal", "size": 4, "rules": {"max_per_category": 2}})
    assert created["rules"]["max_per_category"] == 2 and created["name"] == "for_you"
    again = api.client.post(f"{BASE}/blocks", json={"id": "for_you", "algorithm": "popular"}, headers=api.admin)
    assert again.status_code == 409 and again.json()["field"] == "id"
    bad = api.client.post(f"{BASE}/blocks", json={"id": "x", "algorithm": "popular",
                                                   "rules": {"repurchase_days": {"Living room": "a year"}}}, headers=api.admin)
    assert bad.status_code == 422 and bad.json()["field"] == "rules.repurchase_days.Living room"
    assert "whole number of days" in bad.json()["detail"]
    unknown = api.client.post(f"{BASE}/blocks", json={"id": "x", "algorithm": "magic"}, headers=api.admin)
    assert unknown.status_code == 422 and unknown.json()["field"] == "algorithm" and "personal" in unknown.json()["detail"]
    reserved = api.client.post(f"{BASE}/blocks", json={"id": "blocks", "algorithm": "popular"}, headers=api.admin)
    assert reserved.status_code == 422
    changed = api.client.put(f"{BASE}/blocks/for_you", json={"id": "for_you", "algorithm": "trending", "size": 3},
                             headers=api.admin)
    assert changed.status_code == 200 and changed.json()["algorithm"] == "trending"
    assert [b["id"] for b in api.client.get(f"{BASE}/blocks", headers=api.admin).json()["blocks"]] == ["for_you"]
    served = api.client.get(f"{BASE}/for_you", headers=api.admin).json()
    assert served["algorithm"] == "trending" and len(served["items"]) == 3  # the change is served at once
    assert api.client.delete(f"{BASE}/blocks/for_you", headers=api.admin).status_code == 200
    gone = api.client.get(f"{BASE}/for_you", headers=api.admin)
    assert gone.status_code == 404 and "no recommendation block `for_you`" in gone.json()["detail"]
    assert api.client.post(f"{BASE}/blocks", json={"id": "y", "algorithm": "popular"}, headers=api.auth).status_code == 401


def test_serving_with_write_key_and_errors(api: Api) -> None:
    create(api, {"id": "similar", "algorithm": "similar", "size": 3})
    answer = api.client.get(f"{BASE}/similar", params={"product_id": "K1", "anonymous_id": "anon-new"}, headers=api.auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["items"][0]["product_id"] == "K2" and body["recommendation_id"] and body["model_version"]
    by_query = api.client.get(f"{BASE}/similar", params={"product_id": "K1", "write_key": api.write_key})
    assert by_query.status_code == 200
    missing = api.client.get(f"{BASE}/similar", params={"product_id": "NOPE"}, headers=api.auth)
    assert missing.status_code == 404 and missing.json()["field"] == "product_id"
    ghost = api.client.get(f"{BASE}/similar", params={"profile_id": "ghost"}, headers=api.auth)
    assert ghost.status_code == 404 and "no profile `ghost`" in ghost.json()["detail"]
    bad_limit = api.client.get(f"{BASE}/similar", params={"limit": 0}, headers=api.auth)
    assert bad_limit.status_code == 422 and bad_limit.json()["field"] == "limit"
    assert api.client.get(f"{BASE}/similar").status_code == 401
    assert api.client.get(f"{BASE}/similar", headers=basic("wk_forged")).status_code == 401
    # the write key is read-only: no block management
    assert api.client.get(f"{BASE}/blocks", headers=api.auth).status_code == 401
    # rate-limited per address for write keys (5/s, bursts of 10); admin keys are not
    statuses = [api.client.get(f"{BASE}/similar", params={"product_id": "K1"}, headers=api.auth).status_code
                for _ in range(15)]
    assert 429 in statuses
    assert all(api.client.get(f"{BASE}/similar", params={"product_id": "K1"}, headers=api.admin).status_code == 200
               for _ in range(15))


def test_a_product_view_changes_the_personal_block_within_seconds(api: Api) -> None:
    create(api, {"id": "for_you", "algorithm": "personal", "size": 3})
    query = {"anonymous_id": "anon-k5"}
    before = api.client.get(f"{BASE}/for_you", params=query, headers=api.auth).json()
    assert before["profile_id"] == "k5" and before["fallback"] is None
    started = time.monotonic()
    for product in ("L1", "L2", "L3"):
        sent = api.post("/v1/track", {"anonymousId": "anon-k5", "event": "Product Viewed", "properties": {"product_id": product}})
        assert sent.status_code == 200, sent.text
    api.flush()
    after = api.client.get(f"{BASE}/for_you", params=query, headers=api.auth).json()
    elapsed = time.monotonic() - started
    assert [i["product_id"] for i in after["items"]] != [i["product_id"] for i in before["items"]]
    assert any(i["category"].startswith("Living room") for i in after["items"]) and elapsed < 2.0
    # a brand-new visitor's first views steer the block too (no model row for them yet)
    api.post("/v1/track", {"anonymousId": "fresh-visitor", "event": "Product Viewed", "properties": {"product_id": "B1"}})
    api.flush()
    fresh = api.client.get(f"{BASE}/for_you", params={"anonymous_id": "fresh-visitor"}, headers=api.auth).json()
    assert fresh["fallback"] is None and fresh["items"][0]["product_id"] in {"B2", "B3"}


def test_report_attributes_conversions_to_variants(api: Api) -> None:
    create(api, {"id": "ab", "algorithm": "popular", "variants": [{"name": "a"}, {"name": "b", "algorithm": "trending"}]})
    events = []
    for n in range(4):
        user = f"shopper{n}"
        variant = "a" if n < 2 else "b"
        events.append({"type": "track", "userId": user, "event": "Recommendation Shown",
                       "properties": {"block": "ab", "variant": variant, "product_ids": ["K1", "K2"]}})
        if n % 2 == 0:
            events.append({"type": "track", "userId": user, "event": "Recommendation Clicked",
                           "properties": {"block": "ab", "variant": variant, "product_id": "K2"}})
            events.append({"type": "track", "userId": user, "event": "Order Completed",
                           "properties": {"order_id": f"ord{n}", "products": [{"product_id": "K2", "price": 1200, "quantity": 1}]}})
    events.append({"type": "track", "userId": "shopper1", "event": "Product Clicked",
                   "properties": {"product_id": "K1", "recommendation_block": "ab", "recommendation_variant": "a"}})
    events.append({"type": "track", "userId": "other", "event": "Recommendation Shown", "properties": {"block": "other"}})
    sent = api.post("/v1/batch", {"batch": events})
    assert sent.status_code == 200, sent.text
    api.flush()
    report = api.client.get(f"{BASE}/blocks/ab/report", params={"min_impressions": 1}, headers=api.admin).json()
    rows = {v["variant"]: v for v in report["variants"]}
    assert rows["a"]["impressions"] == 2 and rows["a"]["clicks"] == 2 and rows["a"]["conversions"] == 1
    assert rows["b"]["impressions"] == 2 and rows["b"]["clicks"] == 1 and rows["b"]["conversions"] == 1
    assert rows["a"]["revenue"] == 1200.0 and rows["a"]["ctr"] == 1.0
    assert report["winner"] is None and "p >= 0.05" in report["reason"]
    assert api.client.get(f"{BASE}/blocks/nope/report", headers=api.admin).status_code == 404


def test_retrain_through_the_api_swaps_the_model(api: Api) -> None:
    if api.backend.capabilities.dialect == "duckdb":  # once: a child process trains (seconds to start one)
        api.client.app.state.recommendations.settings.recs_train_in_subprocess = True  # type: ignore[attr-defined]
    first = api.client.get(f"{BASE}/model", headers=api.admin).json()["version"]
    trained = api.client.post(f"{BASE}/train", headers=api.admin)
    assert trained.status_code == 200 and trained.json()["version"] != first
    assert api.client.get(f"{BASE}/model", headers=api.admin).json()["version"] == trained.json()["version"]


def test_the_server_records_impressions_and_clicks_of_its_blocks(api: Api) -> None:
    create(api, {"id": "pop", "algorithm": "popular", "size": 3})
    served = api.client.get(f"{BASE}/pop", params={"anonymous_id": "anon-k2"}, headers=api.auth).json()
    item = served["items"][0]
    followed = api.client.get(item["click_url"], follow_redirects=False)  # the tracked link: no key needed
    assert followed.status_code == 302 and followed.headers["location"] == item["url"]
    # a site that echoes the recommendation_id in its own Product Clicked (no block property)
    echoed = api.client.get(f"{BASE}/pop", params={"anonymous_id": "anon-k3"}, headers=api.auth).json()
    sent = api.post("/v1/track", {"anonymousId": "anon-k3", "event": "Product Clicked",
                                  "properties": {"product_id": echoed["items"][1]["product_id"],
                                                 "recommendation_id": echoed["recommendation_id"]}})
    assert sent.status_code == 200
    # and one that also sends its own impression of the first answer: counted once
    api.post("/v1/track", {"anonymousId": "anon-k2", "event": "Recommendation Shown", "messageId": f"rec-{served['recommendation_id']}",
                           "properties": {"block": "pop", "recommendation_id": served["recommendation_id"]}})
    api.flush()
    engine = api.client.app.state.recommendations  # type: ignore[attr-defined]
    engine._flush_impressions()
    report = api.client.get(f"{BASE}/blocks/pop/report", params={"min_impressions": 1}, headers=api.admin).json()
    row = report["variants"][0]
    assert row["impressions"] == 2 and row["clicks"] == 2 and row["viewers"] == 2, report
    assert api.client.get(f"{BASE}/model", headers=api.admin).json()["impressions"]["written"] == 2  # the site sent the first itself
    # links only ever lead to the product's own page
    assert api.client.get(f"{BASE}/clicks/{served['recommendation_id']}", params={"block": "pop", "product_id": "X2x"},
                          follow_redirects=False).status_code == 404
    assert api.client.get(f"{BASE}/clicks/not-an-id", params={"block": "pop", "product_id": "K1"},
                          follow_redirects=False).status_code == 422
