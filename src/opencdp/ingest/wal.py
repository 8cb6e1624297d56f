"""A write-ahead log with group commit: what it acknowledges survives ``kill -9``.

Callers ``append`` a payload and get a future that completes once the payload is
written *and* fsynced. One writer thread drains everything queued while the
previous fsync ran and writes it with a single ``write`` + ``fdatasync`` (group
commit), so durability costs one disk flush per group rather than per request.

On disk: files named by the log position (LSN) of their first byte; each record
is ``length:u32 crc32:u32 payload``. A record cut short by a crash (never
acknowledged) is detected by its length or checksum and truncated on recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

_HEADER = struct.Struct("<II")
_SUFFIX = ".wal"
Waiter = Future[int] | asyncio.Future[int]


class WriteAheadLog:
    def __init__(self, directory: str | Path, *, segment_bytes: int = 64 * 1024 * 1024, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._queue: list[tuple[bytes, Waiter]] = []
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._durable_lsn = 0
        self._file_start, self._file = self._recover()
        self._writer = threading.Thread(target=self._write_loop, name="wal-writer", daemon=True)
        self._writer.start()

    # -- positions -------------------------------------------------------------
    @property
    def durable_lsn(self) -> int:
        """Everything before this position is on disk."""
        return self._durable_lsn

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted but not yet written (the backpressure signal)."""
        return self._queued_bytes

    def segments(self) -> list[int]:
        return sorted(int(p.name[: -len(_SUFFIX)]) for p in self.directory.glob(f"*{_SUFFIX}"))

    def _path(self, start: int) -> Path:
        return self.directory / f"{start:020d}{_SUFFIX}"

    # -- recovery --------------------------------------------------------------
    def _recover(self) -> tuple[int, int]:
        starts = self.segments()
        if not starts:
            start = 0
        else:
            start = starts[-1]
            valid = _valid_length(self._path(start))
            with open(self._path(start), "r+b") as handle:
                handle.truncate(valid)  # drop a torn, never-acknowledged tail
                os.fsync(handle.fileno())
            self._durable_lsn = start + valid
        fd = os.open(self._path(start), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if not starts:
            _fsync_dir(self.directory)
        return start, fd

    # -- writing ---------------------------------------------------------------
    def append(self, payload: bytes) -> Future[int]:
        """Queue a record; the future resolves to the LSN after it once it is durable."""
        return self.append_framed(frame(payload))

    def append_framed(self, record: bytes) -> Future[int]:
        """Queue records already made by ``frame`` (one, or several back to back).

        Validation workers frame their records, so the event loop neither checksums
        nor copies a batch; the checksum is still verified when the log is read.
        """
        future: Future[int] = Future()
        self._enqueue(record, future)
        return future

    def append_on_loop(self, record: bytes) -> asyncio.Future[int]:
        """``append_framed`` for a caller on an event loop: a future of that loop.

        The writer resolves all of a group's loop futures with one ``call_soon_threadsafe``
        (one wake-up of the loop per fsync, not one per request, and no
        ``concurrent.futures`` future to chain per request).
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(record, future)
        return future

    def _enqueue(self, record: bytes, waiter: Waiter) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("write-ahead log is closed")
            self._queue.append((record, waiter))
            self._queued_bytes += len(record)
            self._cond.notify()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                group, self._queue = self._queue, []
                self._queued_bytes -= sum(len(r) for r, _ in group)
            try:
                ends = self._write_group(group)
            except BaseException as error:  # the disk failed: nothing in this group is acknowledged
                _settle([waiter for _, waiter in group], error)
            else:
                _settle([waiter for _, waiter in group], ends)

    def _write_group(self, group: list[tuple[bytes, Waiter]]) -> list[int]:
        """Write and sync a group; the log position after each of its records."""
        if self._durable_lsn - self._file_start >= self.segment_bytes:
            self._roll()
        data = b"".join(record for record, _ in group)
        view = memoryview(data)
        while view:
            written = os.write(self._file, view)
            view = view[written:]
        if self.fsync:
            os.fdatasync(self._file)
        position = self._durable_lsn
        ends = []
        for record, _ in group:
            position += len(record)
            ends.append(position)
        self._durable_lsn = position
        return ends

    def _roll(self) -> None:
        os.close(self._file)
        self._file_start = self._durable_lsn
        self._file = os.open(self._path(self._file_start), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)

    # -- reading ---------------------------------------------------------------
    def read(self, start: int, max_bytes: int) -> Iterator[tuple[int, bytes]]:
        """Yield ``(lsn_after, payload)`` for durable records from ``start`` on."""
        end = self._durable_lsn
        budget = max_bytes
        starts = self.segments()
        for index, segment in enumerate(starts):
            segment_end = starts[index + 1] if index + 1 < len(starts) else end
            if segment_end <= start or segment > end:
                continue
            position = max(start, segment)
            with open(self._path(segment), "rb") as handle:
                handle.seek(position - segment)
                while position < min(segment_end, end) and budget > 0:
                    header = handle.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break
                    length, crc = _HEADER.unpack(header)
                    payload = handle.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc:
                        raise RuntimeError(f"write-ahead log corrupt at position {position}")
                    position += _HEADER.size + length
                    budget -= _HEADER.size + length
                    yield position, payload
            if budget <= 0:
                return
            start = position

    def release(self, lsn: int) -> int:
        """Delete files wholly before ``lsn`` (already loaded); return how many."""
        starts = self.segments()
        removed = 0
        for index, segment in enumerate(starts[:-1]):
            if starts[index + 1] <= lsn:
                self._path(segment).unlink(missing_ok=True)
                removed += 1
        return removed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._writer.join()
        os.close(self._file)


def _settle(waiters: list[Waiter], outcome: list[int] | BaseException) -> None:
    """Resolve a group's waiters: thread futures here, loop futures in one callback per loop."""
    on_loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]] = {}
    for number, waiter in enumerate(waiters):
        result = outcome if isinstance(outcome, BaseException) else outcome[number]
        if isinstance(waiter, Future):
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        else:
            on_loops.setdefault(waiter.get_loop(), []).append((waiter, result))
    for loop, pending in on_loops.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, pending)


def _resolve(pending: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for future, result in pending:
        if future.done():  # cancelled: the client went away
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def frame(payload: bytes) -> bytes:
    """One record as stored: ``length:u32 crc32:u32 payload``."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _valid_length(path: Path) -> int:
    """Length of the prefix of whole, checksummed records."""
    valid = 0
    with open(path, "rb") as handle:
        while True:
            header = handle.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return valid
            length, crc = _HEADER.unpack(header)
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return valid
            valid += _HEADER.size + length


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
