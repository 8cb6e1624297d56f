"""Find profiles by the current value of a trait: one SQL query, the same on every engine.

A profile's trait is the value of the latest event (by event time, then message id)
whose ``traits`` hold that key, across the profile and every id merged into it: last
write wins, as on the profile (``GET /api/v1/profiles/{id}`` -> ``traits``). A key
set to null counts as the latest value (null matches nothing). Values compare as
text: strings as they are, numbers and booleans as their JSON text (``42``, ``4.5``,
``true``), exactly (case-sensitive) or by prefix.

Pages are ordered by canonical profile id; the cursor is the last id of the previous
page, so pages are stable while profiles change (a profile whose value changes moves
in or out of the result, the others keep their place). Every user value is a query
parameter; the query text is rendered once per engine and kind of match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from opencdp.storage.base import Backend, param
from opencdp.storage.schema import EVENTS, PROFILE_MAP, T

MAX_TRAIT_CHARS = 200


@dataclass(frozen=True)
class Page:
    profiles: list[dict[str, Any]]
    """``{"profile_id", "value", "updated_at"}`` each, by profile id."""
    next: str | None
    """The cursor of the next page; None on the last one."""


def _json_key(dialect: str, column: exp.Expression) -> tuple[exp.Expression, exp.Expression]:
    """(the value at the top-level key ``$key_path`` as text, NULL when null; whether the key is there)."""
    if dialect == "duckdb":  # a JSON pointer: every character of a key is literal in it
        pointer = param("key_path")
        return (
            exp.Anonymous(this="json_extract_string", expressions=[column, pointer]),
            exp.Anonymous(this="json_exists", expressions=[column, pointer.copy()]),
        )
    key = param("key_path")
    text = exp.Anonymous(this="JSONExtract", expressions=[column, key, exp.Literal.string("Nullable(String)")])
    return text, exp.Anonymous(this="JSONHas", expressions=[column.copy(), key.copy()])


def key_path(backend: Backend, trait: str) -> str:
    """The ``key_path`` parameter for ``trait`` on this engine."""
    if backend.capabilities.dialect == "duckdb":
        return "/" + trait.replace("~", "~0").replace("/", "~1")
    return trait


def _query(backend: Backend, *, prefix: bool) -> exp.Expression:
    event = exp.to_table(EVENTS.name, alias="e")
    mapped = backend.aliased_ref(PROFILE_MAP, "pm")
    profile = exp.Coalesce(this=exp.column("canonical_id", table="pm"), expressions=[exp.column("profile_id", table="e")])
    text, present = _json_key(backend.capabilities.dialect, exp.column("traits", table="e"))
    latest_first = exp.Order(
        expressions=[exp.column("timestamp", table="e").desc(), exp.column("message_id", table="e").desc()]
    )
    rows = (
        exp.select(
            exp.alias_(profile, "profile_id"),
            exp.alias_(text, "value"),
            exp.alias_(exp.column("timestamp", table="e"), "updated_at"),
            exp.alias_(exp.Window(this=exp.RowNumber(), partition_by=[profile.copy()], order=latest_first), "rn"),
        )
        .from_(event)
        .join(mapped, on=exp.column("profile_id", table="pm").eq(exp.column("profile_id", table="e")), join_type="left")
        .where(
            exp.and_(
                exp.column("profile_id", table="e").is_(exp.null()).not_(),
                exp.column("traits", table="e").is_(exp.null()).not_(),
                present,
            )
        )
    )
    value = exp.column("value")
    match = exp.StartsWith(this=value, expression=param("value")) if prefix else value.eq(param("value"))
    return (
        exp.select("profile_id", "value", "updated_at")
        .from_(rows.subquery("latest"))
        .where(exp.and_(exp.column("rn").eq(1), match, exp.column("profile_id") > param("after")))
        .order_by("profile_id")
        .limit(param("limit", T.INT))
    )


def _exact(backend: Backend) -> exp.Expression:
    return _query(backend, prefix=False)


def _prefix(backend: Backend) -> exp.Expression:
    return _query(backend, prefix=True)


def search(backend: Backend, trait: str, value: str, *, prefix: bool = False, after: str = "", limit: int = 50) -> Page:
    """Profiles whose ``trait`` is ``value`` now (or starts with it), after the cursor ``after``."""
    rows = backend.run(
        _prefix if prefix else _exact, key_path=key_path(backend, trait), value=value, after=after, limit=limit + 1
    ).to_pylist()
    page = rows[:limit]
    return Page(page, str(page[-1]["profile_id"]) if len(rows) > limit else None)
