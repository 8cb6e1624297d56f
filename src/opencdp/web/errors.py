"""One JSON error shape for every failure: ``{"error", "detail", "field"?, "index"?}``."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from opencdp.errors import OpenCDPError, TransientError

_encode = msgspec.json.Encoder().encode


class JSONResponse(Response):
    """JSON encoded with msgspec (fast, and handles datetimes)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encode(content)


def sdk_keys(body: dict[str, Any]) -> dict[str, Any]:
    """Repeat ``error``/``detail`` as ``code``/``message``: the keys Segment's and RudderStack's
    SDKs read from an error answer (without them Segment reports "unknown" and RudderStack's
    Python SDK fails with KeyError and retries the request as if the network had failed)."""
    body.setdefault("code", body.get("error"))
    body.setdefault("message", body.get("detail"))
    return body


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    sdk_keys(body)
    headers = {}
    if "retry_after" in body:
        headers["Retry-After"] = str(int(body.pop("retry_after")))
    return JSONResponse(body, status_code=status, headers=headers)


def domain_response(error: OpenCDPError) -> JSONResponse:
    """The answer to a domain error (also used by routes served outside FastAPI's router)."""
    extra = {k: v for k, v in error.to_dict().items() if k not in ("error", "detail")}  # field, and what a kind adds
    if isinstance(error, TransientError):
        extra["retry_after"] = max(1, round(error.retry_after))
    status = 429 if error.code == "too_many_requests" else error.status
    return error_response(status, error.code, error.detail, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(OpenCDPError)
    async def _domain(request: Request, error: OpenCDPError) -> JSONResponse:
        return domain_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        location = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return error_response(
            422, "invalid_request", f"`{location}`: {first.get('msg', 'invalid value')}", field=location or None
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return error_response(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail))
