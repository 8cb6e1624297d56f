"""Bulk import over HTTP: ``POST /api/v1/imports/{kind}`` with the file as the request body.

The body is streamed to a file under ``<data_dir>/imports`` (never held in memory),
imported in a worker thread with ``import_file``, and answered with the import
report plus the first rejected rows. The upload is deleted afterwards; a reject
file, if any, stays next to where it was, and its path is in the answer.
"""

from __future__ import annotations

import re
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from opencdp.errors import TerminalError
from opencdp.ingest.imports import FORMATS, KINDS, Mapping, import_file
from opencdp.ingest.imports.reader import detect_format
from opencdp.web.auth import AuthRoute, require_scope
from opencdp.web.errors import JSONResponse

DEFAULT_MAX_IMPORT_BYTES = 1024**3
"""Used when ``Settings`` has no ``max_import_bytes``."""
_MAPPING_SECTIONS = {"columns", "defaults", "options", "kind"}
_UNSAFE = re.compile(r"[^\w.\-]+")

router = APIRouter(prefix="/api/v1", tags=["imports"], dependencies=[Depends(require_scope("write"))], route_class=AuthRoute)


class ImportRequestError(TerminalError):
    code = "invalid_import"


@router.post(
    "/imports/{kind}",
    summary="Import a file of customers, orders, catalog or events (the file is the request body)",
)
async def create_import(
    kind: str,
    request: Request,
    format: str | None = Query(None, description="csv, parquet or jsonl; by default from the filename's suffix"),
    filename: str | None = Query(None, description="The file's name, used in rejects and the quarantine source"),
    mapping: str | None = Query(
        None, description='JSON object of target -> file column, e.g. {"email": "E-mail"} (or a whole mapping)'
    ),
) -> JSONResponse:
    if kind not in KINDS:
        raise ImportRequestError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}", field="kind")
    name = _safe_name(filename)
    format = format.strip() if format else None  # ?format= (empty) means "from the filename"
    if format is not None:
        fmt = detect_format(Path(name or "upload"), format)
    elif name:
        try:
            fmt = detect_format(Path(name), None)
        except TerminalError:
            raise ImportRequestError(
                f"cannot tell the format from filename {filename!r}; pass format= one of {', '.join(FORMATS)}",
                field="format",
            ) from None
    else:
        raise ImportRequestError(f"pass format= one of {', '.join(FORMATS)}, or a filename= with a suffix", field="format")
    columns = _mapping(mapping)

    settings = request.app.state.settings
    limit = int(getattr(settings, "max_import_bytes", DEFAULT_MAX_IMPORT_BYTES))
    directory = Path(settings.data_dir) / "imports" / uuid.uuid4().hex
    directory.mkdir(parents=True, exist_ok=True)
    upload = directory / (name or f"upload.{fmt}")
    try:
        await _receive(request, upload, limit)
        report = await run_in_threadpool(
            import_file,
            request.app.state.backend,
            upload,
            kind,  # type: ignore[arg-type]  # checked against KINDS above
            settings=settings,
            format=fmt,
            mapping=columns,
        )
    finally:
        upload.unlink(missing_ok=True)
        if not any(directory.iterdir()):
            shutil.rmtree(directory, ignore_errors=True)
    return JSONResponse(report.to_dict(rejects=True))


async def _receive(request: Request, target: Path, limit: int) -> None:
    """Stream the body to ``target``, refusing more than ``limit`` bytes (after gunzip)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise ImportRequestError(f"Content-Encoding {encoding!r} is not supported; send gzip or none", field="Content-Encoding")
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding in ("gzip", "x-gzip") else None
    size = 0
    with target.open("wb") as out:
        async for chunk in request.stream():
            if inflater is not None:
                try:
                    chunk = inflater.decompress(chunk)
                except zlib.error as error:
                    raise ImportRequestError(f"the body is not valid gzip ({error})", field="Content-Encoding") from None
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)
        if inflater is not None:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise _too_large(limit)
            out.write(tail)
    if size == 0:
        raise ImportRequestError("the request body is empty; send the file's bytes as the body", field="$")


def _mapping(text: str | None) -> Mapping | None:
    if text is None or not text.strip():
        return None
    try:
        data: Any = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise ImportRequestError(f"`mapping` is not valid JSON: {error}", field="mapping") from None
    if not isinstance(data, dict):
        raise ImportRequestError('`mapping` must be a JSON object such as {"email": "E-mail"}', field="mapping")
    if not set(data) <= _MAPPING_SECTIONS:
        data = {"columns": data}
    return Mapping.from_dict(data, "`mapping`")


def _safe_name(filename: str | None) -> str | None:
    """The base name with anything unusual replaced, so it can name a file on disk."""
    if not filename:
        return None
    base = Path(filename.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip("._")[:200]
    return cleaned or None


def _too_large(limit: int) -> ImportRequestError:
    error = ImportRequestError(
        f"the file is over the import limit of {limit} bytes (setting max_import_bytes); split it or import it "
        "with the `opencdp import` command on the server",
        field="$",
        code="payload_too_large",
    )
    error.status = 413
    return error
