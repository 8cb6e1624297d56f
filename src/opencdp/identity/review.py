"""Probabilistic dedupe of stored profiles: merge the sure matches, queue the likely ones.

``run_dedupe`` reads each profile's name, birthday and city (latest traits by event
time) with its email and phone (from the identity graph), scores candidate pairs
with ``dedupe.find_matches``, merges pairs above ``auto_merge_at`` through the
identity stage (recorded as ``probabilistic`` merges with the match evidence; merge
protection still applies: two user ids are never merged, such pairs are ``refused``)
and keeps the pairs between the thresholds in ``match_candidates`` for a person to
accept or reject. A decided pair is not proposed again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
from sqlglot import exp

from opencdp.identity.dedupe import DedupeSettings, find_matches
from opencdp.identity.stage import stage_for
from opencdp.storage.base import Backend
from opencdp.storage.schema import IDENTITIES, MATCH_CANDIDATES, PROFILE_MAP

_TRAITS = {
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "birthday": ("birthday", "birth_date", "birthDate"),
    "city": ("city",),
}
_decode = msgspec.json.Decoder().decode


@dataclass
class DedupeReport:
    profiles: int = 0
    pairs: int = 0
    merged: int = 0
    queued: int = 0
    refused: int = 0
    skipped: int = 0  # already decided, or no longer two profiles


def profile_records(backend: Backend) -> pa.Table:
    """One row per profile: the fields probabilistic matching compares."""
    canonical = exp.func("coalesce", exp.column("canonical_id", "pm"), exp.column("profile_id", "e"))
    rows = backend.select(
        exp.select(canonical.as_("profile_id"), exp.column("traits", "e"), exp.column("timestamp", "e"))
        .from_(exp.to_table("events").as_("e"))
        .join(backend.aliased_ref(PROFILE_MAP, "pm"), on="pm.profile_id = e.profile_id", join_type="left")
        .where(exp.column("traits", "e").is_(exp.null()).not_().and_(exp.column("profile_id", "e").is_(exp.null()).not_()))
        .order_by(exp.column("timestamp", "e"))
    ).to_pylist()
    people: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            traits = _decode(row["traits"])
        except msgspec.DecodeError:
            continue
        if not isinstance(traits, dict):
            continue
        person = people.setdefault(row["profile_id"], {})
        for field, names in _TRAITS.items():
            for name in names:
                if isinstance(traits.get(name), str) and traits[name].strip():
                    person[field] = traits[name].strip()
    contacts = backend.select(
        exp.select("profile_id", "kind", exp.func("min", exp.column("value")).as_("value"))
        .from_(backend.table_ref(IDENTITIES))
        .where(exp.column("kind").isin(exp.Literal.string("email"), exp.Literal.string("phone")).and_(exp.column("deleted").not_()))
        .group_by("profile_id", "kind")
    ).to_pylist()
    for row in contacts:
        people.setdefault(row["profile_id"], {})[row["kind"]] = row["value"]
    ids = sorted(people)
    birthdays: list[dt.date | None] = []
    for profile_id in ids:
        try:
            birthdays.append(dt.date.fromisoformat(str(people[profile_id].get("birthday", ""))[:10]))
        except ValueError:
            birthdays.append(None)
    columns: dict[str, Any] = {"profile_id": ids}
    for field in ("first_name", "last_name", "email", "phone", "city"):
        columns[field] = pa.array([people[p].get(field) for p in ids], pa.string())
    columns["birthday"] = pa.array(birthdays, pa.date32())
    return pa.table(columns)


def run_dedupe(backend: Backend, settings: DedupeSettings | None = None, *, apply: bool = True) -> DedupeReport:
    settings = settings or DedupeSettings()
    records = profile_records(backend)
    report = DedupeReport(profiles=records.num_rows)
    matches = find_matches(records, settings).to_pylist()
    report.pairs = len(matches)
    decided = _decided_pairs(backend)
    stage = stage_for(backend)
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    for match in matches:
        pair = (match["profile_id_l"], match["profile_id_r"])
        if pair in decided:
            report.skipped += 1
            continue
        status, by = "pending", None
        if match["decision"] == "merge" and apply:
            try:
                stage.link(*pair, reason="probabilistic", details=_details(match))
                status, by = "merged", "auto"
                report.merged += 1
            except (KeyError, ValueError):
                status = "refused"
                report.refused += 1
        else:
            report.queued += 1
        rows.append({**_row(match, status, now), "decided_by": by})
    if rows:
        backend.upsert(MATCH_CANDIDATES, pa.Table.from_pylist(rows, schema=MATCH_CANDIDATES.arrow_schema))
    return report


def candidates(backend: Backend, status: str | None = "pending", limit: int = 100) -> list[dict[str, Any]]:
    query = exp.select("*").from_(backend.table_ref(MATCH_CANDIDATES))
    if status is not None:
        query = query.where(exp.column("status").eq(exp.Literal.string(status)))
    rows = backend.select(query.order_by(exp.column("match_probability").desc()).limit(limit)).to_pylist()
    for row in rows:
        row["evidence"] = _decode(row["evidence"]) if row["evidence"] else None
    return rows


def decide(backend: Backend, left: str, right: str, *, accept: bool, by: str) -> dict[str, Any]:
    """Accept (merge) or reject a queued pair. KeyError: no such pending pair; ValueError: refused."""
    pending = [c for c in candidates(backend, "pending", limit=1_000_000) if (c["profile_id_l"], c["profile_id_r"]) == (left, right)]
    if not pending:
        raise KeyError((left, right))
    match = pending[0]
    status = "rejected"
    if accept:
        stage_for(backend).link(left, right, reason="manual", details={"match_probability": match["match_probability"], "by": by})
        status = "merged"
    row = {**match, "evidence": _encode(match["evidence"]), "status": status, "decided_by": by, "updated_at": dt.datetime.now(dt.UTC)}
    backend.upsert(MATCH_CANDIDATES, pa.Table.from_pylist([row], schema=MATCH_CANDIDATES.arrow_schema))
    return {k: row[k] for k in ("profile_id_l", "profile_id_r", "status", "decided_by")}


def _decided_pairs(backend: Backend) -> set[tuple[str, str]]:
    rows = backend.select(
        exp.select("profile_id_l", "profile_id_r")
        .from_(backend.table_ref(MATCH_CANDIDATES))
        .where(exp.column("status").neq(exp.Literal.string("pending")))
    )
    return set(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))


def _details(match: dict[str, Any]) -> dict[str, Any]:
    return {"match_probability": match["match_probability"], "fields": _decode(match["evidence"])}


def _row(match: dict[str, Any], status: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "profile_id_l": match["profile_id_l"],
        "profile_id_r": match["profile_id_r"],
        "match_probability": match["match_probability"],
        "evidence": match["evidence"],
        "status": status,
        "updated_at": now,
    }


def _encode(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
