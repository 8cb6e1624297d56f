"""Profile lookup by identifier at scale: GET /api/v1/profiles?email=|phone=|user_id= at a fixed rate.

The store is built directly, not through HTTP: ``--profiles`` profiles with about three
identifiers each (an anonymous id for all; user id, e-mail and phone for most), 5% of
them holding a second, merged profile id, and ``--events`` events with ``profile_id``
set (identify events carry traits); the columns are generated with numpy and written
as Arrow tables through the Backend API. Then a real ``opencdp serve`` answers lookups
of random existing e-mails, phones and user ids, written as people type them, 5% of
them unknown (404), on an open-loop schedule with latency measured from the scheduled
send time, as in bench_track.py. Baseline: ``GET /health`` on the same server under
the same schedule. The lookup answers the profile's first screen: identifiers, traits and
activity, read by key from ``profile_summary`` (the events' index by profile, built
here from the written events with ``profile_summary.rebuild``). ``--full-rate``
also times ``?include=activity`` (the same answer; before the index it scanned the
events) and the timeline (``/events``, which still scans them) apart at a low rate. Each run is preceded by a few requests
sent one at a time, the latency without queueing.

The lookup's reads are point reads by keys and indexed columns (identities.identifier
and profile_summary.profile_id, keys; identities.profile_id and profile_map.canonical_id,
declared indexes), rendered
once as queries with parameters. DuckDB keeps those ART indexes in memory once used
(~360 MB at 1M profiles, within the default 1GB ``duckdb_memory_limit``); a server
just started reads them from disk as lookups touch them, which the ``alone`` column
(the first requests) shows.

    .venv/bin/python benchmarks/bench_profiles.py [--profiles 1000000] [--events 10000000] [--rate 100] [--duration 10]
        [--memory-limit 1GB]

Target: p99 <= 20 ms at 100 lookups/s with 1,000,000 profiles. Bounded: about 3
minutes at the default sizes (a minute or two of it building the store; an
overloaded run waits for the server to drain its queue).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _server import (
    HOST,
    Connection,
    Expect,
    OpenLoopResult,
    Server,
    cpu_seconds,
    install_uvloop,
    machine,
    open_loop,
    percentile,
    print_table,
    rss_bytes,
    start_opencdp,
    work_dir,
)

from opencdp.config import Settings
from opencdp.storage import open_backend, profile_summary
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, IDENTITIES, PROFILE_MAP

TARGET_P99_S = 0.020
DAY_MS = 86_400_000
CHUNK = 1_000_000  # rows per write

# (type, event name, share of events); listed in the store's sort order (event, then timestamp).
_EVENT_MIX = (
    ("identify", "", 0.04),
    ("page", "", 0.30),
    ("track", "Checkout Started", 0.04),
    ("track", "Order Completed", 0.04),
    ("track", "Product Added", 0.12),
    ("track", "Product Viewed", 0.46),
)
_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru", "rambler.ru")
_PHONE_CODES = ("903", "905", "915", "916", "925", "926", "977", "985")
_CITIES = ("Москва", "Санкт-Петербург", "Казань", "Екатеринбург", "Новосибирск", "Краснодар")
_NAMES = ("Анна", "Мария", "Елена", "Ольга", "Иван", "Сергей", "Дмитрий", "Алексей")
_TIERS = ("bronze", "silver", "gold")
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


# -- building the store ------------------------------------------------------------------
def _hex_ids(rng: np.random.Generator, count: int, prefix: str, digits: int) -> pa.StringArray:
    """``count`` random ids ``prefix`` + ``digits`` hex digits (profile ids look like ``p_`` + 20)."""
    raw = rng.integers(0, 256, (count, digits // 2), dtype=np.uint8)
    chars = np.empty((count, len(prefix) + digits), np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode(), np.uint8)
    chars[:, len(prefix) :: 2] = _HEX[raw >> 4]
    chars[:, len(prefix) + 1 :: 2] = _HEX[raw & 15]
    width = chars.shape[1]
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(chars))


def _text(numbers: np.ndarray, width: int = 0) -> pa.Array:
    text = pc.cast(pa.array(numbers), pa.string())
    return pc.utf8_lpad(text, width=width, padding="0") if width else text


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _pick(choices: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(choices, pa.string()), pa.array(codes))


@dataclass
class People:
    """The generated profiles, kept as columns (index = profile number)."""

    ids: pa.StringArray
    anonymous: pa.StringArray
    user_id: pa.Array  # null where the profile has none
    email: pa.Array
    phone: pa.Array
    merged_into: np.ndarray  # profile number each merged id belongs to
    merged_ids: pa.StringArray

    def __len__(self) -> int:
        return len(self.ids)


def make_people(rng: np.random.Generator, count: int, merged_share: float = 0.05) -> People:
    numbers = np.arange(count)
    null = pa.nulls(count, pa.string())
    user_id = pc.if_else(pa.array(rng.random(count) < 0.7), _join("C", _text(numbers, 7)), null)
    domains = _pick(_DOMAINS, rng.integers(0, len(_DOMAINS), count))
    email = pc.if_else(pa.array(rng.random(count) < 0.6), _join("user", _text(numbers), "@", domains), null)
    codes = _pick(_PHONE_CODES, rng.integers(0, len(_PHONE_CODES), count))
    phone = pc.if_else(pa.array(rng.random(count) < 0.55), _join("+7", codes, _text(numbers % 10**7, 7)), null)
    merged = int(count * merged_share)
    return People(
        ids=_hex_ids(rng, count, "p_", 20),
        anonymous=_hex_ids(rng, count, "anon-", 16),
        user_id=user_id,
        email=email,
        phone=phone,
        merged_into=rng.choice(count, merged, replace=False),
        merged_ids=_hex_ids(rng, merged, "p_", 20),
    )


def identities_table(rng: np.random.Generator, people: People, now_ms: int) -> pa.Table:
    """One row per identifier; a merged profile's second device is owned by the survivor."""
    parts = [
        ("anonymous_id", people.anonymous, people.ids),
        ("anonymous_id", _hex_ids(rng, len(people.merged_ids), "anon-", 16), people.ids.take(pa.array(people.merged_into))),
    ]
    for kind, values in (("user_id", people.user_id), ("email", people.email), ("phone", people.phone)):
        present = pc.is_valid(values)
        parts.append((kind, values.filter(present), people.ids.filter(present)))
    tables = []
    for kind, values, owners in parts:
        count = len(values)
        tables.append(pa.table(
            {
                "identifier": _join(f"{kind}:", values),
                "kind": pa.array([kind] * count, pa.string()),
                "value": values,
                "profile_id": owners,
                "first_seen": pa.array(now_ms - rng.integers(0, 365 * DAY_MS, count), pa.timestamp("ms", tz="UTC")),
                "message_id": _join("m-seed-", _text(rng.integers(0, 10**9, count))),
                "updated_at": pa.array(np.full(count, now_ms), pa.timestamp("ms", tz="UTC")),
                "deleted": pa.array(np.zeros(count, bool)),
            },
            schema=IDENTITIES.arrow_schema,
        ))
    return pa.concat_tables(tables)


def profile_map_table(people: People, now_ms: int) -> pa.Table:
    """Every profile maps to itself; every merged id to its survivor."""
    old = pa.concat_arrays([people.ids, people.merged_ids])
    new = pa.concat_arrays([people.ids, people.ids.take(pa.array(people.merged_into))])
    stamp = pa.array(np.full(len(old), now_ms), pa.timestamp("ms", tz="UTC"))
    return pa.table({"profile_id": old, "canonical_id": new, "updated_at": stamp}, schema=PROFILE_MAP.arrow_schema)


def event_chunks(rng: np.random.Generator, people: People, total: int, now_ms: int) -> Iterator[pa.Table]:
    """``total`` events in the store's order (event name, then time), ``CHUNK`` rows at a time.

    Profiles get events uniformly (about ``total / profiles`` each); half the events of a
    profile with a merged id carry that id, as events loaded before the merge do.
    """
    count = len(people)
    merged_slot = np.full(count, -1)
    merged_slot[people.merged_into] = np.arange(len(people.merged_into))
    shares = np.array([share for _, _, share in _EVENT_MIX])
    sizes = np.floor(shares / shares.sum() * total).astype(int)
    sizes[-1] += total - sizes.sum()
    first = 0
    groups = [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]  # identify and page share the event name ''
    for lo, hi in groups:
        size = int(sizes[lo:hi].sum())
        stamps = np.sort(now_ms - rng.integers(0, 365 * DAY_MS, size))
        mix = rng.choice(np.arange(lo, hi), size, p=shares[lo:hi] / shares[lo:hi].sum())
        for start in range(0, size, CHUNK):
            stop = min(size, start + CHUNK)
            yield _events(rng, people, merged_slot, mix[start:stop], stamps[start:stop], first + start)
        first += size


def _only(mask: np.ndarray, make: Callable[[np.ndarray], pa.Array]) -> pa.Array:
    """``make(rows)`` at the rows where ``mask`` is set, null elsewhere (built for those rows only)."""
    rows = np.flatnonzero(mask)
    if len(rows) == len(mask):
        return make(rows)
    values = make(rows) if len(rows) else pa.array([], pa.string())
    return pc.replace_with_mask(pa.nulls(len(mask), values.type), pa.array(mask), values)


def _events(
    rng: np.random.Generator, people: People, merged_slot: np.ndarray, mix: np.ndarray, stamps: np.ndarray, first: int
) -> pa.Table:
    size = len(mix)
    owner = rng.integers(0, len(people), size)
    slot = merged_slot[owner]
    carries_merged = pa.array((slot >= 0) & (rng.random(size) < 0.5))
    profile_id = pc.if_else(carries_merged, people.merged_ids.take(pa.array(np.maximum(slot, 0))), people.ids.take(pa.array(owner)))
    owner_arrow = pa.array(owner)
    identify, page, order, product = mix == 0, mix == 1, mix == 3, (mix == 4) | (mix == 5)
    price = rng.integers(490, 89_990, size).astype(float)
    quantity = rng.choice(np.array([1.0, 1.0, 1.0, 2.0, 4.0]), size)
    total = price * quantity
    product_ids = rng.integers(1, 5000, size)
    numbers = np.arange(first, first + size)

    def traits(rows: np.ndarray) -> pa.Array:
        email = people.email.take(pa.array(owner[rows]))
        tail = _join(
            '"first_name":"', _pick(_NAMES, rng.integers(0, len(_NAMES), len(rows))),
            '","city":"', _pick(_CITIES, rng.integers(0, len(_CITIES), len(rows))),
            '","loyalty":"', _pick(_TIERS, rng.integers(0, len(_TIERS), len(rows))), '"}',
        )
        return pc.if_else(pc.is_valid(email), _join('{"email":"', pc.fill_null(email, ""), '",', tail), _join("{", tail))

    def properties(rows: np.ndarray) -> pa.Array:
        kinds = mix[rows]
        product_json = _only(
            (kinds == 4) | (kinds == 5),
            lambda at: _join('{"product_id":"P', _text(product_ids[rows][at], 5), '","price":', _text(price[rows][at]),
                             ',"quantity":', _text(quantity[rows][at]), "}"),
        )
        order_json = _only(
            (kinds == 2) | (kinds == 3),
            lambda at: _join('{"order_id":"O-', _text(numbers[rows][at]), '","total":', _text(total[rows][at]), ',"currency":"RUB"}'),
        )
        page_json = _only(
            kinds == 1, lambda at: _join('{"path":"/catalog/', _pick(("sofas", "beds", "lamps", "rugs"), rng.integers(0, 4, len(at))), '"}')
        )
        return pc.coalesce(product_json, order_json, page_json)

    timestamp = pa.array(stamps, pa.timestamp("ms", tz="UTC"))
    columns = {
        "message_id": _join("m-", _text(numbers)),
        "type": _pick(tuple(t for t, _, _ in _EVENT_MIX), mix),
        "event": _pick(tuple(e for _, e, _ in _EVENT_MIX), mix),
        "name": _only(page, lambda rows: pa.repeat(pa.scalar("Catalog"), len(rows))),
        "timestamp": timestamp,
        "original_timestamp": timestamp,
        "received_at": pa.array(stamps + 150, pa.timestamp("ms", tz="UTC")),
        "user_id": people.user_id.take(owner_arrow),
        "anonymous_id": people.anonymous.take(owner_arrow),
        "source": pa.repeat(pa.scalar("website"), size),
        "channel": pa.repeat(pa.scalar("web"), size),
        "properties": _only(~identify, properties),
        "traits": _only(identify, traits),
        "order_id": _only(order, lambda rows: _join("O-", _text(numbers[rows]))),
        "revenue": _only(order, lambda rows: pa.array(total[rows] * 0.9)),
        "total": _only(order, lambda rows: pa.array(total[rows])),
        "currency": _only(order, lambda rows: pa.repeat(pa.scalar("RUB"), len(rows))),
        "product_id": _only(product, lambda rows: _join("P", _text(product_ids[rows], 5))),
        "price": _only(product, lambda rows: pa.array(price[rows])),
        "quantity": _only(product, lambda rows: pa.array(quantity[rows])),
        "lsn": pa.array(np.zeros(size, np.int64)),
        "profile_id": profile_id,
    }
    schema = EVENTS.arrow_schema
    return pa.table([columns.get(f.name, pa.nulls(size, f.type)) for f in schema], schema=schema)


def _prefetched(chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The next chunk is generated while this one is written (numpy, Arrow and DuckDB release the GIL)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, chunks, None)
        while (chunk := future.result()) is not None:
            future = pool.submit(next, chunks, None)
            yield chunk


@dataclass
class Built:
    people: People
    identities: int
    redirects: int
    events: int
    seconds: dict[str, float]  # phase -> wall seconds
    size_bytes: int


def build_store(data_dir: Path, profiles: int, events: int, seed: int) -> Built:
    """Write the store's identity tables and events directly (``opencdp serve`` then opens it)."""
    marks = [("start", time.perf_counter())]
    rng = np.random.default_rng(seed)
    now_ms = int(time.time() * 1000)
    people = make_people(rng, profiles)
    identities = identities_table(rng, people, now_ms)
    redirects = profile_map_table(people, now_ms)
    marks.append(("generate profiles", time.perf_counter()))
    backend: Backend = open_backend(Settings(data_dir=data_dir))
    try:
        # Keys are unique by construction: a plain insert (upsert's per-key dedupe costs 2.5x).
        for table, data in ((IDENTITIES, identities), (PROFILE_MAP, redirects)):
            for offset in range(0, data.num_rows, CHUNK):
                backend.insert(table.name, data.slice(offset, CHUNK))
        marks.append(("write identities", time.perf_counter()))
        written = 0
        for chunk in _prefetched(event_chunks(np.random.default_rng(seed + 1), people, events, now_ms)):
            backend.insert(EVENTS.name, chunk)
            written += chunk.num_rows
        marks.append(("generate and write events", time.perf_counter()))
        # Written with insert, not load: the events' index by profile is built from them at once, as
        # create_schema does for a store older than the index.
        profile_summary.rebuild(backend)
        marks.append(("profile summary", time.perf_counter()))
        backend.execute("CHECKPOINT")  # the server then starts without replaying DuckDB's log
        marks.append(("checkpoint", time.perf_counter()))
        size = backend.size_bytes()
    finally:
        backend.close()
    seconds = {name: at - marks[i][1] for i, (name, at) in enumerate(marks[1:])}
    seconds["total"] = marks[-1][1] - marks[0][1]
    return Built(people, identities.num_rows, redirects.num_rows, written, seconds, size)


def reuse_store(data_dir: Path, args: argparse.Namespace) -> Built | None:
    """The store a previous run with ``--store`` built with the same sizes and seed; None when there is none."""
    marker = data_dir / "built.json"
    if not marker.exists():
        return None
    saved = json.loads(marker.read_text())
    if (saved["profiles"], saved["events"], saved["seed"]) != (args.profiles, args.events, args.seed):
        raise SystemExit(f"{data_dir} holds a store of other sizes {saved}; remove it or pick another --store")
    people = make_people(np.random.default_rng(args.seed), args.profiles)  # the same generator draws as build_store
    return Built(people, saved["identities"], saved["redirects"], saved["events"], {"total": 0.0}, saved["size_bytes"])


# -- the requests --------------------------------------------------------------------------
def _phone_as_typed(e164: str, rng: random.Random) -> str:
    digits = e164[2:]  # +7 9161234567 -> 9161234567
    style = rng.randrange(3)
    if style == 0:
        return e164
    if style == 1:
        return f"+7 {digits[:3]} {digits[3:6]}-{digits[6:8]}-{digits[8:]}"
    return f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}{digits[8:]}"


def lookups(people: People, count: int, seed: int, miss_share: float = 0.05) -> list[tuple[str, int]]:
    """``count`` lookup paths of random identifiers with the status each must get (200 or 404)."""
    rng = random.Random(seed)
    paths: list[tuple[str, int]] = []
    columns = {"email": people.email, "phone": people.phone, "user_id": people.user_id}
    while len(paths) < count:
        name = rng.choice(("email", "phone", "user_id"))
        if rng.random() < miss_share:
            value = {"email": f"nobody{rng.randrange(10**9)}@mail.ru", "phone": f"+7958{rng.randrange(10**7):07d}",
                     "user_id": f"X{rng.randrange(10**9)}"}[name]
            paths.append((f"/api/v1/profiles?{name}={urllib.parse.quote(value)}", 404))
            continue
        stored = columns[name][rng.randrange(len(people))].as_py()
        if stored is None:
            continue
        if name == "phone":
            value = _phone_as_typed(stored, rng)
        elif name == "email" and rng.random() < 0.3:
            value = stored.capitalize()
        else:
            value = stored
        paths.append((f"/api/v1/profiles?{name}={urllib.parse.quote(value)}", 200))
    return paths


def encode_get(path: str, port: int, admin_key: str | None) -> bytes:
    auth = f"authorization: Bearer {admin_key}\r\n" if admin_key else ""
    return f"GET {path} HTTP/1.1\r\nhost: {HOST}:{port}\r\n{auth}user-agent: opencdp-bench\r\n\r\n".encode()


async def one_at_a_time(port: int, requests: list[tuple[bytes, int]], count: int) -> list[float]:
    """Latency of ``count`` requests sent one after another (no queueing); failures are left out."""
    connection: Connection | None = None
    latencies = []
    for data, expected in requests[:count]:
        try:
            if connection is None or not connection.usable:
                connection = await Connection.open(port)
            sent = time.perf_counter()
            reply = await connection.request(data)
        except (OSError, ConnectionError, RuntimeError):
            connection = None
            continue
        if reply.status == expected:
            latencies.append(time.perf_counter() - sent)
    if connection is not None:
        connection.close()
    return latencies


def settle(server: Server, timeout: float = 120.0) -> None:
    """Wait until the server is idle: an overloaded run leaves requests queued in its thread pool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(server.pid)
        time.sleep(0.5)
        if cpu_seconds(server.pid) - before < 0.05:
            return


def _status(expected: int) -> Expect:
    return lambda reply: reply.status == expected


def _run(server: Server, name: str, paths: list[tuple[str, int]], rate: float, args: argparse.Namespace) -> OpenLoopResult:
    requests = [(encode_get(path, server.port, server.admin_key), status) for path, status in paths]
    settle(server)
    alone = asyncio.run(one_at_a_time(server.port, requests[::-1], args.alone))
    turn = itertools.cycle([(data, _status(expected)) for data, expected in requests])
    result = asyncio.run(
        open_loop(
            server.port, lambda: next(turn), rate=rate, warmup=args.warmup, duration=args.duration,
            server_pid=server.pid, name=name, connections=8, drain_timeout=30,
        )
    )
    result.alone = alone
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rate", type=float, default=100.0, help="lookups per second, fixed schedule")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--full-rate", type=float, default=2.0, help="full profiles (include=activity) per second; 0 skips them")
    parser.add_argument("--memory-limit", help="the server's duckdb_memory_limit (default: the server's default)")
    parser.add_argument("--alone", type=int, default=20, help="requests sent one at a time before each run")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--store", help="keep the built store in this directory and reuse it on the next run with the same sizes")
    args = parser.parse_args()
    install_uvloop()

    print("bench_profiles: GET /api/v1/profiles?email=|phone=|user_id= on a large store, open loop at a fixed rate")
    print(f"  machine:  {machine()}")
    results: list[OpenLoopResult] = []
    with work_dir("opencdp-bench-profiles-") as scratch:
        root = Path(args.store) if args.store else scratch
        built = reuse_store(root / "data", args) if args.store else None
        if built is None:
            built = build_store(root / "data", args.profiles, args.events, args.seed)
            if args.store:
                (root / "data" / "built.json").write_text(json.dumps(
                    {"profiles": args.profiles, "events": args.events, "seed": args.seed, "identities": built.identities,
                     "redirects": built.redirects, "size_bytes": built.size_bytes}
                ))
        print(
            f"  store:    {len(built.people):,} profiles, {built.identities:,} identifiers, {built.redirects:,} profile_map rows "
            f"({len(built.people.merged_ids):,} merged ids), {built.events:,} events, {built.size_bytes / 2**20:,.0f} MiB on disk"
        )
        phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in built.seconds.items() if name != "total")
        print(f"  setup:    {built.seconds['total']:.1f} s ({phases})")
        print(f"  load:     {args.rate:,.0f} req/s scheduled, {args.warmup:.0f} s warm-up + {args.duration:.0f} s measured")
        total = int(args.rate * (args.warmup + args.duration))
        paths = lookups(built.people, total, args.seed)
        full = [(p.replace("?", "?include=activity&", 1), s) for p, s in paths]
        pick = random.Random(args.seed)
        timelines = [(f"/api/v1/profiles/{built.people.ids[pick.randrange(len(built.people))].as_py()}/events?limit=20", 200)
                     for _ in range(len(paths))]
        rss: list[str] = []
        verdicts: list[tuple[OpenLoopResult, OpenLoopResult]] = []  # (baseline, lookup)
        started = time.perf_counter()
        limit = {"OPENCDP_DUCKDB_MEMORY_LIMIT": args.memory_limit} if args.memory_limit else None
        server = start_opencdp(root / "data", timeout=300, env=limit)
        print(f"  server:   up in {time.perf_counter() - started:.1f} s, RSS {rss_bytes(server.pid) / 2**20:,.0f} MiB")
        try:
            verdicts.append((
                _run(server, "GET /health", [("/health", 200)], args.rate, args),
                _run(server, "lookup", paths, args.rate, args),
            ))
            results.extend(verdicts[-1])
            if args.full_rate > 0:
                results.append(_run(server, "lookup + activity", full, args.full_rate, args))
                results.append(_run(server, "timeline (scans events)", timelines, args.full_rate, args))
            rss.append(f"{rss_bytes(server.pid) / 2**20:,.0f} MiB")
        finally:
            server.stop()

    def lat(values: list[float], q: float) -> str:
        return f"{percentile(sorted(values), q) * 1000:.2f}"

    rows: list[tuple[str, ...]] = [(
        "run", "sched/s", "ok/s", "p50 ms", "p95 ms", "p99 ms", "max ms", f"alone p50 ms ({args.alone})",
        "server CPU", "200 / 404", "errors", "late sends",
    )]
    for r in results:
        rows.append((
            r.name, f"{r.scheduled / r.seconds:,.1f}", f"{r.ok / r.seconds:,.1f}",
            lat(r.latencies, 50), lat(r.latencies, 95), lat(r.latencies, 99),
            f"{max(r.latencies, default=float('nan')) * 1000:.2f}", lat(r.alone, 50), f"{r.server_cpu:.2f}",
            f"{r.statuses.get(200, 0)} / {r.statuses.get(404, 0)}", str(sum(r.other.values()) + r.unfinished),
            str(r.late_starts),
        ))
    print_table(
        "results: latency from the scheduled send time (open loop); ok = answered with the expected status; "
        "alone = sent one at a time before the run",
        rows,
    )
    for result in results:
        if result.other or result.unfinished:
            print(f"  {result.name}: {result.other}, unfinished at the end: {result.unfinished}")
    print(f"\nserver RSS after the runs: {', '.join(rss)}")
    for health, lookup in verdicts:
        p99 = percentile(sorted(lookup.latencies), 99)
        verdict = "PASS" if p99 <= TARGET_P99_S and lookup.ok >= 0.99 * lookup.scheduled else "FAIL"
        print(f"target p99 <= {TARGET_P99_S * 1000:.0f} ms at {args.rate:,.0f} lookups/s with {len(built.people):,} profiles, "
              f"{lookup.name}: p99 {p99 * 1000:.2f} ms ({health.name} {lat(health.latencies, 99)} ms) -> {verdict}")


if __name__ == "__main__":
    main()
