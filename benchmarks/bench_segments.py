"""Segments on the demo shop at scale: one typical segment, 100 segments refreshed, a preview, real time.

The demo shop (``opencdp demo generate``) is built once per size by ``_shop.shop_store`` under
``bench-data/segments-<customers>/demo`` and loaded straight into a DuckDB store with
SQL (events with their typed columns, order lines from ``products[]``, POS orders,
CRM customers as identify events, the catalogue): profiles are assigned by user id,
else by the user id the anonymous id was later identified with, else the anonymous id
— the identity stage is not what is measured here, and running it over 20M events
would take most of the budget. ``--chdb`` copies the same tables into embedded
ClickHouse and times the typical segment there too.

Figures, each beside a baseline run in the same process (a full group-by of events by
profile, the cheapest query that touches every event):

* example 1 (3+ Cosmetics-like orders in 30 days with an average check >= 2000): median of 3;
* a full refresh of 100 varied segments (membership rows written, events for changes), and peak RSS;
* a preview of a draft segment (size plus 20 members);
* real time: events appended at ``--rate`` per second for ``--seconds``, each batch observed and
  evaluated by ``RealtimeSegments`` as the server does: p50/p95 from an event being stored to its
  membership change being written.

    .venv/bin/python benchmarks/bench_segments.py [--customers 1000000] [--rate 1000] [--seconds 20] [--chdb]

Targets (issue 4): example <= 1 s; 100 segments <= 60 s (stretch 20 s), <= 4 GB; preview <= 1 s;
real time p95 <= 1 s at 1,000 events/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shop import private_copy

from opencdp.config import Settings
from opencdp.segments import exports, membership, store
from opencdp.segments.realtime import RealtimeSegments
from opencdp.segments.sql import members
from opencdp.segments.text import parse
from opencdp.storage import open_backend, profile_summary
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, TABLES

ROOT = Path(__file__).resolve().parent.parent / "bench-data"

EXAMPLE_1 = (
    'count("Order Completed", where: line.category starts with "Kitchen", window: 30d) >= 3'
    ' and avg("Order Completed", total, where: line.category starts with "Kitchen", window: 30d) >= 2000'
)
ROOMS = ("Kitchen", "Living room", "Bedroom", "Kids room", "Bathroom", "Hallway", "Home office")
CITIES = ("Moscow", "Kazan", "Saint Petersburg", "Novosibirsk", "Yekaterinburg", "Perm")


def hundred_segments() -> list[tuple[str, str]]:
    """100 definitions of the kinds marketers keep: rooms, recency, value, funnels, engagement, traits."""
    defs: list[tuple[str, str]] = [("example_1", EXAMPLE_1)]
    for i, room in enumerate(ROOMS):
        defs += [
            (f"room_{i}_buyers_90d", f'count("Order Completed", where: line.category starts with "{room}", window: 90d) >= 1'),
            (f"room_{i}_viewers_7d", f'count("Product Viewed", where: properties.category starts with "{room}", window: 7d) >= 2'),
            (f"room_{i}_not_bought_365d", f'count("Product Viewed", where: properties.category starts with "{room}", window: 30d) >= 1'
             f' and not count("Order Completed", where: line.category starts with "{room}", window: 365d) >= 1'),
            (f"room_{i}_spend", f'sum("Order Completed", line.price, where: line.category starts with "{room}") > 50000'),
            (f"room_{i}_abandoned", f'not_followed(step("Product Added", where: properties.category starts with "{room}"), '
             'step("Order Completed"), within: 1h, window: 14d)'),
        ]
    for i, city in enumerate(CITIES):
        defs += [
            (f"city_{i}", f'traits.city = "{city}"'),
            (f"city_{i}_buyers", f'traits.city = "{city}" and count("Order Completed", window: 180d) >= 1'),
            (f"city_{i}_vip", f'traits.city = "{city}" and sum("Order Completed", total) >= 300000'),
        ]
    for days in (7, 30, 60, 90, 180, 365):
        defs += [
            (f"active_{days}d", f"count(window: {days}d) >= 1"),
            (f"buyers_{days}d", f'count("Order Completed", window: {days}d) >= 1'),
            (f"new_{days}d", f'first_time("Order Completed") >= ago({days}d)'),
            (f"lapsed_{days}d", f'last_time("Order Completed") < ago({days}d)'),
            (f"openers_{days}d", f'count("Email Opened", window: {days}d) >= 1'),
        ]
    defs += [
        ("funnel_7d", 'sequence(step("Product Viewed"), step("Product Added"), step("Checkout Started"), within: 7d, window: 30d)'),
        ("cart_abandoned_1h", 'not_followed(step("Product Added"), step("Order Completed"), within: 1h, window: 7d)'),
        ("checkout_abandoned", 'not_followed(step("Checkout Started"), step("Order Completed"), within: 1h, window: 7d)'),
        ("high_check", 'avg("Order Completed", total) >= 50000'),
        ("frequent", 'count("Order Completed", window: 365d) >= 4'),
        ("one_timer", 'count("Order Completed") = 1'),
        ("never_bought", 'count("Order Completed") = 0 and count("Product Viewed") >= 5'),
        ("clickers_no_order", 'count("Email Link Clicked", window: 30d) >= 1 and count("Order Completed", window: 30d) = 0'),
        ("birthday_week", "days_until(traits.birthday) <= 7"),
        ("age_25_35", "age(traits.birthday) between 25 and 35"),
        ("women_kazan", 'traits.gender = "f" and traits.city = "Kazan"'),
        ("offline_buyers", 'count("Order Completed", where: channel = "pos", window: 365d) >= 1'),
        ("online_and_offline", 'count("Order Completed", where: channel = "pos") >= 1 and count("Order Completed", where: channel != "pos") >= 1'),
        ("expensive_viewers", 'count("Product Viewed", where: product.price > 50000, window: 21d) >= 1'),
        ("distinct_categories", 'distinct("Order Completed", line.category) >= 5'),
        ("holdout_10", "bucket(0, 10, salt: \"bench\")"),
        ("vip_not_holdout", 'sum("Order Completed", total) >= 300000 and not bucket(0, 10, salt: "bench")'),
        ("unsubscribed", 'count("Unsubscribed") >= 1'),
        ("sms_clickers", 'count("SMS Link Clicked", window: 90d) >= 1'),
    ]
    while len(defs) < 100:
        n = len(defs)
        defs.append((f"spend_over_{n}", f'sum("Order Completed", total, window: 365d) >= {n * 1000}'))
    return defs[:100]


def load_store(backend: Backend, demo: Path) -> dict[str, int]:
    """The demo's files into the store with SQL (DuckDB)."""
    events_glob = str(demo / "events-*.parquet")
    run = backend.execute
    run(f"""CREATE OR REPLACE TEMP TABLE anon AS
        SELECT anonymous_id, min(user_id) AS uid FROM read_parquet('{events_glob}')
        WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL GROUP BY 1""")
    run(f"""INSERT INTO events BY NAME
        SELECT e.message_id, e.type, coalesce(e.event, '') AS event, e.name, e.timestamp, e.timestamp AS received_at,
               e.user_id, e.anonymous_id, 'demo' AS source,
               coalesce(json_extract_string(e.context, '/channel'), 'web') AS channel,
               e.properties, e.traits, e.context,
               json_extract_string(e.properties, '/order_id') AS order_id,
               TRY_CAST(json_extract_string(e.properties, '/revenue') AS DOUBLE) AS revenue,
               TRY_CAST(json_extract_string(e.properties, '/total') AS DOUBLE) AS total,
               json_extract_string(e.properties, '/currency') AS currency,
               json_extract_string(e.properties, '/product_id') AS product_id,
               json_extract_string(e.properties, '/category') AS category,
               TRY_CAST(json_extract_string(e.properties, '/price') AS DOUBLE) AS price,
               0 AS lsn, coalesce(e.user_id, a.uid, e.anonymous_id) AS profile_id
        FROM read_parquet('{events_glob}') e LEFT JOIN anon a USING (anonymous_id)
        ORDER BY event, e.timestamp""")
    run("""INSERT INTO order_lines BY NAME
        SELECT message_id, CAST(n - 1 AS BIGINT) AS line_no, order_id, timestamp, user_id, anonymous_id, event, channel,
               profile_id, json_extract_string(p, '/product_id') AS product_id, json_extract_string(p, '/category') AS category,
               json_extract_string(p, '/brand') AS brand, TRY_CAST(json_extract_string(p, '/price') AS DOUBLE) AS price,
               TRY_CAST(json_extract_string(p, '/quantity') AS DOUBLE) AS quantity, currency
        FROM (SELECT *, unnest(json_extract(properties, '$.products[*]')) AS p,
                     generate_subscripts(json_extract(properties, '$.products[*]'), 1) AS n
              FROM events WHERE event = 'Order Completed')""")
    customers = str(demo / "customers.csv")
    run(f"""INSERT INTO events BY NAME
        SELECT 'crm-' || customer_id AS message_id, 'identify' AS type, '' AS event, CAST(created_at AS TIMESTAMPTZ) AS timestamp,
               CAST(created_at AS TIMESTAMPTZ) AS received_at, customer_id AS user_id, 'crm' AS source, 'crm' AS channel,
               json_object('city', city, 'birthday', CAST(birthday AS VARCHAR), 'gender', gender, 'email', trim(email),
                           'loyalty_card', CAST(loyalty_card AS VARCHAR), 'created_at', CAST(created_at AS VARCHAR)) AS traits,
               0 AS lsn, customer_id AS profile_id
        FROM read_csv('{customers}', all_varchar = true)""")
    pos = str(demo / "pos_orders.csv")
    run(f"""CREATE OR REPLACE TEMP TABLE cards AS
        SELECT CAST(loyalty_card AS VARCHAR) AS card, min(customer_id) AS uid FROM read_csv('{customers}', all_varchar = true)
        WHERE loyalty_card IS NOT NULL GROUP BY 1""")
    run(f"""CREATE OR REPLACE TEMP TABLE pos AS
        SELECT p.*, coalesce(c.uid, 'pos-' || p.order_id) AS profile_id FROM read_csv('{pos}', all_varchar = true) p
        LEFT JOIN cards c ON c.card = p.loyalty_card""")
    run("""INSERT INTO events BY NAME
        SELECT 'pos-' || order_id AS message_id, 'track' AS type, 'Order Completed' AS event,
               CAST(min(ordered_at) AS TIMESTAMPTZ) AS timestamp, CAST(min(ordered_at) AS TIMESTAMPTZ) AS received_at,
               'pos' AS source, 'pos' AS channel, json_object('order_id', order_id) AS properties, order_id,
               max(TRY_CAST(total AS DOUBLE)) AS total, max(TRY_CAST(total AS DOUBLE)) AS revenue, 'RUB' AS currency,
               min(store_id) AS store_id, 0 AS lsn, min(profile_id) AS profile_id
        FROM pos GROUP BY order_id""")
    run("""INSERT INTO order_lines BY NAME
        SELECT 'pos-' || p.order_id AS message_id, CAST(row_number() OVER (PARTITION BY p.order_id) - 1 AS BIGINT) AS line_no,
               p.order_id, CAST(p.ordered_at AS TIMESTAMPTZ) AS timestamp, 'Order Completed' AS event, 'pos' AS channel,
               p.store_id, p.product_id, c.category, c.brand, TRY_CAST(p.price AS DOUBLE) AS price,
               TRY_CAST(p.quantity AS DOUBLE) AS quantity, 'RUB' AS currency, p.profile_id
        FROM pos p LEFT JOIN read_csv('""" + str(demo / "catalog.csv") + """', all_varchar = true) c USING (product_id)""")
    catalog = str(demo / "catalog.csv")
    run(f"""INSERT INTO products BY NAME
        SELECT product_id, sku, name, category, room, brand, TRY_CAST(price AS DOUBLE) AS price,
               TRY_CAST(old_price AS DOUBLE) AS old_price, 'RUB' AS currency, TRY_CAST(stock AS BIGINT) AS stock, url, image_url,
               TRY_CAST(consumption_days AS BIGINT) AS consumption_days, CAST(updated_at AS TIMESTAMPTZ) AS updated_at
        FROM read_csv('{catalog}', all_varchar = true)""")
    run("""INSERT INTO profile_map BY NAME
        SELECT DISTINCT profile_id, profile_id AS canonical_id, now() AS updated_at FROM events WHERE profile_id IS NOT NULL""")
    run("CHECKPOINT")
    return {t: int(backend.scalar(f'SELECT count(*) FROM "{t}"') or 0) for t in ("events", "order_lines", "profile_map", "products")}


def timed(work: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = work() if callable(work) else None
    return time.perf_counter() - start, result


def baseline(backend: Backend) -> float:
    seconds, _ = timed(lambda: backend.scalar("SELECT count(*) FROM (SELECT profile_id, count(*) FROM events GROUP BY 1)"))
    return seconds


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def realtime(backend: Backend, now: dt.datetime, rate: int, seconds: float, ids: list[str]) -> dict[str, float]:
    """Append events at ``rate``/s in 0.1 s batches; a tick every 0.5 s, as the server runs it."""
    engine = RealtimeSegments(backend, interval_s=0.5)
    engine.tick(now)  # the scheduler's first look
    engine.tick(now)
    lags: list[float] = []
    stop = threading.Event()
    pending: list[tuple[float, set[str]]] = []
    lock = threading.Lock()

    def produce() -> None:
        n = 0
        start = time.perf_counter()
        while not stop.is_set():
            batch = []
            at = dt.datetime.now(dt.UTC)
            for _ in range(rate // 10):
                profile = ids[n % len(ids)]
                n += 1
                batch.append({
                    "message_id": f"rt-{n}", "type": "track", "event": "Order Completed" if n % 5 == 0 else "Product Viewed",
                    "timestamp": at, "received_at": at, "source": "bench", "channel": "web", "lsn": 0,
                    "profile_id": profile, "total": 5000.0, "properties": '{"category": "Kitchen > Chairs"}',
                })
            table = pa.Table.from_pylist(batch, schema=EVENTS.arrow_schema)
            # as the server's loader: the duplicate check covers the dedupe window, not all history
            backend.load(LoadBatch(table, ORDER_LINES.empty(), dedupe_since=at - dt.timedelta(days=7)))
            with lock:
                pending.append((time.perf_counter(), {r["profile_id"] for r in batch}))
            engine.observe(table)
            next_at = start + n / rate
            time.sleep(max(0.0, next_at - time.perf_counter()))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    end = time.perf_counter() + seconds
    ticks = []
    warm_at: float | None = None  # when every id was resident: lags after it are the steady state
    steady: list[float] = []
    while time.perf_counter() < end:
        with lock:
            batches, pending[:] = list(pending), []
        took, _ = timed(lambda: engine.tick(dt.datetime.now(dt.UTC), scheduled=False))
        ticks.append(took)
        done = time.perf_counter()
        lags += [done - at for at, _ in batches]
        steady += [done - at for at, _ in batches if warm_at is not None and at >= warm_at]
        if warm_at is None and len(engine.cache.resident) >= len(set(ids)):
            warm_at = done
        time.sleep(max(0.0, 0.5 - took))
    stop.set()
    producer.join()
    lags.sort()
    steady.sort()
    return {
        "events": len(lags) * rate / 10,
        "p50_s": lags[len(lags) // 2] if lags else float("nan"),
        "p95_s": lags[int(len(lags) * 0.95)] if lags else float("nan"),
        "steady_p50_s": steady[len(steady) // 2] if steady else float("nan"),
        "steady_p95_s": steady[int(len(steady) * 0.95)] if steady else float("nan"),
        "warm_s": (warm_at - (end - seconds)) if warm_at is not None else float("nan"),
        "tick_p50_s": statistics.median(ticks),
        "tick_p95_s": sorted(ticks)[int(len(ticks) * 0.95)],
        "copy_share": engine.stats.copy_s / max(sum(ticks), 1e-9),
        "copied": engine.cache.copied,
        "entered": engine.stats.entered,
        "exited": engine.stats.exited,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--chdb", action="store_true", help="also time the typical segment on embedded ClickHouse")
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--realtime-only", action="store_true", help="only real time, on the segments and memberships a previous run left")
    args = parser.parse_args()
    work = ROOT / f"segments-{args.customers}"
    store_dir = work / "store"
    private_copy(args.customers, store_dir)  # the shared shop, built once; this benchmark writes to its own copy
    settings = Settings(data_dir=store_dir, duckdb_memory_limit=args.memory_limit)
    backend = open_backend(settings)
    try:
        if args.realtime_only:
            return realtime_figures(backend, args.rate, args.seconds)
        # a previous run's segments, memberships and their events: dropped and made anew (deleting
        # 20M indexed membership rows took longer than the refresh that wrote them)
        for statement in (*(f"DROP TABLE IF EXISTS {t}" for t in ("segments", "segment_members", "segment_sizes")),
                          "DELETE FROM events WHERE source = 'segments'"):
            backend.execute(statement)
        backend.create_schema()
        summarised = int(backend.scalar("SELECT count(*) FROM profile_summary") or 0)
        if summarised != int(backend.scalar("SELECT count(DISTINCT profile_id) FROM events") or 0):
            # the shop is loaded with SQL, not Backend.load, which keeps the summary with the events
            backend.execute("DELETE FROM profile_summary")  # a run stopped while filling it
            took, written = timed(lambda: profile_summary.rebuild(backend))
            print(f"profile_summary rebuilt from the events: {written:,} rows in {took:.0f} s")
        rows = int(backend.scalar("SELECT count(*) FROM events") or 0)
        profiles = int(backend.scalar("SELECT count(DISTINCT canonical_id) FROM profile_map") or 0)
        now = backend.scalar("SELECT max(timestamp) FROM events")
        print(f"store: {rows:,} events, {profiles:,} profiles, now = {now}")
        base = min(baseline(backend) for _ in range(3))
        print(f"baseline: full group-by of events by profile {base:.3f} s")

        tree = parse(EXAMPLE_1)
        runs = [timed(lambda: members(backend, tree, now))[0] for _ in range(3)]
        size = len(members(backend, tree, now))
        print(f"example 1: median {statistics.median(runs):.3f} s ({statistics.median(runs) / base:.2f}x baseline), {size:,} members")

        definitions = hundred_segments()
        took, _ = timed(lambda: [store.save(backend, segment_id, definition=text) for segment_id, text in definitions])
        print(f"saved (validated) 100 segments in {took:.1f} s")
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        known = store.catalogue(backend)
        slowest: list[tuple[float, str]] = []
        total_members = 0
        for segment in store.list_segments(backend):
            took, change = timed(lambda segment=segment: membership.refresh(backend, segment, now, known=known))
            slowest.append((took, segment.segment_id))
            total_members += change.size  # type: ignore[attr-defined]
        full = time.perf_counter() - start
        slowest.sort(reverse=True)
        print(
            f"100 segments full refresh: {full:.1f} s ({full / base:.0f}x baseline), {total_members:,} memberships, "
            f"peak RSS {max(rss_before, peak_rss_mb()):.0f} MB; slowest: "
            + ", ".join(f"{name} {took:.2f}s" for took, name in slowest[:5])
        )
        start = time.perf_counter()
        again = sum(
            len(c.entered) + len(c.exited)
            for c in (membership.refresh(backend, seg, now, known=known) for seg in store.list_segments(backend))
        )
        steady = time.perf_counter() - start
        print(f"100 segments refreshed again (the scheduler's case): {steady:.1f} s ({steady / base:.0f}x baseline), {again:,} changes")
        draft = 'count("Product Viewed", where: product.price > 30000, window: 21d) >= 2 and traits.city = "Kazan"'
        took, found = timed(lambda: exports.preview(backend, draft, now=now))  # what POST /segments/preview does
        print(f"preview of a draft (validated, evaluated): {took:.3f} s ({took / base:.2f}x baseline), size {found['size']:,}")  # type: ignore[index]
        took, found = timed(lambda: exports.preview(backend, draft.replace("30000", "31000"), now=now))
        print(f"preview of the draft edited (validation read a minute ago): {took:.3f} s ({took / base:.2f}x baseline)")

        realtime_figures(backend, args.rate, args.seconds)
        if args.chdb:
            chdb_example(backend, tree, now, work)
    finally:
        backend.close()


def realtime_figures(backend: Backend, rate: int, seconds: float) -> None:
    ids = [r["profile_id"] for r in backend.rows("SELECT profile_id FROM profile_map USING SAMPLE 2000 ROWS")]
    figures = realtime(backend, dt.datetime.now(dt.UTC), rate, seconds, ids)
    print(
        f"real time at {rate}/s for {seconds:.0f} s over 100 segments: event -> membership written "
        f"p50 {figures['p50_s']:.3f} s, p95 {figures['p95_s']:.3f} s; once every profile was resident "
        f"(after {figures['warm_s']:.1f} s) p50 {figures['steady_p50_s']:.3f} s, p95 {figures['steady_p95_s']:.3f} s; "
        f"tick p50 {figures['tick_p50_s']:.3f} s, "
        f"p95 {figures['tick_p95_s']:.3f} s ({figures['copy_share']:.0%} of tick time copying the touched profiles' rows, "
        f"{figures['copied']:.0f} profiles copied from the store); {figures['entered']:.0f} entered, {figures['exited']:.0f} exited"
    )


def chdb_example(source: Backend, tree: object, now: dt.datetime, work: Path) -> None:
    settings = Settings(data_dir=work / "chdb", backend="chdb")
    target = open_backend(settings)
    try:
        if not int(target.scalar("SELECT count(*) FROM events") or 0):
            for table in TABLES:
                if table.name not in ("events", "order_lines", "profile_map", "products"):
                    continue
                count = int(source.scalar(f'SELECT count(*) FROM "{table.name}"') or 0)
                for offset in range(0, count, 1_000_000):
                    chunk = source.query_arrow(f'SELECT * FROM "{table.name}" LIMIT 1000000 OFFSET {offset}')
                    target.insert(table.name, chunk.cast(table.arrow_schema))
        base = min(baseline(target) for _ in range(3))
        runs = [timed(lambda: members(target, tree, now))[0] for _ in range(3)]  # type: ignore[arg-type]
        print(f"chdb: example 1 median {statistics.median(runs):.3f} s ({statistics.median(runs) / base:.2f}x its baseline {base:.3f} s)")
    finally:
        target.close()


if __name__ == "__main__":
    sys.exit(main())
