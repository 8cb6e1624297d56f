"""The data subject's rights: export everything held about a person, and erase it.

GDPR articles 15, 17 and 20, and Russia's 152-FZ articles 14 and 21. Both start
from a *subject*: the canonical profile (``profile_map`` followed), every profile id
merged into it, and every identifier it owns (``identities``).

Which rows are the person's is decided once, per table, by column name, so tables
added later are covered without editing this module (``_owned``):

- a profile reference (``profile_id``, ``profile_id_*``, ``other_profile_id``,
  ``canonical_id``, ``merged_id``, ``into_id``) naming one of the profile ids;
- an ``identifier`` column holding one of the identifiers, an ``address`` column
  (suppressions) holding one of their values;
- and three tables with more to say: ``events`` also without a profile but with the
  person's ``user_id`` / ``anonymous_id``; ``order_lines`` of those events;
  ``quarantine`` rows whose payload or error mentions an identifier value.

Erasure deletes those rows, physically on every engine: DuckDB ``DELETE``, ClickHouse
``ALTER TABLE ... DELETE`` with ``mutations_sync = 2`` (parts are rewritten without
the rows, every version of a current-state row included; lightweight ``DELETE FROM``
would only hide them until a merge). With ``mode="anonymise"`` the person's events and
order lines are kept without identifiers, traits and IP instead, for the statistics.
Other people's events that carried one of the person's identifiers (a shared device
or family e-mail the identity graph refused to link) are *scrubbed*: that value is
removed and the rest of the event kept. Then salted hashes of the identifiers go to
``erased_identifiers`` (so later events carrying them are dropped or anonymised by
``apply_to_events``), the identity stage forgets the person, and ``privacy_audit``
records the request with row counts and no personal data.

On DuckDB the erasure is one transaction. ClickHouse has none: identities and
profile ids are deleted last, so an erasure interrupted part way can be run again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.identity.identifiers import (
    ANONYMOUS_ID,
    CLICK,
    CLICK_PARAMETER,
    DEVICE_TOKEN,
    EMAIL,
    LOYALTY_CARD,
    PHONE,
    USER_ID,
    Rules,
    extract,
    kind_of,
    normalise,
    value_of,
)
from opencdp.identity.profiles import canonical_id, member_ids
from opencdp.identity.stage import IdentityStage, stage_for
from opencdp.storage import profile_summary
from opencdp.storage.base import Backend
from opencdp.storage.schema import (
    ERASED_IDENTIFIERS,
    EVENTS,
    IDENTITIES,
    IDENTITY_CONFLICTS,
    ORDER_LINES,
    PRIVACY_AUDIT,
    PROFILE_MAP,
    PROFILE_SUMMARY,
    QUARANTINE,
    TABLES,
    T,
    Table,
)

Mode = Literal["drop", "anonymise"]
MODES: tuple[Mode, ...] = ("drop", "anonymise")
SALT_FILE = "privacy_salt"

_PROFILE_COLUMNS = ("canonical_id", "merged_id", "into_id")
"""Profile references besides ``profile_id``-named columns (``profile_id``, ``profile_id_l``, ``other_profile_id``)."""
_VALUE_COLUMNS = ("address",)
"""Columns holding a bare identifier value: an e-mail, a phone, a push token."""
_LAST = (IDENTITIES.name, PROFILE_MAP.name)
"""Erased last: while they stand, an interrupted erasure can be found and run again."""
_FIRST = (ORDER_LINES.name, EVENTS.name)
"""Erased first (order lines find their events by the events' columns)."""
_LEAF_KINDS = (USER_ID, ANONYMOUS_ID, EMAIL, PHONE, LOYALTY_CARD, DEVICE_TOKEN, CLICK)
_UTC_MS = pa.timestamp("ms", tz="UTC")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

IsErased = Callable[[str], bool]
"""Whether an identifier (``kind:value``) is erased."""


class UnknownProfile(TerminalError):
    status = 404
    code = "profile_not_found"


# -- the salt and the hashes ----------------------------------------------------


def privacy_salt(data_dir: str | Path) -> str:
    """The store's secret salt for identifier hashes: ``<data_dir>/privacy_salt``, made on first use.

    Keep it with the data directory: without it, ``erased_identifiers`` no longer
    recognises anyone.
    """
    path = Path(data_dir) / SALT_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{SALT_FILE}.{uuid.uuid4().hex}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)  # atomic, and never replaces a salt another process made first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    salt = path.read_text().strip()
    if not salt:
        raise TerminalError(f"{path} is empty; restore it from a backup of the data directory", field="privacy_salt")
    return salt


def hash_identifier(identifier: str, salt: str) -> str:
    """HMAC-SHA256 of ``kind:value`` keyed with the salt (hex)."""
    return hmac.new(salt.encode(), identifier.encode(), hashlib.sha256).hexdigest()


class ErasedIdentifiers:
    """The hashes in ``erased_identifiers``, held in memory for the pipeline to check events against."""

    def __init__(self, salt: str, hashes: Iterable[str] = ()) -> None:
        self.salt = salt
        self._hashes: set[str] = set(hashes)

    @classmethod
    def load(cls, backend: Backend, salt: str) -> ErasedIdentifiers:
        rows = backend.select(exp.select("identifier_hash").from_(ERASED_IDENTIFIERS.name))
        return cls(salt, (str(h) for h in rows.column(0).to_pylist()))

    def is_erased(self, identifier: str) -> bool:
        return bool(self._hashes) and hash_identifier(identifier, self.salt) in self._hashes

    def add(self, hashes: Iterable[str]) -> None:
        self._hashes.update(hashes)

    def __len__(self) -> int:
        return len(self._hashes)


_erased: weakref.WeakKeyDictionary[Backend, ErasedIdentifiers] = weakref.WeakKeyDictionary()
_erased_lock = threading.Lock()


def erased_for(backend: Backend, salt: str) -> ErasedIdentifiers:
    """The store's erased identifiers, loaded once per process; erasures add to it."""
    with _erased_lock:
        erased = _erased.get(backend)
        if erased is None or erased.salt != salt:
            erased = _erased[backend] = ErasedIdentifiers.load(backend, salt)
        return erased


# -- the subject ----------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """One person as the store knows them."""

    canonical_id: str
    profile_ids: tuple[str, ...]
    identifiers: tuple[str, ...]
    """``kind:value``, as in ``identities``."""
    conflict_events: tuple[str, ...]
    """Events of other profiles that had to drop one of the identifiers (``identity_conflicts``)."""

    def values(self, *kinds: str) -> list[str]:
        return [value_of(i) for i in self.identifiers if not kinds or kind_of(i) in kinds]


def find_subject(backend: Backend, profile_id: str) -> Subject:
    """The person behind any of their profile ids; ``UnknownProfile`` if there is none."""
    canonical = canonical_id(backend, profile_id)
    if canonical is None:
        raise UnknownProfile(
            f"there is no profile {profile_id[:80]!r} (never existed, or already erased); "
            "find one with GET /api/v1/profiles?email=...",
            field="profile_id",
        )
    members = member_ids(backend, canonical)
    owned = exp.and_(_in("profile_id", members), exp.column("deleted").not_())
    identifiers = sorted(set(_column(backend, IDENTITIES, "identifier", owned)))
    conflicts = _in("identifier", identifiers)
    dropped = _column(backend, IDENTITY_CONFLICTS, "message_id", conflicts) if conflicts is not None else []
    return Subject(canonical, tuple(members), tuple(identifiers), tuple(sorted(set(dropped))))


def _column(backend: Backend, table: Table, column: str, where: exp.Expr) -> list[str]:
    rows = backend.select(exp.select(column).from_(backend.table_ref(table)).where(where))
    return [str(v) for v in rows.column(0).to_pylist() if v is not None]


# -- which rows are the person's ----------------------------------------------------


def _eq(column: str, value: str) -> exp.Expr:
    return exp.column(column).eq(exp.Literal.string(value))


def _in(column: str, values: Iterable[str]) -> exp.Expr | None:
    """``coalesce(column, '') IN (values)``: never NULL, so it can be negated safely; None without values."""
    literals = [exp.Literal.string(v) for v in dict.fromkeys(values)]
    if not literals:
        return None
    return exp.func("coalesce", exp.column(column), exp.Literal.string("")).isin(*literals)


def _or(parts: Iterable[exp.Expr | None]) -> exp.Expr | None:
    present = [p for p in parts if p is not None]
    return exp.or_(*present) if present else None


def _is_profile_column(name: str) -> bool:
    return "profile_id" in name or name in _PROFILE_COLUMNS


def _carries(subject: Subject, table: Table) -> exp.Expr | None:
    """The row's own id columns hold one of the person's user ids or anonymous ids."""
    ids = {"user_id": subject.values(USER_ID), "anonymous_id": subject.values(ANONYMOUS_ID),
           "previous_id": subject.values(ANONYMOUS_ID)}
    return _or(_in(name, values) for name, values in ids.items() if name in table.column_names)


def _events_without_profile(subject: Subject) -> exp.Expr | None:
    carries = _carries(subject, EVENTS)
    return exp.and_(exp.column("profile_id").is_(exp.null()), carries) if carries is not None else None


def _lines_of_events(subject: Subject) -> exp.Expr | None:
    owned = _owned(subject, EVENTS)
    if owned is None:
        return None
    return exp.column("message_id").isin(query=exp.select("message_id").from_(EVENTS.name).where(owned))


def _mentions(subject: Subject) -> exp.Expr | None:
    """Quarantine rows whose raw payload or error text mentions an identifier value (case-insensitive).

    A short value only counts as a quoted JSON string, so that an anonymous id such as
    ``a1`` does not match every payload that happens to contain those letters.
    """
    needles: set[str] = set()
    for identifier in subject.identifiers:
        value = value_of(identifier).lower()
        needles.add(f'"{value}"')
        if len(value) >= 6:
            needles.add(value)
        if kind_of(identifier) == PHONE:
            needles.add(value.lstrip("+"))
    checks: list[exp.Expr | None] = [
        exp.GT(
            this=exp.StrPosition(
                this=exp.Lower(this=exp.func("coalesce", exp.column(column), exp.Literal.string(""))),
                substr=exp.Literal.string(needle),
            ),
            expression=exp.Literal.number(0),
        )
        for column in ("payload", "detail")
        for needle in sorted(needles)
    ]
    return _or(checks)


_EXTRA_OWNED: dict[str, Callable[[Subject], exp.Expr | None]] = {
    EVENTS.name: _events_without_profile,
    ORDER_LINES.name: _lines_of_events,
    QUARANTINE.name: _mentions,
}
"""Tables where a row can be the person's without naming one of their profile ids."""

_MENTIONED: dict[str, Callable[[Subject], exp.Expr | None]] = {
    EVENTS.name: lambda s: _or([_carries(s, EVENTS), _in("message_id", s.conflict_events)]),
    ORDER_LINES.name: lambda s: _carries(s, ORDER_LINES),
}
"""Rows of *other* people that may carry one of the person's identifiers: scrubbed, not deleted."""


def _owned(subject: Subject, table: Table) -> exp.Expr | None:
    """The condition selecting the person's rows of ``table``; None if it cannot hold any."""
    parts: list[exp.Expr | None] = []
    for name in table.column_names:
        if _is_profile_column(name):
            parts.append(_in(name, subject.profile_ids))
        elif name == "identifier":
            parts.append(_in(name, subject.identifiers))
        elif name in _VALUE_COLUMNS:
            parts.append(_in(name, subject.values()))
    extra = _EXTRA_OWNED.get(table.name)
    if extra is not None:
        parts.append(extra(subject))
    return _or(parts)


def _others(subject: Subject, table: Table) -> exp.Expr | None:
    mentioned = _MENTIONED.get(table.name)
    condition = mentioned(subject) if mentioned is not None else None
    if condition is None:
        return None
    owned = _owned(subject, table)
    return exp.and_(condition, exp.not_(owned)) if owned is not None else condition


def _ordered(tables: Iterable[Table]) -> list[Table]:
    def rank(table: Table) -> tuple[int, int]:
        if table.name in _FIRST:
            return (0, _FIRST.index(table.name))
        if table.name in _LAST:
            return (2, _LAST.index(table.name))
        return (1, 0)

    return sorted(tables, key=rank)


# -- export -----------------------------------------------------------------------


def export_profile(backend: Backend, profile_id: str, *, requested_by: str | None = None) -> dict[str, Any]:
    """Everything held about the person, as JSON-ready data (JSON columns decoded).

    ``{"profile_id", "merged_ids", "identifiers", "tables": {table: rows}, "generated_at"}``:
    ``tables`` has the person's rows of every table that holds any (events, order lines,
    merges, conflicts, quarantined input that mentions them, and any later table with a
    profile column). The export is recorded in ``privacy_audit``.
    """
    subject = find_subject(backend, profile_id)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in TABLES:
        owned = _owned(subject, table)
        if owned is None:
            continue
        order = ("timestamp", "message_id") if "timestamp" in table.column_names else table.order_by
        rows = backend.select(
            exp.select("*").from_(backend.table_ref(table)).where(owned).order_by(*(exp.column(c) for c in order))
        ).to_pylist()
        if rows:
            tables[table.name] = [_decoded(table, row) for row in rows]
    identifiers = [
        {"kind": r["kind"], "value": r["value"], "first_seen": r["first_seen"]}
        for r in tables.get(IDENTITIES.name, [])
        if not r["deleted"]
    ]
    now = dt.datetime.now(dt.UTC)
    _audit(backend, "export", profile_id, None, len(subject.identifiers),
           {"exported": {name: len(rows) for name, rows in tables.items()}}, requested_by, now)
    return {
        "profile_id": subject.canonical_id,
        "merged_ids": [p for p in subject.profile_ids if p != subject.canonical_id],
        "identifiers": sorted(identifiers, key=lambda i: (i["kind"], i["value"])),
        "tables": tables,
        "generated_at": now,
    }


def _decoded(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    for column in table.columns:
        text = row.get(column.name)
        if column.type is T.JSON and isinstance(text, str):
            with suppress(msgspec.DecodeError):  # unreadable text is kept as stored
                row[column.name] = _decode(text)
    return row


# -- erasure -----------------------------------------------------------------------


@dataclass
class ErasureReport:
    request_id: str
    profile_id: str
    profile_ids: list[str]
    identifiers: int
    mode: Mode
    removed: dict[str, int] = field(default_factory=dict)
    """Rows deleted, per table (current-state tables: rows as read, not stored versions)."""
    anonymised: dict[str, int] = field(default_factory=dict)
    """The person's rows kept without personal data (``mode="anonymise"``)."""
    scrubbed: dict[str, int] = field(default_factory=dict)
    """Other people's rows from which one of the person's identifiers was removed."""
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def erase_profile(
    backend: Backend,
    profile_id: str,
    *,
    mode: Mode = "drop",
    salt: str,
    requested_by: str | None = None,
    stage: IdentityStage | None = None,
) -> ErasureReport:
    """Erase a person from every table (see the module docstring); ``UnknownProfile`` if there is none.

    Flush the pipeline first (``Collector.flush``) so that no acknowledged event of the
    person is still on its way to the store. ``stage`` defaults to the store's identity
    stage (``stage_for``).
    """
    if mode not in MODES:
        raise TerminalError(f"erasure mode {mode!r} is not one of {', '.join(MODES)}", field="mode")
    subject = find_subject(backend, profile_id)
    stage = stage or stage_for(backend)
    identifiers = set(subject.identifiers)
    report = ErasureReport(f"pr_{uuid.uuid4().hex}", subject.canonical_id, list(subject.profile_ids), len(identifiers), mode)
    hashes = sorted({hash_identifier(i, salt) for i in identifiers})
    rules = stage.graph.rules
    is_erased: IsErased = identifiers.__contains__
    with _transaction(backend):
        if hashes:
            backend.insert(ERASED_IDENTIFIERS.name, pa.table({
                "identifier_hash": hashes,
                "erased_at": pa.array([report.at] * len(hashes), _UTC_MS),
                "request_id": [report.request_id] * len(hashes),
            }, schema=ERASED_IDENTIFIERS.arrow_schema))
        rewritten: list[str] = []  # other people whose events lose the person's identifiers
        for table in TABLES:
            others = _others(subject, table)
            if others is not None:
                if table is EVENTS:
                    found = backend.select(exp.select("profile_id").distinct().from_(EVENTS.name).where(others))
                    rewritten = [p for p in found.column(0).to_pylist() if p is not None]
                _count(report.scrubbed, table, _rewrite(backend, table, others, _SCRUB[table.name], is_erased, rules))
        if rewritten and (theirs := _in("profile_id", rewritten)) is not None:
            # Their traits, as profile_summary keeps them, are read from those events again.
            _delete(backend, PROFILE_SUMMARY, theirs)
            profile_summary.summarise_again(backend, rewritten)
        for table in _ordered(TABLES):
            owned = _owned(subject, table)
            if owned is None:
                continue
            if mode == "anonymise" and table.name in _ANONYMISE:
                _count(report.anonymised, table, _rewrite(backend, table, owned, _ANONYMISE[table.name], is_erased, rules))
            else:
                _count(report.removed, table, _delete(backend, table, owned))
        counts = {"removed": report.removed, "anonymised": report.anonymised, "scrubbed": report.scrubbed}
        _audit(backend, "erase", profile_id, mode, len(identifiers), counts, requested_by, report.at, report.request_id)
    with _erased_lock:
        known = _erased.get(backend)
    if known is not None and known.salt == salt:
        known.add(hashes)
    stage.forget(identifiers, set(subject.profile_ids))
    return report


def _count(counts: dict[str, int], table: Table, n: int) -> None:
    if n:
        counts[table.name] = n


@contextmanager
def _transaction(backend: Backend) -> Iterator[None]:
    if not backend.capabilities.transactions:
        yield
        return
    backend.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        backend.execute("ROLLBACK")
        raise
    backend.execute("COMMIT")


def _render_delete_clickhouse(backend: Backend, table: str, where: exp.Expr) -> str:
    # A mutation rewrites the parts without the rows; mutations_sync = 2 returns once it is done.
    alter = exp.Alter(this=exp.to_table(table), kind="TABLE", actions=[exp.Delete(where=exp.Where(this=where))])
    return backend.render(alter) + " SETTINGS mutations_sync = 2"


def _render_delete_standard(backend: Backend, table: str, where: exp.Expr) -> str:
    return backend.render(exp.delete(table, where=where))


_DELETE: dict[str, Callable[[Backend, str, exp.Expr], str]] = {
    "duckdb": _render_delete_standard,
    "clickhouse": _render_delete_clickhouse,
}
"""How each engine deletes rows for good (by ``capabilities.dialect``)."""


def _delete(backend: Backend, table: Table, where: exp.Expr) -> int:
    """Delete every stored row matching (every version, on engines that keep versions); rows as read."""
    count = exp.select(exp.func("count", exp.Star()))
    shown = int(backend.scalar(count.from_(backend.table_ref(table)).where(where)) or 0)
    stored = shown if not table.key else int(backend.scalar(count.from_(table.name).where(where)) or 0)
    if stored:
        dialect = backend.capabilities.dialect
        if dialect not in _DELETE:
            raise NotImplementedError(f"erasure does not know how to delete rows on {dialect}; add it to _DELETE")
        backend.execute(_DELETE[dialect](backend, table.name, where))
    return shown


RowFix = Callable[[dict[str, Any], IsErased, Rules], dict[str, Any]]


def _rewrite(backend: Backend, table: Table, where: exp.Expr, fix: RowFix, is_erased: IsErased, rules: Rules) -> int:
    """Replace the matching rows of an append-only table by ``fix``ed copies; how many changed.

    Rows are read, deleted and inserted again, grouped by ``message_id``: only messages
    with a changed row are touched.
    """
    rows = backend.select(exp.select("*").from_(table.name).where(where)).to_pylist()
    fixed = [fix(dict(row), is_erased, rules) for row in rows]
    changed = {new["message_id"] for old, new in zip(rows, fixed, strict=True) if old != new}
    if not changed:
        return 0
    keep = [row for row in fixed if row["message_id"] in changed]
    condition = _in("message_id", sorted(changed))
    assert condition is not None
    _delete(backend, table, exp.and_(where, condition))
    backend.insert(table.name, pa.Table.from_pylist(keep, schema=table.arrow_schema))
    return len(changed) if table.name == EVENTS.name else len(keep)


def _audit(
    backend: Backend,
    action: str,
    subject_id: str,
    mode: str | None,
    identifiers: int,
    counts: dict[str, Any],
    requested_by: str | None,
    at: dt.datetime,
    request_id: str | None = None,
) -> None:
    backend.insert(PRIVACY_AUDIT.name, pa.table({
        "request_id": [request_id or f"pr_{uuid.uuid4().hex}"],
        "action": [action],
        "subject_id": [subject_id],
        "mode": [mode],
        "identifiers": [identifiers],
        "counts": [_encode(counts).decode()],
        "requested_by": [requested_by],
        "at": pa.array([at], _UTC_MS),
    }, schema=PRIVACY_AUDIT.arrow_schema))


# -- removing identifiers from a row --------------------------------------------------


def _leaf_identifiers(value: Any, rules: Rules) -> Iterator[str]:
    """Identifiers a JSON value could be: a string as any kind, a long number as a phone or card."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return
    text = str(value)
    if not isinstance(value, str):
        if sum(c.isdigit() for c in text) < 6:
            return
        kinds: tuple[str, ...] = (PHONE, LOYALTY_CARD)
    else:
        kinds = _LEAF_KINDS
    for kind in kinds:
        if (kind == EMAIL and "@" not in text) or (kind == PHONE and not any(c.isdigit() for c in text)):
            continue
        found = normalise(kind, value, rules)
        if isinstance(found, str):
            yield found


def _names_erased(value: Any, is_erased: IsErased, rules: Rules) -> bool:
    if isinstance(value, dict):
        if "id" in value and "type" in value:  # an entry of context.externalIds
            found = extract({"context": _encode({"externalIds": [value]}).decode()}, rules).identifiers
            return any(is_erased(i) for i in found)
        return False
    return any(is_erased(i) for i in _leaf_identifiers(value, rules))


def _without(value: Any, is_erased: IsErased, rules: Rules) -> Any:
    """``value`` with every dict entry and list item that is an erased identifier removed, at any depth."""
    if isinstance(value, dict):
        return {k: _without(v, is_erased, rules) for k, v in value.items() if not _names_erased(v, is_erased, rules)}
    if isinstance(value, list):
        return [_without(v, is_erased, rules) for v in value if not _names_erased(v, is_erased, rules)]
    return value


def _json_without(text: str | None, is_erased: IsErased, rules: Rules, strip: Callable[[Any], Any] = lambda v: v) -> str | None:
    if text is None:
        return None
    try:
        value = _decode(text)
    except msgspec.DecodeError:
        return None  # unreadable, so it cannot be checked: not kept
    return _encode(_without(strip(value), is_erased, rules)).decode()


def _url_without_query(url: Any) -> Any:
    return url.split("?")[0].split("#")[0] if isinstance(url, str) else url


def _strip_context(context: Any) -> Any:
    """Context without what identifies a person: IP, traits, external ids, device ids, URL queries."""
    if not isinstance(context, dict):
        return context
    context = {k: v for k, v in context.items() if k not in ("ip", "traits", "externalIds")}
    device = context.get("device")
    if isinstance(device, dict):
        context["device"] = {k: v for k, v in device.items() if k not in ("id", "advertisingId", "token")}
    page = context.get("page")
    if isinstance(page, dict):
        page = {k: _url_without_query(v) if k in ("url", "referrer") else v for k, v in page.items() if k != "search"}
        context["page"] = page
    return context


def _strip_properties(properties: Any) -> Any:
    if isinstance(properties, dict):
        return {k: v for k, v in properties.items() if k != CLICK_PARAMETER}
    return properties


def _anonymise_event(row: dict[str, Any], is_erased: IsErased, rules: Rules) -> dict[str, Any]:
    """The event without identifiers, traits, IP or profile; what it says about products and money stays."""
    row.update(user_id=None, anonymous_id=None, previous_id=None, profile_id=None, traits=None)
    row["context"] = _json_without(row["context"], is_erased, rules, _strip_context)
    row["properties"] = _json_without(row["properties"], is_erased, rules, _strip_properties)
    return row


def _anonymise_line(row: dict[str, Any], is_erased: IsErased, rules: Rules) -> dict[str, Any]:
    row.update(user_id=None, anonymous_id=None, profile_id=None)
    return row


def _scrub_event(row: dict[str, Any], is_erased: IsErased, rules: Rules) -> dict[str, Any]:
    """Another person's event with the erased identifiers (only those) removed."""
    for column, kind in (("user_id", USER_ID), ("anonymous_id", ANONYMOUS_ID), ("previous_id", ANONYMOUS_ID)):
        found = normalise(kind, row[column], rules)
        if isinstance(found, str) and is_erased(found):
            row[column] = None
    for column in ("traits", "context", "properties", "integrations"):
        if row[column] is not None:
            scrubbed = _json_without(row[column], is_erased, rules)
            if scrubbed is not None and _decode(scrubbed) != _decode(row[column]):
                row[column] = scrubbed
    return row


def _scrub_line(row: dict[str, Any], is_erased: IsErased, rules: Rules) -> dict[str, Any]:
    for column, kind in (("user_id", USER_ID), ("anonymous_id", ANONYMOUS_ID)):
        found = normalise(kind, row[column], rules)
        if isinstance(found, str) and is_erased(found):
            row[column] = None
    return row


_ANONYMISE: dict[str, RowFix] = {EVENTS.name: _anonymise_event, ORDER_LINES.name: _anonymise_line}
_SCRUB: dict[str, RowFix] = {EVENTS.name: _scrub_event, ORDER_LINES.name: _scrub_line}


# -- later events ----------------------------------------------------------------------

_ID_COLUMNS = ("type", "user_id", "anonymous_id", "previous_id", "traits", "context", "properties")


def _may_identify(text: str | None) -> bool:
    """Could this JSON text carry identifiers (as ``identifiers.extract`` reads them)?"""
    return text is not None and ("externalIds" in text or "token" in text or CLICK_PARAMETER in text)

_ANONYMISED_COLUMNS = ("user_id", "anonymous_id", "previous_id", "profile_id", "traits", "context", "properties")


def apply_to_events(events: pa.Table, erased: ErasedIdentifiers, rules: Rules, mode: Mode) -> tuple[pa.Table, int]:
    """Events with those carrying an erased identifier dropped (or anonymised); how many there were.

    For the identity stage, before it resolves a batch, so that an erased person is not
    created again. Then filter the batch's order lines with ``apply_to_lines``.
    """
    if not len(erased) or events.num_rows == 0:
        return events, 0
    values = {name: events.column(name).to_pylist() for name in _ID_COLUMNS}
    by_pair: dict[tuple[Any, Any], bool] = {}  # rows whose only identifiers are userId and anonymousId

    def carries_erased(index: int) -> bool:
        row = {name: column[index] for name, column in values.items()}
        simple = row["traits"] is None and row["type"] != "alias" and not _may_identify(row["context"]) \
            and not _may_identify(row["properties"])
        pair = (row["user_id"], row["anonymous_id"])
        if simple and pair in by_pair:
            return by_pair[pair]
        found = any(erased.is_erased(i) for i in extract(row, rules).identifiers)
        if simple:
            by_pair[pair] = found
        return found

    hits = [index for index in range(events.num_rows) if carries_erased(index)]
    if not hits:
        return events, 0
    if mode == "drop":
        keep = [True] * events.num_rows
        for index in hits:
            keep[index] = False
        return events.filter(pa.array(keep)), len(hits)
    columns = {name: events.column(name).to_pylist() for name in _ANONYMISED_COLUMNS}
    for index in hits:
        row = _anonymise_event({name: column[index] for name, column in columns.items()}, erased.is_erased, rules)
        for name, column in columns.items():
            column[index] = row[name]
    for name, column in columns.items():
        position = events.schema.get_field_index(name)
        events = events.set_column(position, events.schema.field(position), pa.array(column, events.schema.field(position).type))
    return events, len(hits)


def apply_to_lines(lines: pa.Table, events: pa.Table) -> pa.Table:
    """Order lines of the events ``apply_to_events`` kept, with their (possibly removed) ids."""
    if lines.num_rows == 0:
        return lines
    lines = lines.filter(pc.is_in(lines.column("message_id"), value_set=events.column("message_id")))
    owners = pc.index_in(lines.column("message_id"), value_set=events.column("message_id"))
    for name in ("user_id", "anonymous_id"):
        position = lines.schema.get_field_index(name)
        lines = lines.set_column(position, lines.schema.field(position), pc.take(events.column(name), owners))
    return lines
