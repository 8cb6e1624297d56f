"""Campaign reports: per variant delivered, opens, clicks, unsubscribes, conversions, revenue, and tests.

Counts are unique profiles. The outbox says who was meant to get which variant (and who was
held out); message events say what happened. A **conversion** is a ``conversion_event`` by the
profile (any of its merged ids) within ``attribution_hours`` after its first open or click of
the campaign; for the control group (nobody opens anything) within the window after the
campaign's first send, so the two rates are comparable: uplift = conversion rate of the
variant against control.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from opencdp.campaigns import outbox, tracking
from opencdp.campaigns.experiments import CONTROL, chi_square, compare
from opencdp.identity.profiles import members_of
from opencdp.segments.sql import ClickHouse, DuckDB
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS

_CHUNK = 2000
_EVENT_METRIC = {
    tracking.DELIVERED: "delivered", tracking.OPENED: "opened", tracking.CLICKED: "clicked",
    tracking.UNSUBSCRIBED: "unsubscribed", tracking.BOUNCED: "bounced",
}


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def message_events(backend: Backend, campaign_id: str) -> list[dict[str, Any]]:
    dialect = ClickHouse() if backend.capabilities.dialect == "clickhouse" else DuckDB()
    query = (
        exp.select("event", "profile_id", "timestamp")
        .from_(exp.to_table(EVENTS.name))
        .where(
            exp.and_(
                exp.column("event").isin(*(exp.Literal.string(e) for e in tracking.MESSAGE_EVENTS)),
                dialect.json_text(exp.column("properties"), ("campaign_id",)).eq(exp.Literal.string(campaign_id)),
            )
        )
    )
    return backend.select(query).to_pylist()


def conversions(backend: Backend, canonical: Sequence[str], event: str, since: dt.datetime) -> dict[str, list[tuple[dt.datetime, float]]]:
    """Canonical profile -> (time, revenue) of its conversion events since ``since``."""
    members = members_of(backend, list(canonical))
    ids = sorted(members)
    found: dict[str, list[tuple[dt.datetime, float]]] = {}
    from opencdp.campaigns.outbox import time_literal

    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = exp.select("profile_id", "timestamp", "revenue", "total").from_(exp.to_table(EVENTS.name)).where(
            exp.and_(
                exp.column("event").eq(exp.Literal.string(event)),
                exp.column("timestamp") >= time_literal(backend, since),
                exp.column("profile_id").isin(*(exp.Literal.string(p) for p in chunk)),
            )
        )
        for row in backend.select(query).to_pylist():
            value = row["revenue"] if row["revenue"] is not None else (row["total"] or 0.0)
            found.setdefault(members[row["profile_id"]], []).append((_utc(row["timestamp"]), float(value or 0.0)))
    return found


def campaign_report(backend: Backend, campaign_id: str, *, attribution_hours: float = 72.0,
                    conversion_event: str = "Order Completed") -> dict[str, Any]:
    rows = outbox.rows_of(backend, campaign_id)
    variant_of = {r["profile_id"]: r["variant"] for r in rows}
    per: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = per.setdefault(row["variant"], {"recipients": 0, "sent": 0, "skipped": 0, "failed": 0})
        entry["recipients"] += 1
        if row["state"] in (outbox.SENT, outbox.DELIVERED):
            entry["sent"] += 1
        elif row["state"] == outbox.SKIPPED:
            entry["skipped"] += 1
        elif row["state"] == outbox.FAILED:
            entry["failed"] += 1
    seen: dict[str, dict[str, set[str]]] = {v: {m: set() for m in _EVENT_METRIC.values()} for v in per}
    engaged_at: dict[str, dt.datetime] = {}
    for event in message_events(backend, campaign_id):
        variant = variant_of.get(event["profile_id"])
        metric = _EVENT_METRIC.get(event["event"])
        if variant is None or metric is None:
            continue
        seen[variant][metric].add(event["profile_id"])
        if metric in ("opened", "clicked"):
            at = _utc(event["timestamp"])
            engaged_at[event["profile_id"]] = min(at, engaged_at.get(event["profile_id"], at))
    first_send = min((_utc(r["sent_at"]) for r in rows if r["sent_at"] is not None), default=None)
    start = first_send or min((_utc(r["created_at"]) for r in rows), default=dt.datetime.now(dt.UTC))
    window = dt.timedelta(hours=attribution_hours)
    orders = conversions(backend, sorted(variant_of), conversion_event, start) if rows else {}
    converted: dict[str, set[str]] = {v: set() for v in per}
    revenue: dict[str, float] = dict.fromkeys(per, 0.0)
    for profile, found in orders.items():
        variant = variant_of[profile]
        origin = start if variant == CONTROL else engaged_at.get(profile)
        if origin is None:
            continue
        hits = [(t, r) for t, r in found if origin <= t <= origin + window]
        if hits:
            converted[variant].add(profile)
            revenue[variant] += sum(r for _, r in hits)
    variants: dict[str, dict[str, Any]] = {}
    for name, entry in per.items():
        counts = {m: len(s) for m, s in seen[name].items()}
        base = entry["recipients"] if name == CONTROL else max(entry["sent"], counts["delivered"])
        delivered = counts["delivered"] or entry["sent"]
        variants[name] = {
            **entry, **counts, "delivered": delivered, "converted": len(converted[name]),
            "revenue": round(revenue[name], 2),
            "open_rate": counts["opened"] / delivered if delivered else 0.0,
            "click_rate": counts["clicked"] / delivered if delivered else 0.0,
            "conversion_rate": len(converted[name]) / base if base else 0.0,
            "revenue_per_recipient": revenue[name] / base if base else 0.0,
        }
    tests: list[dict[str, Any]] = []
    if CONTROL in variants:
        c = variants[CONTROL]
        for name, v in variants.items():
            if name != CONTROL:
                tests.append({"metric": "conversion", **compare(name, v["converted"], v["sent"], CONTROL, c["converted"], c["recipients"]).to_dict()})
    names = sorted(n for n in variants if n != CONTROL)
    if len(names) >= 2:
        for metric in ("opened", "clicked"):
            base_name = names[0]
            b = variants[base_name]
            for name in names[1:]:
                v = variants[name]
                tests.append({"metric": metric, **compare(name, v[metric], v["delivered"], base_name, b[metric], b["delivered"]).to_dict()})
        tests.append({"metric": "clicked", "chi2_all_variants_p_value": chi_square([(variants[n]["clicked"], variants[n]["delivered"]) for n in names])})
    return {"campaign_id": campaign_id, "attribution_hours": attribution_hours, "conversion_event": conversion_event,
            "variants": variants, "tests": tests}
