"""A lean SMTP sink for throughput benchmarks: a real SMTP exchange, in its own process.

aiosmtpd (what the tests use) spends ~1-2 ms of Python per message on its side, so a
benchmark against it measures aiosmtpd. A production sender hands mail to a local MTA
(Postfix, written in C) that is far cheaper per message. This sink stands in for that:

* it speaks the server side of RFC 5321 for what a bulk sender uses: greeting, EHLO/HELO
  (advertising PIPELINING, 8BITMIME, SMTPUTF8 and SIZE), MAIL FROM, RCPT TO, DATA with the
  content read up to ``CRLF.CRLF``, RSET, NOOP, QUIT; commands out of order are refused with
  503 like a real server;
* it answers every complete command line in the buffer with one write (pipelined groups,
  RFC 2920) on an ``asyncio.Protocol``;
* it counts messages and content bytes, and checks that each message has the headers our
  adapter must write (From, To, Subject, Message-ID) — a message without them is refused 554,
  so a sender that skips building its MIME cannot look fast.

Run it in its own process (``start``) so its event loop never shares the sender's GIL.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
from typing import Any

_REQUIRED = (b"\r\nfrom:", b"\r\nto:", b"\r\nsubject:", b"\r\nmessage-id:")


class _Session(asyncio.Protocol):
    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.buffer = b""
        self.in_data = False
        self.mail = False
        self.rcpt = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.local ESMTP ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        while True:
            if self.in_data:
                # The content starts right after "354": it ends at the first line holding a single dot.
                if self.buffer.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    at = self.buffer.find(b"\r\n.\r\n")
                    if at < 0:
                        break
                    end, skip = at + 2, at + 5
                content, self.buffer = self.buffer[:end], self.buffer[skip:]
                self.in_data, self.mail, self.rcpt = False, False, 0
                head = b"\r\n" + content[: content.find(b"\r\n\r\n") + 2].lower()
                if all(h in head for h in _REQUIRED):
                    with self.counter.get_lock():
                        self.counter.value += 1
                    out.append(b"250 2.0.0 queued\r\n")
                else:
                    out.append(b"554 5.6.0 message lacks From, To, Subject or Message-ID\r\n")
                continue
            at = self.buffer.find(b"\r\n")
            if at < 0:
                break
            line, self.buffer = self.buffer[:at], self.buffer[at + 2 :]
            reply = self.command(line)
            if reply is None:
                out.append(b"221 2.0.0 bye\r\n")
                self.flush(out)
                assert self.transport is not None
                self.transport.close()
                return
            out.append(reply)
        self.flush(out)

    def command(self, line: bytes) -> bytes | None:
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            self.mail, self.rcpt = False, 0
            if verb == b"HELO":
                return b"250 sink.local\r\n"
            return b"250-sink.local\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"
        if verb == b"MAIL":
            if self.mail:
                return b"503 5.5.1 nested MAIL command\r\n"
            if not line[4:].upper().startswith(b" FROM:"):
                return b"501 5.5.4 syntax: MAIL FROM:<address>\r\n"
            self.mail = True
            return b"250 2.1.0 OK\r\n"
        if verb == b"RCPT":
            if not self.mail:
                return b"503 5.5.1 need MAIL first\r\n"
            if not line[4:].upper().startswith(b" TO:<") or b"@" not in line:
                return b"501 5.1.3 bad recipient address syntax\r\n"
            self.rcpt += 1
            return b"250 2.1.5 OK\r\n"
        if verb == b"DATA":
            if not self.rcpt:
                return b"503 5.5.1 need RCPT first\r\n"
            self.in_data = True
            return b"354 end data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"RSET":
            self.mail, self.rcpt = False, 0
            return b"250 2.0.0 OK\r\n"
        if verb == b"NOOP":
            return b"250 2.0.0 OK\r\n"
        if verb == b"QUIT":
            return None
        return b"502 5.5.2 command not recognised\r\n"

    def flush(self, out: list[bytes]) -> None:
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def _serve(port: int, ready: Any, counter: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Session(counter), "127.0.0.1", port, backlog=256)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start() -> tuple[mp.Process, int, Any]:
    """The sink in a new process: (process, port, shared counter of accepted messages)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ctx = mp.get_context("spawn")
    ready, counter = ctx.Event(), ctx.Value("q", 0)
    process = ctx.Process(target=_serve, args=(port, ready, counter), daemon=True)
    process.start()
    if not ready.wait(30):
        raise RuntimeError("the SMTP sink did not start")
    return process, port, counter
