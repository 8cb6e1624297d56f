"""Batch ingest through HTTP: events/s acknowledged durably, against a bare baseline app.

Runs a real ``opencdp serve`` (fsync on: a 200 means the batch is on disk) on a fresh
data directory, and then the baseline app (FastAPI under the same uvicorn settings,
only reading and JSON-parsing the body). The load generator is this one process:
uvloop, raw keep-alive HTTP/1.1 connections and pre-encoded 100-event batches of
realistic e-commerce events, so it costs the server as little CPU as possible.

    .venv/bin/python benchmarks/bench_ingest.py [--connections 32] [--duration 10]

Target: >= 50,000 events/s on a 2-core machine. Bounded: about a minute plus the
loader's drain (at most --drain-timeout seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from _server import (
    BatchFactory,
    LoadResult,
    Server,
    closed_loop,
    install_uvloop,
    machine,
    ms,
    percentile,
    print_table,
    start_baseline,
    start_opencdp,
    work_dir,
)

TARGET_EVENTS_PER_S = 50_000


@dataclass
class Run:
    name: str
    load: LoadResult
    events_per_batch: int

    @property
    def events_per_s(self) -> float:
        return self.load.ok * self.events_per_batch / self.load.seconds

    @property
    def loaded_per_s(self) -> float | None:
        """Events the loader moved into the store per second during the window."""
        if len(self.load.probes) != 2:
            return None
        (t0, n0), (t1, n1) = self.load.probes
        return (n1 - n0) / (t1 - t0)

    @property
    def p50(self) -> float:
        return percentile(sorted(self.load.latencies), 50)

    @property
    def p99(self) -> float:
        return percentile(sorted(self.load.latencies), 99)

    @property
    def server_cores(self) -> float:
        return self.load.server_cpu / self.load.seconds

    @property
    def client_cores(self) -> float:
        return self.load.client_cpu / self.load.seconds

    @property
    def server_us_per_event(self) -> float:
        events = self.load.ok * self.events_per_batch
        return self.load.server_cpu / events * 1e6 if events else float("nan")


def _loaded_events(server: Server) -> tuple[float, int]:
    return time.perf_counter(), int(server.ingest_status()["loaded_events"])


def _load(server: Server, args: argparse.Namespace) -> Run:
    factory = BatchFactory(server.port, server.write_key, events_per_batch=args.batch)
    result = asyncio.run(
        closed_loop(
            server.port,
            factory.next,
            connections=args.connections,
            warmup=args.warmup,
            duration=args.duration,
            server_pid=server.pid,
            probe=(lambda: _loaded_events(server)) if server.admin_key else None,
        )
    )
    return Run(server.name, result, args.batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive clients")
    parser.add_argument("--batch", type=int, default=100, help="events per /v1/batch request")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="longest wait for the loader to catch up")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="server setting, e.g. ingest_processes=0")
    args = parser.parse_args()
    install_uvloop()

    sample = BatchFactory(0, "k", events_per_batch=args.batch, variants=8)
    print("bench_ingest: durable batch ingest over HTTP (fsync on)")
    print(f"  machine:  {machine()}")
    print(
        f"  load:     {args.connections} keep-alive connections, {args.batch}-event batches "
        f"(~{sample.event_bytes:.0f} B/event, ~{sample.body_bytes / 1024:.0f} KB/request), "
        f"{args.warmup:.0f} s warm-up + {args.duration:.0f} s measured"
    )

    runs: list[Run] = []
    lag_at_end = drained_in = loaded = None
    with work_dir("opencdp-bench-ingest-") as root:
        settings = dict(item.split("=", 1) for item in args.set)
        server = start_opencdp(root / "data", env={f"OPENCDP_{k.upper()}": v for k, v in settings.items()})
        try:
            runs.append(_load(server, args))
            status = server.ingest_status()
            lag_at_end = status["lag_bytes"]
            drained_in = server.wait_drained(args.drain_timeout)
            loaded = server.ingest_status()["loaded_events"]
        finally:
            server.stop()
        if not args.skip_baseline:
            baseline = start_baseline(root)
            try:
                runs.append(_load(baseline, args))
            finally:
                baseline.stop()

    header = ("", *(run.name for run in runs), *(("opencdp / baseline",) if len(runs) == 2 else ()))

    def row(label: str, values: list[float], fmt: str, ratio: bool = True) -> tuple[str, ...]:
        cells = [fmt.format(v) for v in values]
        if len(values) == 2:
            cells.append(f"{values[0] / values[1]:.2f}x" if ratio and values[1] else "")
        return (label, *cells)

    rows = [
        header,
        row("events/s acknowledged (200)", [r.events_per_s for r in runs], "{:,.0f}"),
        row("requests/s", [r.load.ok / r.load.seconds for r in runs], "{:,.0f}"),
        row("ack latency p50 (ms)", [r.p50 * 1000 for r in runs], "{:.1f}"),
        row("ack latency p99 (ms)", [r.p99 * 1000 for r in runs], "{:.1f}"),
        row("server CPU (cores)", [r.server_cores for r in runs], "{:.2f}"),
        row("server CPU per event (us)", [r.server_us_per_event for r in runs], "{:.1f}"),
        row("load generator CPU (cores)", [r.client_cores for r in runs], "{:.2f}"),
        row("non-200 answers", [float(sum(r.load.replies.values()) - r.load.ok) for r in runs], "{:.0f}", False),
        row("connection errors", [float(sum(r.load.errors.values())) for r in runs], "{:.0f}", False),
        row("200s with rejected events", [float(r.load.partial) for r in runs], "{:.0f}", False),
    ]
    print_table("results (measurement window only)", rows)
    for run in runs:
        others = {k: v for k, v in run.load.replies.items() if k != 200}
        if others or run.load.errors:
            print(f"  {run.name}: other answers {others}, errors {run.load.errors}")

    opencdp = runs[0]
    print("\nloader (opencdp):")
    if opencdp.loaded_per_s is not None:
        print(f"  loaded into the store during the window: {opencdp.loaded_per_s:,.0f} events/s")
    print(f"  lag when the load stopped: {lag_at_end:,} bytes of write-ahead log not yet in the store")
    if drained_in is None:
        print(f"  did NOT catch up within {args.drain_timeout:.0f} s")
    else:
        print(f"  caught up {drained_in:.1f} s after the load stopped; {loaded:,} events loaded in total")
    verdict = "PASS" if opencdp.events_per_s >= TARGET_EVENTS_PER_S else "BELOW TARGET"
    print(f"\ntarget >= {TARGET_EVENTS_PER_S:,} events/s durable: {opencdp.events_per_s:,.0f} -> {verdict}")
    print(f"p50 {ms(opencdp.p50)}, p99 {ms(opencdp.p99)}; finished at {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
