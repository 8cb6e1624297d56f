"""Single-event POST /v1/track at a fixed rate (open loop): latency of durable acks.

Requests are sent on a fixed schedule (default 1,000/s) whatever the server does, each
on an idle keep-alive connection (a new one is opened when none is idle), and latency
is measured from the *scheduled* send time, so a stalled server shows up as latency
instead of silently lowering the offered load (no coordinated omission). The same
schedule is replayed against the baseline app (FastAPI under the same uvicorn settings,
only reading and JSON-parsing the body).

    .venv/bin/python benchmarks/bench_track.py [--rate 1000] [--duration 10]

Target: p99 <= 10 ms at 1,000 req/s. Bounded: about 40 s.
"""

from __future__ import annotations

import argparse
import asyncio

from _server import (
    OK_BODY,
    Expect,
    OpenLoopResult,
    Reply,
    Server,
    TrackFactory,
    install_uvloop,
    machine,
    open_loop,
    percentile,
    print_table,
    start_baseline,
    start_opencdp,
    work_dir,
)

TARGET_P99_S = 0.010


def _acknowledged(reply: Reply) -> bool:
    return reply.status == 200 and reply.body == OK_BODY


def _run(server: Server, args: argparse.Namespace) -> OpenLoopResult:
    factory = TrackFactory(server.port, server.write_key)

    def next_request() -> tuple[bytes, Expect]:
        return factory.next(), _acknowledged

    return asyncio.run(
        open_loop(
            server.port,
            next_request,
            rate=args.rate,
            warmup=args.warmup,
            duration=args.duration,
            server_pid=server.pid,
            name=server.name,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second, fixed schedule")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="server setting, e.g. loader_nice=0")
    args = parser.parse_args()
    install_uvloop()

    print("bench_track: single-event /v1/track, open loop at a fixed rate, fsync on")
    print(f"  machine:  {machine()}")
    print(f"  load:     {args.rate:,.0f} req/s scheduled, {args.warmup:.0f} s warm-up + {args.duration:.0f} s measured")

    results: list[OpenLoopResult] = []
    with work_dir("opencdp-bench-track-") as root:
        settings = dict(item.split("=", 1) for item in args.set)
        server = start_opencdp(root / "data", env={f"OPENCDP_{k.upper()}": v for k, v in settings.items()})
        try:
            results.append(_run(server, args))
        finally:
            server.stop()
        if not args.skip_baseline:
            baseline = start_baseline(root)
            try:
                results.append(_run(baseline, args))
            finally:
                baseline.stop()

    def cells(values: list[float], fmt: str, ratio: bool = True) -> list[str]:
        out = [fmt.format(v) for v in values]
        if len(values) == 2:
            out.append(f"{values[0] / values[1]:.2f}x" if ratio and values[1] else "")
        return out

    def lat(values: list[float], q: float) -> float:
        return percentile(sorted(values), q) * 1000

    rows: list[tuple[str, ...]] = [("", *(r.name for r in results), *(("opencdp / baseline",) if len(results) == 2 else ()))]
    rows.append(("requests scheduled/s", *cells([r.scheduled / r.seconds for r in results], "{:,.0f}", False)))
    rows.append(("answered 200/s (achieved)", *cells([r.ok / r.seconds for r in results], "{:,.0f}")))
    for label, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)):
        rows.append((f"latency {label} (ms)", *cells([lat(r.latencies, q) for r in results], "{:.2f}")))
    rows.append(("latency max (ms)", *cells([max(r.latencies, default=float("nan")) * 1000 for r in results], "{:.2f}")))
    rows.append(("service time p99 (ms)", *cells([lat(r.service, 99.0) for r in results], "{:.2f}")))
    rows.append(("sends > 1 ms late (client)", *cells([float(r.late_starts) for r in results], "{:.0f}", False)))
    rows.append(("connections used", *cells([float(r.connections) for r in results], "{:.0f}", False)))
    rows.append(("server CPU (cores)", *cells([r.server_cpu for r in results], "{:.2f}")))
    rows.append(("load generator CPU (cores)", *cells([r.client_cpu for r in results], "{:.2f}")))
    rows.append(("non-200 / errors", *cells([float(sum(r.other.values())) for r in results], "{:.0f}", False)))
    print_table("results (latency measured from the scheduled send time)", rows)
    for result in results:
        if result.other or result.unfinished:
            print(f"  {result.name}: {result.other}, unfinished at the end: {result.unfinished}")

    opencdp = results[0]
    p99 = percentile(sorted(opencdp.latencies), 99)
    verdict = "PASS" if p99 <= TARGET_P99_S and opencdp.ok >= 0.99 * opencdp.scheduled else "FAIL"
    print(f"\ntarget p99 <= {TARGET_P99_S * 1000:.0f} ms at {args.rate:,.0f} req/s: p99 {p99 * 1000:.2f} ms, "
          f"{opencdp.ok / opencdp.seconds:,.0f} req/s answered -> {verdict}")


if __name__ == "__main__":
    main()
