"""Validation worker processes, fed by the event loop over pipes.

Validating a batch is most of the CPU an event costs, and in one process it would
hold the interpreter lock the request handlers need. Each worker is a small Python
process (``python -m opencdp.ingest.workers``, importing only the validation
modules) that reads length-prefixed pickled requests on its stdin and writes the
results, in order, on its stdout. The event loop talks to it through asyncio pipes:
no helper threads in the server, so no hand-offs of the interpreter lock per
request (what made ``ProcessPoolExecutor`` slower than validating inline).

A worker exits when its stdin closes, so workers end with the server even after
``kill -9``. A worker that dies fails its pending requests with a transient error
(503 + Retry-After) and is replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import pickle
import struct
import sys
from collections.abc import Sequence
from typing import Any

from opencdp.errors import TransientError
from opencdp.ingest import records
from opencdp.ingest.segment import Envelope
from opencdp.ingest.validation import Validated, batch_messages, validate

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<I")
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_READY = b"R"  # written once by a worker when it is warmed up
_READY_TIMEOUT_S = 300.0


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: collections.deque[asyncio.Future[Validated]] = collections.deque()
        self.reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"validation-worker-{process.pid}"
        )

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.reader.done()

    def send(self, request: tuple[Any, ...]) -> asyncio.Future[Validated]:
        assert self.process.stdin is not None
        data = pickle.dumps(request, _PROTOCOL)
        self.process.stdin.write(_HEADER.pack(len(data)) + data)
        future: asyncio.Future[Validated] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
                result = pickle.loads(await stdout.readexactly(size))
                future = self.pending.popleft()
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as error:
            log.warning("validation worker %s stopped: %s", self.process.pid, error)
        finally:
            while self.pending:
                future = self.pending.popleft()
                if not future.done():
                    future.set_exception(
                        TransientError(
                            "a validation worker stopped; retry after the Retry-After delay",
                            retry_after=1,
                        )
                    )

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await asyncio.gather(self.reader, return_exceptions=True)


class ValidationWorkers:
    """``count`` worker processes; each request goes to the one with the least work queued."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers: list[_Worker] = []
        self._lock = asyncio.Lock()

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opencdp.ingest.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        assert process.stdout is not None
        # A worker warms up (imports, a first Arrow conversion) before it reads requests: seconds on a
        # busy machine. Waiting for its ready byte keeps the server from reporting healthy meanwhile,
        # when batches would wait behind the warm-up (a bench's first 10+ s of load got no answer).
        ready = await asyncio.wait_for(process.stdout.read(1), timeout=_READY_TIMEOUT_S)
        if ready != _READY:
            raise RuntimeError(f"validation worker {process.pid} exited during start-up (see its stderr)")
        return _Worker(process)

    async def start(self) -> None:
        self._workers = list(await asyncio.gather(*(self._spawn() for _ in range(self.count))))  # warm up side by side

    async def validate(
        self,
        messages: Sequence[bytes] | bytes,
        envelope: Envelope,
        max_event_bytes: int,
        context: dict[str, Any] | None,
    ) -> Validated:
        worker = min(self._workers, key=lambda w: len(w.pending), default=None)
        if worker is None or not worker.alive:
            async with self._lock:  # replace dead workers once, not once per waiting request
                self._workers = [w for w in self._workers if w.alive]
                while len(self._workers) < self.count:
                    self._workers.append(await self._spawn())
            worker = min(self._workers, key=lambda w: len(w.pending))
        return await worker.send((messages, envelope, max_event_bytes, context))  # bytes: a whole /v1/batch body

    async def close(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]


def serve(requests: Any, results: Any) -> None:
    """The worker's loop: one request in, one result out, until stdin closes."""
    read, write, flush = requests.read, results.write, results.flush
    while True:
        header = read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        messages, envelope, max_event_bytes, context = pickle.loads(read(size))
        try:
            if isinstance(messages, bytes):
                messages = batch_messages(messages)
            result: Any = validate(messages, envelope, max_event_bytes, context)
        except (
            Exception
        ) as error:  # a bug, not bad input (validate rejects that): report it, keep serving
            result = error
        data = pickle.dumps(result, _PROTOCOL)
        write(_HEADER.pack(len(data)) + data)
        flush()


def main() -> None:
    # The protocol owns fd 1; anything printed goes to stderr instead.
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    records.warm_up()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    results.write(_READY)
    results.flush()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, results)


if __name__ == "__main__":
    main()
