"""What `opencdp status` and `GET /api/v1/status` report."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from opencdp.storage.base import Backend

if TYPE_CHECKING:
    from opencdp.ingest.collector import Collector


def collect_status(backend: Backend, collector: Collector | None = None) -> dict[str, Any]:
    stats = backend.stats()
    now = dt.datetime.now(dt.UTC)
    status: dict[str, Any] = {
        "backend": backend.name,
        "store_bytes": stats.size_bytes,
        "rows": stats.rows,
        "last_event_at": stats.last_event_at,
        "last_received_at": stats.last_received_at,
        "seconds_since_last_received": (now - stats.last_received_at).total_seconds() if stats.last_received_at else None,
    }
    if collector is not None:
        loader = collector.loader
        status["ingest"] = {
            "wal_durable_position": collector.wal.durable_lsn,
            "loaded_position": loader.position,
            "lag_bytes": loader.lag_bytes,
            "queued_bytes": collector.wal.queued_bytes,
            "loaded_events": loader.stats.loaded,
            "duplicates_skipped": loader.stats.duplicates,
            "quarantined": loader.stats.quarantined,
            "last_error": loader.stats.last_error,
        }
    return status
