"""docs/segments.md is the generator's output, and its examples parse."""

from __future__ import annotations

import pytest

from opencdp.segments import docs
from opencdp.segments.ast import NODES
from opencdp.segments.text import parse, to_text


def test_committed_page_is_generated() -> None:
    assert docs.PATH.read_text() == docs.generate(), "run: python -m opencdp.segments.docs"


@pytest.mark.parametrize("key", list(NODES))
def test_every_node_has_a_canonical_example(key: str) -> None:
    example = docs.EXAMPLES[key]
    if key == "step":
        example = f"sequence({example}, {example})"
    assert to_text(parse(example)) == example
