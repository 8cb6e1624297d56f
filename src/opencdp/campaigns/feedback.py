"""Delivery receipts, bounces and complaints, applied to the outbox, the events and the suppression list.

The channel adapters normalise each provider's callback into ``Receipt`` rows
(``opencdp.campaigns.channels.receipts``: Twilio status callbacks, Viber events, mail DSNs and
ARF complaints). Here each receipt finds its outbox row by the provider message id the send
returned (or our own message id, which the email adapter puts in ``Message-ID``) and becomes:

* ``delivered`` / ``read``: a ``Message Delivered`` event, the row ``delivered``;
* ``failed`` and permanent: a ``Message Bounced`` event, the row ``failed``, the address on the
  suppression list (``hard_bounce``);
* ``complained``: a ``Message Complained`` event and the address suppressed (``complaint``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from opencdp.campaigns import outbox, tracking
from opencdp.campaigns.channels.receipts import Receipt
from opencdp.campaigns.recipients import CONSENT_CHANNEL
from opencdp.campaigns.tracking import MessageRef
from opencdp.consent import suppressions
from opencdp.errors import OpenCDPError
from opencdp.storage.base import Backend
from opencdp.storage.schema import OUTBOX


def _own_id(provider_id: str) -> str:
    """``<m...@domain>`` -> ``m...`` (the email adapter's Message-ID is our message id)."""
    return provider_id.strip("<>").partition("@")[0]


def _rows(backend: Backend, ids: Sequence[str]) -> list[dict[str, Any]]:
    values = [exp.Literal.string(i) for i in ids]
    query = exp.select("*").from_(backend.table_ref(OUTBOX)).where(
        exp.or_(exp.In(this=exp.column("provider_message_id"), expressions=values),
                exp.In(this=exp.column("message_id"), expressions=[exp.Literal.string(_own_id(i)) for i in ids]), copy=False),
        copy=False,
    )
    return backend.select(query).to_pylist()


def apply(backend: Backend, channel_kind: str, receipts: Sequence[Receipt], now: dt.datetime | None = None) -> dict[str, int]:
    """Record receipts; returns counts by outcome (unknown: no outbox row has that id)."""
    now = now or dt.datetime.now(dt.UTC)
    counts = {"delivered": 0, "bounced": 0, "complained": 0, "ignored": 0, "unknown": 0}
    if not receipts:
        return counts
    rows = _rows(backend, [r.provider_message_id for r in receipts])
    by_id: dict[str, dict[str, Any]] = {}
    for found in rows:
        by_id[found["message_id"]] = found
        if found["provider_message_id"]:
            by_id[found["provider_message_id"]] = found
    events: dict[str, list[MessageRef]] = {}
    extra: dict[str, list[dict[str, Any]]] = {}
    changed: list[dict[str, Any]] = []
    consent_channel = CONSENT_CHANNEL.get(channel_kind, channel_kind)
    for receipt in receipts:
        row = by_id.get(receipt.provider_message_id) or by_id.get(_own_id(receipt.provider_message_id))
        if row is None:
            counts["unknown"] += 1
            continue
        ref = MessageRef(row["message_id"], row["campaign_id"], row["step_id"], row["profile_id"], row["variant"],
                         channel_kind, row["topic"])
        address = receipt.recipient or row["address"]
        if receipt.status in ("delivered", "read"):
            name, outcome = tracking.DELIVERED, "delivered"
            changed.append({**row, "state": outbox.DELIVERED})
        elif receipt.status == "complained":
            name, outcome = tracking.COMPLAINED, "complained"
            _suppress(backend, consent_channel, address, suppressions.Reason.COMPLAINT, receipt.error)
        elif receipt.status == "failed" and receipt.permanent:
            name, outcome = tracking.BOUNCED, "bounced"
            changed.append({**row, "state": outbox.FAILED, "reason": f"bounce: {receipt.error}"[:500]})
            _suppress(backend, consent_channel, address, suppressions.Reason.HARD_BOUNCE, receipt.error)
        else:
            counts["ignored"] += 1
            continue
        counts[outcome] += 1
        events.setdefault(name, []).append(ref)
        extra.setdefault(name, []).append({"error": receipt.error} if receipt.error else {})
    outbox.write(backend, changed, now)
    for name, refs in events.items():
        tracking.record(backend, tracking.event_rows(name, refs, now, extra=extra[name]))
    return counts


def _suppress(backend: Backend, channel: str, address: str | None, reason: suppressions.Reason, error: str) -> None:
    if not address:
        return
    with contextlib.suppress(OpenCDPError):  # an address the list cannot hold: nothing to suppress
        suppressions.add(backend, channel, address, reason, source=f"receipt: {error[:100]}")
