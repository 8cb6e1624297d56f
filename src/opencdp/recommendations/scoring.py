"""Scores of every product for one request, one function per algorithm.

Each function returns a float32 vector over the catalogue (``Model.items`` order): a
positive score is evidence for the product, 0 is none. Business rules then filter and
order the vector (``rules.Rules.select``); popularity fills what an algorithm leaves
empty. The offline evaluation scores with the same functions the server uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from opencdp.recommendations.data import Catalogue
from opencdp.recommendations.model import Model

POPULAR_KINDS = ("popular", "most_viewed", "most_bought", "trending")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Session:
    """What a visitor did in the last minutes, as the server saw it (``session.SessionBuffer``)."""

    items: dict[int, float] = field(default_factory=dict)
    """Product position -> weight (kind weight x recency)."""
    viewed: list[int] = field(default_factory=list)
    """Viewed products, newest first."""
    bought: dict[int, float] = field(default_factory=dict)
    """Product position -> epoch seconds of a purchase not yet in the model."""
    searches: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.items or self.searches or self.bought)


class Features:
    """Catalogue attributes prepared for vector comparison (built once per catalogue)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.n = len(catalogue)
        self.category = _codes(catalogue.category)
        self.top = _codes(catalogue.top_category)
        self.brand = _codes(catalogue.brand)
        self.room = _codes(catalogue.room)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_price = np.where(catalogue.price > 0, np.log(catalogue.price), np.nan)
        tokens: dict[str, int] = {}
        rows, cols = [], []
        words: dict[str, int] = {}
        word_rows, word_cols = [], []
        for i, attributes in enumerate(catalogue.attributes):
            for key, value in attributes.items():
                values = value if isinstance(value, list) else [value]
                for v in values:
                    rows.append(i)
                    cols.append(tokens.setdefault(f"{key}={v}", len(tokens)))
            text = " ".join(str(x) for x in (catalogue.name[i], catalogue.category[i], catalogue.brand[i]) if x)
            for word in set(_WORD.findall(text.lower())):
                word_rows.append(i)
                word_cols.append(words.setdefault(word, len(words)))
        self.attributes = _row_normalised(sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(self.n, max(len(tokens), 1))
        ))
        self.words = words
        self.word_matrix = sp.csr_matrix(
            (np.ones(len(word_rows), np.float32), (word_rows, word_cols)), shape=(self.n, max(len(words), 1))
        ).tocsc()

    def attribute_similarity(self, i: int) -> np.ndarray:
        """How alike product ``i`` and every other product are by their catalogue data (0..1)."""
        same = (
            0.35 * _same(self.category, i) + 0.15 * _same(self.top, i) + 0.15 * _same(self.brand, i)
            + 0.10 * _same(self.room, i)
        )
        if not math.isnan(self.log_price[i]):
            closeness = np.clip(1.0 - np.abs(self.log_price - self.log_price[i]) / math.log(2.0), 0.0, 1.0)
            same += 0.15 * np.nan_to_num(closeness)
        if self.attributes.nnz:
            same += 0.10 * (self.attributes @ self.attributes[i].T).toarray().ravel()
        same[i] = 0.0
        return same.astype(np.float32)

    def search(self, queries: Sequence[str]) -> np.ndarray:
        """Products whose name, category or brand hold the words of recent searches."""
        scores = np.zeros(self.n, np.float32)
        for query in queries:
            for word in set(_WORD.findall(query.lower())):
                column = self.words.get(word)
                if column is not None:
                    start, end = self.word_matrix.indptr[column], self.word_matrix.indptr[column + 1]
                    scores[self.word_matrix.indices[start:end]] += 1.0
        return scores

    def price_closeness(self, price: float) -> np.ndarray:
        """1 at the given price, falling to 0 at 4x above or below it; unknown prices 0.5."""
        if not price or math.isnan(price) or price <= 0:
            return np.full(self.n, 0.5, np.float32)
        distance = np.abs(self.log_price - math.log(price)) / math.log(4.0)
        return np.nan_to_num(np.clip(1.0 - distance, 0.0, 1.0), nan=0.5).astype(np.float32)


def _codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of values, -1 for missing ones (so two missing values are not "the same")."""
    seen: dict[str, int] = {}
    return np.array([-1 if not v else seen.setdefault(str(v), len(seen)) for v in values], np.int64)


def _same(codes: np.ndarray, i: int) -> np.ndarray:
    if codes[i] < 0:
        return np.zeros(len(codes), np.float32)
    return (codes == codes[i]).astype(np.float32)


def _row_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return (sp.diags(1.0 / norms) @ matrix).tocsr()


def _row(matrix: sp.csr_matrix, i: int) -> np.ndarray:
    """A dense copy of row ``i`` of a CSR matrix (cheap: only its stored entries are touched)."""
    out = np.zeros(matrix.shape[1], np.float32)
    start, end = matrix.indptr[i], matrix.indptr[i + 1]
    out[matrix.indices[start:end]] = matrix.data[start:end]
    return out


def _normalised(vector: np.ndarray) -> np.ndarray:
    top = float(vector.max()) if vector.size else 0.0
    return vector / top if top > 0 else vector


# -- algorithms ------------------------------------------------------------------------------
def popular(model: Model, kind: str = "popular", region: str | None = None) -> np.ndarray:
    """Popularity overall, or among the profiles of ``region`` (the overall order breaks its ties)."""
    vector = {"popular": model.popular, "most_viewed": model.views, "most_bought": model.buys,
              "trending": model.trending}[kind].astype(np.float32)
    if region:
        rows = np.flatnonzero(model.regions == region)
        if not len(rows):
            return np.zeros(len(vector), np.float32)
        local = _row(model.region_popular, int(rows[0]))
        return (_normalised(local) + 1e-3 * _normalised(vector)).astype(np.float32)
    return vector


def similar(model: Model, features: Features, items: Sequence[int], covisit_share: float = 0.5) -> np.ndarray:
    """Alike by catalogue attributes, and looked at by the same people (co-views).

    Products added since training (``model.trained_items`` on) have no co-views to judge
    by, so they are judged on attributes alone rather than scored as never co-viewed.
    """
    scores = np.zeros(features.n, np.float32)
    cold = model.trained_items
    for i in items:
        alike = features.attribute_similarity(i)
        score = (1 - covisit_share) * alike + covisit_share * _normalised(_row(model.covisit, i))
        if cold is not None:
            score[cold:] = alike[cold:]
        scores += score
    scores[list(items)] = 0.0
    return scores


def associations(
    model: Model, items: Sequence[int], *, by: str = "order", min_support: float = 0.0,
    min_confidence: float = 0.0, min_lift: float = 1.0, min_count: int = 2,
) -> np.ndarray:
    """Bought together (``by="order"``) or also bought by the same customers (``by="customer"``).

    For each context product A and partner B: support = n(A and B) / n, confidence =
    n(A and B) / n(A), lift = confidence / (n(B) / n). Pairs under any threshold score 0;
    the others score their confidence x log lift (sure and surprising first).
    """
    pairs, counts, total = (
        (model.pair_orders, model.item_orders, model.n_orders) if by == "order"
        else (model.pair_buyers, model.item_buyers, model.n_buyers)
    )
    scores = np.zeros(len(counts), np.float32)
    if total <= 0:
        return scores
    for a in items:
        start, end = pairs.indptr[a], pairs.indptr[a + 1]
        partners, together = pairs.indices[start:end], pairs.data[start:end]
        if counts[a] <= 0 or not len(partners):
            continue
        support = together / total
        confidence = together / counts[a]
        lift = confidence / np.maximum(counts[partners] / total, 1e-12)
        keep = (together >= min_count) & (support >= min_support) & (confidence >= min_confidence) & (lift >= min_lift)
        scores[partners[keep]] += (confidence[keep] * np.log1p(lift[keep])).astype(np.float32)
    scores[list(items)] = 0.0
    return scores


def complementary(model: Model, features: Features, items: Sequence[int], min_lift: float = 1.5) -> np.ndarray:
    """Products of other categories that customers buy after these ones (item pairs, then category pairs)."""
    scores = np.zeros(features.n, np.float32)
    popularity = _normalised(model.popular)
    category_index = {str(c): k for k, c in enumerate(model.category_names)}
    for a in items:
        direct = _row(model.complement, a)
        scores += np.where(direct >= min_lift, np.log1p(direct), 0.0).astype(np.float32)
        category = category_index.get(str(features.catalogue.category[a] or ""))
        if category is None:
            continue
        start, end = model.category_complement.indptr[category], model.category_complement.indptr[category + 1]
        for other, lift in zip(model.category_complement.indices[start:end], model.category_complement.data[start:end],
                               strict=True):
            if lift < min_lift:
                continue
            mask = _category_mask(features, str(model.category_names[other]))
            scores += (0.5 * math.log1p(float(lift)) * popularity * mask).astype(np.float32)
    own = {features.category[a] for a in items}
    scores[np.isin(features.category, list(own))] = 0.0
    scores[list(items)] = 0.0
    return scores


def _category_mask(features: Features, name: str) -> np.ndarray:
    cache: dict[str, np.ndarray] = features.__dict__.setdefault("_category_masks", {})
    mask = cache.get(name)
    if mask is None:
        mask = cache[name] = np.asarray([str(c or "") == name for c in features.catalogue.category], np.float32)
    return mask


def personal(
    model: Model, features: Features, row: int | None, session: Session | None = None, *,
    session_weight: float = 1.0, price_weight: float = 0.2,
) -> np.ndarray:
    """"Especially for you": collaborative filtering on the profile's history, blended with the session.

    History scores come from ALS factors or the item-kNN (``model.personal``); the session's
    recent views, cart and searches score through the kNN neighbours of those products,
    so the block moves with what the visitor does now. Both parts are scaled to 0..1 and
    added; the result leans toward the profile's usual price level (average paid).
    """
    history = np.zeros(features.n, np.float32)
    if row is not None:
        if model.personal == "als" and model.user_factors is not None and model.item_factors is not None:
            history = np.maximum(model.item_factors @ model.user_factors[row], 0.0).astype(np.float32)
        else:
            start, end = model.history.indptr[row], model.history.indptr[row + 1]
            seen = sp.csr_matrix(
                (np.log1p(model.history.data[start:end]), model.history.indices[start:end], [0, end - start]),
                shape=(1, features.n),
            )
            history = (seen @ model.knn).toarray().ravel().astype(np.float32)
    now = np.zeros(features.n, np.float32)
    if session:
        if session.items:
            positions = np.fromiter(session.items.keys(), np.int64)
            weights = np.fromiter(session.items.values(), np.float32)
            vector = sp.csr_matrix((weights, positions, [0, len(positions)]), shape=(1, features.n))
            now += (vector @ model.knn).toarray().ravel().astype(np.float32)
            now += 0.5 * (vector @ model.covisit).toarray().ravel().astype(np.float32)
        if session.searches:
            now += 0.5 * _normalised(features.search(session.searches))
    scores = _normalised(history) + session_weight * _normalised(now)
    if row is not None and price_weight > 0 and not math.isnan(float(model.avg_price[row])):
        scores *= (1 - price_weight) + price_weight * features.price_closeness(float(model.avg_price[row]))
    return scores.astype(np.float32)


def recently_viewed(model: Model, row: int | None, session: Session | None) -> np.ndarray:
    """Products the profile looked at, newest first (scores are view times)."""
    scores = np.zeros(len(model.items), np.float32)
    if row is not None:
        start, end = model.last_viewed.indptr[row], model.last_viewed.indptr[row + 1]
        times = model.last_viewed.data[start:end]
        if len(times):
            scores[model.last_viewed.indices[start:end]] = (times - times.min() + 1.0).astype(np.float32)
    if session and session.viewed:
        top = float(scores.max()) + 1.0
        for rank, i in enumerate(session.viewed):
            scores[i] = max(scores[i], top + len(session.viewed) - rank)
    return scores
