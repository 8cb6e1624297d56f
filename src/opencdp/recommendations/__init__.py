"""Product recommendations: one engine for the site, the app, messages and the shop floor.

Data flow::

    store (events, order lines, catalogue, profile_map)
      -> data.read_interactions / read_catalogue     weighted, decayed, canonical profiles
      -> model.train                                  popularity, co-views, co-purchase, complements, ALS / kNN
      -> engine.Engine (snapshot swapped on retrain)  + session.SessionBuffer (loader listener)
      -> scoring.<algorithm>                          a score per product
      -> rules.Rules.select                           stock, image/URL, repurchase windows, pins, diversity
      -> blocks.Block                                 named algorithm + rules + size, A/B variants

``recommend(engine_or_backend, block, profile_id, limit)`` is the call for code in the same
process (campaigns embed blocks in messages with it); the HTTP API is
``GET /api/v1/recommendations/{block}``. ``evaluate`` measures offline HR@10 / NDCG@10
against the popularity baseline; ``report.block_report`` gives impressions, clicks and
conversions per A/B variant.
"""

from __future__ import annotations

from typing import Any

from opencdp.recommendations.blocks import ALGORITHMS, Block
from opencdp.recommendations.engine import Engine
from opencdp.storage.base import Backend

__all__ = ["ALGORITHMS", "Block", "Engine", "recommend"]

_ENGINES: dict[int, Engine] = {}


def recommend(
    engine_or_backend: Engine | Backend, block: str | Block, profile_id: str | None = None, limit: int | None = None,
    **context: Any,
) -> list[dict[str, Any]]:
    """The products of ``block`` for ``profile_id`` (a canonical or merged profile id; None: a new visitor).

    Each product is a dict: product_id, name, category, brand, price, old_price, currency,
    url, image_url, score, fallback. ``context`` takes the other request arguments
    (``anonymous_id``, ``user_id``, ``product_ids``, ``category``). Given a backend, an
    engine is made once per backend and serves the newest saved model (training one if
    there is none); in the server pass ``app.state.recommendations``.
    """
    if isinstance(engine_or_backend, Engine):
        engine = engine_or_backend
    else:
        cached = _ENGINES.get(id(engine_or_backend))
        if cached is None or cached.backend is not engine_or_backend:
            cached = _ENGINES[id(engine_or_backend)] = Engine(engine_or_backend)
        engine = cached
    items: list[dict[str, Any]] = engine.recommend(block, profile_id=profile_id, limit=limit, **context)["items"]
    return items
