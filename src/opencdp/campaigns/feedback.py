"""Delivery receipts, bounces and complaints, applied to the outbox, the events and the suppression list.

The channel adapters normalise each provider's callback into ``Receipt`` rows
(``opencdp.campaigns.channels.receipts``: Twilio status callbacks, Viber events, mail DSNs and
ARF complaints). Here each receipt finds its outbox row by the provider message id the send
returned (or our own message id, which the email adapter puts in ``Message-ID``) and becomes:

* ``delivered`` / ``read``: a ``Message Delivered`` event, the row ``delivered``;
* ``failed`` and permanent: a ``Message Bounced`` event, the row ``failed``, the address on the
  suppression list (``hard_bounce``);
* ``complained``: a ``Message Complained`` event and the address suppressed (``complaint``).

A receipt naming no message but an address that left the channel (Viber's ``unsubscribed``: the user
stopped the bot, which can then send them nothing) goes to :func:`left_channel`: every profile we
messaged at that address opts out of the channel for its topics (consent events, ``Unsubscribed``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.campaigns import outbox, tracking
from opencdp.campaigns.channels.receipts import Receipt
from opencdp.campaigns.recipients import CONSENT_CHANNEL
from opencdp.campaigns.tracking import MessageRef
from opencdp.consent import suppressions
from opencdp.consent.model import UNSUBSCRIBED
from opencdp.consent.store import current_consents
from opencdp.errors import OpenCDPError
from opencdp.storage.base import Backend
from opencdp.storage.schema import OUTBOX


def _own_id(provider_id: str) -> str:
    """``<m...@domain>`` -> ``m...`` (the email adapter's Message-ID is our message id)."""
    return provider_id.strip("<>").partition("@")[0]


def _rows(backend: Backend, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Outbox rows by provider message id or by our own message id."""
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


def left_channel(backend: Backend, channel_kind: str, receipts: Sequence[Receipt], now: dt.datetime | None = None) -> int:
    """Opt out, on the channel, the profiles messaged at addresses that left it; returns how many profiles.

    The profiles are found by the outbox rows sent to the address (a Viber user id is only known to
    us as the address we sent to). Every topic the profile has consent for, plus ``marketing`` and
    ``transactional``, becomes ``opted_out``; the user coming back (re-subscribing to the bot) is a
    new consent, given the usual way. The events have stable ids: the same callback twice changes nothing.
    """
    now = now or dt.datetime.now(dt.UTC)
    gone = {r.recipient: r for r in receipts if not r.provider_message_id and r.permanent and r.recipient}
    if not gone:
        return 0
    query = exp.select("*").from_(backend.table_ref(OUTBOX)).where(
        exp.In(this=exp.column("address"), expressions=[exp.Literal.string(a) for a in gone]), copy=False)
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(backend.select(query).to_pylist(), key=lambda r: r["updated_at"]):
        latest[row["profile_id"]] = row
    channel = CONSENT_CHANNEL.get(channel_kind, channel_kind)
    refs: list[MessageRef] = []
    changes: list[dict[str, Any]] = []
    for profile_id, row in sorted(latest.items()):
        ref = MessageRef(row["message_id"], row["campaign_id"], row["step_id"], profile_id, row["variant"],
                         channel_kind, row["topic"])
        topics = {c.topic for c in current_consents(backend, profile_id) if c.channel == channel}
        for topic in sorted(topics | {"marketing", "transactional"}):
            refs.append(ref)
            changes.append({"channel": channel, "topic": topic, "source": f"receipt: {gone[row['address']].error}"[:100]})
    if not refs:
        return 0
    events = tracking.event_rows(UNSUBSCRIBED, refs, now, extra=changes, unique=False)
    # One consent event per (address left, profile, topic) and receipt time: a repeated callback is deduplicated.
    ids = [f"msg:left:{channel}:{ref.profile_id}:{change['topic']}:{gone[latest[ref.profile_id]['address']].at}"
           for ref, change in zip(refs, changes, strict=True)]
    events = events.set_column(events.schema.get_field_index("message_id"), "message_id", pa.array(ids, pa.string()))
    tracking.record(backend, events)
    left = [MessageRef(r["message_id"], r["campaign_id"], r["step_id"], p, r["variant"], channel_kind, r["topic"])
            for p, r in sorted(latest.items())]
    tracking.record(backend, tracking.event_rows(tracking.UNSUBSCRIBED, left, now, extra=[{"topic": "all"}] * len(left)))
    return len(latest)
