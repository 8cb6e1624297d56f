"""Training: every algorithm's statistics, learned in one pass over the interactions.

``train(interactions, catalogue, params)`` returns a ``Model``: plain numpy arrays and
scipy CSR matrices in the catalogue's item order, so serving is a few vector operations
over the catalogue (a few thousand products) and the whole model saves to one ``.npz``.

* popularity: decayed weighted counts (views, purchases, all), and trending (a short half-life);
* co-views: item-item cosine over who touched what (the "similar" block mixes it with attributes);
* bought together (same order) and also bought (same customer): co-purchase counts with
  each item's count, so support, confidence and lift are computed against a block's thresholds;
* complementary: "bought B after A" pairs across categories, as lift, per item and per category;
* personal: ``implicit`` ALS factors, or an item-kNN (cosine over the decayed weighted matrix);
* per profile: decayed history, last purchase and last view time per product, average price paid.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from opencdp.recommendations.data import CART, PURCHASE_KIND, VIEW, Catalogue, Interactions
from opencdp.recommendations.identities import HashIndex, user_index

PersonalAlgorithm = Literal["als", "item_knn"]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class TrainParams:
    """How models are trained (``Settings.recs_*`` fill these in the server)."""

    personal: PersonalAlgorithm = "item_knn"
    half_life_days: float = 90.0
    """Interaction weights halve with this age (personal and popularity)."""
    trending_half_life_days: float = 7.0
    neighbours: int = 100
    """Item-item neighbours kept per product (co-views, kNN, co-purchase, complements)."""
    factors: int = 32
    """32 won the demo shop's offline evaluation (64: -9 % NDCG@10, 128: -24 %, 16: -11 %)."""
    iterations: int = 10
    regularization: float = 0.05
    alpha: float = 10.0
    """ALS confidence: 1 + alpha * weight."""
    threads: int = 2
    complement_window_days: float = 180.0
    """A later purchase counts as a complement of an earlier one within this many days."""
    now_ms: int | None = None
    """The training time (decay is relative to it); default: the newest interaction."""


@dataclass
class Model:
    """A trained model: read-only once built, swapped whole on retrain."""

    version: str
    trained_at: str
    params: dict[str, Any]
    items: np.ndarray
    """Product ids in catalogue order (every matrix's item axis)."""
    users: np.ndarray
    """Canonical profile ids (every per-profile matrix's row axis)."""
    popular: np.ndarray
    views: np.ndarray
    buys: np.ndarray
    trending: np.ndarray
    covisit: sp.csr_matrix
    knn: sp.csr_matrix
    pair_orders: sp.csr_matrix
    """Orders holding both products (diagonal-free); ``item_orders`` per product; ``n_orders``."""
    item_orders: np.ndarray
    n_orders: int
    pair_buyers: sp.csr_matrix
    item_buyers: np.ndarray
    n_buyers: int
    complement: sp.csr_matrix
    category_names: np.ndarray
    category_complement: sp.csr_matrix
    """Leaf category -> later-bought leaf category, as lift."""
    history: sp.csr_matrix
    last_bought: sp.csr_matrix
    """Epoch seconds of the profile's last purchase of each product."""
    last_viewed: sp.csr_matrix
    avg_price: np.ndarray
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None
    regions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    """Region names (profiles' latest ``traits.city``), the rows of ``region_popular``."""
    region_popular: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0), dtype=np.float32))
    stats: dict[str, Any] = field(default_factory=dict)
    trained_items: int | None = None
    """Items from this position on were added after training (``coldstart``): no interactions known, not zero."""
    _user_index: HashIndex | None = field(default=None, repr=False)

    @property
    def personal(self) -> str:
        return str(self.params.get("personal", "item_knn"))

    def user_row(self, profile_id: str) -> int | None:
        """The row of a canonical profile id, None if the model has no history for it."""
        row = self.user_index().get(profile_id)
        return row if row is not None and self.users[row] == profile_id else None

    def user_index(self) -> HashIndex:
        """Profile ids -> rows, built once (sorted hashes: no million-entry dict for the GC to walk)."""
        if self._user_index is None:
            self._user_index = user_index(self.users)
        return self._user_index

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write ``recs-<version>.npz`` atomically (a temporary file renamed into place)."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "meta": np.array(json.dumps({"version": self.version, "trained_at": self.trained_at, "params": self.params,
                                         "n_orders": self.n_orders, "n_buyers": self.n_buyers, "stats": self.stats})),
            "items": self.items.astype(str), "users": self.users.astype(str), "category_names": self.category_names.astype(str),
            "regions": self.regions.astype(str),
        }
        for name in ("popular", "views", "buys", "trending", "item_orders", "item_buyers", "avg_price"):
            arrays[name] = getattr(self, name)
        for name in ("covisit", "knn", "pair_orders", "pair_buyers", "complement", "category_complement",
                     "history", "last_bought", "last_viewed", "region_popular"):
            matrix: sp.csr_matrix = getattr(self, name)
            arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"] = (
                matrix.data, matrix.indices, matrix.indptr
            )
            arrays[f"{name}.shape"] = np.array(matrix.shape)
        if self.user_factors is not None and self.item_factors is not None:
            arrays["user_factors"], arrays["item_factors"] = self.user_factors, self.item_factors
        path = directory / f"recs-{self.version}.npz"
        temporary = directory / f".recs-{self.version}.tmp.npz"
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Model:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))

            def csr(name: str) -> sp.csr_matrix:
                shape = tuple(int(v) for v in data[f"{name}.shape"])
                return sp.csr_matrix((data[f"{name}.data"], data[f"{name}.indices"], data[f"{name}.indptr"]), shape=shape)

            return cls(
                version=meta["version"], trained_at=meta["trained_at"], params=meta["params"],
                items=data["items"].astype(object), users=data["users"],  # users stay a str array: no million objects to make
                popular=data["popular"], views=data["views"], buys=data["buys"], trending=data["trending"],
                covisit=csr("covisit"), knn=csr("knn"), pair_orders=csr("pair_orders"), item_orders=data["item_orders"],
                n_orders=int(meta["n_orders"]), pair_buyers=csr("pair_buyers"), item_buyers=data["item_buyers"],
                n_buyers=int(meta["n_buyers"]), complement=csr("complement"),
                category_names=data["category_names"].astype(object), category_complement=csr("category_complement"),
                history=csr("history"), last_bought=csr("last_bought"), last_viewed=csr("last_viewed"),
                avg_price=data["avg_price"],
                user_factors=data.get("user_factors"), item_factors=data.get("item_factors"),
                regions=data["regions"].astype(object) if "regions" in data else np.empty(0, dtype=object),
                region_popular=csr("region_popular") if "region_popular.shape" in data
                else sp.csr_matrix((0, len(data["items"])), dtype=np.float32),
                stats=meta.get("stats", {}),
            )


def popularity_model(
    items: np.ndarray, popular: np.ndarray, views: np.ndarray, buys: np.ndarray, trending: np.ndarray, version: str = "",
) -> Model:
    """A model holding only popularity (every other statistic empty): what is served while the real one loads."""
    n = len(items)
    square = sp.csr_matrix((n, n), dtype=np.float32)
    no_users = sp.csr_matrix((0, n), dtype=np.float32)
    return Model(
        version=version, trained_at="", params={}, items=items, users=np.empty(0, dtype=object),
        popular=popular.astype(np.float32), views=views.astype(np.float32), buys=buys.astype(np.float32),
        trending=trending.astype(np.float32), covisit=square, knn=square, pair_orders=square,
        item_orders=np.zeros(n, np.float32), n_orders=0, pair_buyers=square, item_buyers=np.zeros(n, np.float32), n_buyers=0,
        complement=square, category_names=np.empty(0, dtype=object), category_complement=sp.csr_matrix((0, 0), dtype=np.float32),
        history=no_users, last_bought=no_users, last_viewed=no_users, avg_price=np.empty(0, np.float32),
    )


def read_popularity(path: Path) -> Model:
    """Only the popularity of a saved model (a few arrays of the ``.npz``: milliseconds, not the full load)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return popularity_model(data["items"].astype(object), data["popular"], data["views"], data["buys"],
                                data["trending"], version=str(meta["version"]))


def latest_model_path(directory: Path) -> Path | None:
    """The newest saved model (versions sort by time)."""
    found = sorted(directory.glob("recs-*.npz")) if directory.exists() else []
    return found[-1] if found else None


# -- training ------------------------------------------------------------------------------
def train(
    interactions: Interactions, catalogue: Catalogue, params: TrainParams = TrainParams(), regions: np.ndarray | None = None
) -> Model:
    """Every algorithm's statistics from ``interactions``, in ``catalogue`` order.

    ``regions`` gives each profile of ``interactions.users`` a region ('' unknown) for
    popularity by region.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    n_items = len(catalogue)
    index = catalogue.index()
    to_catalogue = np.array([index.get(str(p), -1) for p in interactions.items], np.int64)
    item = to_catalogue[interactions.item] if len(interactions) else np.empty(0, np.int64)
    known = item >= 0
    inter = interactions.subset(known)
    item = item[known]
    user = inter.user.astype(np.int64)
    n_users = len(inter.users)
    now_ms = params.now_ms if params.now_ms is not None else (int(inter.ts.max()) if len(inter) else 0)
    weight = inter.decayed(now_ms, params.half_life_days)
    t = lap("prepare", started)

    # popularity
    views = np.bincount(item[inter.kind == VIEW], minlength=n_items).astype(np.float32)
    buys = np.bincount(item[inter.kind == PURCHASE_KIND], minlength=n_items).astype(np.float32)
    popular = np.bincount(item, weights=weight, minlength=n_items).astype(np.float32)
    trending = np.bincount(item, weights=inter.decayed(now_ms, params.trending_half_life_days), minlength=n_items)
    region_names, region_popular = _by_region(regions, user, item, weight, n_items)
    t = lap("popularity", t)

    # per profile: decayed history, and the last purchase / view of each product
    history = sp.csr_matrix((weight, (user, item)), shape=(n_users, n_items), dtype=np.float32)
    history.sum_duplicates()
    last_bought = _last_time(user, item, inter.ts, inter.kind == PURCHASE_KIND, n_users, n_items)
    last_viewed = _last_time(user, item, inter.ts, (inter.kind == VIEW) | (inter.kind == CART), n_users, n_items)
    avg_price = _average_price(user, item, inter.kind == PURCHASE_KIND, catalogue.price, n_users)
    t = lap("profiles", t)

    # co-views (binary who-touched-what, cosine) and the kNN similarity (weighted, cosine)
    touched = history.copy()
    touched.data = np.ones_like(touched.data)
    covisit = _cosine_top_k(touched, params.neighbours)
    knn = _cosine_top_k(_bm25ish(history), params.neighbours)
    t = lap("similarity", t)

    # co-purchase: same order and same customer
    bought = inter.kind == PURCHASE_KIND
    baskets = inter.basket[bought]
    has_basket = baskets >= 0
    basket_codes, basket_rows = np.unique(baskets[has_basket], return_inverse=True)
    orders = sp.csr_matrix(
        (np.ones(int(has_basket.sum()), np.float32), (basket_rows, item[bought][has_basket])),
        shape=(len(basket_codes), n_items),
    )
    orders.data = np.ones_like(orders.data)  # an order holding two of a product counts once
    orders.sum_duplicates()
    orders.data = np.minimum(orders.data, 1)
    pair_orders, item_orders = _co_occurrence(orders, params.neighbours)
    buyers = sp.csr_matrix(
        (np.ones(int(bought.sum()), np.float32), (user[bought], item[bought])), shape=(n_users, n_items)
    )
    buyers.sum_duplicates()
    buyers.data = np.minimum(buyers.data, 1)
    pair_buyers, item_buyers = _co_occurrence(buyers, params.neighbours)
    t = lap("co_purchase", t)

    # complements: B bought after A, in another category
    category_names, category_of = np.unique(np.asarray([c or "" for c in catalogue.category], dtype=str), return_inverse=True)
    complement, category_complement = _complements(
        user[bought], item[bought], inter.ts[bought], category_of, len(category_names), item_buyers,
        params.complement_window_days * DAY_MS, params.neighbours,
    )
    t = lap("complements", t)

    user_factors = item_factors = None
    if params.personal == "als":
        user_factors, item_factors = _als(history, params)
        t = lap("als", t)

    version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    stats = {"users": n_users, "items": n_items, "interactions": len(inter), "dropped_unknown_products": int((~known).sum()),
             "orders": int(orders.shape[0]), "train_s": round(time.perf_counter() - started, 3), "timings": timings}
    return Model(
        version=version, trained_at=dt.datetime.now(dt.UTC).isoformat(),
        params={**params.__dict__, "now_ms": now_ms}, items=catalogue.product_id.copy(), users=inter.users,
        popular=popular, views=views, buys=buys, trending=trending.astype(np.float32),
        covisit=covisit, knn=knn, pair_orders=pair_orders, item_orders=item_orders, n_orders=int(orders.shape[0]),
        pair_buyers=pair_buyers, item_buyers=item_buyers, n_buyers=int((buyers.getnnz(axis=1) > 0).sum()),
        complement=complement, category_names=category_names.astype(object), category_complement=category_complement,
        history=history, last_bought=last_bought, last_viewed=last_viewed, avg_price=avg_price,
        user_factors=user_factors, item_factors=item_factors, regions=region_names, region_popular=region_popular,
        stats=stats,
    )


def _by_region(
    regions: np.ndarray | None, user: np.ndarray, item: np.ndarray, weight: np.ndarray, n_items: int
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Decayed popularity among the profiles of each region."""
    if regions is None or not len(regions):
        return np.empty(0, dtype=object), sp.csr_matrix((0, n_items), dtype=np.float32)
    names, codes = np.unique(np.asarray(regions, dtype=str), return_inverse=True)
    region_of = codes[user]
    known = names[region_of] != ""
    matrix = sp.csr_matrix((weight[known], (region_of[known], item[known])), shape=(len(names), n_items), dtype=np.float32)
    matrix.sum_duplicates()
    return names.astype(object), matrix


def _last_time(user: np.ndarray, item: np.ndarray, ts: np.ndarray, mask: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Per (profile, product): the newest time in epoch seconds (a max, not the sum a CSR would make)."""
    u, i, s = user[mask], item[mask], ts[mask] // 1000
    key = u * n_items + i
    order = np.argsort(key, kind="stable")  # one key, then a max per run: half the time of a two-key lexsort
    key, s = key[order], s[order]
    if not len(key):
        return sp.csr_matrix((n_users, n_items), dtype=np.float64)
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    newest = np.maximum.reduceat(s, starts)
    key = key[starts]
    return sp.csr_matrix((newest.astype(np.float64), (key // n_items, key % n_items)), shape=(n_users, n_items))


def _average_price(user: np.ndarray, item: np.ndarray, mask: np.ndarray, price: np.ndarray, n_users: int) -> np.ndarray:
    """The average price of products each profile bought (NaN if none known): their usual price level."""
    prices = price[item[mask]]
    known = ~np.isnan(prices)
    who = user[mask][known]
    total = np.bincount(who, weights=prices[known], minlength=n_users)
    count = np.bincount(who, minlength=n_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def _bm25ish(history: sp.csr_matrix) -> sp.csr_matrix:
    """Damp heavy users and heavy weights (log), so a few binge sessions do not dominate the kNN."""
    weighted = history.copy()
    weighted.data = np.log1p(weighted.data).astype(np.float32)
    return weighted


def _top_k(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row."""
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if start == end:
            continue
        data, idx = matrix.data[start:end], matrix.indices[start:end]
        if end - start > k:
            keep = np.argpartition(-data, k)[:k]
            data, idx = data[keep], idx[keep]
        rows.append(np.full(len(idx), r, np.int32))
        cols.append(idx)
        vals.append(data)
    if not rows:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape)


def _cosine_top_k(user_items: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Item-item cosine similarity of the columns, diagonal removed, top ``k`` per item."""
    items = user_items.T.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(items.multiply(items).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    normalised = sp.diags(1.0 / norms).astype(np.float32) @ items
    similarity = (normalised @ normalised.T).tocsr()
    similarity.setdiag(0)
    return _top_k(similarity, k)


def _co_occurrence(baskets: sp.csr_matrix, k: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """How many baskets hold both products (top ``k`` partners per product), and each product's count."""
    items = baskets.T.tocsr()
    counts = np.asarray(items.sum(axis=1)).ravel().astype(np.float32)
    pairs = (items @ items.T).tocsr().astype(np.float32)
    pairs.setdiag(0)
    return _top_k(pairs, k), counts


def _complements(
    user: np.ndarray, item: np.ndarray, ts: np.ndarray, category_of: np.ndarray, n_categories: int,
    item_buyers: np.ndarray, window_ms: float, k: int, reach: int = 20,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Lift of "bought B later than A, in another category" per item pair and per category pair.

    Purchases are sorted by customer and time; each is paired with the next ``reach``
    purchases of the same customer within ``window_ms`` (bounded work per customer).
    Lift = P(B later | A) / P(B): how much more likely than for anyone.
    """
    n_items = len(category_of)
    order = np.lexsort((ts, user))
    u, i, s = user[order], item[order], ts[order]
    firsts, seconds = [], []
    for step in range(1, reach + 1):
        if step >= len(u):
            break
        same = (u[step:] == u[:-step]) & (s[step:] - s[:-step] <= window_ms) & (s[step:] > s[:-step])
        a, b = i[:-step][same], i[step:][same]
        other = category_of[a] != category_of[b]
        firsts.append(a[other])
        seconds.append(b[other])
    a = np.concatenate(firsts) if firsts else np.empty(0, np.int64)
    b = np.concatenate(seconds) if seconds else np.empty(0, np.int64)
    def lift(pairs: sp.csr_matrix, base: np.ndarray) -> sp.csr_matrix:
        pairs = pairs.tocsr()
        pairs.sum_duplicates()
        row_totals = np.asarray(pairs.sum(axis=1)).ravel()
        share = base / max(float(base.sum()), 1.0)
        coo = pairs.tocoo()
        keep = coo.data >= 2  # a single customer is an anecdote
        with np.errstate(divide="ignore", invalid="ignore"):
            values = (coo.data[keep] / row_totals[coo.row[keep]]) / np.maximum(share[coo.col[keep]], 1e-12)
        return sp.csr_matrix((values.astype(np.float32), (coo.row[keep], coo.col[keep])), shape=pairs.shape)

    ones = np.ones(len(a), np.float32)
    items = lift(sp.csr_matrix((ones, (a, b)), shape=(n_items, n_items)), item_buyers)
    category_base = np.bincount(category_of, weights=item_buyers, minlength=n_categories)
    categories = lift(
        sp.csr_matrix((ones, (category_of[a], category_of[b])), shape=(n_categories, n_categories)), category_base
    )
    return _top_k(items, k), categories


def _als(history: sp.csr_matrix, params: TrainParams) -> tuple[np.ndarray, np.ndarray]:
    """``implicit`` ALS on confidence 1 + alpha * decayed weight (CPU, ``params.threads`` threads)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    confidence = history.copy()
    confidence.data = (params.alpha * np.log1p(confidence.data)).astype(np.float32)
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads would fight it
        model = AlternatingLeastSquares(
            factors=params.factors, regularization=params.regularization, iterations=params.iterations,
            num_threads=params.threads, random_state=7,
        )
        model.fit(confidence, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)
