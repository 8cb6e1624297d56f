"""Admission control for the tracking API: shed load early, politely, with Retry-After.

Validation is CPU-bound and runs on the event loop, so under overload requests queue
up, each holding its (up to 500 KB) body in memory, and are answered after tens of
seconds, when clients have long timed out and retried. Instead, once the bodies of
the tracking requests in progress add up to ``max_bytes``, new ones are answered
``429`` with ``Retry-After`` at once, before their body is read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from opencdp.web.errors import error_response


class TrackingAdmission:
    def __init__(self, app: ASGIApp, *, max_bytes: int, unknown_size: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.unknown_size = unknown_size  # counted for a request without Content-Length
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        size = self.unknown_size
        for name, value in scope["headers"]:
            if name == b"content-length":
                size = int(value) if value.isdigit() else self.unknown_size
                break
        if self.in_flight and self.in_flight + size > self.max_bytes:
            response = error_response(
                429,
                "too_many_requests",
                "the server is busy with other requests; retry after the Retry-After delay",
                retry_after=1,
            )
            await response(scope, receive, send)
            return
        self.in_flight += size
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= size
