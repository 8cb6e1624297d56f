"""The text form: parse and print round-trip, canonical text, and errors that point at the fix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from opencdp.segments.ast import (
    Aggregate,
    And,
    Compare,
    Computed,
    Duration,
    Field,
    Fn,
    Node,
    Op,
    Or,
    Param,
    SegmentError,
    Step,
    Trait,
    Window,
)
from opencdp.segments.text import parse, to_text

from .strategies import conditions

FIXTURES = Path(__file__).parent / "fixtures"


def canonical_examples() -> list[str]:
    """The blocks of canonical.seg (separated by blank lines), without their leading ``#`` notes."""
    blocks = (FIXTURES / "canonical.seg").read_text().split("\n\n")
    texts = ["\n".join(line for line in block.splitlines() if not line.startswith("#")) for block in blocks]
    return [text for text in texts if text.strip()]


@pytest.mark.parametrize("text", canonical_examples())
def test_canonical_text_prints_back_exactly(text: str) -> None:
    tree = parse(text)
    assert to_text(tree) == text
    assert parse(to_text(tree)) == tree


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.large_base_example])
@given(conditions(3))
def test_print_then_parse_gives_the_tree(tree: Node) -> None:
    assert parse(to_text(tree)) == tree


def test_trees_of_the_examples() -> None:
    assert parse('traits.city = "Kazan"') == Compare(this=Trait(path="city"), op=Op.EQ, value="Kazan")
    assert parse('computed.rfm_cell in ["at_risk", "cant_lose"]') == Compare(
        this=Computed(name="rfm_cell"), op=Op.IN, value=("at_risk", "cant_lose")
    )
    assert parse("count() >= 10") == Compare(this=Aggregate(fn=Fn.COUNT), op=Op.GE, value=10)
    assert parse('count("Email Link Clicked", where: properties.button = $size, window: 14d) >= 1') == Compare(
        this=Aggregate(
            fn=Fn.COUNT,
            event=("Email Link Clicked",),
            where=Compare(this=Field(path="properties.button"), op=Op.EQ, value=Param("size")),
            window=Window(last=Duration(14, "d")),
        ),
        op=Op.GE,
        value=1,
    )


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("30d", Window(last=Duration(30, "d"))),
        ("all", Window()),
        ("since(2024-01-01)", Window(since=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))),
        ("since(2024-01-01T10:00:00Z)", Window(since=dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC))),
        (
            "between(2024-01-01, 2024-01-31)",
            Window(since=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), until=dt.datetime(2024, 2, 1, tzinfo=dt.UTC)),
        ),
        (
            "between(2024-01-01T10:00:00Z, 2024-01-02T10:00:00Z)",
            Window(since=dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC), until=dt.datetime(2024, 1, 2, 10, tzinfo=dt.UTC)),
        ),
    ],
)
def test_windows(window: str, expected: Window) -> None:
    text = f'count("Order Completed", window: {window}) > 0'
    tree = parse(text)
    assert tree.this.window == expected
    assert to_text(tree) == text


def test_precedence_or_below_and_below_not() -> None:
    a, b, c = (Compare(this=Trait(path=n), op=Op.EXISTS) for n in "abc")
    assert parse("traits.a exists or traits.b exists and traits.c exists") == Or(conditions=(a, And(conditions=(b, c))))
    tree = parse("(traits.a exists or traits.b exists) and not traits.c exists")
    assert to_text(tree) == "(traits.a exists or traits.b exists) and not traits.c exists"
    nested = And(conditions=(And(conditions=(a, b)), c))
    assert to_text(nested) == "(traits.a exists and traits.b exists) and traits.c exists"
    assert parse(to_text(nested)) == nested


def test_comments_and_layout_are_free() -> None:
    text = """
        # lapsed buyers
        count("Order Completed") >= 1   # bought once
          AND_PLACEHOLDER last_time("Order Completed") < ago(365d)
    """.replace("AND_PLACEHOLDER", "and")
    assert to_text(parse(text)) == 'count("Order Completed") >= 1 and last_time("Order Completed") < ago(365d)'


def test_long_definitions_break_their_top_level_operator() -> None:
    text = (
        'count("Order Completed", where: line.category = "Cosmetics", window: 30d) >= 3\n'
        '  and avg("Order Completed", total, where: line.category = "Cosmetics", window: 30d) >= 2000'
    )
    assert to_text(parse(text.replace("\n  ", " "))) == text


def test_a_step_prints_alone() -> None:
    assert to_text(Step(event=("A",))) == 'step("A")'


def error_of(text: str) -> SegmentError:
    with pytest.raises(SegmentError) as caught:
        parse(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "line", "column", "words", "suggestion"),
    [
        ('cuont("Order Completed") >= 1', 1, 1, "did you mean `count`", "count"),
        ('count("Order Completed", windw: 30d) >= 1', 1, 26, "did you mean `window`", "window"),
        ('count("A", window: 30x) > 1', 1, 20, "not a duration", None),
        ('traits.city = "Kazan', 1, 15, "unterminated string", None),
        ("traits.city =", 1, 14, "expected a value", None),
        ('traits.a = 1 and\n  traits.b == 2', 2, 13, "expected a value", None),
        ('city = "Kazan"', 1, 1, "traits.city", "traits.city"),
        ("count(5) > 1", 1, 7, "an event name or a list of names", None),
        ('sum("Order Completed") > 1', 1, 1, "needs a field", None),
        ('count("A", where: count() > 1) > 0', 1, 19, "profile measure", None),
        ('count("A", where: traits.x exists) > 0 and traits.a in 5', 1, 56, "needs a list", None),
        ('not_followed(step("A"), step("B"))', 1, 1, "needs `within`", None),
        ("traits.x = 2024-01-01T10:00", 1, 12, "no time zone", None),
        ("traits.x = 30d", 1, 12, "ago(30d)", "ago(30d)"),
        ('count("A") > 1 traits.x', 1, 16, "expected `and`, `or` or the end", None),
        ("bucket(10, 5)", 1, 8, "not a range", None),
        ('count("A", window: 30d, window: 1d) > 1', 1, 25, "given twice", None),
        ("traits.x between 1", 1, 19, "`and` and the high end", None),
        ('step("A")', 1, 1, "not a condition", None),
        ('in_segment("a", "b")', 1, 17, "positional argument", None),
        ("traits.x @ 1", 1, 10, "unexpected character", None),
    ],
)
def test_errors_point_at_the_fix(text: str, line: int, column: int, words: str, suggestion: str | None) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (line, column), str(error)
    assert words in error.detail
    assert error.suggestion == suggestion
    assert error.detail.splitlines()[-1] == "  " + " " * (column - 1) + "^"
    assert error.to_dict()["line"] == line
