"""Stored scores on every engine: versions replace each other whole, the segment language reads
them by name, a new version is picked up by the next evaluation, and bad writes are refused."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from opencdp.profiles.scores import (
    ScoreError,
    delete_score,
    read_scores,
    score_info,
    score_names,
    scores_of,
    write_scores,
)
from opencdp.segments import store
from opencdp.segments.ast import SegmentError
from opencdp.segments.sql import members
from opencdp.segments.text import parse
from opencdp.storage.base import Backend
from opencdp.storage.schema import PROFILE_MAP

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


def profiles(backend: Backend, *ids: str) -> None:
    rows = [{"profile_id": p, "canonical_id": p, "updated_at": NOW} for p in ids]
    backend.insert(PROFILE_MAP.name, pa.Table.from_pylist(rows, schema=PROFILE_MAP.arrow_schema))


def values(backend: Backend, name: str) -> dict[str, object]:
    table = read_scores(backend, name)
    return dict(zip(table.column("profile_id").to_pylist(), table.column("value").to_pylist(), strict=True))


def test_a_new_version_replaces_the_old_one_whole(backend: Backend) -> None:
    write_scores(backend, "churn_probability", ["a", "b", "c"], [0.9, 0.2, 0.75], model_version="v1", metrics={"auc": 0.8})
    assert values(backend, "churn_probability") == {"a": 0.9, "b": 0.2, "c": 0.75}
    write_scores(backend, "churn_probability", ["a", "d"], [0.1, None], model_version="v2")
    assert values(backend, "churn_probability") == {"a": 0.1}  # c is gone, d's null is not stored
    info = score_info(backend, "churn_probability")
    assert info is not None and (info.model_version, info.kind, info.profiles) == ("v2", "number", 1)
    assert backend.scalar("SELECT count(*) FROM profile_scores") == 1  # the old version's rows are removed
    write_scores(backend, "rfm_cell", ["a", "b"], ["champions", "at_risk"], description="RFM cell")
    assert set(score_names(backend)) == {"churn_probability", "rfm_cell"}
    assert scores_of(backend, ["a"]) == {"churn_probability": 0.1, "rfm_cell": "champions"}
    assert scores_of(backend, ["b"]) == {"rfm_cell": "at_risk"}
    assert delete_score(backend, "rfm_cell") and not delete_score(backend, "rfm_cell")
    assert set(score_names(backend)) == {"churn_probability"}


def test_segments_read_scores_by_name(backend: Backend) -> None:
    profiles(backend, "a", "b", "c", "d")
    write_scores(backend, "churn_probability", ["a", "b", "c"], [0.9, 0.8, 0.1], model_version="v1")
    write_scores(backend, "clv", ["a", "b", "c"], [20000, 5000, 50000], model_version="v1")
    write_scores(backend, "rfm_cell", ["a", "c", "d"], ["at_risk", "champions", "at_risk"], model_version="v1")
    tree = parse('computed.churn_probability > 0.7 and computed.clv > 10000')
    assert sorted(members(backend, tree, NOW)) == ["a"]
    assert sorted(members(backend, parse('computed.rfm_cell = "at_risk"'), NOW)) == ["a", "d"]
    assert sorted(members(backend, parse('not computed.churn_probability > 0.5'), NOW)) == ["c", "d"]
    write_scores(backend, "churn_probability", ["c"], [0.95], model_version="v2")
    assert sorted(members(backend, tree, NOW)) == ["c"]  # the cached query follows the new version

    saved, warnings = store.save(backend, "risky_vip", definition='computed.churn_probability > 0.7 and computed.clv > 10000')
    assert (saved.segment_id, warnings) == ("risky_vip", [])
    with pytest.raises(SegmentError, match="did you mean `churn_probability`"):
        store.validate(backend, 'computed.churn_probabilty > 0.7')


def test_bad_writes_are_refused_and_leave_the_current_version(backend: Backend) -> None:
    write_scores(backend, "clv", ["a"], [100.0], model_version="v1")
    with pytest.raises(ScoreError, match="one value per profile") as error:
        write_scores(backend, "clv", ["a", "b"], [1.0])
    assert error.value.field == "values"
    with pytest.raises(ScoreError, match="holds numbers"):
        write_scores(backend, "clv", ["a"], ["high"])
    with pytest.raises(ScoreError, match="appears twice"):
        write_scores(backend, "clv", ["a", "a"], [1.0, 2.0])
    with pytest.raises(ScoreError, match="lower-case") as error:
        write_scores(backend, "Bad Name", ["a"], [1.0])
    assert error.value.field == "name"
    assert values(backend, "clv") == {"a": 100.0}
    assert read_scores(backend, "never_written").num_rows == 0
