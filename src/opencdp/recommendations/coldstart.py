"""New products between retrains: served from their catalogue attributes alone.

A product imported after the model was trained has no interactions, so no algorithm
has evidence for it — but a shop expects a new sofa among the popular living-room
products and next to similar sofas the same day. On each catalogue refresh the engine
widens the served model's item axis with the new products (``extend``):

* popularity: a new product gets the median popularity of the trained products of its
  category (else its top-level category, else the whole catalogue) — it enters the
  popular block of its category mid-pack, neither first nor invisible; trending the same;
* similar: judged on catalogue attributes (category, brand, price band, room, attributes)
  alone — having no co-views yet is not evidence against it (``scoring.similar``);
* every item-item matrix, per-profile matrix and ALS item factor is padded with zeros:
  no personal or bought-together evidence until a retrain learns some.

The next retrain replaces all of this with what was learned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from opencdp.recommendations.data import Catalogue
from opencdp.recommendations.model import Model


def prior_popularity(popularity: np.ndarray, catalogue: Catalogue, trained: int) -> np.ndarray:
    """Popularity for the products ``catalogue[trained:]`` from those of ``catalogue[:trained]`` alike them."""
    known = popularity[:trained]
    overall = float(np.median(known[known > 0])) if (known > 0).any() else 0.0
    by: list[dict[str, float]] = []
    for names in (catalogue.category, catalogue.top_category):
        groups: dict[str, list[float]] = {}
        for name, value in zip(names[:trained].tolist(), known.tolist(), strict=True):
            if name and value > 0:
                groups.setdefault(str(name), []).append(value)
        by.append({name: float(np.median(values)) for name, values in groups.items()})
    prior = []
    for i in range(trained, len(catalogue)):
        leaf, top = str(catalogue.category[i] or ""), str(catalogue.top_category[i] or "")
        prior.append(by[0].get(leaf) or by[1].get(top) or overall)
    return np.asarray(prior, np.float32)


def extend(model: Model, new_items: Sequence[str], popular: np.ndarray, trending: np.ndarray) -> Model:
    """``model`` serving ``new_items`` too (appended to the item axis), with the given prior popularity."""
    if not len(new_items):
        return model
    n = len(model.items) + len(new_items)
    m = len(new_items)

    def square(matrix: sp.csr_matrix) -> sp.csr_matrix:
        indptr = np.concatenate([matrix.indptr, np.full(m, matrix.indptr[-1], matrix.indptr.dtype)])
        return sp.csr_matrix((matrix.data, matrix.indices, indptr), shape=(n, n))

    def wider(matrix: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], n))

    def padded(vector: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        tail = np.zeros(m, vector.dtype) if values is None else values.astype(vector.dtype)
        return np.concatenate([vector, tail])

    factors = model.item_factors
    if factors is not None:
        factors = np.vstack([factors, np.zeros((m, factors.shape[1]), factors.dtype)])
    return dataclasses.replace(
        model,
        items=np.concatenate([model.items, np.asarray(list(new_items), dtype=object)]),
        popular=padded(model.popular, popular), trending=padded(model.trending, trending),
        views=padded(model.views), buys=padded(model.buys),
        item_orders=padded(model.item_orders), item_buyers=padded(model.item_buyers),
        covisit=square(model.covisit), knn=square(model.knn), pair_orders=square(model.pair_orders),
        pair_buyers=square(model.pair_buyers), complement=square(model.complement),
        history=wider(model.history), last_bought=wider(model.last_bought), last_viewed=wider(model.last_viewed),
        region_popular=wider(model.region_popular), item_factors=factors,
        stats={**model.stats, "cold_start_products": n - (model.trained_items or len(model.items))},
        trained_items=model.trained_items or len(model.items),
        _user_index=model._user_index,
    )
