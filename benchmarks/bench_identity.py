"""Identity stitching inside the pipeline: events/s through ``IdentityStage.resolve``.

Builds a stream of web/app events (anonymous browsing, logins, identifies with
email and phone), and a merge-heavy variant where 20% of events link two profiles,
then resolves them batch by batch as the loader does (writes to an in-memory
DuckDB store included). Baseline in the same process: a plain union-find over the
same identifier sets, timed with their extraction from the events (``extract``, the
same work the stage starts with), so the ratio compares like with like.

Correctness: each stream's final profiles, read back from the store, are compared
with ``reference_partition``, a union-find written apart from the graph that applies
the same rules (per-kind limits, a userId limit of 1 being merge protection; blocked
values never reach it, ``extract`` leaves them out) to the events in event-time
order, which is how the graph defines its result. The rules bite on these streams
(thousands of conflicts), so the comparison is exact, not restricted to a rule-free
stream: every profile must hold the same identifiers, and every event must belong to
the profile of its strongest identifier.

    .venv/bin/python benchmarks/bench_identity.py [--events 300000]

Target: >= 100,000 events/s (the plain union-find here: ~480,000/s per core).
"""

from __future__ import annotations

import argparse
import random
import time

import pyarrow as pa
from sqlglot import exp

from opencdp.identity.identifiers import Rules, extract, kind_of
from opencdp.identity.stage import IdentityStage
from opencdp.ingest.rows import events_and_lines
from opencdp.ingest.segment import Envelope, normalize
from opencdp.storage.base import Backend
from opencdp.storage.duckdb import DuckDBBackend
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP

TARGET = 100_000


def stream(
    count: int, merge_share: float, session: tuple[int, int] = (1, 1), seed: int = 7, placeholders: float = 0.0
) -> pa.Table:
    """Web/app events in sessions of ``session`` events from one device (one person, logged in or not).

    A ``placeholders`` share of events are identifies from a broken tracker: a blocked
    anonymousId and a phone that is blocked or invalid, none of which may link anyone.
    """
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
            if placeholders and rng.random() < placeholders:
                message.update(type="identify", anonymousId=rng.choice(["undefined", "null", "-1"]),
                               traits={"phone": rng.choice(["0000000", "12", "-1"])})
            elif roll < merge_share:  # links this device to another person's phone: a merge
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


_EXTRACTED = ("type", "user_id", "anonymous_id", "previous_id", "traits", "context", "properties")


def identifier_sets(events: pa.Table, rules: Rules) -> list[list[str]]:
    """Each event's usable identifiers in priority order, as the stage reads them."""
    columns = {n: events.column(n).to_pylist() for n in _EXTRACTED}
    return [extract({n: c[i] for n, c in columns.items()}, rules).identifiers for i in range(events.num_rows)]


def union_find_baseline(events: pa.Table, rules: Rules) -> float:
    """Events/s of extracting each event's identifiers and joining them in a plain union-find (no rules)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    started = time.perf_counter()
    sets = identifier_sets(events, rules)
    for identifiers in sets:
        if identifiers:
            first = find(identifiers[0])
            for other in identifiers[1:]:
                root = find(other)
                if root != first:
                    parent[root] = first
    return len(sets) / (time.perf_counter() - started)


def reference_partition(events: pa.Table, rules: Rules) -> dict[str, frozenset[str]]:
    """identifier -> every identifier of its person: the rules applied by a union-find, in event-time order.

    Written apart from ``IdentityGraph``: components carry their count of identifiers per
    kind. An event's identifiers, from the most trusted, join the component being built
    unless it would then hold more of a kind than its limit; the one that would is left
    out of the event (a userId over the limit of 1 is merge protection).
    """
    parent: dict[str, str] = {}
    kinds: dict[str, dict[str, int]] = {}  # root -> identifiers of each kind in its component

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def limit(kind: str) -> int:
        return rules.limits.get(kind, rules.default_limit)

    keys = list(zip(events.column("timestamp").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist(), events.column("message_id").to_pylist(), strict=True))
    order = sorted(range(events.num_rows), key=keys.__getitem__)
    sets = identifier_sets(events, rules)
    for index in order:
        roots: list[str] = []
        counts: dict[str, int] = {}
        for identifier in sets[index]:
            root = find(identifier) if identifier in parent else None
            if root is not None and root in roots:
                continue
            adds = kinds[root] if root is not None else {kind_of(identifier): 1}
            if any(counts.get(kind, 0) + n > limit(kind) for kind, n in adds.items()):
                continue
            for kind, n in adds.items():
                counts[kind] = counts.get(kind, 0) + n
            if root is None:
                parent[identifier] = root = identifier
                kinds[root] = {kind_of(identifier): 1}
            roots.append(root)
        for root in roots[1:]:
            parent[root] = roots[0]
            del kinds[root]
        if roots:
            kinds[roots[0]] = counts
    members: dict[str, set[str]] = {}
    for identifier in parent:
        members.setdefault(find(identifier), set()).add(identifier)
    return {identifier: frozenset(group) for group in members.values() for identifier in group}


def crosscheck(events: pa.Table, profile_ids: list[str | None], store: Backend, rules: Rules) -> tuple[int, int, int, int]:
    """(profiles agreeing, profiles in the reference, events agreeing, events) for a resolved stream.

    A profile agrees when the store's ``identities`` give one profile exactly the
    reference's identifiers; an event, when the profile it was given (followed through
    ``profile_map``) is the one holding its strongest identifier in the reference.
    """
    reference = reference_partition(events, rules)
    owners = store.select(exp.select("identifier", "profile_id").from_(store.table_ref(IDENTITIES)).where(exp.column("deleted").not_()))
    redirects = store.select(exp.select("profile_id", "canonical_id").from_(store.table_ref(PROFILE_MAP)))
    canonical_of = dict(zip(*(column.to_pylist() for column in redirects.columns), strict=True))
    stored: dict[str, set[str]] = {}
    for identifier, profile_id in zip(*(column.to_pylist() for column in owners.columns), strict=True):
        stored.setdefault(profile_id, set()).add(identifier)
    by_profile = {frozenset(group) for group in stored.values()}
    groups = set(reference.values())
    profiles_agree = len(groups & by_profile)
    events_agree = 0
    for identifiers, profile_id in zip(identifier_sets(events, rules), profile_ids, strict=True):
        if not identifiers:
            events_agree += profile_id is None
        elif profile_id is not None:
            canonical = canonical_of.get(profile_id, profile_id)
            events_agree += frozenset(stored.get(canonical, ())) == reference[identifiers[0]]
    return profiles_agree, len(groups), events_agree, len(profile_ids)


def run(events: pa.Table, batch: int, store: Backend | None = None) -> tuple[float, IdentityStage, list[str | None]]:
    """Events/s through the stage (over an in-memory DuckDB store by default), the stage, each event's profile id."""
    if store is None:
        store = DuckDBBackend(":memory:")
        store.create_schema()
    stage = IdentityStage(store)
    lines = events_and_lines([])[1]
    resolved = []
    started = time.perf_counter()
    for offset in range(0, events.num_rows, batch):
        resolved.append(stage.resolve(events.slice(offset, batch), lines)[0].column("profile_id"))
    rate = events.num_rows / (time.perf_counter() - started)
    return rate, stage, [p for column in resolved for p in column.to_pylist()]


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
        rate, stage, profile_ids = run(events, args.batch)
        stats = stage.stats
        print(f"\n{name}: {args.events:,} events")
        print(f"  stage:     {rate:,.0f} events/s ({rate / baseline:.2f}x plain union-find of the same sets: {baseline:,.0f}/s)")
        print(f"  profiles:  {len(stage.graph.profiles):,}; merges {stats.merges:,}; conflicts {stats.conflicts:,}; replays {stats.recomputed:,}")
        verdict = "PASS" if rate >= TARGET else "BELOW TARGET"
        print(f"  target >= {TARGET:,} events/s: {verdict}")
        profiles, groups, agreeing, total = crosscheck(events, profile_ids, stage.backend, stage.graph.rules)
        print(f"  correct: {profiles:,}/{groups:,} profiles agree with the reference union-find; "
              f"{agreeing:,}/{total:,} events on the right profile")


if __name__ == "__main__":
    main()
