"""Members in and out of the store: pages, exports, static snapshots and uploaded lists.

A segment's members are read from ``segment_members`` (``member = true``), ordered by
profile id, so a page's cursor is the last profile id it held. Exports stream them
in pages as CSV, Parquet or JSON Lines, optionally with each profile's e-mail, phone
and user id from the identity graph (masked for callers that must not see them).

A snapshot copies a segment's members into a new ``static`` segment that nothing
changes afterwards; an upload makes an ``uploaded`` segment from a CSV of
identifiers, normalised as the identity stage does. Rows that match no profile are
reported with their line number and the reason, never dropped silently.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.identity.identifiers import (
    EMAIL,
    LOYALTY_CARD,
    PHONE,
    USER_ID,
    Rules,
    Unusable,
    normalise,
)
from opencdp.identity.profiles import canonical_ids
from opencdp.privacy.mask import mask_email, mask_phone
from opencdp.segments.ast import SegmentError, params_used
from opencdp.segments.membership import Change, record_size, refresh, size, write_changes
from opencdp.segments.store import (
    DYNAMIC,
    STATIC,
    UPLOADED,
    Segment,
    SegmentNotFound,
    check_id,
    get,
    save,
)
from opencdp.storage.base import Backend
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP, SEGMENT_MEMBERS

FORMATS = ("csv", "parquet", "jsonl")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}
IDENTIFIER_COLUMNS = (EMAIL, PHONE, USER_ID)
"""What ``include=identifiers`` adds to an export, one column each (the first seen of each kind)."""
UPLOAD_KINDS = (EMAIL, PHONE, USER_ID, "profile_id", LOYALTY_CARD)
PAGE = 5000
_CHUNK = 2000


class SegmentExists(TerminalError):
    code = "segment_exists"
    status = 409


class Parametric(TerminalError):
    """The segment has ``$parameters``, so no members are stored for it."""

    code = "parametric_segment"
    status = 422


def require(backend: Backend, segment_id: str) -> Segment:
    segment = get(backend, segment_id)
    if segment is None:
        raise SegmentNotFound(segment_id)
    return segment


def parameters(segment: Segment) -> list[str]:
    return sorted(params_used(segment.tree)) if segment.tree is not None else []


def describe(backend: Backend, segment: Segment) -> dict[str, Any]:
    """The segment as the API and the CLI show it: its definition, status, size and parameters."""
    found = segment.to_dict()
    params = parameters(segment)
    found["parametric"] = bool(params)
    found["parameters"] = params
    found["size"] = None if params else size(backend, segment.segment_id)
    return found


def evaluate_saved(backend: Backend, segment: Segment, warnings: Sequence[str], now: dt.datetime, reason: str) -> dict[str, Any]:
    """Evaluate a just-saved dynamic segment (a parametric one is stored only) and report it."""
    change = refresh(backend, segment, now, reason=reason) if segment.kind == DYNAMIC else None
    found = describe(backend, segment)
    found["warnings"] = list(warnings)
    if change is not None and not change.parametric:
        found["change"] = change_dict(change)
    return found


def change_dict(change: Change) -> dict[str, Any]:
    return {
        "segment_id": change.segment_id,
        "entered": len(change.entered),
        "exited": len(change.exited),
        "size": change.size,
        "alerts": change.alerts,
        "parametric": change.parametric,
    }


# -- members ------------------------------------------------------------------------------------


def _member_rows(backend: Backend, segment_id: str, limit: int, after: str | None) -> list[dict[str, Any]]:
    conditions: list[exp.Expr] = [
        exp.column("segment_id").eq(exp.Literal.string(segment_id)),
        exp.column("member").eq(exp.true()),
    ]
    if after:
        conditions.append(exp.GT(this=exp.column("profile_id"), expression=exp.Literal.string(after)))
    query = (
        exp.select("profile_id", "since")
        .from_(backend.table_ref(SEGMENT_MEMBERS))
        .where(exp.and_(*conditions))
        .order_by("profile_id")
        .limit(limit)
    )
    return backend.rows(query)


def _materialised(backend: Backend, segment_id: str) -> Segment:
    segment = require(backend, segment_id)
    if params := parameters(segment):
        raise Parametric(
            f"segment `{segment_id}` is parametric (${', $'.join(params)}): its members depend on the values, so none are "
            "stored; evaluate it with POST /api/v1/segments/preview and params",
            field="id",
        )
    return segment


def members_page(backend: Backend, segment_id: str, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """One page of members by profile id; ``next`` is the cursor of the following page (None at the end)."""
    _materialised(backend, segment_id)
    rows = _member_rows(backend, segment_id, limit + 1, cursor)
    page = rows[:limit]
    more = len(rows) > limit
    return {"segment_id": segment_id, "members": page, "next": page[-1]["profile_id"] if more and page else None}


def identifiers(backend: Backend, profiles: Sequence[str], *, mask: bool = False) -> dict[str, dict[str, str | None]]:
    """For each canonical profile: its e-mail, phone and user id (its own first-seen, else a merged id's)."""
    found: dict[str, dict[str, str | None]] = {p: dict.fromkeys(IDENTIFIER_COLUMNS) for p in profiles}
    for start in range(0, len(profiles), _CHUNK):
        chunk = [exp.Literal.string(p) for p in profiles[start : start + _CHUNK]]
        merged = (
            exp.select("profile_id", "canonical_id")
            .from_(backend.table_ref(PROFILE_MAP))
            .where(exp.In(this=exp.column("canonical_id"), expressions=chunk))
            .subquery("m")
        )
        query = (
            exp.select(exp.column("canonical_id", "m"), exp.column("kind", "i"), exp.column("value", "i"))
            .from_(backend.aliased_ref(IDENTITIES, "i"))
            .join(merged, on=exp.column("profile_id", "i").eq(exp.column("profile_id", "m")))
            .where(
                exp.and_(
                    exp.In(this=exp.column("kind", "i"), expressions=[exp.Literal.string(k) for k in IDENTIFIER_COLUMNS]),
                    exp.column("deleted", "i").eq(exp.false()),
                )
            )
            # the profile's own identifiers before those of ids merged into it, then the first seen
            .order_by(
                exp.NEQ(this=exp.column("profile_id", "i"), expression=exp.column("canonical_id", "m")),
                exp.column("first_seen", "i"),
                exp.column("value", "i"),
            )
        )
        for row in backend.rows(query):
            slot = found.setdefault(row["canonical_id"], dict.fromkeys(IDENTIFIER_COLUMNS))
            if slot.get(row["kind"]) is None:
                slot[row["kind"]] = row["value"]
    if mask:
        maskers: dict[str, Callable[[str], str]] = {EMAIL: mask_email, PHONE: mask_phone}
        for slot in found.values():
            for kind, masker in maskers.items():
                value = slot.get(kind)
                if value is not None:
                    slot[kind] = masker(value)
    return found


def export_rows(
    backend: Backend, segment_id: str, *, include_identifiers: bool = False, mask: bool = False, page: int = PAGE
) -> Iterator[list[dict[str, Any]]]:
    """The members in pages of rows ``{profile_id, since[, email, phone, user_id]}``."""
    _materialised(backend, segment_id)
    after: str | None = None
    while True:
        rows = _member_rows(backend, segment_id, page, after)
        if not rows:
            return
        if include_identifiers:
            ids = identifiers(backend, [r["profile_id"] for r in rows], mask=mask)
            for row in rows:
                row.update(ids.get(row["profile_id"], {}))
        yield rows
        if len(rows) < page:
            return
        after = rows[-1]["profile_id"]


def export_schema(include_identifiers: bool) -> pa.Schema:
    fields = [pa.field("profile_id", pa.string()), pa.field("since", pa.timestamp("ms", tz="UTC"))]
    fields += [pa.field(name, pa.string()) for name in IDENTIFIER_COLUMNS] if include_identifiers else []
    return pa.schema(fields)


def export(
    backend: Backend, segment_id: str, format: str, *, include_identifiers: bool = False, mask: bool = False, page: int = PAGE
) -> Iterator[bytes]:
    """The members as a stream of bytes in ``format`` (csv, parquet or jsonl)."""
    if format not in FORMATS:
        raise SegmentError(f"`format` is {format!r}; use one of {', '.join(FORMATS)}", field="format")
    pages = export_rows(backend, segment_id, include_identifiers=include_identifiers, mask=mask, page=page)
    schema = export_schema(include_identifiers)
    if format == "csv":
        return _csv(pages, schema.names)
    if format == "jsonl":
        return _jsonl(pages)
    return _parquet(pages, schema)


def _iso(value: Any) -> Any:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if isinstance(value, dt.datetime) else value


def _csv(pages: Iterator[list[dict[str, Any]]], names: list[str]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rows in pages:
        writer.writerows({k: _iso(v) for k, v in row.items()} for row in rows)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _jsonl(pages: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    for rows in pages:
        yield "".join(json.dumps({k: _iso(v) for k, v in row.items()}, ensure_ascii=False) + "\n" for row in rows).encode()


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they come (Parquet written in row groups)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _parquet(pages: Iterator[list[dict[str, Any]]], schema: pa.Schema) -> Iterator[bytes]:
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for rows in pages:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


# -- static segments ------------------------------------------------------------------------------


def _fresh(backend: Backend, segment_id: str) -> None:
    check_id(segment_id)
    if get(backend, segment_id) is not None:
        raise SegmentExists(f"segment `{segment_id}` exists already; pick another id, or DELETE it first", field="id")


def _fill(backend: Backend, segment: Segment, profiles: Sequence[str], now: dt.datetime, reason: str) -> Change:
    change = Change(segment.segment_id, entered=sorted(set(profiles)))
    write_changes(backend, segment, change, now, reason)
    change.size = len(change.entered)
    record_size(backend, segment.segment_id, now, change, "create")
    return change


def snapshot(backend: Backend, source_id: str, segment_id: str, *, name: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """A ``static`` segment holding ``source_id``'s members now; it never changes afterwards."""
    now = now or dt.datetime.now(dt.UTC)
    source = _materialised(backend, source_id)
    _fresh(backend, segment_id)
    profiles = [row["profile_id"] for rows in export_rows(backend, source_id) for row in rows]
    description = f"snapshot of `{source_id}` at {_iso(now)}"
    segment, _ = save(backend, segment_id, name=name or f"{source.name} ({now:%Y-%m-%d})", description=description, kind=STATIC, now=now)
    _fill(backend, segment, profiles, now, f"snapshot of {source_id}")
    return describe(backend, segment)


@dataclass
class Unmatched:
    line: int
    value: str
    reason: str


@dataclass
class Upload:
    segment: dict[str, Any]
    rows: int = 0
    matched: int = 0
    unmatched: list[Unmatched] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "rows": self.rows,
            "matched": self.matched,
            "unmatched": [{"line": u.line, "value": u.value, "reason": u.reason} for u in self.unmatched],
        }


def _read_csv(text: str, identifier: str) -> list[tuple[int, str]]:
    """(line number, cell) of each data row: the only column, or the one the header names ``identifier``."""
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, row) for row in reader]
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise SegmentError("the CSV has no rows; send one identifier a line, or a header and a column of them", field="$")
    header = [cell.strip().lower() for cell in rows[0][1]]
    names = {identifier, identifier.replace("_", " "), identifier.replace("_", "")}
    column = next((i for i, cell in enumerate(header) if cell.lstrip("\ufeff") in names), None)
    if column is not None:
        rows = rows[1:]
    elif len(header) == 1:
        column = 0
    else:
        raise SegmentError(
            f"the CSV has {len(header)} columns and none is named `{identifier}`; add a header naming the {identifier} "
            "column, or send a single column",
            field="identifier",
        )
    return [(n, row[column].strip() if column < len(row) else "") for n, row in rows]


def _owners(backend: Backend, identifiers: Sequence[str]) -> dict[str, str]:
    """identifier -> the profile that holds it (before following merges)."""
    found: dict[str, str] = {}
    for start in range(0, len(identifiers), _CHUNK):
        chunk = [exp.Literal.string(i) for i in identifiers[start : start + _CHUNK]]
        query = (
            exp.select("identifier", "profile_id")
            .from_(backend.table_ref(IDENTITIES))
            .where(exp.and_(exp.In(this=exp.column("identifier"), expressions=chunk), exp.column("deleted").eq(exp.false())))
        )
        found.update({r["identifier"]: r["profile_id"] for r in backend.rows(query)})
    return found


def upload(
    backend: Backend,
    segment_id: str,
    data: bytes,
    identifier: str,
    *,
    name: str | None = None,
    rules: Rules | None = None,
    now: dt.datetime | None = None,
) -> Upload:
    """An ``uploaded`` segment of the profiles a CSV of identifiers names; unmatched rows are reported."""
    now = now or dt.datetime.now(dt.UTC)
    rules = rules or Rules()
    if identifier not in UPLOAD_KINDS:
        raise SegmentError(f"`identifier` is {identifier!r}; use one of {', '.join(UPLOAD_KINDS)}", field="identifier")
    _fresh(backend, segment_id)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SegmentError(f"the CSV is not UTF-8 (byte {error.start}); save it as UTF-8", field="$") from None
    cells = _read_csv(text, identifier)
    unmatched: list[Unmatched] = []
    wanted: dict[int, tuple[str, str]] = {}  # line -> (cell, identifier or profile id)
    for line, cell in cells:
        if identifier == "profile_id":
            if cell:
                wanted[line] = (cell, cell)
            else:
                unmatched.append(Unmatched(line, cell, "empty"))
            continue
        value = normalise(identifier, cell, rules)
        if value is None:
            unmatched.append(Unmatched(line, cell, "empty"))
        elif isinstance(value, Unusable):
            what = "not a valid" if value.reason == "invalid" else "a placeholder, not a real"
            unmatched.append(Unmatched(line, cell, f"{what} {identifier.replace('_', ' ')}"))
        else:
            wanted[line] = (cell, value)
    keys = sorted({key for _, key in wanted.values()})
    owners = {k: k for k in keys} if identifier == "profile_id" else _owners(backend, keys)
    canonical = canonical_ids(backend, sorted(set(owners.values())))
    profiles: set[str] = set()
    for line, (cell, key) in sorted(wanted.items()):
        owner = owners.get(key)
        profile = canonical.get(owner) if owner is not None else None
        if profile is None:
            unmatched.append(Unmatched(line, cell, f"no profile has this {identifier.replace('_', ' ')}"))
        else:
            profiles.add(profile)
    unmatched.sort(key=lambda u: u.line)
    segment, _ = save(
        backend, segment_id, name=name, description=f"uploaded list of {identifier} ({len(cells)} rows)", kind=UPLOADED, now=now
    )
    _fill(backend, segment, sorted(profiles), now, "uploaded")
    return Upload(describe(backend, segment), rows=len(cells), matched=len(cells) - len(unmatched), unmatched=unmatched)


def preview(
    backend: Backend, definition: str | Mapping[str, Any], *, params: Mapping[str, Any] | None = None, sample: int = 20, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Size and a sample of the members of a draft definition (nothing is stored)."""
    import time

    from opencdp.segments.sql import members
    from opencdp.segments.store import catalogue, validate

    started = time.perf_counter()
    validation = validate(backend, definition)
    found = members(backend, validation.tree, now or dt.datetime.now(dt.UTC), params=params or {}, catalogue=catalogue(backend))
    return {
        "size": len(found),
        "sample": sorted(found)[:sample],
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
        "text": validation.text,
        "warnings": validation.warnings,
    }
