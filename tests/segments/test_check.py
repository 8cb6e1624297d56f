"""Checking definitions against what the store has seen, on every engine."""

from __future__ import annotations

import datetime as dt

from opencdp.segments.check import Known, check
from opencdp.segments.text import parse
from opencdp.storage.base import Backend
from tests.profiles.test_computed import event, load, order

NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
KNOWN = Known(
    events={"Order Completed", "Product Viewed"},
    traits={"city", "birthday"},
    properties={"Product Viewed": {"price", "color"}},
    computed={"rfm_cell"},
    segments={"vip"},
)


def test_known_from_store(backend: Backend) -> None:
    load(
        backend,
        [
            order("o1", "p1", NOW, [("Cosmetics", 1.0)], total=10.0),
            event("v1", "p1", NOW, "Product Viewed", properties={"price": 5, "color": "red"}),
            event("i1", "p1", NOW, "", type="identify", traits='{"city": "Kazan"}'),
        ],
    )
    known = Known.from_store(backend)
    assert known.events == {"Order Completed", "Product Viewed"}
    assert known.properties["Product Viewed"] == {"price", "color"}
    assert known.traits == {"city"}


def test_errors_and_warnings() -> None:
    tree = parse(
        'count("Order Complted", where: totl > 1) >= 1 and in_segment("vipp") and computed.rfm_cel = "x"'
        ' and count("Product Viewed", where: properties.size = 3 and line.categry = "x") > 0 and traits.city exists'
    )
    problems = check(tree, KNOWN)
    details = [p.message for p in problems]
    assert "unknown event `Order Complted` — did you mean `Order Completed`?" in details
    assert "unknown segment `vipp` — did you mean `vip`?" in details
    assert any(d.startswith("unknown computed trait `rfm_cel`") for d in details)
    assert any(d.startswith("unknown event column `totl` — did you mean `total`?") for d in details)
    assert any(d.startswith("unknown order line column `categry`") for d in details)
    assert [p.severity for p in problems if "size" in p.message] == ["warning"]
    assert check(parse('count("Product Viewed", where: properties.price > 1) > 0 and traits.city exists'), KNOWN) == []
