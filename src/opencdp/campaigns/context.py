"""The data a template sees for one recipient: plain dicts and lists, nothing with methods.

``profile`` is the recipient's traits (``profile.first_name``, ``profile.birthday``,
``profile.bonus_balance``...) plus ``profile.id``; ``computed`` their stored scores
(predictions, RFM cell...); ``params`` and ``event`` what the entering event carried (a
scenario's trigger); ``cart`` the entering event's ``products`` enriched from the catalogue
(the abandoned cart's items, with url and image); ``products`` catalogue rows named by
``params.product_id(s)`` (back in stock, price drop); ``recommendations`` products to suggest
(the campaign's ``recommendation_block`` served by the recommendation stage, else the
catalogue's bestsellers of the last 30 days in the room of the entering product, without what
the message already shows).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlglot import exp

from opencdp.campaigns.recipients import Recipient
from opencdp.storage.base import Backend
from opencdp.storage.schema import ORDER_LINES, PRODUCTS

_PRODUCT_FIELDS = ("product_id", "sku", "name", "category", "room", "brand", "price", "old_price", "currency", "stock",
                   "url", "image_url")


class Catalogue:
    """Product lookups for templates, cached for a minute (a broadcast renders the same products often)."""

    def __init__(self, backend: Backend, ttl_s: float = 60.0) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self._products: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._best: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def products(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        missing = [i for i in dict.fromkeys(ids) if i not in self._products or now - self._products[i][0] > self.ttl_s]
        if missing:
            query = exp.select(*_PRODUCT_FIELDS).from_(self.backend.table_ref(PRODUCTS)).where(
                exp.column("product_id").isin(*(exp.Literal.string(i) for i in missing))
            )
            rows = {r["product_id"]: r for r in self.backend.select(query).to_pylist()}
            with self._lock:
                for i in missing:
                    self._products[i] = (now, rows.get(i))
        return {i: row for i in ids if (row := self._products.get(i, (0, None))[1]) is not None}

    def bestsellers(self, room: str | None, n: int = 8) -> list[dict[str, Any]]:
        key = room or ""
        now = time.monotonic()
        cached = self._best.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        from opencdp.campaigns.outbox import time_literal

        where: exp.Expr = exp.column("timestamp", "l") >= time_literal(self.backend, since)
        if room:
            where = where.and_(exp.column("room", "p").eq(exp.Literal.string(room)))
        query = (
            exp.select(*(exp.column(f, "p") for f in _PRODUCT_FIELDS))
            .from_(exp.alias_(exp.to_table(ORDER_LINES.name), "l", table=True))
            .join(self.backend.aliased_ref(PRODUCTS, "p"), on=exp.column("product_id", "l").eq(exp.column("product_id", "p")))
            .where(where)
            .group_by(*(exp.column(f, "p") for f in _PRODUCT_FIELDS))
            .order_by(exp.Ordered(this=exp.func("sum", exp.column("quantity", "l")), desc=True), exp.column("product_id", "p"))
            .limit(n * 2)
        )
        rows = self.backend.select(query).to_pylist()
        with self._lock:
            self._best[key] = (now, rows)
        return rows


    def recommend(self, block: str, profile_id: str, shown: Sequence[str], n: int = 4) -> list[dict[str, Any]] | None:
        """The recommendation stage's block for the profile; None when that stage is absent or fails."""
        try:
            from opencdp.recommendations import recommend
        except ImportError:
            return None
        try:
            return recommend(self.backend, block, profile_id, n, product_ids=list(shown))
        except Exception:  # a block that cannot be served falls back to bestsellers, never fails the send
            return None


def _products_of(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = params.get("products")
    if isinstance(items, list):
        return [dict(i) for i in items if isinstance(i, dict)]
    return []


def build(
    recipient: Recipient,
    params: Mapping[str, Any],
    *,
    campaign: Mapping[str, Any],
    urls: Mapping[str, str],
    catalogue: Catalogue | None,
    variant: str = "",
    message_id: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    cart = _products_of(params)
    ids = [str(i["product_id"]) for i in cart if i.get("product_id")]
    named = params.get("product_ids") or ([params["product_id"]] if params.get("product_id") else [])
    named = [str(i) for i in named] if isinstance(named, list) else []
    products: list[dict[str, Any]] = []
    recommendations: list[dict[str, Any]] = []
    if catalogue is not None:
        known = catalogue.products(ids + named)
        cart = [{**known.get(str(i.get("product_id")), {}), **i} for i in cart]
        products = [known[i] for i in named if i in known]
        shown = set(ids) | set(named)
        room = next((p.get("room") for p in products + cart if p.get("room")), None)
        block = campaign.get("recommendation_block")
        found = catalogue.recommend(str(block), recipient.profile_id, sorted(shown)) if block else None
        recommendations = found if found is not None else [p for p in catalogue.bestsellers(room) if p["product_id"] not in shown][:4]
    profile = {**recipient.traits, "id": recipient.profile_id}
    return {
        "profile": profile,
        "computed": dict(recipient.scores),
        "params": dict(params),
        "event": dict(params.get("event") or {}) if isinstance(params.get("event"), dict) else {},
        "cart": cart,
        "products": products,
        "recommendations": recommendations,
        "campaign": dict(campaign),
        "variant": variant,
        "message_id": message_id,
        "now": (now or dt.datetime.now(dt.UTC)).isoformat(),
        **urls,
    }
