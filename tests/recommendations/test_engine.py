"""Every algorithm and business rule on the small shop, on every engine, through ``Engine.recommend``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from opencdp.config import Settings
from opencdp.recommendations import blocks, recommend
from opencdp.recommendations.blocks import Block, BlockNotFound
from opencdp.recommendations.engine import Engine, NotFound
from opencdp.recommendations.rules import RuleError
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES
from tests.recommendations.conftest import NOW, table_of


def engine_for(backend: Backend, tmp_path: Path, personal: str = "item_knn") -> Engine:
    engine = Engine(backend, Settings(data_dir=tmp_path / "data", recs_personal_algorithm=personal))  # type: ignore[arg-type]
    engine.train(dataclasses.replace(engine.params(), personal=personal, threads=1))  # type: ignore[arg-type]
    return engine


def block(algorithm: str, size: int = 5, **rules: Any) -> Block:
    return Block.parse({"id": f"b_{algorithm}", "algorithm": algorithm, "size": size, "rules": rules})


def ids(answer: dict[str, Any]) -> list[str]:
    return [i["product_id"] for i in answer["items"]]


@pytest.fixture(scope="module")
def engine(shared_shop: Backend, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return engine_for(shared_shop, tmp_path_factory.mktemp("engine"))


def test_popular_leaves_out_unsellable_products_and_serves_new_visitors(engine: Engine) -> None:
    answer = engine.recommend(block("popular"), anonymous_id="never-seen")
    assert answer["profile_id"] is None and answer["variant"] == "default"
    assert "X1" not in ids(answer)  # the most viewed product, but out of stock
    assert "X2" not in ids(answer)  # no image
    assert ids(answer)[0] in {"K1", "K2"}
    assert len(ids(answer)) == 5 and answer["recommendation_id"]
    product = answer["items"][0]
    assert product["url"].startswith("https://") and product["image_url"] and product["price"] > 0
    # by category: the categories rule, or category= on the request
    kitchen = engine.recommend(block("most_bought"), category="Living room")
    assert ids(kitchen) == ["L1"] or set(ids(kitchen)) <= {"L1", "L2", "L3"}
    assert ids(engine.recommend(block("most_bought", categories=["Bathroom"])))[:2] == ["B1", "B2"]


def test_popular_by_region(engine: Engine) -> None:
    kazan = engine.recommend(block("most_bought", size=2, fill_with_popular=False), region="Kazan")
    assert ids(kazan)[0] == "L1" and set(ids(kazan)) <= {"L1", "L2", "L3"}  # only living-room people live in Kazan
    moscow = engine.recommend(block("most_bought", size=2, fill_with_popular=False), region="Moscow")
    assert ids(moscow)[0] in {"K1", "K3", "K4"} and "L1" not in ids(moscow)
    nowhere = engine.recommend(block("most_bought", size=2), region="Atlantis")
    assert nowhere["fallback"] == "popular" and len(nowhere["items"]) == 2


def test_personal_for_a_new_visitor_falls_back_to_popular(engine: Engine) -> None:
    answer = engine.recommend(block("personal"), anonymous_id="new-visitor")
    assert answer["fallback"] == "popular" and all(i["fallback"] for i in answer["items"])
    assert ids(answer) == ids(engine.recommend(block("popular"), anonymous_id="new-visitor"))


def test_bought_together_uses_support_confidence_and_lift(engine: Engine) -> None:
    answer = engine.recommend(block("bought_together", size=1, fill_with_popular=False), product_ids=["K1"])
    assert ids(answer) == ["K3"] and answer["fallback"] is None
    strict = engine.recommend(block("bought_together", size=3, min_lift=50.0, fill_with_popular=False), product_ids=["K1"])
    assert ids(strict) == []
    filled = engine.recommend(block("bought_together", size=3, min_support=0.9), product_ids=["K1"])
    assert filled["fallback"] == "popular" and "K1" not in ids(filled)  # the context product is never offered


def test_complementary_learns_what_follows_in_another_category(engine: Engine) -> None:
    answer = engine.recommend(block("complementary", size=2, fill_with_popular=False), product_ids=["B1"])
    assert ids(answer)[0] == "B2"
    assert all(i["category"] != "Bathroom > Hair > Shampoo" for i in answer["items"])


def test_similar_mixes_attributes_and_co_views(engine: Engine) -> None:
    answer = engine.recommend(block("similar", size=3), product_ids=["K1"])
    assert ids(answer)[0] == "K2"  # same category, brand, colour, close price, viewed by the same people
    assert "K1" not in ids(answer)
    sofa = engine.recommend(block("similar", size=2), product_ids=["L1"])
    assert set(ids(sofa)) <= {"L2", "L3"}


def test_personal_follows_the_history(engine: Engine) -> None:
    kitchen = engine.recommend(block("personal", size=3, exclude_purchased=False), profile_id="k9")
    assert all(i["category"].startswith("Kitchen") for i in kitchen["items"]), kitchen
    living = engine.recommend(block("personal", size=3, exclude_purchased=False), profile_id="l5")
    assert all(i["category"].startswith("Living room") for i in living["items"]), living
    merged = engine.recommend(block("personal", size=3, exclude_purchased=False), profile_id="k0-old")
    assert merged["profile_id"] == "k0"  # a merged-away id serves its surviving profile
    by_user = engine.recommend(block("personal", size=3), user_id="kitchen-fan")
    assert by_user["profile_id"] == "k1"


def test_bought_products_wait_for_their_repurchase_window(engine: Engine) -> None:
    durable = block("most_bought", size=12, repurchase_days={"Living room": 365})
    assert "L1" not in ids(engine.recommend(durable, profile_id="l0"))  # bought 25 days ago
    short = block("most_bought", size=12, repurchase_days={"Living room": 10})
    assert "L1" in ids(engine.recommend(short, profile_id="l0"))
    forever = block("most_bought", size=12)
    assert "L1" not in ids(engine.recommend(forever, profile_id="l0"))  # default: a durable product never again
    # shampoo lasts 30 days: bought 40 days ago, it is offered again; the conditioner bought 33 days ago too
    assert {"B1", "B2"} <= set(ids(engine.recommend(forever, profile_id="b0")))
    assert "K3" not in ids(engine.recommend(forever, profile_id="k0"))


def test_pins_boosts_and_diversity(engine: Engine) -> None:
    pinned = engine.recommend(block("popular", size=4, pinned=["B3", "X1"]))
    assert ids(pinned)[0] == "B3" and "X1" not in ids(pinned)  # a pinned product still needs stock
    boosted = engine.recommend(block("popular", size=3, boosted={"Bathroom": 1000.0}))
    assert all(i["category"].startswith("Bathroom") for i in boosted["items"])
    diverse = engine.recommend(block("popular", size=6, max_per_category=1))
    categories = [i["category"] for i in diverse["items"]]
    assert len(categories) == len(set(categories)) == 6
    cheap = engine.recommend(block("popular", size=20, max_price=1000.0, min_price=400.0))
    assert cheap["items"] and all(400 <= i["price"] <= 1000 for i in cheap["items"])
    excluded = engine.recommend(block("popular", size=20, exclude_categories=["Kitchen"]))
    assert not any(i["category"].startswith("Kitchen") for i in excluded["items"])


def test_recently_viewed_newest_first(engine: Engine) -> None:
    answer = engine.recommend(block("recently_viewed", size=5, exclude_purchased=False), profile_id="k0")
    assert "K1" not in ids(engine.recommend(block("recently_viewed", size=5), profile_id="k0"))  # bought
    assert ids(answer)[0] == "K4" and set(ids(answer)) == {"K1", "K2", "K4"}  # X1 is out of stock


def test_unknown_block_profile_and_product_are_404(engine: Engine) -> None:
    blocks.save(engine.backend, block("popular"))
    with pytest.raises(BlockNotFound, match="no recommendation block `nope`; blocks are: b_popular"):
        engine.recommend("nope")
    with pytest.raises(NotFound, match="no profile `ghost`") as profile:
        engine.recommend("b_popular", profile_id="ghost")
    assert profile.value.field == "profile_id"
    with pytest.raises(NotFound, match="no product `P404`"):
        engine.recommend(block("similar"), product_ids=["P404"])
    assert recommend(engine, "b_popular", None, 3)[0]["product_id"] in {"K1", "K2"}


def test_saved_model_serves_the_same_after_a_restart(engine: Engine, tmp_path: Path) -> None:
    before = engine.recommend(block("personal", size=5), profile_id="k3")
    again = Engine(engine.backend, engine.settings)
    assert again.load_latest()
    after = again.recommend(block("personal", size=5), profile_id="k3")
    assert after["model_version"] == before["model_version"] and ids(after) == ids(before)
    old = engine.snapshot()
    engine.train()
    assert engine.snapshot() is not old and engine.snapshot().model.version != old.model.version
    versions = [r["version"] for r in engine.backend.rows("SELECT version FROM recommendation_models")]
    assert old.model.version in versions and engine.snapshot().model.version in versions


def test_als_personal(engine: Engine, tmp_path: Path) -> None:
    engine = engine_for(engine.backend, tmp_path, personal="als")
    assert engine.snapshot().model.user_factors is not None
    answer = engine.recommend(block("personal", size=3, exclude_purchased=False), profile_id="l4")
    assert sum(i["category"].startswith("Living room") for i in answer["items"]) >= 2, answer


def test_session_changes_the_personal_block(engine: Engine) -> None:
    before = ids(engine.recommend(block("personal", size=3), profile_id="k5"))
    at = dt.datetime.now(dt.UTC)
    views = [{"message_id": f"s{n}", "type": "track", "event": "Product Viewed", "timestamp": at, "received_at": at,
              "source": "t", "channel": "web", "lsn": 1, "profile_id": "k5", "product_id": p}
             for n, p in enumerate(["L1", "L2", "L3"])]
    engine.observe(table_of(EVENTS.arrow_schema, views))
    after = engine.recommend(block("personal", size=3), profile_id="k5")
    assert ids(after) != before and any(i["category"].startswith("Living room") for i in after["items"])
    search = [{"message_id": "q", "type": "track", "event": "Products Searched", "timestamp": at, "received_at": at,
               "source": "t", "channel": "web", "lsn": 1, "profile_id": "newbie", "properties": '{"query": "towel"}'}]
    engine.observe(table_of(EVENTS.arrow_schema, search))
    found = engine.recommend(block("personal", size=1), anonymous_id="whoever", profile_id="newbie")
    assert ids(found) == ["B3"] and found["fallback"] is None
    assert ORDER_LINES.name == "order_lines"


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({"id": "x", "algorithm": "magic"}, "algorithm"),
        ({"id": "x", "algorithm": "popular", "size": -1}, "size"),
        ({"id": "x", "algorithm": "popular", "size": 1000}, "size"),
        ({"id": "bad id", "algorithm": "popular"}, "id"),
        ({"id": "x", "algorithm": "popular", "rules": {"repurchase_days": {"Living room": -5}}}, "rules.repurchase_days.Living room"),
        ({"id": "x", "algorithm": "popular", "rules": {"repurchase_days": [365]}}, "rules.repurchase_days"),
        ({"id": "x", "algorithm": "popular", "rules": {"max_per_category": 0}}, "rules.max_per_category"),
        ({"id": "x", "algorithm": "popular", "rules": {"min_price": 10, "max_price": 5}}, "rules.min_price"),
        ({"id": "x", "algorithm": "popular", "rules": {"colour": "red"}}, "rules.colour"),
        ({"id": "x", "algorithm": "popular", "rules": {"min_confidence": 2}}, "rules.min_confidence"),
        ({"id": "x", "algorithm": "popular", "variants": [{"name": "a"}]}, "variants"),
        ({"id": "x", "algorithm": "popular", "variants": [{"name": "a"}, {"name": "b", "weight": 0}]}, "variants.1.weight"),
        ({"id": "x", "algorithm": "popular", "variants": [{"name": "a"}, {"name": "b", "algorithm": "nope"}]},
         "variants.1.algorithm"),
    ],
)
def test_invalid_blocks_are_rejected_naming_the_field(definition: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as error:
        Block.parse(definition)
    assert error.value.field == field and error.value.status == 422


def test_variants_are_stable_per_visitor() -> None:
    ab = Block.parse({"id": "ab", "algorithm": "popular", "variants": [
        {"name": "a", "weight": 1}, {"name": "b", "weight": 1, "algorithm": "trending", "size": 3}]})
    seen = {ab.variant_for(f"visitor-{n}").name for n in range(200)}
    assert seen == {"a", "b"}
    assert all(ab.variant_for("v7").name == ab.variant_for("v7").name for _ in range(5))
    assert ab.variant_for(next(f"v{n}" for n in range(100) if ab.variant_for(f"v{n}").name == "b")).size == 3
    assert NOW.tzinfo is not None


def test_an_empty_store_serves_empty_blocks_not_errors(backend: Backend, tmp_path: Path) -> None:
    engine = Engine(backend, Settings(data_dir=tmp_path / "data"))  # ALS on nothing at all
    for algorithm in ("personal", "popular", "recently_viewed", "similar"):
        answer = engine.recommend(block(algorithm), anonymous_id="a")
        assert answer["items"] == [] and answer["model_version"]
