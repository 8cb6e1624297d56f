"""Errors that tell the caller whether to retry and what to fix.

Every error carries a machine-readable ``code``, a human ``detail`` that names the
field and the fix, and optionally the ``field`` itself. ``TransientError`` means
"try again later" (HTTP 429/503); ``TerminalError`` means "fix the input" (HTTP 4xx).
"""

from __future__ import annotations


class OpenCDPError(Exception):
    """Base class: ``code`` is stable for programs, ``detail`` is for people."""

    code = "error"
    status = 400

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        return body


class TerminalError(OpenCDPError):
    """The input is wrong; retrying the same input will fail the same way."""


class TransientError(OpenCDPError):
    """The system is busy or a dependency is down; the same input may succeed later."""

    code = "unavailable"
    status = 503

    def __init__(self, detail: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class ConfigError(TerminalError):
    code = "config_error"


class AuthError(TerminalError):
    code = "unauthorized"
    status = 401


class StoreLockedError(TerminalError):
    """Another process (usually a running server) holds the embedded store."""

    code = "store_locked"
    status = 409
