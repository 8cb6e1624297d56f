"""Secondary indexes declared in the schema, and prepared queries with parameters, on every engine."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from sqlglot import exp

from opencdp.storage.base import Backend, param
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP, TABLES


def _indexes(backend: Backend) -> set[tuple[str, str]]:
    if backend.capabilities.dialect == "duckdb":
        rows = backend.rows("SELECT table_name, index_name FROM duckdb_indexes()")
    else:
        rows = backend.rows(
            "SELECT table AS table_name, name AS index_name FROM system.data_skipping_indices WHERE database = currentDatabase()"
        )
    return {(r["table_name"], r["index_name"]) for r in rows}


def test_declared_indexes_exist_and_schema_creation_is_repeatable(backend: Backend) -> None:
    declared = {(t.name, f"{t.name}_{c}") for t in TABLES for c in t.indexes}
    assert {("identities", "identities_profile_id"), ("profile_map", "profile_map_canonical_id")} <= declared
    assert declared <= _indexes(backend)
    backend.create_schema()  # an existing store: nothing created twice
    assert declared <= _indexes(backend)


def _owned_by(backend: Backend) -> exp.Expression:
    return (
        exp.select("identifier")
        .from_(backend.table_ref(IDENTITIES))
        .where(exp.column("profile_id").eq(param("profile_id")))
        .order_by("identifier")
    )


def test_prepared_query_takes_values_as_parameters(backend: Backend) -> None:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    tricky = "p_'; DROP TABLE identities; --"
    rows = [("email:a@example.ru", "p_1"), ("phone:+79161234567", "p_1"), ("user_id:C1", tricky)]
    backend.upsert(
        IDENTITIES,
        pa.table(
            {
                "identifier": [i for i, _ in rows],
                "kind": [i.partition(":")[0] for i, _ in rows],
                "value": [i.partition(":")[2] for i, _ in rows],
                "profile_id": [p for _, p in rows],
                "first_seen": pa.array([now] * 3, pa.timestamp("ms", tz="UTC")),
                "message_id": ["m1", "m2", "m3"],
                "updated_at": pa.array([now] * 3, pa.timestamp("ms", tz="UTC")),
                "deleted": [False] * 3,
            },
            schema=IDENTITIES.arrow_schema,
        ),
    )
    assert backend.run(_owned_by, profile_id="p_1").column(0).to_pylist() == ["email:a@example.ru", "phone:+79161234567"]
    assert backend.run(_owned_by, profile_id=tricky).column(0).to_pylist() == ["user_id:C1"]
    assert backend.run(_owned_by, profile_id="nobody").num_rows == 0
    assert backend.prepared(_owned_by) is backend.prepared(_owned_by)  # rendered once
    assert backend.run_rows(_owned_by, profile_id="p_1") == [("email:a@example.ru",), ("phone:+79161234567",)]
    assert backend.run_rows(_owned_by, profile_id="nobody") == []


@pytest.mark.parametrize("profiles", [["p_a"], ["p_a", "p_b"]])
def test_member_reads_use_the_canonical_index(backend: Backend, profiles: list[str]) -> None:
    from opencdp.identity.profiles import canonical_id, member_ids, resolve

    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    mapping = {"p_a": "p_a", **{p: "p_a" for p in profiles[1:]}}
    backend.upsert(
        PROFILE_MAP,
        pa.table(
            {"profile_id": list(mapping), "canonical_id": list(mapping.values()), "updated_at": [now] * len(mapping)},
            schema=PROFILE_MAP.arrow_schema,
        ),
    )
    assert member_ids(backend, "p_a") == sorted(profiles)
    assert resolve(backend, "p_a") == ("p_a", sorted(profiles))
    assert resolve(backend, profiles[-1]) == ("p_a", sorted(profiles))
    assert canonical_id(backend, profiles[-1]) == "p_a"
    assert resolve(backend, "p_unknown") is None and canonical_id(backend, "p_unknown") is None
