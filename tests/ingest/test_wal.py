"""The write-ahead log: durable order, torn tails, rolling and releasing files."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from opencdp.ingest.wal import WriteAheadLog, frame


def test_append_read_round_trip_in_order(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    futures = [wal.append(f"record-{i}".encode()) for i in range(100)]
    ends = [f.result(timeout=5) for f in futures]
    assert ends == sorted(ends) and ends[-1] == wal.durable_lsn
    records = list(wal.read(0, max_bytes=1 << 30))
    assert [p for _, p in records] == [f"record-{i}".encode() for i in range(100)]
    assert [end for end, _ in records] == ends
    # Reading from the middle resumes exactly after a record.
    assert next(p for _, p in wal.read(ends[49], 1 << 30)) == b"record-50"
    wal.close()


def test_group_commit_under_concurrency(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    results: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(200):
            end = wal.append(f"{n}-{i}".encode()).result(timeout=10)
            with lock:
                results.append(end)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1600
    assert sorted(p.decode() for _, p in wal.read(0, 1 << 30)) == sorted(f"{n}-{i}" for n in range(8) for i in range(200))
    wal.close()


def test_loop_futures_resolve_on_their_loop_once_durable(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)

    async def scenario() -> tuple[list[int], int]:
        futures = [wal.append_on_loop(frame(f"r{i}".encode())) for i in range(50)]
        ends = list(await asyncio.gather(*futures))
        return ends, wal.durable_lsn

    ends, durable = asyncio.run(scenario())
    assert ends == sorted(ends) and len(set(ends)) == 50
    assert ends[-1] <= durable  # each resolved only once its record was on disk
    assert [end for end, _ in wal.read(0, 1 << 30)] == ends
    wal.close()


def test_a_failed_sync_fails_the_loop_futures_of_its_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)

    async def scenario() -> BaseException | None:
        try:
            await asyncio.wait_for(wal.append_on_loop(frame(b"lost")), timeout=5)
        except OSError as error:
            return error
        return None

    error = asyncio.run(scenario())
    assert isinstance(error, OSError) and error.errno == 5
    monkeypatch.undo()
    wal.close()


def test_torn_tail_is_truncated_on_recovery(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(b"complete").result()
    durable = wal.durable_lsn
    wal.close()
    [segment] = list(tmp_path.glob("*.wal"))
    with open(segment, "ab") as handle:  # a crash in the middle of the next write
        handle.write(b"\x40\x00\x00\x00\x12\x34")
    reopened = WriteAheadLog(tmp_path)
    assert reopened.durable_lsn == durable
    assert [p for _, p in reopened.read(0, 1 << 30)] == [b"complete"]
    reopened.append(b"after").result()
    assert [p for _, p in reopened.read(0, 1 << 30)] == [b"complete", b"after"]
    reopened.close()


def test_corrupt_checksum_tail_is_dropped(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(b"one").result()
    wal.append(b"two").result()
    wal.close()
    [segment] = list(tmp_path.glob("*.wal"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = WriteAheadLog(tmp_path)
    assert [p for _, p in reopened.read(0, 1 << 30)] == [b"one"]
    reopened.close()


def test_segments_roll_and_release(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    ends = [wal.append(os.urandom(60)).result() for _ in range(10)]
    assert len(wal.segments()) >= 5
    assert len(list(wal.read(0, 1 << 30))) == 10
    removed = wal.release(ends[5])
    assert removed >= 2
    remaining = list(wal.read(ends[5], 1 << 30))
    assert len(remaining) == 4
    wal.close()
    reopened = WriteAheadLog(tmp_path, segment_bytes=100)
    assert reopened.durable_lsn == ends[-1]
    reopened.close()


def test_read_respects_byte_budget(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for _ in range(10):
        wal.append(b"x" * 100)
    wal.append(b"y").result()
    assert len(list(wal.read(0, max_bytes=250))) == 3
    wal.close()
