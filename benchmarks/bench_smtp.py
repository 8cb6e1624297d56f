"""SMTP adapter throughput against a local aiosmtpd sink that discards what it gets.

    nice -n 10 .venv/bin/python benchmarks/bench_smtp.py --messages 20000 --connections 1 4 8

The sink runs in its own process (its asyncio loop must not share our GIL). Figures, each in the
same run:

- ``sink``: the raw rate of the sink — prebuilt bytes pushed with bare smtplib (or, when the
  sink advertises PIPELINING, the bare pipelining loop) over k connections, no MIME building:
  the ceiling any client can reach against this server (the baseline);
- ``adapter``: ``SmtpChannel.send_many`` — MIME building (multipart/alternative, RFC 8058
  headers), optionally DKIM signing, the connection pool — and its ratio to the sink;
- ``client CPU``: the adapter's own CPU per message (process time of this process), i.e. the
  rate it could feed a server that is not the bottleneck;
- ``build``: MIME building alone (and with DKIM), messages/s on one core.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import smtplib
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from opencdp.campaigns.channels import Message, SendResult
from opencdp.campaigns.channels.pipelining import send_pipelined
from opencdp.campaigns.channels.smtp import SmtpChannel

HTML = "<html><body><h1>Новая коллекция</h1>" + "<p>Sofas, chairs and lamps for every room.</p>" * 20 + "</body></html>"
TEXT = "Новая коллекция\n" + "Sofas, chairs and lamps for every room.\n" * 20


class Discard:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class DiscardPipelining(Discard):
    """Also advertises PIPELINING (aiosmtpd reads commands in order, so pipelined groups work)."""

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]


def serve(port_queue: Any, stop: Any, pipelining: bool) -> None:
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(DiscardPipelining() if pipelining else Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    port_queue.put(port)
    stop.wait()
    controller.stop()


def message(i: int) -> Message:
    return Message(message_id=f"bench-step-{i}", channel="email", to=f"customer{i}@example.org",
                   subject="Новая коллекция: sofas", text=TEXT, html=HTML,
                   list_unsubscribe=f"https://shop.example/u/{i}", list_unsubscribe_post=True, campaign_id="bench")


def sink_rate(port: int, n: int, connections: int, raw: bytes, pipelined: bool) -> float:
    """Prebuilt bytes with bare smtplib (or the bare pipelining loop): the server's ceiling."""
    def worker(count: int) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port)
        smtp.ehlo()
        if pipelined:
            for start in range(0, count, 100):
                results, broken = send_pipelined(smtp, "news@shop.example",
                                                 [("customer@example.org", raw)] * min(100, count - start),
                                                 lambda r, reply: SendResult.sent(), lambda *r: SendResult.permanent(""))
                assert not broken and all(r is not None for r in results)
        else:
            for _ in range(count):
                smtp.sendmail("news@shop.example", ["customer@example.org"], raw)
        smtp.quit()

    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - started)


def adapter_rate(port: int, messages: list[Message], connections: int, dkim: dict[str, str] | None
                 ) -> tuple[float, float]:
    config: dict[str, Any] = {"host": "127.0.0.1", "port": port, "security": "none", "from": "news@shop.example",
                              "pool_size": connections, "max_per_connection": 10_000_000}
    if dkim:
        config["dkim"] = dkim
    channel = SmtpChannel.from_config(config)
    cpu, started = time.process_time(), time.perf_counter()
    # Batches as a sender would hand them over; each batch is spread over the pool.
    batch = 500
    sent = 0
    for start in range(0, len(messages), batch):
        sent += sum(r.status == "sent" for r in channel.send_many(messages[start:start + batch]))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    channel.close()
    assert sent == len(messages), f"only {sent} of {len(messages)} sent"
    return len(messages) / wall, len(messages) / cpu


def build_rate(channel: SmtpChannel, messages: list[Message]) -> float:
    started = time.perf_counter()
    for m in messages:
        channel.build(m)
    return len(messages) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--dkim", action="store_true", help="also run the adapter with DKIM signing")
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dkim = {"domain": "shop.example", "selector": "bench", "private_key": key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()}
    messages = [message(i) for i in range(args.messages)]

    plain = SmtpChannel.from_config({"host": "x", "from": "news@shop.example"})
    signing = SmtpChannel.from_config({"host": "x", "from": "news@shop.example", "dkim": dkim})
    sample = messages[: min(3000, len(messages))]
    print(f"build (MIME only):   {build_rate(plain, sample):8.0f} msg/s on one core")
    print(f"build (MIME + DKIM): {build_rate(signing, sample):8.0f} msg/s on one core")
    raw = plain.build(messages[0])
    print(f"message size: {len(raw)} bytes")

    ctx = mp.get_context("spawn")
    for pipelining in (False, True):
        ports, stop = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=serve, args=(ports, stop, pipelining), daemon=True)
        server.start()
        port = ports.get(timeout=30)
        print(f"-- sink {'with' if pipelining else 'without'} PIPELINING, {args.messages} messages")
        try:
            for k in args.connections:
                sink = sink_rate(port, args.messages, k, raw, pipelining)
                wall, cpu = adapter_rate(port, messages, k, None)
                print(f"k={k:2d}  sink {sink:7.0f} msg/s | adapter {wall:7.0f} msg/s ({wall / sink:4.2f} x sink) | "
                      f"adapter client CPU {cpu:7.0f} msg/s")
                if args.dkim:
                    wall, cpu = adapter_rate(port, messages, k, dkim)
                    print(f"      with DKIM: adapter {wall:7.0f} msg/s ({wall / sink:4.2f} x sink) | "
                          f"client CPU {cpu:7.0f} msg/s")
        finally:
            stop.set()
            server.join(timeout=10)


if __name__ == "__main__":
    main()
