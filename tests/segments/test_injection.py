"""SQL injection through segment definitions.

Trust model: a segment definition comes from any admin key with the write scope and is
untrusted text. It reaches SQL only through the typed tree: values become sqlglot
literals (escaped by the generator for each engine), JSON keys become literal path
arguments, event names and segment ids become literals, and field names are checked
against the known columns before they are used as identifiers. So hostile values must
match as plain data, and nothing they contain may run.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from opencdp.segments.ast import Aggregate, Compare, Field, Fn, Op, SegmentError
from opencdp.segments.sql import compile_segment, members
from opencdp.segments.text import parse
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP

NOW = dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC)
HOSTILE = [
    "'; DROP TABLE events; --",
    "\\'; DROP TABLE events; --",
    "x' OR '1'='1",
    'a"b\\c',
    "line\nbreak\ttab\0nul",
    "{now:String}",
    "$now",
    "ä' || (SELECT 1) || '",
]


def _store(backend: Backend) -> None:
    rows = []
    for number, value in enumerate(HOSTILE):
        rows.append({
            "message_id": f"m{number}", "type": "identify", "event": "", "timestamp": NOW - dt.timedelta(days=1),
            "received_at": NOW, "source": "test", "channel": "web", "lsn": 0, "profile_id": f"p{number}",
            "traits": json.dumps({"note": value, value: "keyed"}, ensure_ascii=False),
        })
        rows.append({
            "message_id": f"e{number}", "type": "track", "event": value, "timestamp": NOW - dt.timedelta(days=1),
            "received_at": NOW, "source": "test", "channel": "web", "lsn": 0, "profile_id": f"p{number}",
            "properties": json.dumps({"tag": value}, ensure_ascii=False),
        })
    backend.load(LoadBatch(pa.Table.from_pylist(rows, schema=EVENTS.arrow_schema), ORDER_LINES.empty()))
    profiles = [{"profile_id": f"p{n}", "canonical_id": f"p{n}", "updated_at": NOW} for n in range(len(HOSTILE))]
    backend.upsert(PROFILE_MAP, pa.Table.from_pylist(profiles, schema=PROFILE_MAP.arrow_schema))


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("number", range(len(HOSTILE)))
def test_hostile_values_match_as_data(backend: Backend, number: int) -> None:
    _store(backend)
    value = _quoted(HOSTILE[number])
    texts = [
        f"traits.note = {value}",
        f"traits.note in [{value}, \"other\"]",
        f"traits.note starts with {value}",
        f"count({value}) >= 1",
        f'count(where: properties.tag = {value}) >= 1',
    ]
    for text in texts:
        assert members(backend, parse(text), NOW) == {f"p{number}"}, text
    assert backend.count(EVENTS) == 2 * len(HOSTILE)  # nothing was dropped or changed


def test_hostile_json_keys_are_paths_not_sql(backend: Backend) -> None:
    _store(backend)
    for number, value in enumerate(HOSTILE):
        if "\0" in value or "\n" in value:
            continue  # not expressible as a quoted path segment in the text form
        tree = parse(f"traits.{_quoted(value)} = \"keyed\"")
        assert members(backend, tree, NOW) == {f"p{number}"}, value


@pytest.mark.parametrize("field", ["total; DROP TABLE events", "e.message_id", "line.x) OR (1=1", "product.price--"])
def test_unknown_fields_never_become_identifiers(backend: Backend, field: str) -> None:
    bad = Compare(this=Aggregate(fn=Fn.COUNT, where=Compare(this=Field(path=field), op=Op.EQ, value=1)), op=Op.GE, value=1)
    with pytest.raises(SegmentError, match="unknown field"):
        compile_segment(bad, backend, NOW)
