"""Serving from memory: the identity index, the warm-up popularity while a model loads, and
products new to the catalogue served before a retrain (cold start), on every engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from opencdp.config import Settings
from opencdp.recommendations import identities
from opencdp.recommendations.blocks import Block
from opencdp.recommendations.engine import Engine
from opencdp.recommendations.identities import NO_HISTORY, HashIndex, IdentityIndex
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, PRODUCTS
from tests.recommendations.conftest import NOW, catalogue_rows, table_of


def trained(backend: Backend, directory: Path) -> Engine:
    engine = Engine(backend, Settings(data_dir=directory, recs_personal_algorithm="item_knn"))  # type: ignore[arg-type]
    engine.train(dataclasses.replace(engine.params(), threads=1))
    return engine


def block(algorithm: str, size: int = 5, **rules: Any) -> Block:
    return Block.parse({"id": f"b_{algorithm}", "algorithm": algorithm, "size": size, "rules": rules})


def ids(answer: dict[str, Any]) -> list[str]:
    return [i["product_id"] for i in answer["items"]]


def test_hash_index_finds_only_its_keys() -> None:
    index = HashIndex(["a", "b", "c"], np.array([7, 8, 9]))
    assert [index.get(k) for k in ("a", "b", "c", "d", "")] == [7, 8, 9, None, None]
    assert index.lookup(["c", "x", "a"]).tolist() == [9, -2, 7]
    assert len(HashIndex([], np.array([], "int32"))) == 0
    assert HashIndex([], np.array([], "int32")).lookup(["a"]).tolist() == [-2]


def test_ids_resolve_to_model_rows_a_slice_at_a_time(monkeypatch: Any) -> None:
    monkeypatch.setattr(identities, "SLICE", 2)  # five ids: three slices
    users = np.asarray(["u0", "u1", "u2"], dtype=str)
    rows_of = HashIndex.of_hashes(np.array([hash("u0"), hash("u1"), hash("u2"), hash("impostor")]), np.array([0, 1, 2, 0]))
    keys = pa.chunked_array([["a", "b"], ["c", "d", "e"]])
    canonical = pa.chunked_array([["u2", None], ["u0", "gone", "impostor"]])
    index = identities._resolved(keys, canonical, rows_of, users)
    assert [index.get(k) for k in "abcde"] == [2, NO_HISTORY, 0, NO_HISTORY, NO_HISTORY]  # a hash match is not the id
    assert identities.column_hashes(canonical, empty="-").tolist() == [hash(v) for v in ("u2", "-", "u0", "gone", "impostor")]


def test_visitors_are_resolved_without_asking_the_store(shared_shop: Backend, tmp_path: Path) -> None:
    engine = trained(shared_shop, tmp_path)
    engine.load_identities()

    def store_query(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the store was asked about {args}")

    engine.canonical = store_query  # type: ignore[method-assign]
    assert engine.resolve("k0-old", None, None) == ("k0", ["k0", "k0-old"])  # a merged profile id
    assert engine.resolve(None, "anon-k3", None)[0] == "k3"
    assert engine.resolve(None, None, "kitchen-fan")[0] == "k1"
    assert engine.resolve(None, "never-seen", None) == (None, [])  # a new visitor: no query either
    answer = engine.recommend(block("personal"), anonymous_id="anon-k3")
    assert answer["profile_id"] == "k3" and answer["fallback"] is None


def test_popularity_is_served_while_the_saved_model_loads(shared_shop: Backend, tmp_path: Path) -> None:
    first = trained(shared_shop, tmp_path)
    expected = ids(first.recommend(block("popular"), anonymous_id="x"))
    engine = Engine(shared_shop, first.settings)
    engine._loading.set()  # what start() does when a saved model exists
    warm = engine.recommend(block("personal"), profile_id="k0")
    assert not engine.ready() and warm["fallback"] == "popular" and warm["model_version"] is None
    assert ids(warm) == expected and all(i["fallback"] for i in warm["items"])  # popular, with the rules (X1, X2 left out)
    engine._loading.clear()
    assert engine.recommend(block("personal"), profile_id="k0")["fallback"] is None and engine.ready()
    # a serving engine loads the saved model in the background by itself, requests or not
    serving = Engine(shared_shop, first.settings)
    serving.start()
    try:
        deadline = time.monotonic() + 20
        while not serving.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert serving.ready() and serving.snapshot().model.version == first.snapshot().model.version
    finally:
        serving.stop()


def test_a_retrained_model_is_published_with_its_identity_index(shared_shop: Backend, tmp_path: Path) -> None:
    first = trained(shared_shop, tmp_path)
    serving = Engine(shared_shop, first.settings.model_copy(update={"recs_train_in_subprocess": False}))
    serving.start()
    try:
        deadline = time.monotonic() + 20
        while serving.identity_index(serving.snapshot().model) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        served_while_indexing = []
        build = IdentityIndex.load

        def spied(*args: Any) -> IdentityIndex:
            served_while_indexing.append(serving.snapshot().model.version)
            return build(*args)

        IdentityIndex.load = spied  # type: ignore[method-assign,assignment]
        try:
            new = serving.train(dataclasses.replace(serving.params(), threads=1))
        finally:
            IdentityIndex.load = build  # type: ignore[method-assign]
        # the old model was served while the new one's index was built: no moment in which
        # every visitor the new model cannot place asks the store
        assert served_while_indexing[0] == first.snapshot().model.version != new.version
        assert serving.identity_index(serving.snapshot().model) is not None
    finally:
        serving.stop()


def test_a_product_added_to_the_catalogue_is_served_before_a_retrain(shop: Backend, tmp_path: Path) -> None:
    engine = trained(shop, tmp_path)
    wok = {**catalogue_rows()[0], "product_id": "K9", "sku": "K9", "name": "Wok", "url": "https://shop.example/p/K9",
           "image_url": "https://shop.example/i/K9.jpg", "updated_at": NOW}
    shop.upsert(PRODUCTS, table_of(PRODUCTS.arrow_schema, [wok]))
    assert "K9" not in ids(engine.recommend(block("popular", 10, categories=["Kitchen > Cookware"]), anonymous_id="x"))
    engine.refresh_catalogue()
    assert "K9" in ids(engine.recommend(block("popular", 10, categories=["Kitchen > Cookware"]), anonymous_id="x"))
    assert "K9" in ids(engine.recommend(block("similar", 3), product_ids=["K1"]))  # same category, brand, price band
    assert ids(engine.recommend(block("similar", 3), product_ids=["K9"]))[0] in {"K1", "K2"}
    # a view of it in the session steers the personal block without errors
    view = {"message_id": "v-k9", "type": "track", "event": "Product Viewed", "timestamp": dt.datetime.now(dt.UTC),
            "received_at": dt.datetime.now(dt.UTC), "source": "t", "channel": "web", "lsn": 1, "profile_id": "k4",
            "product_id": "K9"}
    engine.observe(table_of(EVENTS.arrow_schema, [view]))
    assert engine.recommend(block("personal"), profile_id="k4")["items"]
    assert engine.snapshot().model.stats["cold_start_products"] == 1
