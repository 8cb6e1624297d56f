"""Shared helpers for the benchmarks: servers, a cheap load generator, realistic events.

* ``start_opencdp`` runs ``opencdp init`` + ``opencdp serve --dev-keys`` on a fresh data
  directory as a subprocess; ``start_baseline`` runs the bare comparison app (this file
  run as a script) under the same uvicorn settings.
* ``Connection`` is a minimal HTTP/1.1 keep-alive client on an asyncio ``Protocol``:
  requests are pre-encoded bytes, responses are parsed only as far as the status line,
  ``content-length`` and ``retry-after``, so the load generator stays cheap.
* ``BatchFactory`` / ``TrackFactory`` make realistic e-commerce Segment events, encoded
  once; each request only swaps in a fixed-width unique messageId prefix.

Everything binds to 127.0.0.1. Set ``OPENCDP_BENCH_SRC=/path/to/src`` to run the
server from another source tree (to compare a patched copy against this one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

# At module level: FastAPI resolves the baseline handler's (string) annotations here.
from fastapi import Request

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent

# The uvicorn options `opencdp serve` uses (src/opencdp/cli/main.py); the baseline
# app runs under exactly these so the comparison isolates opencdp's own work.
UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,
    "limit_concurrency": 2048,
    "backlog": 4096,
    "timeout_graceful_shutdown": 10,
}

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants (the server's validation workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending.extend(int(child) for child in handle.read().split())
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _server_env(data_dir: Path | None, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCDP_") or k == "OPENCDP_BENCH_SRC"}
    if data_dir is not None:
        env["OPENCDP_DATA_DIR"] = str(data_dir)
    src = os.environ.get("OPENCDP_BENCH_SRC")
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A server subprocess on 127.0.0.1."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    write_key: str = "baseline"
    admin_key: str | None = None
    data_dir: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def get(self, path: str, timeout: float = 10.0) -> Any:
        request = urllib.request.Request(self.url + path)
        if self.admin_key:
            request.add_header("Authorization", f"Bearer {self.admin_key}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def ingest_status(self) -> dict[str, Any]:
        """The ``ingest`` part of ``GET /api/v1/status`` (lag, loaded events, ...)."""
        ingest: dict[str, Any] = self.get("/api/v1/status", timeout=60)["ingest"]
        return ingest

    def wait_drained(self, timeout: float) -> float | None:
        """Seconds until the loader caught up with the log (``lag_bytes == 0``), None on timeout."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.ingest_status()["lag_bytes"] == 0:
                return time.perf_counter() - start
            time.sleep(0.2)
        return None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful: the loader drains), then SIGKILL if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"{server.name} did not become healthy in {timeout:.0f} s:\n{server.log_tail()}")


def start_opencdp(
    data_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Server:
    """``opencdp init`` then ``opencdp serve --dev-keys`` on ``data_dir``; wait for /health."""
    port = port or free_port()
    environment = _server_env(data_dir, env)
    cli = [sys.executable, "-m", "opencdp.cli.main"]
    data_dir.mkdir(parents=True, exist_ok=True)
    cwd = data_dir.parent  # no stray opencdp.toml from the working directory
    subprocess.run([*cli, "init"], env=environment, cwd=cwd, check=True, capture_output=True, timeout=timeout)
    log_path = data_dir.parent / f"server-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*cli, "serve", "--dev-keys", "--port", str(port)],
            env=environment,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server("opencdp", process, port, log_path, data_dir=data_dir)
    _wait_healthy(server, timeout)
    credentials = json.loads((data_dir / "credentials.json").read_text())
    server.write_key, server.admin_key = credentials["write_key"], credentials["admin_key"]
    return server


def start_baseline(work_dir: Path, *, port: int | None = None, timeout: float = 30.0) -> Server:
    """The bare comparison app (``baseline_app``) under the same uvicorn settings."""
    port = port or free_port()
    log_path = work_dir / f"baseline-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "baseline", "--port", str(port)],
            env=_server_env(None, None),
            cwd=work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server("baseline", process, port, log_path)
    _wait_healthy(server, timeout)
    return server


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory on the same disk as a real deployment would use (not tmpfs)."""
    base = os.environ.get("OPENCDP_BENCH_DIR")
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as path:
        yield Path(path)


# -- the baseline app ------------------------------------------------------------------
def baseline_app() -> Any:
    """FastAPI + the same CORS middleware; each tracking route reads and JSON-parses the
    body and answers 200. No auth lookup, validation, logging or storage."""
    import msgspec
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import Response

    decode = msgspec.json.decode
    ok = b'{"success":true}'
    app = FastAPI(title="baseline")
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=3600
    )

    async def handler(request: Request) -> Response:
        decode(await request.body())
        return Response(ok, media_type="application/json")

    for path in ("batch", "import", "identify", "track", "page", "screen", "group", "alias"):
        app.add_api_route(f"/v1/{path}", handler, methods=["POST"])

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# -- a cheap HTTP/1.1 client -----------------------------------------------------------
@dataclass(slots=True)
class Reply:
    status: int
    head: bytes  # status line and headers, lower-cased
    body: bytes

    @property
    def retry_after(self) -> str | None:
        at = self.head.find(b"\r\nretry-after:")
        if at < 0:
            return None
        end = self.head.find(b"\r\n", at + 2)
        return self.head[at + 14 : end if end >= 0 else None].strip().decode()


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Reply] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(RuntimeError("response without content-length"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result(Reply(int(head[9:12]), head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, protocol: _Protocol) -> None:
        self.protocol = protocol

    @classmethod
    async def open(cls, port: int, host: str = HOST) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Protocol, host, port)
        sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(protocol)

    @property
    def usable(self) -> bool:
        return not self.protocol.lost

    async def request(self, data: bytes) -> Reply:
        protocol = self.protocol
        if protocol.lost or protocol.transport is None:
            raise ConnectionError("connection closed")
        protocol.waiter = asyncio.get_running_loop().create_future()
        protocol.transport.write(data)
        return await protocol.waiter

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.close()


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def request_head(path: str, port: int, write_key: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: {HOST}:{port}\r\nauthorization: {basic_auth(write_key)}\r\n"
        f"content-type: application/json\r\nuser-agent: opencdp-bench\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@dataclass
class LoadResult:
    """What a load run observed inside its measurement window."""

    seconds: float = 0.0
    replies: dict[int, int] = field(default_factory=dict)  # status -> count
    with_retry_after: dict[int, int] = field(default_factory=dict)  # status -> count carrying Retry-After
    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers only
    errors: dict[str, int] = field(default_factory=dict)  # connection errors and the like
    partial: int = 0  # 200 answers that still rejected some events
    server_cpu: float = 0.0  # seconds of server CPU (all threads, validation workers too) in the window
    client_cpu: float = 0.0  # seconds of this process's CPU in the window
    connections_opened: int = 0
    probes: list[Any] = field(default_factory=list)  # what ``probe`` returned at the window's start and end

    @property
    def ok(self) -> int:
        return self.replies.get(200, 0)

    def count(self, status: int, reply: Reply | None, latency: float, ok_body: bytes) -> None:
        if reply is None:
            return
        self.replies[status] = self.replies.get(status, 0) + 1
        if status == 200:
            self.latencies.append(latency)
            if reply.body != ok_body:
                self.partial += 1
        if reply.retry_after is not None:
            self.with_retry_after[status] = self.with_retry_after.get(status, 0) + 1

    def error(self, error: BaseException) -> None:
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


OK_BODY = b'{"success":true}'


async def closed_loop(
    port: int,
    next_request: Callable[[], bytes],
    *,
    connections: int,
    warmup: float,
    duration: float,
    server_pid: int,
    honor_retry_after: bool = False,
    probe: Callable[[], Any] | None = None,
) -> LoadResult:
    """``connections`` keep-alive clients, each sending its next request as soon as the
    previous one is answered. Counts only what completes inside the window that starts
    after ``warmup`` seconds and lasts ``duration`` seconds; stops by itself. ``probe``
    (blocking, run in a thread) is called at the window's start and end."""
    result = LoadResult()
    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start, window_end = start + warmup, start + warmup + duration
    marks: dict[str, float] = {}

    async def mark() -> None:
        await asyncio.sleep(max(0.0, window_start - loop.time()))
        marks["server"], marks["client"] = tree_cpu_seconds(server_pid), cpu_seconds()
        if probe is not None:
            result.probes.append(await asyncio.to_thread(probe))
        await asyncio.sleep(max(0.0, window_end - loop.time()))
        result.server_cpu = tree_cpu_seconds(server_pid) - marks["server"]
        result.client_cpu = cpu_seconds() - marks["client"]
        if probe is not None:
            result.probes.append(await asyncio.to_thread(probe))

    async def worker() -> None:
        connection: Connection | None = None
        while loop.time() < window_end:
            try:
                if connection is None or not connection.usable:
                    connection = await Connection.open(port)
                    result.connections_opened += 1
                data = next_request()
                sent = time.perf_counter()
                reply = await connection.request(data)
                latency = time.perf_counter() - sent
            except (OSError, ConnectionError, RuntimeError) as error:
                if window_start <= loop.time() < window_end:
                    result.error(error)
                connection = None
                await asyncio.sleep(0.05)
                continue
            if window_start <= loop.time() <= window_end:
                result.count(reply.status, reply, latency, OK_BODY)
            if honor_retry_after and reply.retry_after is not None:
                await asyncio.sleep(min(float(reply.retry_after), max(0.0, window_end - loop.time())))
        if connection is not None:
            connection.close()

    tasks = [asyncio.ensure_future(worker()) for _ in range(connections)]
    timer = asyncio.ensure_future(mark())
    # Bound the run: whatever is still in flight 30 s after the window is abandoned.
    done, pending = await asyncio.wait([*tasks, timer], timeout=warmup + duration + 30)
    for task in pending:
        task.cancel()
    for task in done:
        failure = task.exception()
        if failure is not None:
            raise failure
    result.seconds = duration
    return result


# -- realistic e-commerce events -----------------------------------------------------
_ID_SLOT = "~" * 16  # replaced per request by a unique 16-character prefix
_ID_SLOT_BYTES = _ID_SLOT.encode()
_CATEGORIES = (
    "Living Room > Sofas",
    "Living Room > Armchairs",
    "Bedroom > Beds",
    "Bedroom > Mattresses",
    "Kitchen > Chairs",
    "Kitchen > Tables",
    "Storage > Wardrobes",
    "Lighting > Lamps",
    "Textiles > Rugs",
    "Decor > Mirrors",
)
_BRANDS = ("Nordhem", "Solvik", "Casa Verde", "Mebelny Dvor", "Lumo", "Oakline")
_PAGES = ("/", "/catalog/sofas", "/catalog/beds", "/cart", "/checkout", "/product/{id}", "/search?q=lamp")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
)


def _product(rng: random.Random) -> dict[str, Any]:
    number = rng.randrange(1, 5000)
    return {
        "product_id": f"P{number:05d}",
        "name": f"{rng.choice(_BRANDS)} item {number}",
        "category": rng.choice(_CATEGORIES),
        "brand": rng.choice(_BRANDS),
        "price": round(rng.uniform(490, 89_990), 2),
        "quantity": rng.choice((1, 1, 1, 2, 4)),
        "currency": "RUB",
    }


def ecommerce_event(rng: random.Random, index: int, when: str) -> dict[str, Any]:
    """One analytics.js-like event (~500 bytes of JSON on average); ``messageId`` holds the slot."""
    user = rng.randrange(1, 200_000)
    path = rng.choice(_PAGES).format(id=f"P{rng.randrange(1, 5000):05d}")
    context: dict[str, Any] = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {"path": path, "referrer": "https://yandex.ru/"},
        "userAgent": rng.choice(_AGENTS),
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    }
    base: dict[str, Any] = {
        "messageId": f"{_ID_SLOT}{index:04d}",
        "anonymousId": f"anon-{user:08x}",
        "originalTimestamp": when,
        "context": context,
    }
    if rng.random() < 0.6:
        base["userId"] = f"user-{user}"
    roll = rng.random()
    if roll < 0.20:
        return {**base, "type": "page", "name": path.split("?")[0], "properties": {"path": path, "title": "Shop"}}
    if roll < 0.25:
        traits = {"email": f"user{user}@example.ru", "phone": f"+7916{user:07d}", "city": "Moscow", "loyalty": "silver"}
        return {**base, "type": "identify", "userId": f"user-{user}", "traits": traits}
    if roll < 0.90:
        event = "Product Viewed" if roll < 0.70 else "Product Added"
        return {**base, "type": "track", "event": event, "properties": _product(rng)}
    products = [_product(rng) for _ in range(rng.randint(1, 3))]
    total = round(sum(p["price"] * p["quantity"] for p in products), 2)
    properties = {
        "order_id": f"O-{rng.randrange(10**9)}",
        "total": total,
        "revenue": round(total * 0.9, 2),
        "currency": "RUB",
        "products": [{k: p[k] for k in ("product_id", "category", "price", "quantity")} for p in products],
    }
    return {**base, "type": "track", "event": "Order Completed", "properties": properties}


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass
class BatchFactory:
    """Pre-encoded ``/v1/batch`` requests; ``next()`` costs one ``bytes.replace``."""

    port: int
    write_key: str
    events_per_batch: int = 100
    variants: int = 64
    seed: int = 7
    path: str = "/v1/batch"
    templates: list[bytes] = field(default_factory=list)
    event_bytes: float = 0.0
    _counter: int = 0
    _run: str = ""

    def __post_init__(self) -> None:
        import msgspec

        rng = random.Random(self.seed)
        when = _now_iso()
        sizes: list[int] = []
        for _ in range(self.variants):
            events = [ecommerce_event(rng, i, when) for i in range(self.events_per_batch)]
            sizes.extend(len(msgspec.json.encode(e)) for e in events)
            body = msgspec.json.encode({"batch": events, "sentAt": when})
            self.templates.append(request_head(self.path, self.port, self.write_key, len(body)) + body)
        self.event_bytes = sum(sizes) / len(sizes)
        self._run = f"{random.getrandbits(24):06x}"

    def next(self) -> bytes:
        self._counter += 1
        prefix = f"{self._run}{self._counter:010x}".encode()
        return self.templates[self._counter % self.variants].replace(_ID_SLOT_BYTES, prefix)

    @property
    def body_bytes(self) -> float:
        return sum(len(t) for t in self.templates) / len(self.templates)


@dataclass
class TrackFactory:
    """Pre-encoded single-event ``/v1/track`` requests."""

    port: int
    write_key: str
    variants: int = 256
    seed: int = 11
    templates: list[bytes] = field(default_factory=list)
    _counter: int = 0
    _run: str = ""

    def __post_init__(self) -> None:
        import msgspec

        rng = random.Random(self.seed)
        when = _now_iso()
        while len(self.templates) < self.variants:
            event = ecommerce_event(rng, 0, when)
            if event["type"] != "track":
                continue
            body = msgspec.json.encode(event)
            self.templates.append(request_head("/v1/track", self.port, self.write_key, len(body)) + body)
        self._run = f"{random.getrandbits(24):06x}"

    def next(self) -> bytes:
        self._counter += 1
        prefix = f"{self._run}{self._counter:010x}".encode()
        return self.templates[self._counter % self.variants].replace(_ID_SLOT_BYTES, prefix)


# -- reporting -------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def print_table(title: str, rows: Sequence[tuple[str, ...]]) -> None:
    print(f"\n{title}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if number == 0:
            print("  " + "  ".join("-" * w for w in widths))


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs ({model}), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, Python {sys.version.split()[0]}"


def _serve_baseline(port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(), host=HOST, port=port, **UVICORN_OPTIONS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the baseline app (used by the benchmarks).")
    parser.add_argument("what", choices=["baseline"])
    parser.add_argument("--port", type=int, required=True)
    _serve_baseline(parser.parse_args().port)


# -- open loop ---------------------------------------------------------------------
@dataclass
class OpenLoopResult:
    name: str
    scheduled: int = 0
    completed: int = 0
    ok: int = 0  # answered as the request expected
    statuses: dict[int, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # from the scheduled time, measured requests only
    service: list[float] = field(default_factory=list)  # from the actual send
    late_starts: int = 0  # sends that left more than 1 ms after their scheduled time
    seconds: float = 0.0
    connections: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    unfinished: int = 0
    alone: list[float] = field(default_factory=list)  # latencies of requests sent one at a time, if measured

    def add_other(self, key: str) -> None:
        self.other[key] = self.other.get(key, 0) + 1


Expect = Callable[[Reply], bool]


async def open_loop(
    port: int,
    next_request: Callable[[], tuple[bytes, Expect]],
    *,
    rate: float,
    warmup: float,
    duration: float,
    server_pid: int,
    name: str,
    connections: int = 16,
    drain_timeout: float = 10.0,
) -> OpenLoopResult:
    """Send requests on a fixed schedule whatever the server does (no coordinated omission).

    ``next_request`` gives the request bytes and the check of a good answer. Latency is
    measured from the scheduled send time, on an idle keep-alive connection (a new one
    is opened when none is idle).
    """
    result = OpenLoopResult(name)
    idle: list[Connection] = [await Connection.open(port) for _ in range(connections)]
    opened = list(idle)
    result.connections = len(idle)
    pending: set[asyncio.Task[None]] = set()
    total = int(rate * (warmup + duration))
    start = time.perf_counter() + 0.05
    window_start, window_end = start + warmup, start + warmup + duration
    cpu_marks: list[tuple[float, float]] = []

    async def one(scheduled: float, data: bytes, expect: Expect) -> None:
        measured = window_start <= scheduled < window_end
        try:
            connection = idle.pop() if idle else None
            if connection is None or not connection.usable:
                connection = await Connection.open(port)
                opened.append(connection)
                result.connections += 1
            sent = time.perf_counter()
            if sent - scheduled > 0.001 and measured:
                result.late_starts += 1
            reply = await connection.request(data)
        except (OSError, ConnectionError, RuntimeError) as error:
            if measured:
                result.add_other(type(error).__name__)
            return
        done = time.perf_counter()
        idle.append(connection)
        if not measured:
            return
        result.completed += 1
        result.statuses[reply.status] = result.statuses.get(reply.status, 0) + 1
        if expect(reply):
            result.ok += 1
            result.latencies.append(done - scheduled)
            result.service.append(done - sent)
        else:
            result.add_other(str(reply.status))

    for number in range(total):
        scheduled = start + number / rate
        if not cpu_marks and scheduled >= window_start:
            cpu_marks.append((tree_cpu_seconds(server_pid), cpu_seconds()))
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if window_start <= scheduled < window_end:
            result.scheduled += 1
        data, expect = next_request()
        task = asyncio.ensure_future(one(scheduled, data, expect))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        _, still = await asyncio.wait(set(pending), timeout=drain_timeout)
        result.unfinished = len(still)
        for task in still:
            task.cancel()
    server_end, client_end = tree_cpu_seconds(server_pid), cpu_seconds()
    elapsed = time.perf_counter() - window_start
    result.server_cpu = (server_end - cpu_marks[0][0]) / elapsed if cpu_marks else 0.0
    result.client_cpu = (client_end - cpu_marks[0][1]) / elapsed if cpu_marks else 0.0
    result.seconds = duration
    for connection in opened:
        connection.close()
    return result
