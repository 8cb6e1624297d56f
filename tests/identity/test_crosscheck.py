"""The merge-heavy stream of bench_identity, resolved by the stage, against an independent union-find.

``benchmarks/bench_identity.py`` reports the same check at 300,000 events; here a few
thousand, loaded in batches on every engine, so a wrong merge or a lost identifier
fails a test instead of a line in a report. The reference applies the same rules
(limits, merge protection) in event-time order: how the graph defines its result.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from sqlglot import exp

from opencdp.identity.identifiers import Rules
from opencdp.storage.base import Backend
from opencdp.storage.schema import IDENTITIES


def _bench() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "bench_identity.py"
    spec = importlib.util.spec_from_file_location("bench_identity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_identity", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.mark.parametrize("session", [(3, 15), (1, 1)], ids=["sessions", "every-event-another-device"])
def test_merge_heavy_stream_matches_the_reference_union_find(backend: Backend, session: tuple[int, int]) -> None:
    events = bench.stream(3_000, 0.20, session, seed=11, placeholders=0.03)
    _rate, stage, profile_ids = bench.run(events, 700, backend)
    assert stage.stats.merges > 50 and stage.stats.conflicts > 50  # the rules bite: not a plain union-find
    profiles, groups, agreeing, total = bench.crosscheck(events, profile_ids, backend, Rules())
    assert (profiles, agreeing) == (groups, total)
    stored = backend.select(exp.select("value").from_(backend.table_ref(IDENTITIES))).column(0).to_pylist()
    assert not {"undefined", "null", "-1", "0000000", "12"} & set(stored)


def test_the_reference_sees_a_different_rule() -> None:
    """The comparison can fail: the same stream under looser limits is another partition."""
    events = bench.stream(2_000, 0.20, (3, 15), seed=11)
    strict, loose = bench.reference_partition(events, Rules()), bench.reference_partition(events, Rules(default_limit=6))
    assert set(strict.values()) != set(loose.values())
