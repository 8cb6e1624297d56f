"""Delivery receipts shared by every worker: the receipt registry kept in the store.

A cascade (Viber, then SMS if undelivered within T) waits for the first step's receipt. The
provider posts that receipt to whichever server worker its request reaches, not necessarily
the one whose cascade waits, so receipts live in a table (``message_receipts``) that every
worker reads. ``StoredReceipts`` keeps the in-memory registry as its fast path: a receipt that
arrives at this worker wakes its waiters at once; one that arrived elsewhere is found by
polling the table, every 0.2 s at first and then less often (up to every 2 s), until the step's
wait is over.

Current-state semantics do the ordering: a row's ``version`` is the time it arrived, a year
later for final statuses (delivered, read, failed, complained), so a late ``sent`` written by
another worker never replaces a ``delivered`` already stored, without a read before each write.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
from sqlglot import exp

from opencdp.campaigns.channels.receipts import FINAL, Receipt, ReceiptRegistry
from opencdp.storage.base import Backend, param
from opencdp.storage.schema import MESSAGE_RECEIPTS

_FINAL_AHEAD = dt.timedelta(days=365)
_FIRST_POLL_S, _MAX_POLL_S = 0.2, 2.0


def _lookup(backend: Backend) -> exp.Expression:
    return (exp.select("provider_message_id", "status", "permanent", "error", "recipient", "provider_at")
            .from_(backend.table_ref(MESSAGE_RECEIPTS))
            .where(exp.column("provider_message_id").eq(param("id"))))


class StoredReceipts(ReceiptRegistry):
    """A ``ReceiptRegistry`` whose receipts are also written to, and read from, the store."""

    def __init__(self, backend: Backend, max_entries: int = 100_000) -> None:
        super().__init__(max_entries)
        self.backend = backend

    def record(self, receipt: Receipt) -> None:
        now = dt.datetime.now(dt.UTC)
        row = {
            "provider_message_id": receipt.provider_message_id, "status": receipt.status, "permanent": receipt.permanent,
            "error": receipt.error, "recipient": receipt.recipient, "provider_at": receipt.at, "received_at": now,
            "version": now + _FINAL_AHEAD if receipt.status in FINAL else now,
        }
        self.backend.upsert(MESSAGE_RECEIPTS, pa.Table.from_pylist([row], schema=MESSAGE_RECEIPTS.arrow_schema))
        super().record(receipt)

    def stored(self, provider_message_id: str) -> Receipt | None:
        rows = self.backend.run_rows(_lookup, id=provider_message_id)
        if not rows:
            return None
        pid, status, permanent, error, recipient, at = rows[0]
        return Receipt(pid, status, bool(permanent), error or "", recipient, at)

    def get(self, provider_message_id: str) -> Receipt | None:
        local = super().get(provider_message_id)
        if local is not None and local.status in FINAL:
            return local
        return self.stored(provider_message_id) or local

    def wait(self, provider_message_id: str, timeout_s: float) -> Receipt | None:
        deadline = time.monotonic() + timeout_s
        pause = _FIRST_POLL_S
        while True:
            found = super().wait(provider_message_id, max(0.0, min(pause, deadline - time.monotonic())))
            if found is not None:
                return found
            stored = self.stored(provider_message_id)
            if stored is not None and stored.status in FINAL:
                ReceiptRegistry.record(self, stored)  # remembered here, not written again
                return stored
            if time.monotonic() >= deadline:
                return None
            pause = min(pause * 2, _MAX_POLL_S)


def for_backend(backend: Backend) -> StoredReceipts:
    """The store's registry, one per backend object (the receipt endpoints and the cascades share it)."""
    found = backend.__dict__.get("_stored_receipts")
    if not isinstance(found, StoredReceipts):
        found = backend.__dict__["_stored_receipts"] = StoredReceipts(backend)
    return found


def record_all(backend: Backend, receipts: list[Receipt]) -> None:
    registry = for_backend(backend)
    for receipt in receipts:
        registry.record(receipt)
