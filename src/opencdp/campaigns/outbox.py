"""The outbox: every message is a row, written before it is sent, keyed by (campaign, step, profile).

States: ``planned`` -> ``sending`` (claimed: written just before the hand-off) -> ``sent`` /
``delivered``, or ``failed`` (permanent error, attempts exhausted), ``skipped`` (no consent,
suppressed, capped, no address: the reason is kept) or ``held_out`` (a control group member,
never sent, kept so reports can compare). A transient error puts the row back to ``planned``
with a later ``not_before`` (backoff).

Exactly once: ``plan`` never rewrites a key that exists, so planning a broadcast again after a
crash adds only the missing rows; the sender marks a row ``sending`` before the hand-off, and a
row found in ``sending`` by a new sender (the old one died mid-send) is sent again with the same
``message_id``, which adapters pass to the provider as the idempotency key (email: Message-ID).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.campaigns.recipients import select_built
from opencdp.segments.sql import ClickHouse, DuckDB
from opencdp.storage.base import Backend, among, indexed
from opencdp.storage.schema import OUTBOX

PLANNED, SENDING, SENT, DELIVERED, FAILED, SKIPPED, HELD_OUT = (
    "planned", "sending", "sent", "delivered", "failed", "skipped", "held_out"
)
DONE_STATES = (SENT, DELIVERED, FAILED, SKIPPED, HELD_OUT)
_CHUNK = 5000
_SCHEMA = OUTBOX.arrow_schema


def message_id(campaign_id: str, step_id: str, profile_id: str) -> str:
    """Deterministic, so a resend after a crash is the same message to the provider."""
    return "m" + hashlib.sha1(f"{campaign_id}|{step_id}|{profile_id}".encode()).hexdigest()[:31]


def time_literal(backend: Backend, value: dt.datetime) -> exp.Expr:
    dialect = ClickHouse() if backend.capabilities.dialect == "clickhouse" else DuckDB()
    return dialect.timestamp(value)


def existing_keys(backend: Backend, campaign_id: str, step_id: str, profile_ids: Sequence[str] | None = None) -> set[str]:
    """Profiles that already have a row for (campaign, step)."""
    where = exp.and_(
        exp.column("campaign_id").eq(exp.Literal.string(campaign_id)), exp.column("step_id").eq(exp.Literal.string(step_id))
    )
    if profile_ids is None:
        return set(backend.select(exp.select("profile_id").from_(backend.table_ref(OUTBOX)).where(where)).column(0).to_pylist())
    found: set[str] = set()
    ids = list(profile_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        inside = exp.In(this=exp.column("profile_id"), expressions=[exp.Literal.string(p) for p in chunk])
        query = exp.select("profile_id").from_(backend.table_ref(OUTBOX)).where(exp.and_(where, inside, copy=False), copy=False)
        found.update(select_built(backend, query).column(0).to_pylist())
    return found


def plan(
    backend: Backend,
    *,
    campaign_id: str,
    step_id: str,
    profile_ids: Sequence[str],
    variants: Sequence[str],
    channels: Sequence[str],
    templates: Sequence[str],
    not_before: Sequence[dt.datetime],
    topic: str = "marketing",
    transactional: bool = False,
    params: Sequence[str | None] | None = None,
    held_out: Sequence[bool] | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Add rows for profiles that have none for (campaign, step); returns how many were added."""
    now = now or dt.datetime.now(dt.UTC)
    known = existing_keys(backend, campaign_id, step_id, profile_ids if len(profile_ids) < 50_000 else None)
    keep = [i for i, p in enumerate(profile_ids) if p not in known]
    if not keep:
        return 0
    n = len(keep)
    pick = lambda values: [values[i] for i in keep]  # noqa: E731
    ids = pick(profile_ids)
    states = [HELD_OUT if held_out is not None and held_out[i] else PLANNED for i in keep]
    columns: dict[str, Any] = {
        "campaign_id": [campaign_id] * n,
        "step_id": [step_id] * n,
        "profile_id": ids,
        "message_id": [message_id(campaign_id, step_id, p) for p in ids],
        "variant": pick(variants),
        "channel": pick(channels),
        "template_id": pick(templates),
        "topic": [topic] * n,
        "transactional": [transactional] * n,
        "params": pick(params) if params is not None else [None] * n,
        "state": states,
        "reason": [None] * n,
        "attempts": [0] * n,
        "not_before": pick(not_before),
        "address": [None] * n,
        "provider_message_id": [None] * n,
        "created_at": [now] * n,
        "sent_at": [None] * n,
        "updated_at": [now] * n,
    }
    table = pa.Table.from_pydict(columns, schema=_SCHEMA)
    for start in range(0, n, 200_000):
        backend.upsert(OUTBOX, table.slice(start, 200_000))
    return n


def due(backend: Backend, now: dt.datetime, limit: int, campaign_id: str | None = None, *,
        skip: Collection[str] = ()) -> list[dict[str, Any]]:
    """Rows to send now: planned and due, and rows left in ``sending`` by a sender that stopped.

    ``skip``: message ids left out (the sender's batch in flight, ``sending`` but not left by anyone),
    filtered by the engine rather than read and dropped here.
    """
    where = exp.and_(
        exp.column("state").isin(exp.Literal.string(PLANNED), exp.Literal.string(SENDING)),
        exp.column("not_before") <= time_literal(backend, now),
    )
    if campaign_id is not None:
        where = where.and_(exp.column("campaign_id").eq(exp.Literal.string(campaign_id)))
    if skip:
        where = where.and_(exp.not_(among("message_id", "skip")))
    query = exp.select("*").from_(backend.table_ref(OUTBOX)).where(where).order_by("not_before", "message_id").limit(limit)
    sql = query.sql(dialect=backend.capabilities.dialect, copy=False)
    return backend.query_arrow(sql, {"skip": sorted(skip)} if skip else None).to_pylist()


def write(backend: Backend, rows: Iterable[Mapping[str, Any]], now: dt.datetime) -> None:
    """Store new states of rows (each a full row, as ``due`` returned it, with changes)."""
    batch = [{**row, "updated_at": _after(row.get("updated_at"), now)} for row in rows]
    if batch:
        backend.upsert(OUTBOX, pa.Table.from_pylist(batch, schema=_SCHEMA))


def _after(previous: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """A version newer than the row's stored one, even within one millisecond."""
    if previous is None:
        return now
    if previous.tzinfo is None:
        previous = previous.replace(tzinfo=dt.UTC)
    return max(now, previous + dt.timedelta(milliseconds=1))


def rows_of(backend: Backend, campaign_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
    where: exp.Expr = exp.column("campaign_id").eq(exp.Literal.string(campaign_id))
    if step_id is not None:
        where = where.and_(exp.column("step_id").eq(exp.Literal.string(step_id)))
    return backend.select(exp.select("*").from_(backend.table_ref(OUTBOX)).where(where)).to_pylist()


def counts(backend: Backend, campaign_id: str) -> dict[str, dict[str, int]]:
    """variant -> state -> rows."""
    query = (
        exp.select("variant", "state", exp.alias_(exp.func("count", exp.Star()), "n"))
        .from_(backend.table_ref(OUTBOX))
        .where(exp.column("campaign_id").eq(exp.Literal.string(campaign_id)))
        .group_by("variant", "state")
    )
    out: dict[str, dict[str, int]] = {}
    for row in backend.select(query).to_pylist():
        out.setdefault(row["variant"], {})[row["state"]] = int(row["n"])
    return out


def sent_since(backend: Backend, profile_ids: Sequence[str], since: dt.datetime) -> list[tuple[str, str, dt.datetime]]:
    """(profile, channel, sent_at) of non-transactional messages sent since ``since`` (frequency caps)."""
    out: list[tuple[str, str, dt.datetime]] = []
    query = backend.render(
        exp.select("profile_id", "channel", "sent_at")
        .from_(backend.table_ref(OUTBOX))
        .where(
            exp.and_(
                among("profile_id", "ids", indexed=indexed(OUTBOX, "profile_id")),  # a list parameter, not 5,000 literals
                exp.column("state").isin(exp.Literal.string(SENT), exp.Literal.string(DELIVERED)),
                exp.column("transactional").not_(),
                exp.column("sent_at") >= time_literal(backend, since),
            )
        )
    )
    for start in range(0, len(profile_ids), _CHUNK):
        table = backend.query_arrow(query, {"ids": list(profile_ids[start : start + _CHUNK])})
        out += list(zip(*(c.to_pylist() for c in table.columns), strict=True))
    return out
