"""The import's writer: identity resolution and store loads run as two ordered steps."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from opencdp.identity import stage as stage_module
from opencdp.ingest.imports import writer as writer_module
from tests.imports.conftest import Store, write

HEADER = "order_id,loyalty_card,store_id,channel,ordered_at,product_id,quantity,price,currency"


def one_card_orders(directory: Path, orders: int) -> Path:
    """``orders`` two-line receipts, all with the same loyalty card, an hour apart."""
    rows = [
        f"R{n:02},2000000000017,s1,pos,2024-05-01T{n:02}:00:00Z,P{k},1,100,RUB"
        for n in range(1, orders + 1)
        for k in (1, 2)
    ]
    return write(directory / "orders.csv", "\n".join([HEADER, *rows]) + "\n")


@pytest.fixture
def small_loads(monkeypatch: pytest.MonkeyPatch, small_batches: int) -> int:
    """A load every few rows, so one import goes through both steps many times."""
    monkeypatch.setattr(writer_module, "LOAD_ROWS", 4)
    return 4


def test_every_load_is_resolved_in_order_into_one_profile(store: Store, small_loads: int) -> None:
    report = store.run(one_card_orders(store.dir, 6), "orders")
    assert (report.events_written, report.order_lines, report.rejected) == (6, 12, 0)
    events = store.events()
    assert len({e["profile_id"] for e in events}) == 1 and events[0]["profile_id"]
    assert {line["profile_id"] for line in store.lines()} == {events[0]["profile_id"]}


def test_a_failed_resolution_stops_the_import_and_loads_nothing_after_it(
    store: Store, small_loads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve = stage_module.IdentityStage.resolve
    calls: list[list[str]] = []

    def failing(self: stage_module.IdentityStage, events: pa.Table, lines: pa.Table) -> tuple[pa.Table, pa.Table]:
        calls.append(events.column("order_id").to_pylist())
        if len(calls) == 2:
            raise RuntimeError("identity store unavailable")
        return resolve(self, events, lines)

    monkeypatch.setattr(stage_module.IdentityStage, "resolve", failing)
    with pytest.raises(RuntimeError, match="identity store unavailable"):
        store.run(one_card_orders(store.dir, 6), "orders")
    stored = {e["order_id"] for e in store.events()}
    assert len(calls) == 2 and stored <= set(calls[0])
