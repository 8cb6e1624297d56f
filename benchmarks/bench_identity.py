"""Identity stitching inside the pipeline: events/s through ``IdentityStage.resolve``.

Builds a stream of web/app events (anonymous browsing, logins, identifies with
email and phone), and a merge-heavy variant where 20% of events link two profiles,
then resolves them batch by batch as the loader does (writes to an in-memory
DuckDB store included). Baseline in the same process: a plain union-find over the
same identifier sets.

    .venv/bin/python benchmarks/bench_identity.py [--events 300000]

Target: >= 100,000 events/s (the plain union-find here: ~480,000/s per core).
"""

from __future__ import annotations

import argparse
import random
import time

import pyarrow as pa

from opencdp.identity.identifiers import Rules, extract
from opencdp.identity.stage import IdentityStage
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from opencdp.storage.duckdb import DuckDBBackend

TARGET = 100_000


def stream(count: int, merge_share: float, session: tuple[int, int] = (1, 1), seed: int = 7) -> pa.Table:
    """Web/app events in sessions of ``session`` events from one device (one person, logged in or not)."""
    rng = random.Random(seed)
    envelope = Envelope(received_at_ms=int(time.time() * 1000), source="bench")
    people = max(1, count // 20)
    start = envelope.received_at_ms - 30 * 86_400_000
    rows = []
    i = 0
    while i < count:
        person = rng.randrange(people)
        device = f"anon-{person}-{rng.randrange(3)}"
        logged_in = rng.random() < 0.45
        for _ in range(min(rng.randint(*session), count - i)):
            message: dict[str, object] = {"anonymousId": device, "messageId": f"m{i}", "timestamp": start + i * 5}
            roll = rng.random()
            if roll < merge_share:  # links this device to another person's phone: a merge
                message.update(type="identify", traits={"phone": f"+7916{rng.randrange(people):07d}"})
            elif roll < merge_share + 0.05:
                message.update(type="identify", userId=f"user-{person}", traits={"email": f"p{person}@example.ru"})
            elif logged_in:
                message.update(type="track", userId=f"user-{person}", event="Product Viewed", properties={"product_id": "P1"})
            else:
                message.update(type="page", name="Catalog")
            rows.append({**normalize(message, envelope), "lsn": 0})
            i += 1
    events, _ = events_and_lines(rows)
    return events


def union_find_baseline(events: pa.Table, rules: Rules) -> float:
    columns = {n: events.column(n).to_pylist() for n in ("type", "user_id", "anonymous_id", "previous_id", "traits", "context", "properties")}
    sets = [extract({n: c[i] for n, c in columns.items()}, rules).identifiers for i in range(events.num_rows)]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    started = time.perf_counter()
    for identifiers in sets:
        if identifiers:
            first = find(identifiers[0])
            for other in identifiers[1:]:
                root = find(other)
                if root != first:
                    parent[root] = first
    return len(sets) / (time.perf_counter() - started)


def run(events: pa.Table, batch: int) -> tuple[float, IdentityStage]:
    store = DuckDBBackend(":memory:")
    store.create_schema()
    stage = IdentityStage(store)
    lines = events_and_lines([])[1]
    started = time.perf_counter()
    for offset in range(0, events.num_rows, batch):
        stage.resolve(events.slice(offset, batch), lines)
    return events.num_rows / (time.perf_counter() - started), stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=20_000, help="events per loader batch")
    args = parser.parse_args()
    print("bench_identity: identity stitching in the pipeline (extract + resolve + store writes)")
    cases = (
        ("typical stream (sessions of 3-15 events)", 0.02, (3, 15)),
        ("merge-heavy (20% of events link two profiles), sessions of 3-15", 0.20, (3, 15)),
        ("worst case: every event from another device or person", 0.02, (1, 1)),
    )
    for name, share, session in cases:
        events = stream(args.events, share, session)
        baseline = union_find_baseline(events, Rules())
        rate, stage = run(events, args.batch)
        stats = stage.stats
        print(f"\n{name}: {args.events:,} events")
        print(f"  stage:     {rate:,.0f} events/s ({rate / baseline:.2f}x plain union-find of the same sets: {baseline:,.0f}/s)")
        print(f"  profiles:  {len(stage.graph.profiles):,}; merges {stats.merges:,}; conflicts {stats.conflicts:,}; replays {stats.recomputed:,}")
        verdict = "PASS" if rate >= TARGET else "BELOW TARGET"
        print(f"  target >= {TARGET:,} events/s: {verdict}")


if __name__ == "__main__":
    main()
