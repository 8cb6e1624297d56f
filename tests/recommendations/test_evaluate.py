"""Offline evaluation: the splits hold nothing of the future, and on MovieLens the personal model
beats popularity by the issue's target (NDCG@10 >= 1.5x)."""

from __future__ import annotations

import numpy as np
import pytest

from opencdp.recommendations.data import Interactions
from opencdp.recommendations.evaluate import evaluate, movielens, split_interactions
from opencdp.recommendations.model import TrainParams


def test_leave_last_out_removes_the_held_out_item_and_what_followed() -> None:
    data = Interactions.from_arrays(
        ["u1", "u1", "u1", "u2", "u2", "u3"], ["a", "b", "c", "a", "b", "a"], [1, 2, 3, 1, 2, 5],
    )
    train, tests = split_interactions(data, "leave_last_out")
    users = {str(data.users[u]): {str(data.items[i]) for i in items} for u, items in tests.items()}
    assert users == {"u1": {"c"}, "u2": {"b"}}  # u3 has nothing left to learn from
    kept = {(str(data.users[u]), str(data.items[i])) for u, i in zip(train.user, train.item, strict=True)}
    assert kept == {("u1", "a"), ("u1", "b"), ("u2", "a")}


def test_time_split_tests_only_new_items_of_known_profiles() -> None:
    data = Interactions.from_arrays(
        ["u1"] * 5 + ["u2"] * 5, ["a", "b", "c", "d", "a", "a", "b", "c", "d", "e"], list(range(10)),
    )
    train, tests = split_interactions(data, "time", test_share=0.25)
    assert int(train.ts.max()) == 6
    assert {str(data.users[u]): {str(data.items[i]) for i in v} for u, v in tests.items()} == {"u2": {"c", "d", "e"}}


def test_shop_evaluation_runs_on_the_store(shared_shop: object) -> None:
    from opencdp.recommendations.data import read_catalogue, read_interactions
    from opencdp.recommendations.evaluate import shop_target_kinds

    backend = shared_shop
    report = evaluate(read_interactions(backend), dataset="shop", catalogue=read_catalogue(backend),  # type: ignore[arg-type]
                      target_kinds=shop_target_kinds(), candidates=("popular", "item_knn"), params=TrainParams(threads=1))
    body = report.to_dict()
    assert [r["model"] for r in body["results"]] == ["popular", "item_knn"]
    assert all(0 <= r["ndcg_at_k"] <= r["hr_at_k"] <= 1 and r["users"] > 0 for r in body["results"])


@pytest.mark.slow  # ~10-35 s on a loaded 2-core machine; benchmarks/bench_recs.py reports the figures too
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_movielens_personal_beats_popularity() -> None:
    report = evaluate(movielens(), dataset="movielens", candidates=("popular", "item_knn", "als"),  # the winner counts
                      params=TrainParams(half_life_days=0, threads=2))
    best, base = report.best_personal(), report.baseline()
    assert base.ndcg > 0 and best.users > 600
    assert best.ndcg >= 1.5 * base.ndcg, report.to_dict()
    assert best.coverage > base.coverage
    assert np.isfinite(best.hr)
