"""How a block performs, per A/B variant: impressions, clicks, conversions, revenue, winner.

A block's use is ordinary events:

* ``Recommendation Shown`` {block, variant, recommendation_id, product_ids} — an impression.
  The server records one for every answer it serves (``impressions``); a site sending its
  own with the same ``recommendation_id`` is not counted twice (impressions are counted
  by ``recommendation_id``);
* ``Recommendation Clicked`` {block, variant, recommendation_id, product_id} — a click,
  recorded by the tracked link (``click_url``) or sent by the site; Segment's
  ``Product Clicked`` counts too, with ``recommendation_block`` / ``recommendation_variant``
  or just the ``recommendation_id`` of the answer it came from (the site echoes it).

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
from opencdp.recommendations.impressions import CLICKED, SHOWN
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP

PRODUCT_CLICKED = "Product Clicked"


def _property(name: str, alias: str = "e") -> exp.Expr:
    path = exp.JSONPath(expressions=[exp.JSONPathRoot(), exp.JSONPathKey(this=name)])
    value = exp.JSONExtractScalar(this=exp.column("properties", alias), expression=path)
    return exp.func("nullif", value, exp.Literal.string(""))  # ClickHouse reads a missing key as ''


def _who(alias: str) -> exp.Expr:
    return exp.func("coalesce", exp.column("canonical_id", "m"), exp.column("profile_id", alias))


def _block(alias: str) -> exp.Expr:
    return exp.func("coalesce", _property("block", alias), _property("recommendation_block", alias))


def _events(backend: Backend, block_id: str, since: dt.datetime | None) -> list[dict[str, Any]]:
    """The block's impressions and clicks; a click naming only a ``recommendation_id`` of the block's answers counts."""
    variant = exp.func("coalesce", _property("variant"), _property("recommendation_variant"))
    answers = (
        exp.select(_property("recommendation_id", "s")).from_(backend.aliased_ref(EVENTS, "s"))
        .where(exp.column("event", "s").eq(exp.Literal.string(SHOWN)))
        .where(_block("s").eq(exp.Literal.string(block_id)))
        .where(_property("recommendation_id", "s").is_(exp.null()).not_())
    )
    clicks = exp.column("event", "e").isin(exp.Literal.string(CLICKED), exp.Literal.string(PRODUCT_CLICKED))
    query = (
        exp.select(
            exp.column("event", "e"), variant.as_("variant"), _who("e").as_("profile"),
            exp.func("coalesce", exp.column("product_id", "e"), _property("product_id")).as_("product_id"),
            epoch_ms(backend, exp.column("timestamp", "e")).as_("ts"), _property("recommendation_id").as_("recommendation_id"),
        )
        .from_(backend.aliased_ref(EVENTS, "e"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=exp.column("profile_id", "m").eq(exp.column("profile_id", "e")),
              join_type="left")
        .where(exp.column("event", "e").isin(*(exp.Literal.string(n) for n in (SHOWN, CLICKED, PRODUCT_CLICKED))))
        .where(exp.or_(_block("e").eq(exp.Literal.string(block_id)),
                       exp.and_(clicks, _property("recommendation_id").isin(query=answers))))
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
    variant_of = {e["recommendation_id"]: e["variant"] or "default" for e in events
                  if e["event"] == SHOWN and e["recommendation_id"]}
    shown: set[str] = set()
    for e in events:
        e["variant"] = e["variant"] or variant_of.get(e["recommendation_id"]) or "default"
        s = stats[e["variant"]]
        if e["event"] == SHOWN:
            if e["recommendation_id"]:
                if e["recommendation_id"] in shown:
                    continue  # the server's own impression and the site's for the same answer
                shown.add(e["recommendation_id"])
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
