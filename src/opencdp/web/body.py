"""Reading request bodies safely: size limits, gzip, and the write key."""

from __future__ import annotations

import base64
import binascii
import functools
import zlib

from fastapi import Request
from starlette.requests import ClientDisconnect

from opencdp.errors import AuthError, TerminalError


class BodyError(TerminalError):
    """The request body cannot be read at all (size, compression, encoding)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The (decompressed) body, refusing more than ``limit`` bytes without buffering it all."""
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = await _receive(request, limit)
    encoding = (header(request, b"content-encoding") or b"").decode("latin-1").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BodyError(
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding",
            field="Content-Encoding",
            code="unsupported_encoding",
        )
    # 16 + MAX_WBITS reads a gzip header; 32 + MAX_WBITS detects gzip or zlib.
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise BodyError(
            f"the body is not valid {encoding} data ({error}); compress it or drop the Content-Encoding header",
            field="Content-Encoding",
            code="invalid_gzip",
        ) from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large(len(data), limit, decompressed=True)
    if not inflater.eof:
        raise BodyError("the gzip body is truncated", field="Content-Encoding", code="invalid_gzip")
    return data


def header(request: Request, name: bytes) -> bytes | None:
    """A request header's raw value (``name`` lower-case, as ASGI servers give them).

    On the tracking hot path: Starlette's ``request.headers`` builds a mapping per
    request, which costs more than the few lookups made in it."""
    for key, value in request.scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _receive(request: Request, limit: int) -> bytes:
    """The raw body, from the ASGI messages as they come (usually one)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int, *, decompressed: bool = False) -> BodyError:
    error = BodyError(
        f"request body is {'over ' if decompressed else ''}{size} bytes{' decompressed' if decompressed else ''}; "
        f"the limit is {limit} bytes — split it into smaller batches",
        field="$",
        code="payload_too_large",
    )
    error.status = 413
    return error


def basic_auth_user(request: Request) -> str | None:
    """The username of a Basic ``Authorization`` header (Segment puts the write key there)."""
    value = header(request, b"authorization")
    return _basic_user(value) if value else None


@functools.lru_cache(maxsize=1024)
def _basic_user(value: bytes) -> str:
    """Decoded once per distinct header: a tracking client sends the same one with every request."""
    text = value.decode("latin-1")
    scheme, _, encoded = text.partition(" ")
    if scheme.lower() != "basic":
        raise AuthError(
            "Authorization must be Basic with the write key as username and an empty password",
            field="Authorization",
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("the Basic Authorization header is not valid base64", field="Authorization") from None
    return decoded.partition(":")[0]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key")
