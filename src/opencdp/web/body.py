"""Reading request bodies safely: size limits, gzip, and the write key."""

from __future__ import annotations

import base64
import binascii
import zlib

from fastapi import Request

from opencdp.errors import AuthError, TerminalError


class BodyError(TerminalError):
    """The request body cannot be read at all (size, compression, encoding)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The (decompressed) body, refusing more than ``limit`` bytes without buffering it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
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
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise AuthError(
            "Authorization must be Basic with the write key as username and an empty password",
            field="Authorization",
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("the Basic Authorization header is not valid base64", field="Authorization") from None
    return decoded.partition(":")[0]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key")
