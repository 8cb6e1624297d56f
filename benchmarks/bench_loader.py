"""Loader throughput: normalised events -> Arrow -> idempotent load, as the table grows.

Prints events/s for building Arrow batches and for `Backend.load` (with the
message-id dedupe against everything stored, and the per-profile summary it keeps)
at several table sizes, next to a baseline of a plain INSERT of the same Arrow batch
in the same process, and the summary's share of a batch.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from opencdp.storage import profile_summary
from opencdp.storage.base import LoadBatch
from opencdp.storage.duckdb import DuckDBBackend


def make_rows(start: int, count: int) -> list[dict[str, object]]:
    envelope = Envelope(received_at_ms=int(time.time() * 1000), source="bench")
    rows = []
    for i in range(start, start + count):
        message = {
            "type": "track",
            "event": "Product Viewed" if i % 10 else "Order Completed",
            "userId": f"u{i % 100_000}",
            "messageId": f"m{i}",
            "timestamp": "2026-01-01T00:00:00Z",
            "properties": {"product_id": f"P{i % 2000}", "price": 1990, "category": "Kitchen > Chairs",
                           "products": [{"product_id": f"P{i % 2000}", "price": 1990, "quantity": 1}] if i % 10 == 0 else None},
            "context": {"library": {"name": "analytics.js"}, "ip": "10.0.0.1"},
        }
        row = normalize(message, envelope)
        row["lsn"] = i
        row["profile_id"] = f"p_{i % 100_000:020d}"  # as identity resolution sets it: the profile summary is kept
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBBackend(Path(tmp) / "bench.duckdb")
        baseline = DuckDBBackend(Path(tmp) / "baseline.duckdb")
        store.create_schema()
        baseline.create_schema()
        started = time.perf_counter()
        rows = make_rows(0, args.batch)
        normalise_s = time.perf_counter() - started
        started = time.perf_counter()
        events, lines = events_and_lines(rows)
        arrow_s = time.perf_counter() - started
        print(f"normalize: {args.batch / normalise_s:,.0f} events/s; to Arrow: {args.batch / arrow_s:,.0f} events/s")
        for n in range(args.batches):
            if n:
                rows = make_rows(n * args.batch, args.batch)
                events, lines = events_and_lines(rows)
            started = time.perf_counter()
            baseline.insert("events", events)
            base_s = time.perf_counter() - started
            started = time.perf_counter()
            result = store.load(LoadBatch(events, lines), ("loader", n))
            load_s = time.perf_counter() - started
            assert result.inserted == args.batch
            if n % 5 == 0 or n == args.batches - 1:
                stored = (n + 1) * args.batch
                print(
                    f"table {stored:>10,} rows: load {args.batch / load_s:>9,.0f} events/s, "
                    f"plain insert {args.batch / base_s:>9,.0f} events/s, ratio {base_s / load_s:.2f}"
                )
        started = time.perf_counter()
        summary = profile_summary.update(events, store._summary_rows)
        summary_s = time.perf_counter() - started
        print(f"of which the profile summary (storage/profile_summary.py) for {summary.num_rows:,} profiles: "
              f"{summary_s:.3f} s per batch ({args.batch / summary_s:,.0f} events/s alone)")
        started = time.perf_counter()
        again = store.load(LoadBatch(events, lines), ("loader", args.batches))
        print(f"replay of the last batch: {again.duplicates:,} duplicates skipped in {time.perf_counter() - started:.2f}s")

        # The tracking pipeline bounds the duplicate check to a window of recent arrivals
        # (dedupe_window_days): with history older than the window, its cost stays flat.
        stored = args.batches * args.batch
        store.execute("UPDATE events SET received_at = received_at - INTERVAL 30 DAY")
        store.checkpoint_file()
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=7)
        for n, (label, window) in enumerate((("all history", None), ("7-day window", since))):
            fresh, fresh_lines = events_and_lines(make_rows(stored + (n + 1) * args.batch, args.batch))
            started = time.perf_counter()
            result = store.load(LoadBatch(fresh, fresh_lines, dedupe_since=window))
            elapsed = time.perf_counter() - started
            print(f"dedupe over {label:>12} ({stored:,} older events stored): {result.inserted / elapsed:,.0f} events/s")

if __name__ == "__main__":
    main()
