"""Impressions the server records itself: every served block is a ``Recommendation Shown`` event.

A block's CTR and conversion rate need its impressions, and a site that forgets to
send them would leave the report empty. So the engine notes each answer it serves
(``note``: a deque append, nothing else on the request path) and a background flush
writes them in batches as ordinary events through ``Backend.record_events`` — with the
block, variant, algorithm, model version, ``recommendation_id`` and product ids — so
they are attributed to the block like the site's own would be. The message id is
derived from the ``recommendation_id`` (``rec-<id>``): an impression the site also sends
with that id as its messageId is stored once, and the report counts impressions by
``recommendation_id``.

Clicks come back either through the tracked link each served item carries
(``click_url``: ``GET /api/v1/recommendations/clicks/{recommendation_id}`` records a
``Recommendation Clicked`` and redirects to the product page) or as a site's own
``Product Clicked`` / ``Recommendation Clicked`` echoing the ``recommendation_id``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES

log = logging.getLogger(__name__)

SHOWN = "Recommendation Shown"
CLICKED = "Recommendation Clicked"
SOURCE = "recommendations"


def shown_event(answer: Mapping[str, Any], *, anonymous_id: str | None, user_id: str | None, at: dt.datetime) -> dict[str, Any]:
    """The ``Recommendation Shown`` row of a served answer."""
    properties = {
        "block": answer["block"], "variant": answer["variant"], "algorithm": answer["algorithm"],
        "recommendation_id": answer["recommendation_id"], "model_version": answer["model_version"],
        "product_ids": [item["product_id"] for item in answer["items"]], "fallback": answer["fallback"],
    }
    return {
        "message_id": f"rec-{answer['recommendation_id']}", "type": "track", "event": SHOWN, "timestamp": at,
        "received_at": at, "user_id": user_id, "anonymous_id": anonymous_id, "source": SOURCE, "channel": "server",
        "properties": json.dumps(properties, ensure_ascii=False), "lsn": 0, "profile_id": answer["profile_id"],
    }


def clicked_event(
    recommendation_id: str, *, block: str, variant: str, product_id: str, profile_id: str | None, at: dt.datetime,
) -> dict[str, Any]:
    """The ``Recommendation Clicked`` row of a click through a tracked link."""
    properties = {"block": block, "variant": variant, "recommendation_id": recommendation_id, "product_id": product_id}
    return {
        "message_id": f"rec-click-{recommendation_id}-{product_id}", "type": "track", "event": CLICKED, "timestamp": at,
        "received_at": at, "source": SOURCE, "channel": "server", "properties": json.dumps(properties, ensure_ascii=False),
        "product_id": product_id, "lsn": 0, "profile_id": profile_id,
    }


def write_events(backend: Backend, rows: list[dict[str, Any]]) -> int:
    """Store rows of ``EVENTS`` as events a stage writes (the loader's listeners see them)."""
    if not rows:
        return 0
    table = pa.Table.from_pylist(rows, schema=EVENTS.arrow_schema)
    since = min(r["timestamp"] for r in rows) - dt.timedelta(minutes=10)
    return int(backend.record_events(LoadBatch(table, ORDER_LINES.empty(), dedupe_since=since)).inserted)


class ImpressionLog:
    """Served answers waiting to be written (bounded: under a store outage the oldest are dropped, counted)."""

    def __init__(self, backend: Backend, *, max_pending: int = 100_000) -> None:
        self.backend = backend
        self._pending: deque[dict[str, Any]] = deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0

    def note(self, answer: Mapping[str, Any], *, anonymous_id: str | None, user_id: str | None) -> None:
        """A served answer, to be written as its impression."""
        self.add(shown_event(answer, anonymous_id=anonymous_id, user_id=user_id, at=dt.datetime.now(dt.UTC)))

    def add(self, row: dict[str, Any]) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(row)

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write what is pending (one batch); a failed write puts the rows back for the next flush."""
        with self._lock:
            rows = []
            while self._pending:
                rows.append(self._pending.popleft())
            if not rows:
                return 0
            try:
                self.written += write_events(self.backend, rows)
            except Exception:
                self._pending.extendleft(reversed(rows))
                raise
            return len(rows)
