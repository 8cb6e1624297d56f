"""Receipts in the store: a receipt that reaches another worker ends a cascade's wait here."""

from __future__ import annotations

import threading
import time

from opencdp.campaigns import receipt_store
from opencdp.campaigns.channels.cascade import Cascade
from opencdp.campaigns.channels.receipts import Receipt
from opencdp.campaigns.receipt_store import StoredReceipts
from opencdp.campaigns.registry import Channels
from opencdp.storage.base import Backend


def test_a_receipt_recorded_by_another_worker_is_seen_and_final_wins(backend: Backend) -> None:
    here, there = StoredReceipts(backend), StoredReceipts(backend)  # two workers: separate memory, one store
    assert here.wait("v-missing", 0.3) is None

    got: list[Receipt | None] = []
    waiter = threading.Thread(target=lambda: got.append(here.wait("v-1", 10.0)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    there.record(Receipt("v-1", "delivered", recipient="+79990001122"))
    waiter.join(15)
    assert got and got[0] is not None and got[0].status == "delivered" and got[0].recipient == "+79990001122"
    assert time.monotonic() - started < 5

    there.record(Receipt("v-1", "sent"))  # late and out of order: the final status stays
    assert StoredReceipts(backend).get("v-1").status == "delivered"  # type: ignore[union-attr]
    there.record(Receipt("v-1", "read"))  # a later final status replaces it
    assert StoredReceipts(backend).get("v-1").status == "read"  # type: ignore[union-attr]
    there.record(Receipt("v-2", "failed", True, "blocked"))
    failed = StoredReceipts(backend).get("v-2")
    assert failed is not None and failed.permanent and failed.error == "blocked"


def test_configured_cascades_wait_on_the_stores_registry(backend: Backend) -> None:
    config = {"chain": {"kind": "cascade", "steps": [{"kind": "inbox", "config": {}}]}}
    cascade = Channels(config, extra={"backend": backend}).get("chain").channel
    assert isinstance(cascade, Cascade) and cascade.receipts is receipt_store.for_backend(backend)
