"""Sustained overload: memory stays bounded and the server sheds load politely.

Many keep-alive connections send large batches (~450 KB, close to the 500 KB limit) as
fast as the server answers, for --duration seconds, without backing off (by default).
Meanwhile the server's RSS is sampled from /proc/<pid>/status (VmRSS) every 100 ms and
the loader's lag from the status endpoint every second.

Pass: max RSS <= 1 GB, every 429/503 carries Retry-After, and no 5xx other than 503.

    .venv/bin/python benchmarks/bench_overload.py [--connections 256] [--duration 30]
        [--max-lag-mb N] [--max-pending-mb N]   # server limits (default: the server's own)

Bounded: about --duration + 90 s (start, the run, a bounded drain, shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from _server import (
    BatchFactory,
    LoadResult,
    Server,
    closed_loop,
    install_uvloop,
    machine,
    percentile,
    print_table,
    rss_bytes,
    start_opencdp,
    work_dir,
)

RSS_LIMIT = 1024**3


@dataclass
class Samples:
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    lag: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, lag bytes)
    status_seconds: list[float] = field(default_factory=list)  # how long each status call took
    status_errors: int = 0


async def _sample(server: Server, samples: Samples, seconds: float) -> None:
    start = time.perf_counter()
    next_status = 0.0
    status: asyncio.Future[dict[str, Any]] | None = None
    asked = 0.0
    while (elapsed := time.perf_counter() - start) < seconds:
        try:
            samples.rss.append((elapsed, rss_bytes(server.pid)))
        except OSError:
            return  # the server died; the load results will say so
        if status is not None and status.done():
            samples.status_seconds.append(elapsed - asked)
            try:
                samples.lag.append((elapsed, int(status.result()["lag_bytes"])))
            except Exception:
                samples.status_errors += 1
            status = None
        if status is None and elapsed >= next_status:
            # One status call at a time; under overload it can take long to be answered.
            status = asyncio.ensure_future(asyncio.to_thread(server.ingest_status))
            asked, next_status = elapsed, elapsed + 1.0
        await asyncio.sleep(0.1)
    if status is not None:
        status.cancel()


async def _run(server: Server, factory: BatchFactory, args: argparse.Namespace, samples: Samples) -> LoadResult:
    load = closed_loop(
        server.port,
        factory.next,
        connections=args.connections,
        warmup=0.0,
        duration=args.duration,
        server_pid=server.pid,
        honor_retry_after=args.honor_retry_after,
    )
    result, _ = await asyncio.gather(load, _sample(server, samples, args.duration + 1.0))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--batch", type=int, default=800, help="events per request (~570 B each)")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--honor-retry-after", action="store_true", help="clients wait Retry-After seconds")
    parser.add_argument("--max-lag-mb", type=int, help="server OPENCDP_MAX_LAG_BYTES, in MB")
    parser.add_argument("--max-pending-mb", type=int, help="server OPENCDP_MAX_PENDING_BYTES, in MB")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    args = parser.parse_args()
    install_uvloop()

    env: dict[str, str] = {}
    if args.max_lag_mb is not None:
        env["OPENCDP_MAX_LAG_BYTES"] = str(args.max_lag_mb * 1024 * 1024)
    if args.max_pending_mb is not None:
        env["OPENCDP_MAX_PENDING_BYTES"] = str(args.max_pending_mb * 1024 * 1024)

    samples = Samples()
    with work_dir("opencdp-bench-overload-") as root:
        server = start_opencdp(root / "data", env=env)
        try:
            factory = BatchFactory(server.port, server.write_key, events_per_batch=args.batch, variants=16)
            print("bench_overload: sustained overload, " + ("clients wait Retry-After" if args.honor_retry_after else "no client back-off"))
            print(f"  machine:  {machine()}")
            print(
                f"  load:     {args.connections} connections x {args.batch}-event batches "
                f"(~{factory.body_bytes / 1024:.0f} KB/request) for {args.duration:.0f} s; server limits: "
                + (", ".join(f"{k}={v}" for k, v in env.items()) or "defaults")
            )
            rss_idle = rss_bytes(server.pid)
            result = asyncio.run(_run(server, factory, args, samples))
            alive = server.process.poll() is None
            lag_end = server.ingest_status()["lag_bytes"] if alive else None
            drained = server.wait_drained(args.drain_timeout) if alive else None
            rss_after = rss_bytes(server.pid) if alive else 0
        finally:
            exit_code = server.stop()

    statuses = dict(sorted(result.replies.items()))
    shed = {s: n for s, n in statuses.items() if s in (429, 503)}
    shed_with_retry = {s: result.with_retry_after.get(s, 0) for s in shed}
    bad_5xx = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    rss = [b for _, b in samples.rss]
    max_rss = max(rss, default=0)
    lat = sorted(result.latencies)

    rows: list[tuple[str, ...]] = [("", "value")]
    rows.append(("answers by status", str(statuses)))
    rows.append(("accepted events/s (200)", f"{result.ok * args.batch / result.seconds:,.0f}"))
    rows.append(("200 latency p50 / p99 (ms)", f"{percentile(lat, 50) * 1000:.0f} / {percentile(lat, 99) * 1000:.0f}"))
    rows.append(("429/503 answers", f"{sum(shed.values())}"))
    rows.append(("  ... with Retry-After", f"{sum(shed_with_retry.values())}  {shed_with_retry}"))
    rows.append(("5xx other than 503", f"{sum(bad_5xx.values())}  {bad_5xx or ''}"))
    rows.append(("connection errors", f"{sum(result.errors.values())}  {result.errors or ''}"))
    rows.append(("server RSS idle / max / after drain", f"{rss_idle / 2**20:.0f} / {max_rss / 2**20:.0f} / {rss_after / 2**20:.0f} MB"))
    rows.append(("server CPU (cores) / load generator", f"{result.server_cpu / result.seconds:.2f} / {result.client_cpu / result.seconds:.2f}"))
    rows.append(("loader lag max / at end", f"{max((b for _, b in samples.lag), default=0) / 2**20:.0f} / {(lag_end or 0) / 2**20:.0f} MB"))
    status_times = sorted(samples.status_seconds)
    rows.append(
        (
            "status endpoint answers / max time",
            f"{len(status_times)} / {status_times[-1] if status_times else float('nan'):.1f} s"
            + (f" ({samples.status_errors} errors)" if samples.status_errors else ""),
        )
    )
    rows.append(("drained after the load", "no" if drained is None else f"{drained:.1f} s"))
    rows.append(("server exit code", str(exit_code)))
    print_table("results", rows)

    print("\nRSS and loader lag over time (MB):")
    for second in range(0, int(args.duration) + 1, 5):
        rss_now = max((b for t, b in samples.rss if second - 5 < t <= second), default=0)
        lag_now = max((b for t, b in samples.lag if second - 5 < t <= second), default=0)
        print(f"  t={second:3d}s  RSS max {rss_now / 2**20:6.0f}   lag max {lag_now / 2**20:6.0f}")

    checks = {
        f"max RSS {max_rss / 2**20:.0f} MB <= 1024 MB": max_rss <= RSS_LIMIT,
        "every 429/503 has Retry-After": all(shed_with_retry[s] == n for s, n in shed.items()),
        "no 5xx other than 503": not bad_5xx,
        "server survived": alive,
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()
