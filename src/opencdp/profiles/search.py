"""Find profiles by the current value of a trait: one SQL query, the same on every engine.

A profile's trait is the value of the latest event (by event time, then message id)
whose ``traits`` hold that key, across the profile and every id merged into it: last
write wins, as on the profile (``GET /api/v1/profiles/{id}`` -> ``traits``). Each
profile id's latest values are read from ``profile_summary`` (kept with the events,
storage/profile_summary.py), one row per profile id rather than every identify event. A key
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
from opencdp.storage.schema import PROFILE_MAP, PROFILE_SUMMARY, T

MAX_TRAIT_CHARS = 200


@dataclass(frozen=True)
class Page:
    profiles: list[dict[str, Any]]
    """``{"profile_id", "value", "updated_at"}`` each, by profile id."""
    next: str | None
    """The cursor of the next page; None on the last one."""


def _held(dialect: str, column: exp.Expression) -> tuple[exp.Expression, exp.Expression, exp.Expression, exp.Expression]:
    """What ``profile_summary.traits`` holds for the key: (value as text, NULL when null; its time in ms;
    the message id that set it; whether the key is there). Held as ``"key": [value, time_ms, message_id, source]``."""
    if dialect == "duckdb":  # JSON pointers: every character of a key is literal in them
        return (
            exp.Anonymous(this="json_extract_string", expressions=[column, param("value_path")]),
            exp.cast(exp.Anonymous(this="json_extract", expressions=[column.copy(), param("time_path")]), "bigint"),
            exp.Anonymous(this="json_extract_string", expressions=[column.copy(), param("id_path")]),
            exp.Anonymous(this="json_exists", expressions=[column.copy(), param("key_path")]),
        )
    key = param("key_path")

    def at(index: int, type_name: str) -> exp.Expression:
        return exp.Anonymous(
            this="JSONExtract", expressions=[column.copy(), key.copy(), exp.Literal.number(index), exp.Literal.string(type_name)]
        )

    return (
        at(1, "Nullable(String)"), at(2, "Int64"), at(3, "String"),
        exp.Anonymous(this="JSONHas", expressions=[column.copy(), key.copy()]),
    )


def paths(backend: Backend, trait: str) -> dict[str, str]:
    """The path parameters for ``trait`` on this engine."""
    if backend.capabilities.dialect == "duckdb":
        pointer = "/" + trait.replace("~", "~0").replace("/", "~1")
        return {"key_path": pointer, "value_path": pointer + "/0", "time_path": pointer + "/1", "id_path": pointer + "/2"}
    return {"key_path": trait}


def _from_ms(dialect: str, ms: exp.Expression) -> exp.Expression:
    """Epoch milliseconds as a UTC time, as the events' ``timestamp`` reads."""
    if dialect == "duckdb":
        return exp.Anonymous(this="make_timestamptz", expressions=[exp.Mul(this=ms, expression=exp.Literal.number(1000))])
    return exp.Anonymous(this="fromUnixTimestamp64Milli", expressions=[ms, exp.Literal.string("UTC")])


def _query(backend: Backend, *, prefix: bool) -> exp.Expression:
    dialect = backend.capabilities.dialect
    summary = backend.aliased_ref(PROFILE_SUMMARY, "s")
    mapped = backend.aliased_ref(PROFILE_MAP, "pm")
    profile = exp.Coalesce(this=exp.column("canonical_id", table="pm"), expressions=[exp.column("profile_id", table="s")])
    text, time_ms, message_id, present = _held(dialect, exp.column("traits", table="s"))
    latest_first = exp.Order(expressions=[exp.column("time_ms").desc(), exp.column("set_by").desc()])
    held = (
        exp.select(
            exp.alias_(profile, "profile_id"), exp.alias_(text, "value"), exp.alias_(time_ms, "time_ms"),
            exp.alias_(message_id, "set_by"),
        )
        .from_(summary)
        .join(mapped, on=exp.column("profile_id", table="pm").eq(exp.column("profile_id", table="s")), join_type="left")
        .where(exp.and_(exp.column("traits", table="s").is_(exp.null()).not_(), present))
    )
    rows = exp.select(
        "profile_id", "value",
        exp.alias_(_from_ms(dialect, exp.column("time_ms")), "updated_at"),
        exp.alias_(exp.Window(this=exp.RowNumber(), partition_by=[exp.column("profile_id")], order=latest_first), "rn"),
    ).from_(held.subquery("held"))
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
        _prefix if prefix else _exact, **paths(backend, trait), value=value, after=after, limit=limit + 1
    ).to_pylist()
    page = rows[:limit]
    return Page(page, str(page[-1]["profile_id"]) if len(rows) > limit else None)
