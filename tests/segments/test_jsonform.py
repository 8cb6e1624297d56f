"""The JSON form: round-trip with the tree, errors naming the JSON path, and the generated JSON Schema."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from opencdp.segments.ast import NODES, Node, SegmentError
from opencdp.segments.jsonform import from_json, json_schema, to_json
from opencdp.segments.text import parse

from .strategies import conditions
from .test_text import canonical_examples

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.large_base_example],
)


@SETTINGS
@given(conditions(3))
def test_json_round_trip(tree: Node) -> None:
    data = json.loads(json.dumps(to_json(tree)))
    assert from_json(data) == tree


@SETTINGS
@given(conditions(3))
def test_json_of_random_trees_matches_the_schema(tree: Node) -> None:
    # jsonschema is not a dependency: validate() below covers the subset json_schema() uses.
    schema = json_schema()
    assert validate(json.loads(json.dumps(to_json(tree))), schema, schema) == []


@pytest.mark.parametrize("text", canonical_examples())
def test_examples_match_the_schema(text: str) -> None:
    schema = json_schema()
    assert validate(to_json(parse(text)), schema, schema) == []


def test_the_schema_rejects_what_from_json_rejects() -> None:
    schema = json_schema()
    bad = {"type": "compare", "this": {"type": "aggregate", "fn": "cont"}, "op": ">", "value": 1}
    assert validate(bad, schema, schema)
    assert validate({"type": "bucket", "low": 0, "high": 10, "salty": "x"}, schema, schema)


def test_the_schema_covers_every_node() -> None:
    defs = json_schema()["$defs"]
    assert set(NODES) <= set(defs)
    assert defs["aggregate"]["properties"]["window"]["description"].startswith("last 30d")


def test_example_json() -> None:
    tree = parse('count("Order Completed", where: line.category = "Cosmetics", window: since(2024-01-01)) >= 3')
    assert to_json(tree) == {
        "type": "compare",
        "this": {
            "type": "aggregate",
            "fn": "count",
            "event": ["Order Completed"],
            "where": {"type": "compare", "this": {"type": "field", "path": "line.category"}, "op": "=", "value": "Cosmetics"},
            "window": {"since": "2024-01-01"},
        },
        "op": ">=",
        "value": 3,
    }
    assert to_json(parse("traits.x >= ago(30d)"))["value"] == {"ago": "30d"}
    assert to_json(parse("traits.x in [2024-01-01, $d]"))["value"] == [{"date": "2024-01-01"}, {"param": "d"}]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"type": "and", "conditions": [{"type": "in_segment", "segment": "a"},
                                           {"type": "compare", "this": {"type": "aggregate", "fn": "cont"}, "op": ">", "value": 1}]},
            "conditions[1].this.fn",
            "did you mean 'count'",
        ),
        ({"type": "compare", "this": {"type": "aggregate", "fn": "sum"}, "op": ">", "value": 1}, "this.value", "needs a field"),
        ({"type": "bucket", "low": 0, "high": 10, "salty": "x"}, "salty", "did you mean 'salt'"),
        ({"type": "trait", "path": "x"}, None, "not a condition"),
        ({"type": "compre"}, "type", "did you mean 'compare'"),
        ({"type": "compare", "this": {"type": "trait", "path": "x"}, "op": ">", "value": {"ago": "30x"}}, "value.ago", "not a duration"),
        (
            {"type": "compare", "this": {"type": "aggregate", "fn": "count", "window": {"since": "2024-01-01T10:00"}},
             "op": ">", "value": 1},
            "this.window.since",
            "no time zone",
        ),
    ],
)
def test_errors_name_the_json_path(data: dict[str, Any], field: str | None, words: str) -> None:
    with pytest.raises(SegmentError) as caught:
        from_json(data)
    assert caught.value.field == field
    assert words in caught.value.detail


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against the JSON Schema subset ``json_schema`` generates."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return validate(value, target, root, path)
    if "anyOf" in schema:
        tries = [validate(value, s, root, path) for s in schema["anyOf"]]
        return [] if any(not t for t in tries) else [f"{path}: matches none of anyOf ({min(tries, key=len)})"]
    errors: list[str] = []
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, types[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return [f"{path}: not {kind}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: does not match {schema['pattern']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: too short")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{path}: needs {name}" for name in schema.get("required", ()) if name not in value]
        for name, item in value.items():
            if name in properties:
                errors += validate(item, properties[name], root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{path}: wrong number of items")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is not None:
                errors += validate(item, sub, root, f"{path}[{i}]")
    return errors
