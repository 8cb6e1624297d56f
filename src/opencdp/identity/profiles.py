"""Which profile ids are one person now: ``profile_map`` read from the store.

Merged profiles keep their ids (events carry them); ``profile_map`` sends each to the
profile it is part of. Everything that reads a profile's rows asks here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlglot import exp

from opencdp.storage.base import Backend, param
from opencdp.storage.schema import PROFILE_MAP

_CHUNK = 2000  # profile ids per query: keeps IN lists a reasonable size


def canonical_ids(backend: Backend, profile_ids: Iterable[str]) -> dict[str, str]:
    """Each known profile id -> the profile it is now part of; unknown ids are left out."""
    ids = sorted(set(profile_ids))
    found: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = (
            exp.select("profile_id", "canonical_id")
            .from_(backend.table_ref(PROFILE_MAP))
            .where(exp.column("profile_id").isin(*(exp.Literal.string(i) for i in chunk)))
        )
        found.update({row["profile_id"]: row["canonical_id"] for row in backend.select(query).to_pylist()})
    return found


def members_of(backend: Backend, canonical: Sequence[str]) -> dict[str, str]:
    """Every profile id merged into (or equal to) each canonical id -> that canonical id."""
    found = {profile: profile for profile in canonical}
    for start in range(0, len(canonical), _CHUNK):
        chunk = canonical[start : start + _CHUNK]
        query = (
            exp.select("profile_id", "canonical_id")
            .from_(backend.table_ref(PROFILE_MAP))
            .where(exp.column("canonical_id").isin(*(exp.Literal.string(i) for i in chunk)))
        )
        found.update({row["profile_id"]: row["canonical_id"] for row in backend.select(query).to_pylist()})
    return found


def _canonical_query(backend: Backend) -> exp.Expression:
    return (
        exp.select("canonical_id")
        .from_(backend.table_ref(PROFILE_MAP))
        .where(exp.column("profile_id").isin(param("profile_id")))  # IN: DuckDB's key lookup is faster than with =
    )


def _members_query(backend: Backend) -> exp.Expression:
    return exp.select("profile_id").from_(backend.table_ref(PROFILE_MAP)).where(exp.column("canonical_id").eq(param("canonical")))


def canonical_id(backend: Backend, profile_id: str) -> str | None:
    """The profile ``profile_id`` is now part of; None for an id never issued."""
    found = backend.run_rows(_canonical_query, profile_id=profile_id)
    return str(found[0][0]) if found else None


def member_ids(backend: Backend, canonical: str) -> list[str]:
    """The canonical id and every id merged into it, sorted (one read of the canonical_id index).

    Without ``canonical`` itself among profile_map's rows for it, ``canonical`` is not
    (or no longer) a surviving profile; the list then holds only it.
    """
    found = {str(row[0]) for row in backend.run_rows(_members_query, canonical=canonical)}
    return sorted(found | {canonical})



def resolve(backend: Backend, profile_id: str) -> tuple[str, list[str]] | None:
    """The profile ``profile_id`` is now part of, with all its ids (as ``member_ids``); None for an id never issued.

    One index read when ``profile_id`` is itself a surviving profile (the usual case:
    identities are re-owned by the survivor of a merge), three otherwise.
    """
    found = {str(row[0]) for row in backend.run_rows(_members_query, canonical=profile_id)}
    if profile_id in found:
        return profile_id, sorted(found)
    canonical = canonical_id(backend, profile_id)
    return (canonical, member_ids(backend, canonical)) if canonical is not None else None
