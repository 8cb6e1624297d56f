"""How a block performs, per A/B variant: impressions, clicks, conversions, revenue, winner.

Sites and messages track a block's use as ordinary events through the tracking API:

* ``Recommendation Shown`` {block, variant, recommendation_id, product_ids} — an impression;
* ``Recommendation Clicked`` {block, variant, recommendation_id, product_id} — a click
  (Segment's ``Product Clicked`` with ``recommendation_block`` / ``recommendation_variant``
  counts too).

A conversion is an order line of a clicked product by the same (canonical) profile
within ``window_days`` after the click. The winner is the variant with the best
conversions per impression, once a two-proportion z-test against the runner-up gives
p < 0.05 and each has ``min_impressions``; until then there is no winner.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from sqlglot import exp

from opencdp.recommendations.data import PURCHASE, epoch_ms
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP

SHOWN = "Recommendation Shown"
CLICKED = "Recommendation Clicked"
PRODUCT_CLICKED = "Product Clicked"


def _property(name: str) -> exp.Expr:
    path = exp.JSONPath(expressions=[exp.JSONPathRoot(), exp.JSONPathKey(this=name)])
    value = exp.JSONExtractScalar(this=exp.column("properties", "e"), expression=path)
    return exp.func("nullif", value, exp.Literal.string(""))  # ClickHouse reads a missing key as ''


def _who(alias: str) -> exp.Expr:
    return exp.func("coalesce", exp.column("canonical_id", "m"), exp.column("profile_id", alias))


def _events(backend: Backend, block_id: str, since: dt.datetime | None) -> list[dict[str, Any]]:
    block = exp.func("coalesce", _property("block"), _property("recommendation_block"))
    variant = exp.func("coalesce", _property("variant"), _property("recommendation_variant"), exp.Literal.string("default"))
    query = (
        exp.select(
            exp.column("event", "e"), variant.as_("variant"), _who("e").as_("profile"),
            exp.func("coalesce", exp.column("product_id", "e"), _property("product_id")).as_("product_id"),
            epoch_ms(backend, exp.column("timestamp", "e")).as_("ts"),
        )
        .from_(backend.aliased_ref(EVENTS, "e"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=exp.column("profile_id", "m").eq(exp.column("profile_id", "e")),
              join_type="left")
        .where(exp.column("event", "e").isin(*(exp.Literal.string(n) for n in (SHOWN, CLICKED, PRODUCT_CLICKED))))
        .where(block.eq(exp.Literal.string(block_id)))
    )
    if since is not None:
        query = query.where(epoch_ms(backend, exp.column("timestamp", "e")) >= exp.Literal.number(int(since.timestamp() * 1000)))
    return backend.rows(query)


def _orders(backend: Backend, products: set[str], since_ms: int) -> list[dict[str, Any]]:
    if not products:
        return []
    query = (
        exp.select(
            _who("l").as_("profile"), exp.column("product_id", "l"), exp.column("message_id", "l").as_("order_key"),
            epoch_ms(backend, exp.column("timestamp", "l")).as_("ts"),
            (exp.func("coalesce", exp.column("price", "l"), exp.Literal.number(0))
             * exp.func("coalesce", exp.column("quantity", "l"), exp.Literal.number(1))).as_("amount"),
        )
        .from_(backend.aliased_ref(ORDER_LINES, "l"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=exp.column("profile_id", "m").eq(exp.column("profile_id", "l")),
              join_type="left")
        .where(exp.column("event", "l").eq(exp.Literal.string(PURCHASE)))
        .where(exp.column("product_id", "l").isin(*(exp.Literal.string(p) for p in sorted(products))))
        .where(epoch_ms(backend, exp.column("timestamp", "l")) >= exp.Literal.number(since_ms))
    )
    return backend.rows(query)


def block_report(
    backend: Backend, block_id: str, *, window_days: float = 7.0, since: dt.datetime | None = None,
    min_impressions: int = 100,
) -> dict[str, Any]:
    events = _events(backend, block_id, since)
    stats: dict[str, dict[str, Any]] = defaultdict(lambda: {"impressions": 0, "clicks": 0, "conversions": 0, "revenue": 0.0,
                                                            "viewers": set()})
    clicks: list[tuple[str, str, str, int]] = []
    for e in events:
        s = stats[e["variant"]]
        if e["event"] == SHOWN:
            s["impressions"] += 1
            if e["profile"]:
                s["viewers"].add(e["profile"])
        else:
            s["clicks"] += 1
            if e["profile"] and e["product_id"]:
                clicks.append((e["variant"], e["profile"], e["product_id"], int(e["ts"])))
    window_ms = int(window_days * 86_400_000)
    if clicks:
        by_key: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for variant, profile, product, ts in clicks:
            by_key[(profile, product)].append((ts, variant))
        counted: set[tuple[str, str]] = set()
        for line in _orders(backend, {c[2] for c in clicks}, min(c[3] for c in clicks)):
            for ts, variant in sorted(by_key.get((line["profile"], line["product_id"]), []), reverse=True):
                if ts <= line["ts"] <= ts + window_ms:  # the latest click before the order gets it
                    key = (variant, line["order_key"])
                    if key not in counted:
                        counted.add(key)
                        stats[variant]["conversions"] += 1
                    stats[variant]["revenue"] += float(line["amount"] or 0.0)
                    break
    variants = []
    for name, s in sorted(stats.items()):
        shown = s["impressions"]
        variants.append({
            "variant": name, "impressions": shown, "viewers": len(s["viewers"]), "clicks": s["clicks"],
            "ctr": round(s["clicks"] / shown, 4) if shown else None, "conversions": s["conversions"],
            "conversion_rate": round(s["conversions"] / shown, 4) if shown else None, "revenue": round(s["revenue"], 2),
        })
    return {"block": block_id, "window_days": window_days, "variants": variants,
            **_winner(variants, min_impressions)}


def _winner(variants: list[dict[str, Any]], min_impressions: int) -> dict[str, Any]:
    ranked = sorted((v for v in variants if v["impressions"]), key=lambda v: v["conversions"] / v["impressions"], reverse=True)
    if len(ranked) < 2:
        return {"winner": None, "p_value": None, "reason": "an A/B test needs impressions of two variants"}
    best, second = ranked[0], ranked[1]
    n1, n2 = best["impressions"], second["impressions"]
    p1, p2 = best["conversions"] / n1, second["conversions"] / n2
    pooled = (best["conversions"] + second["conversions"]) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = 1.0 if spread == 0 else math.erfc(abs(p1 - p2) / spread / math.sqrt(2))
    if min(n1, n2) < min_impressions:
        return {"winner": None, "p_value": round(p_value, 4),
                "reason": f"each variant needs {min_impressions} impressions before a winner is named"}
    if p_value >= 0.05:
        return {"winner": None, "p_value": round(p_value, 4), "reason": "no significant difference yet (p >= 0.05)"}
    return {"winner": best["variant"], "p_value": round(p_value, 4), "reason": "best conversions per impression, p < 0.05"}
