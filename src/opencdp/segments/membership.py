"""Keep segment memberships in the store, and write every change as an event.

``refresh`` evaluates a segment (all profiles, or only some) with the SQL compiler,
compares the result with ``segment_members`` and writes the difference: membership
rows, one ``Segment Entered`` / ``Segment Exited`` event per change (with the reason,
for trigger scenarios), a ``segment_sizes`` point, and size alerts. The real-time
evaluator and the scheduled refresh both go through it, so there is one semantics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.segments.ast import params_used
from opencdp.segments.sql import Catalogue, member_ids, members
from opencdp.segments.store import DYNAMIC, Segment, catalogue
from opencdp.storage.base import Backend, LoadBatch, among
from opencdp.storage.schema import (
    EVENTS,
    ORDER_LINES,
    PROFILE_MAP,
    SEGMENT_MEMBERS,
    SEGMENT_SIZES,
)

log = logging.getLogger(__name__)
ENTERED, EXITED = "Segment Entered", "Segment Exited"

_watchers: weakref.WeakKeyDictionary[Backend, list[weakref.WeakMethod[Callable[[pa.Table], None]]]] = weakref.WeakKeyDictionary()


def watch(backend: Backend, listener: Callable[[pa.Table], None]) -> None:
    """Call ``listener`` (a bound method, held weakly) with the ``segment_members`` rows of every
    membership write to ``backend`` in this process, after it is stored: the real-time cache
    keeps its copy of the resident profiles' memberships current this way instead of reading
    them on every tick."""
    _watchers.setdefault(backend, []).append(weakref.WeakMethod(listener))


def _written(backend: Backend, rows: pa.Table) -> None:
    backend.upsert(SEGMENT_MEMBERS, rows)
    listeners = _watchers.get(backend, [])
    listeners[:] = [ref for ref in listeners if ref() is not None]  # caches gone since
    for ref in listeners:
        listener = ref()
        if listener is not None:
            listener(rows)


@dataclass
class Change:
    segment_id: str
    entered: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    size: int = 0
    alerts: list[str] = field(default_factory=list)
    parametric: bool = False
    """The segment has ``$parameters``: its members depend on the binding, so none are stored."""
    complete: bool = False
    """Every profile was evaluated: ``size`` is the segment's size (no count needed)."""


def stored_members(backend: Backend, segment_id: str, profiles: Iterable[str] | None = None) -> set[str]:
    """Profiles in the segment now, per ``segment_members`` (optionally only among ``profiles``)."""
    return {str(p) for p in stored_member_ids(backend, segment_id, profiles).to_pylist()}


def stored_member_ids(backend: Backend, segment_id: str, profiles: Iterable[str] | None = None) -> pa.Array:
    """``stored_members`` as an Arrow array."""
    conditions: list[exp.Expr] = [
        exp.column("segment_id").eq(exp.Literal.string(segment_id)),
        exp.column("member").eq(exp.true()),
    ]
    if profiles is not None:
        ids = sorted(set(profiles))
        if not ids:
            return pa.array([], pa.string())
        conditions.append(among("profile_id", "ids", indexed=True))  # declared on segment_members
    query = exp.select("profile_id").from_(backend.table_ref(SEGMENT_MEMBERS)).where(exp.and_(*conditions))
    found = backend.query_arrow(backend.render(query), {"ids": ids} if profiles is not None else None)
    return found.column("profile_id").combine_chunks().cast(pa.string())


def size(backend: Backend, segment_id: str) -> int:
    query = (
        exp.select(exp.Count(this=exp.Star()))
        .from_(backend.table_ref(SEGMENT_MEMBERS))
        .where(exp.and_(exp.column("segment_id").eq(exp.Literal.string(segment_id)), exp.column("member").eq(exp.true())))
    )
    return int(backend.scalar(query) or 0)


def canonical(backend: Backend, profile_ids: Iterable[str]) -> dict[str, str]:
    """Each id -> the profile it is part of now (itself when never merged)."""
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    query = exp.select("profile_id", "canonical_id").from_(backend.table_ref(PROFILE_MAP)).where(among("profile_id", "ids", indexed=True))
    found = {r["profile_id"]: r["canonical_id"] for r in backend.rows(query, {"ids": ids})}
    return {i: found.get(i, i) for i in ids}


def refresh(
    backend: Backend,
    segment: Segment,
    now: dt.datetime,
    *,
    profiles: Sequence[str] | None = None,
    reason: str = "refresh",
    known: Catalogue | None = None,
    alerts: bool = True,
    evaluate_on: Backend | None = None,
) -> Change:
    """Evaluate ``segment`` (for ``profiles`` only, when given) and store the difference.

    ``evaluate_on``: a store holding all rows of ``profiles`` (and of no other profile) to
    evaluate on instead of ``backend``: the real-time path's small in-memory copy.
    Memberships are read from and written to ``backend`` either way.
    """
    if segment.kind != DYNAMIC or segment.tree is None:
        return Change(segment.segment_id, size=size(backend, segment.segment_id))
    change = diff(backend, segment, now, profiles=profiles, known=known, evaluate_on=evaluate_on)
    if not change.parametric:
        apply(backend, [(segment, change, reason)], now, trigger="refresh" if profiles is None else "realtime", alerts=alerts)
    return change


def diff(
    backend: Backend,
    segment: Segment,
    now: dt.datetime,
    *,
    profiles: Sequence[str] | None = None,
    known: Catalogue | None = None,
    evaluate_on: Backend | None = None,
    before: set[str] | None = None,
    ids: dict[str, str] | None = None,
) -> Change:
    """Who enters and who leaves (nothing is written).

    ``before``: the segment's stored members among these profiles when the caller has read
    them already (``stored_for``); ``ids``: ``canonical(backend, profiles)``, likewise.
    """
    if segment.kind != DYNAMIC or segment.tree is None:
        return Change(segment.segment_id)
    if params_used(segment.tree):  # evaluated per binding (preview, triggers), never materialised
        return Change(segment.segment_id, parametric=True)
    known = known or catalogue(backend)
    if profiles is None:
        # everyone: compared in Arrow (a first refresh of a big segment has millions of members)
        found = member_ids(evaluate_on or backend, segment.tree, now, catalogue=known)
        stored = pa.array(sorted(before), pa.string()) if before is not None else stored_member_ids(backend, segment.segment_id)
        entered = found.filter(pc.invert(pc.is_in(found, value_set=stored)))
        exited = stored.filter(pc.invert(pc.is_in(stored, value_set=found)))
        return Change(segment.segment_id, sorted(entered.to_pylist()), sorted(exited.to_pylist()), size=len(found), complete=True)
    ids = ids if ids is not None else canonical(backend, profiles)
    current = sorted(set(ids.values()))
    if evaluate_on is not None:  # it holds just these profiles: no restriction to compile in
        now_in = members(evaluate_on, segment.tree, now, catalogue=known) & set(current)
    else:
        now_in = members(backend, segment.tree, now, catalogue=known, profiles=current)
    if before is None:  # merged-away ids are looked at too, so that they leave the segment
        before = stored_members(backend, segment.segment_id, set(ids) | set(current))
    return Change(segment.segment_id, sorted(now_in - before), sorted(before - now_in))


def stored_for(backend: Backend, profiles: Iterable[str]) -> dict[str, set[str]]:
    """Segment id -> its stored members among ``profiles``, for every segment, in one query."""
    ids = sorted(set(profiles))
    found: dict[str, set[str]] = {}
    if not ids:
        return found
    query = (
        exp.select("segment_id", "profile_id")
        .from_(backend.table_ref(SEGMENT_MEMBERS))
        .where(exp.and_(exp.column("member").eq(exp.true()), among("profile_id", "ids", indexed=True)))
    )
    for row in backend.rows(query, {"ids": ids}):
        found.setdefault(row["segment_id"], set()).add(row["profile_id"])
    return found


def apply(
    backend: Backend,
    changes: Sequence[tuple[Segment, Change, str]],
    now: dt.datetime,
    *,
    trigger: str = "refresh",
    alerts: bool = True,
) -> None:
    """Store the changes of several segments at once: memberships and events, sizes, alerts.

    A segment's first evaluation of everyone sets its baseline: the membership rows and a
    size point, but no ``Segment Entered`` per member (as RFM's first run writes no cell
    changes). A segment of a million people would otherwise add a million events that say
    only "this segment was created", and a scenario triggered by entering it would greet
    everyone already in it rather than those who enter from now on.
    """
    points, announced = [], []
    changes = [c for c in changes if trigger != "realtime" or c[1].entered or c[1].exited]
    sizes = last_sizes(backend, [segment.segment_id for segment, _, _ in changes])
    for segment, change, reason in changes:
        previous = sizes.get(segment.segment_id)
        if change.complete:
            pass  # change.size counted every member already
        elif previous is not None:
            change.size = previous + len(change.entered) - len(change.exited)
        else:
            change.size = size(backend, segment.segment_id) + len(change.entered) - len(change.exited)
        announced.append((segment, change, reason) if previous is not None or not change.complete else (segment, change, ""))
        points.append(_size_row(segment.segment_id, now, change, trigger))
        if alerts:
            change.alerts = check_alerts(segment, previous, change.size)
    _write(backend, announced, now)
    if points:
        backend.insert(SEGMENT_SIZES.name, pa.Table.from_pylist(points, schema=SEGMENT_SIZES.arrow_schema))


def _write(backend: Backend, changes: Sequence[tuple[Segment, Change, str]], now: dt.datetime) -> None:
    """Segment Entered / Exited events, then the membership rows, built column-wise (a first
    refresh can change a million memberships). A change without a reason (a baseline) writes
    the rows only.

    Events go first: a crash in between leaves the change to be found (and its events
    written) again on the next evaluation, rather than lost.
    """
    parts = [
        (segment, name, ids, reason)
        for segment, change, reason in changes
        for name, ids in ((ENTERED, change.entered), (EXITED, change.exited))
        if ids
    ]
    if not parts:
        return
    told = [_events(segment, name, ids, now, reason) for segment, name, ids, reason in parts if reason]
    if told:
        # the ids are made from (segment, profile, change, now): only a retry of this very write can repeat one
        backend.record_events(LoadBatch(pa.concat_tables(told), ORDER_LINES.empty(), dedupe_since=now - dt.timedelta(minutes=1)))
    members = pa.concat_tables(
        [
            SEGMENT_MEMBERS.filled(
                len(ids),
                segment_id=segment.segment_id,
                profile_id=pa.array(ids, pa.string()),
                member=name == ENTERED,
                since=now,
                updated_at=now,
            )
            for segment, name, ids, _ in parts
        ]
    )
    _written(backend, members)


def clear(backend: Backend, segment_id: str, now: dt.datetime) -> int:
    """Mark every member of a deleted segment as gone (no events), so an id used again starts empty."""
    ids = sorted(stored_members(backend, segment_id))
    if ids:
        rows = [{"segment_id": segment_id, "profile_id": p, "member": False, "since": now, "updated_at": now} for p in ids]
        _written(backend, pa.Table.from_pylist(rows, schema=SEGMENT_MEMBERS.arrow_schema))
    record_size(backend, segment_id, now, Change(segment_id, exited=ids, size=0), "deleted")  # sizes go on from 0
    return len(ids)


def write_changes(backend: Backend, segment: Segment, change: Change, now: dt.datetime, reason: str) -> None:
    """Membership rows and Segment Entered / Exited events for one segment's change."""
    _write(backend, [(segment, change, reason)], now)


def _events(segment: Segment, name: str, profiles: list[str], now: dt.datetime, reason: str) -> pa.Table:
    """One ``name`` event per profile; message ids are stable for (segment, profile, change, time)."""
    properties = json.dumps({"segment_id": segment.segment_id, "segment_name": segment.name, "reason": reason}, ensure_ascii=False)
    stamp = hashlib.sha1(f"{segment.segment_id}|{name}|{now.isoformat()}".encode()).hexdigest()[:16]
    ids = pc.binary_join_element_wise(f"seg-{stamp}", pa.array(profiles, pa.string()), ":")
    return EVENTS.filled(
        len(profiles),
        message_id=ids,
        type="track",
        event=name,
        timestamp=now,
        received_at=now,
        source="segments",
        channel="system",
        properties=properties,
        lsn=0,
        profile_id=pa.array(profiles, pa.string()),
    )


def last_sizes(backend: Backend, segment_ids: Sequence[str]) -> dict[str, int]:
    """The latest recorded size of each of these segments that has one, in one read
    (a real-time tick changes dozens of segments; a read each took ~10 ms)."""
    if not segment_ids:
        return {}
    query = (
        exp.select("segment_id", exp.ArgMax(this=exp.column("size"), expression=exp.column("at")).as_("latest"))
        .from_(SEGMENT_SIZES.name)
        .where(among("segment_id", "ids"))
        .group_by("segment_id")
    )
    return {r["segment_id"]: int(r["latest"]) for r in backend.rows(query, {"ids": sorted(set(segment_ids))})}


def last_size(backend: Backend, segment_id: str) -> int | None:
    query = (
        exp.select("size")
        .from_(SEGMENT_SIZES.name)
        .where(exp.column("segment_id").eq(exp.Literal.string(segment_id)))
        .order_by(exp.Ordered(this=exp.column("at"), desc=True))
        .limit(1)
    )
    value = backend.scalar(query)
    return int(value) if value is not None else None


def record_size(backend: Backend, segment_id: str, now: dt.datetime, change: Change, trigger: str) -> None:
    row = _size_row(segment_id, now, change, trigger)
    backend.insert(SEGMENT_SIZES.name, pa.Table.from_pylist([row], schema=SEGMENT_SIZES.arrow_schema))


def _size_row(segment_id: str, now: dt.datetime, change: Change, trigger: str) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "at": now,
        "size": change.size,
        "entered": len(change.entered),
        "exited": len(change.exited),
        "trigger": trigger,
    }


def history(backend: Backend, segment_id: str, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    conditions: list[exp.Expr] = [exp.column("segment_id").eq(exp.Literal.string(segment_id))]
    if since is not None:
        conditions.append(exp.GTE(this=exp.column("at"), expression=exp.cast(exp.Literal.string(since.isoformat()), exp.DataType.build("TIMESTAMP"))))
    query = exp.select("at", "size", "entered", "exited", "trigger").from_(SEGMENT_SIZES.name).where(exp.and_(*conditions)).order_by("at")
    return backend.rows(query)


def check_alerts(segment: Segment, previous: int | None, current: int) -> list[str]:
    """Messages of the alerts that fire at this size; each is logged and sent to its webhook."""
    fired: list[str] = []
    for alert in segment.alerts:
        message = None
        if alert.min_size is not None and current < alert.min_size and (previous is None or previous >= alert.min_size):
            message = f"segment {segment.segment_id} has {current} members, below its alert of {alert.min_size}"
        elif alert.drop_percent is not None and previous and current < previous * (1 - alert.drop_percent / 100):
            drop = 100 * (previous - current) / previous
            message = f"segment {segment.segment_id} fell {drop:.1f}% ({previous} -> {current}), more than its alert of {alert.drop_percent:g}%"
        if message is None:
            continue
        fired.append(message)
        log.warning(message)
        if alert.webhook:
            body = {"segment_id": segment.segment_id, "size": current, "previous": previous, "message": message}
            threading.Thread(target=_post, args=(alert.webhook, body), daemon=True).start()
    return fired


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except OSError as error:
        log.warning("segment alert webhook %s failed: %s", url, error)
