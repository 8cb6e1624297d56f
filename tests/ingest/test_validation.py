"""Validation makes framed log records; a worker given a whole batch body makes the same ones."""

from __future__ import annotations

import asyncio
import io
import json
import pickle
import struct
from pathlib import Path

from opencdp.ingest import records
from opencdp.ingest.segment import Envelope
from opencdp.ingest.validation import ARROW_MIN_EVENTS, batch_messages, validate
from opencdp.ingest.wal import WriteAheadLog
from opencdp.ingest.workers import ValidationWorkers, serve

ENVELOPE = Envelope(received_at_ms=1_700_000_000_000, source="api:web")
GOOD = {"type": "track", "userId": "u1", "event": "Product Viewed", "messageId": "m-1"}
BAD = {"type": "track", "userId": "u1"}  # no event name
BODY = json.dumps({"batch": [GOOD, BAD, {**GOOD, "messageId": "m-2"}]}).encode()


def test_events_and_rejects_become_two_records_in_one_append(tmp_path: Path) -> None:
    goods = [{**GOOD, "messageId": f"m-{i}"} for i in range(1, ARROW_MIN_EVENTS + 1)]
    body = json.dumps({"batch": [goods[0], BAD, *goods[1:]]}).encode()
    validated = validate(batch_messages(body), ENVELOPE, 32 * 1024, None)
    assert validated.accepted == ARROW_MIN_EVENTS and [r.index for r in validated.rejected] == [1]
    wal = WriteAheadLog(tmp_path)
    end = wal.append_framed(validated.records).result(timeout=5)
    logged = list(wal.read(0, 1 << 20))
    wal.close()
    assert [payload[:1] for _, payload in logged] == [records.ARROW_EVENTS_KIND, records.REJECTS_KIND]
    assert logged[-1][0] == end == len(validated.records)
    events = records.read_events(memoryview(logged[0][1])[1:])
    assert events.column("message_id").to_pylist() == [g["messageId"] for g in goods]
    assert json.loads(logged[1][1][1:])["position"] == 1


def test_few_events_are_logged_as_json_lines() -> None:
    validated = validate(batch_messages(BODY), ENVELOPE, 32 * 1024, None)
    assert validated.accepted == 2 and validated.records[8:9] == records.EVENTS_KIND


def test_nothing_to_log_is_empty() -> None:
    assert validate([], ENVELOPE, 32 * 1024, None).records == b""


def test_worker_loop_validates_a_whole_body_as_its_messages() -> None:
    header = struct.Struct("<I")
    requests = io.BytesIO()
    for payload in (BODY, [bytes(m) for m in batch_messages(BODY)]):
        data = pickle.dumps((payload, ENVELOPE, 32 * 1024, None))
        requests.write(header.pack(len(data)) + data)
    requests.seek(0)
    results = io.BytesIO()
    serve(requests, results)
    answers, view = [], memoryview(results.getvalue())
    while view:
        (size,) = header.unpack(view[: header.size])
        answers.append(pickle.loads(view[header.size : header.size + size]))
        view = view[header.size + size :]
    from_body, from_messages = answers
    assert from_body.records and from_body.records == from_messages.records
    assert from_body.rejected == from_messages.rejected


def test_worker_process_round_trip() -> None:
    async def run() -> bytes:
        workers = ValidationWorkers(1)
        await workers.start()
        try:
            return (await workers.validate(BODY, ENVELOPE, 32 * 1024, None)).records
        finally:
            await workers.close()

    assert asyncio.run(run()) == validate(batch_messages(BODY), ENVELOPE, 32 * 1024, None).records
