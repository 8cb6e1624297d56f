"""A 200 means durable: kill -9 the server mid-stream, restart it, nothing acknowledged is lost.

Several clients send batches with unique messageIds to a real ``opencdp serve`` and
record exactly which requests were answered 200. The server is SIGKILLed while they
send (twice: the second time while it is still replaying the first crash's log), then
restarted on the same data directory. Once the loader has drained, every acknowledged
event must be in the store exactly once; an unacknowledged batch is all there or not
at all (one request is one log record). Finally every batch is sent again, as a client
retrying after errors would, and still each event is stored exactly once.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import ServerProcess, basic

CLIENTS = 6
EVENTS_PER_BATCH = 25


@dataclass
class Batch:
    batch_id: str
    message_ids: list[str]
    body: dict[str, Any]
    acked: bool = False
    status: int | str | None = None


@dataclass
class Ledger:
    """Every batch sent, and whether the server acknowledged it."""

    batches: list[Batch] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, batch: Batch) -> None:
        with self.lock:
            self.batches.append(batch)

    @property
    def acked(self) -> list[Batch]:
        return [b for b in self.batches if b.acked]

    @property
    def unacked(self) -> list[Batch]:
        return [b for b in self.batches if not b.acked]


def _event(rng: random.Random, message_id: str) -> dict[str, Any]:
    user = f"user-{rng.randrange(1000)}"
    roll = rng.random()
    common = {"messageId": message_id, "userId": user, "context": {"library": {"name": "analytics.js"}}}
    if roll < 0.15:
        return {**common, "type": "identify", "traits": {"email": f"{user}@example.ru"}}
    if roll < 0.3:
        return {**common, "type": "page", "name": "Catalog", "properties": {"path": "/catalog"}}
    if roll < 0.45:
        products = [{"product_id": f"P{rng.randrange(500)}", "price": 1990, "quantity": 1} for _ in range(2)]
        properties = {"order_id": f"O-{message_id}", "total": 3980, "currency": "RUB", "products": products}
        return {**common, "type": "track", "event": "Order Completed", "properties": properties}
    properties = {"product_id": f"P{rng.randrange(500)}", "price": 990.5, "category": "Kitchen > Chairs"}
    return {**common, "type": "track", "event": "Product Viewed", "properties": properties}


def _make_batch(run: str, client: int, number: int, rng: random.Random) -> Batch:
    batch_id = f"{run}-c{client}-b{number:05d}"
    ids = [f"{batch_id}-e{j:02d}" for j in range(EVENTS_PER_BATCH)]
    return Batch(batch_id, ids, {"batch": [_event(rng, i) for i in ids]})


def _send_until_stopped(server: ServerProcess, ledger: Ledger, run: str, client: int, stop: threading.Event) -> None:
    rng = random.Random(f"{run}-{client}")
    with httpx.Client(base_url=server.url, headers=basic(server.write_key), timeout=10) as http:
        number = 0
        while not stop.is_set():
            batch = _make_batch(run, client, number, rng)
            number += 1
            ledger.add(batch)  # recorded before sending: it may arrive even if no answer does
            try:
                response = http.post("/v1/batch", json=batch.body)
            except httpx.TransportError as error:
                batch.status = type(error).__name__
                if not stop.is_set():
                    time.sleep(0.01)  # the server is going down: the kill is being issued
                continue
            batch.status = response.status_code
            if response.status_code == 200 and response.json() == {"success": True}:
                batch.acked = True
            else:
                ledger.unexpected.append(f"{batch.batch_id}: {response.status_code} {response.text[:200]}")


def _load_then_kill(server: ServerProcess, ledger: Ledger, run: str, *, min_acked: int, min_seconds: float) -> None:
    """Clients send while the server is SIGKILLed under them."""
    stop = threading.Event()
    before = len(ledger.acked)
    threads = [
        threading.Thread(target=_send_until_stopped, args=(server, ledger, run, c, stop), daemon=True) for c in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    while time.monotonic() - started < 15 and (
        len(ledger.acked) - before < min_acked or time.monotonic() - started < min_seconds
    ):
        time.sleep(0.02)
    server.kill()  # mid-stream: every client has a request in flight or about to be sent
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(ledger.acked) - before >= min_acked, f"too few acknowledged batches: {server.log_tail()}"


def _resend(server: ServerProcess, batches: list[Batch]) -> None:
    with httpx.Client(base_url=server.url, headers=basic(server.write_key), timeout=30) as http:
        statuses = [http.post("/v1/batch", json=batch.body).status_code for batch in batches]
    assert set(statuses) <= {200}, statuses
    for batch in batches:
        batch.acked = True


def _stored(server: ServerProcess) -> tuple[dict[str, int], list[Any]]:
    with server.store() as store:
        counts = {r["message_id"]: r["n"] for r in store.rows("SELECT message_id, count(*) AS n FROM events GROUP BY message_id")}
        line_dupes = store.rows(
            "SELECT message_id, line_no, count(*) AS n FROM order_lines GROUP BY message_id, line_no HAVING count(*) > 1"
        )
    return counts, line_dupes


def _check(ledger: Ledger, counts: dict[str, int], line_dupes: list[Any], *, all_sent_present: bool) -> None:
    duplicated = {m: n for m, n in counts.items() if n != 1}
    assert not duplicated, f"message ids stored more than once: {list(duplicated.items())[:10]}"
    assert not line_dupes, f"order lines stored more than once: {line_dupes[:10]}"
    sent = {m for b in ledger.batches for m in b.message_ids}
    assert set(counts) <= sent, f"unknown events in the store: {sorted(set(counts) - sent)[:10]}"
    lost = [m for b in ledger.acked for m in b.message_ids if m not in counts]
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {lost[:10]}"
    for batch in ledger.unacked:  # one request is one log record: all of it or none of it
        present = sum(1 for m in batch.message_ids if m in counts)
        assert present in (0, len(batch.message_ids)), f"unacknowledged {batch.batch_id} is torn: {present} events stored"
        if all_sent_present:
            assert present == len(batch.message_ids), f"{batch.batch_id} was re-sent but is missing"


def test_acknowledged_events_survive_sigkill_exactly_once(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    server = ServerProcess(tmp_path / "data")
    ledger = Ledger()
    try:
        server.start()
        _load_then_kill(server, ledger, f"{run}-1", min_acked=30, min_seconds=0.8)
        # Restart and crash again while the loader is still replaying the first crash's log.
        server.start()
        _load_then_kill(server, ledger, f"{run}-2", min_acked=10, min_seconds=0.3)
        assert not ledger.unexpected, ledger.unexpected[:5]

        server.start()
        ingest = server.wait_drained()
        assert ingest["last_error"] is None, ingest
        server.stop()
        counts, line_dupes = _stored(server)
        _check(ledger, counts, line_dupes, all_sent_present=False)
        acked_events = sum(len(b.message_ids) for b in ledger.acked)
        stored_unacked = sum(1 for b in ledger.unacked if b.message_ids[0] in counts)
        print(
            f"\n{len(ledger.batches)} batches sent, {len(ledger.acked)} acknowledged ({acked_events} events, all stored once); "
            f"{len(ledger.unacked)} unacknowledged, of which {stored_unacked} stored whole and the rest absent"
        )

        # Client retry: every batch again (acknowledged ones too, as after a lost answer).
        server.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda chunk: _resend(server, chunk), [ledger.batches[c::CLIENTS] for c in range(CLIENTS)]))
        ingest = server.wait_drained()
        assert ingest["last_error"] is None, ingest
        server.stop()
        counts_after, line_dupes = _stored(server)
        _check(ledger, counts_after, line_dupes, all_sent_present=True)
        assert len(counts_after) == sum(len(b.message_ids) for b in ledger.batches)
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.kill()



def test_one_bad_event_cannot_block_or_fail_its_neighbours(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    try:
        server.start()
        with httpx.Client(base_url=server.url, headers=basic(server.write_key), timeout=10) as http:
            bad: list[dict[str, Any]] = [
                {"type": "track", "userId": "u", "event": "A", "sentAt": 10**17},  # year ~3.2 million
                {"type": "track", "userId": "u", "event": "A", "originalTimestamp": 10**25, "sentAt": 10**25 + 1000},
                {"type": "track", "userId": "u", "event": "A", "properties": {"price": 10**400}},  # beyond a float
                {"type": "track", "userId": "u", "event": "A", "timestamp": 10**400},
            ]
            for number, event in enumerate(bad):
                good = {"type": "track", "userId": "u", "event": "A", "messageId": f"good-{number}"}
                response = http.post("/v1/batch", json={"batch": [good, {**event, "messageId": f"bad-{number}"}]})
                assert response.status_code == 200, response.text
        ingest = server.wait_drained(timeout=10)
        assert ingest["last_error"] is None, ingest
        server.stop()
        counts, _ = _stored(server)
        assert {f"good-{n}" for n in range(len(bad))} <= set(counts)
    finally:
        server.kill()
