"""The events' index by profile: event count, first and last event time, latest traits.

Events are stored in (event, timestamp) order, the order segments and reports scan in.
One profile's events are spread over every row group, so anything read from them for
one profile costs a scan of the whole ``profile_id`` column: 0.3-0.7 s at 20M events on
two cores, several seconds under load. The first screen of a profile needs only a few
numbers and the traits, so ``Backend.load`` keeps them in ``profile_summary``, one row
per profile id, in the same step that stores the events (on DuckDB in the same
transaction, so a crash leaves both or neither). A profile is then read by key.

Rows are per profile id as events carry it, not per canonical profile: a merge or a
split changes nothing here, and readers combine the rows of a profile's member ids
(``combine``), as they combine its events through ``profile_map``.

The update is a read-modify-write of the batch's profiles, done inside ``load`` under
the backend's write lock: ``update`` gets the stored rows, adds the batch, and the
backend upserts the result. ``events`` only grows, so it is the row's version (an
older row never wins on ClickHouse, whose ReplacingMergeTree keeps the highest).
Traits follow last write wins by event time, ties broken by message id: the order
the events themselves would be read in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.storage.schema import EVENTS, PROFILE_SUMMARY

if TYPE_CHECKING:
    from opencdp.storage.base import Backend

_TIME = PROFILE_SUMMARY.arrow_schema.field("first_seen").type
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_COLUMNS = ("profile_id", "timestamp", "message_id", "traits", "source")
REBUILD_PROFILES = 200_000  # profiles per pass of ``rebuild`` (bounds the traits held in memory)

Reader = Callable[[pa.Array], pa.Table]
"""Stored ``profile_summary`` rows of the given profile ids (any order; absent ids left out)."""


def stored_events(events: pa.Table, new_message_ids: Sequence[str]) -> pa.Table:
    """The events a load stored: those with a new message id, the first (lowest lsn) of repeats in the batch."""
    if not new_message_ids or not events.num_rows:
        return events.slice(0, 0)
    if len(new_message_ids) < events.num_rows:
        events = events.filter(pc.is_in(events.column("message_id"), value_set=pa.array(new_message_ids, pa.string())))
    if events.num_rows == len(new_message_ids):
        return events
    order = pc.sort_indices(events, sort_keys=[("message_id", "ascending"), ("lsn", "ascending")])
    events = events.take(order)
    ids = events.column("message_id")
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    return events.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))


def update(events: pa.Table, read: Reader) -> pa.Table:
    """``profile_summary`` rows for the profiles of newly stored ``events``: the stored rows plus these events.

    ``read`` gives the stored rows (the backend reads them inside its load).
    """
    events = events.select(list(_COLUMNS)).filter(pc.is_valid(events.column("profile_id")))
    if not events.num_rows:
        return PROFILE_SUMMARY.empty()
    events = events.set_column(1, "timestamp", _ms(events.column("timestamp")))
    delta = events.group_by("profile_id", use_threads=False).aggregate(
        [("timestamp", "count"), ("timestamp", "min"), ("timestamp", "max")]
    )
    current = read(delta.column("profile_id").combine_chunks())
    current = (current if current.num_rows else PROFILE_SUMMARY.empty()).select(
        ["profile_id", "events", "first_seen", "last_seen", "traits"]
    )
    current = current.set_column(2, "first_seen", _ms(current.column("first_seen")))
    current = current.set_column(3, "last_seen", _ms(current.column("last_seen")))
    joined = delta.join(current, "profile_id", join_type="left outer", use_threads=False)
    return PROFILE_SUMMARY.filled(
        joined.num_rows,
        profile_id=joined.column("profile_id").combine_chunks(),
        events=pc.add(joined.column("timestamp_count"), pc.fill_null(joined.column("events"), 0)).combine_chunks(),
        first_seen=_time_array(pc.min_element_wise(joined.column("timestamp_min"), joined.column("first_seen"))),
        last_seen=_time_array(pc.max_element_wise(joined.column("timestamp_max"), joined.column("last_seen"))),
        traits=_traits_column(events, joined),
        updated_at=pa.repeat(pa.scalar(dt.datetime.now(dt.UTC), _TIME), joined.num_rows),  # not 50k Python datetimes
    )


def _traits_column(events: pa.Table, joined: pa.Table) -> pa.Array:
    """``joined``'s stored traits, with those of the profiles these events set traits of merged anew.

    Vectorised but for those profiles: most events (views, orders) carry no traits.
    """
    stored = joined.column("traits").combine_chunks()
    with_traits = events.filter(pc.is_valid(events.column("traits")))
    if not with_traits.num_rows:
        return stored
    ids = joined.column("profile_id").combine_chunks()
    touched = pc.is_in(ids, value_set=pc.unique(with_traits.column("profile_id")))
    before = dict(zip(ids.filter(touched).to_pylist(), stored.filter(touched).to_pylist(), strict=True))
    changed = _merged_traits(with_traits, before)
    if not changed:
        return stored
    keys = pa.array(list(changed), pa.string())
    at = pc.index_in(ids, value_set=keys)
    mask = pc.is_valid(at)
    values = pc.take(pa.array(list(changed.values()), pa.string()), at.filter(mask))
    return pc.replace_with_mask(stored, mask, values)


def _ms(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """Times as int64 epoch milliseconds (Arrow has no element-wise min/max for timestamps)."""
    return pc.cast(pc.cast(times, _TIME, safe=False), pa.int64())


def _time_array(ms: pa.ChunkedArray) -> pa.Array:
    return pc.cast(ms, _TIME).combine_chunks()


def _merged_traits(with_traits: pa.Table, stored: dict[str, str | None]) -> dict[str, str]:
    """Profile id -> its traits JSON with these events' traits applied (only profiles whose traits changed)."""
    times = with_traits.column("timestamp").to_pylist()  # epoch ms already
    state: dict[str, dict[str, list[Any]]] = {}
    rows = zip(
        with_traits.column("profile_id").to_pylist(), times, with_traits.column("message_id").to_pylist(),
        with_traits.column("traits").to_pylist(), with_traits.column("source").to_pylist(), strict=True,
    )
    for profile_id, at, message_id, text, source in rows:
        try:
            values = _decode(text)
        except msgspec.DecodeError:
            continue  # kept on the event as it came; never a trait
        if not isinstance(values, dict) or not values:
            continue
        traits = state.get(profile_id)
        if traits is None:
            old = stored.get(profile_id)
            traits = state[profile_id] = _decode(old) if old else {}
        for name, value in values.items():
            held = traits.get(name)
            if held is None or (at, message_id) >= (held[1], held[2]):
                traits[name] = [value, at, message_id, source]
    return {profile_id: _encode(traits).decode() for profile_id, traits in state.items()}


@dataclass
class Summary:
    """One profile's summary, its member ids' rows combined."""

    events: int = 0
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """name -> {"value", "updated_at", "source"}."""


def combine(rows: Iterable[tuple[int, int, int, str | None]]) -> Summary:
    """Rows of (events, first_seen ms, last_seen ms, traits JSON) of a profile's ids -> its summary."""
    count, first, last = 0, None, None
    latest: dict[str, list[Any]] = {}
    for events, first_ms, last_ms, text in rows:
        count += events
        first = first_ms if first is None else min(first, first_ms)
        last = last_ms if last is None else max(last, last_ms)
        for name, held in (_decode(text) if text else {}).items():
            mine = latest.get(name)
            if mine is None or (held[1], held[2]) >= (mine[1], mine[2]):
                latest[name] = held
    traits = {
        name: {"value": value, "updated_at": _time(at), "source": source}
        for name, (value, at, _, source) in sorted(latest.items(), key=lambda item: (item[1][1], item[1][2]))
    }
    return Summary(count, _time(first), _time(last), traits)


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else _EPOCH + dt.timedelta(milliseconds=ms)


def rebuild(backend: Backend) -> int:
    """Fill ``profile_summary`` from the stored events (a store that has events from before it existed).

    For an empty ``profile_summary`` (``create_schema`` calls it when it creates the
    table). Profiles are done ``REBUILD_PROFILES`` at a time, by ranges of profile id,
    each pass one read of the events; returns the number of rows written.
    """
    ids = backend.query_arrow(
        f"SELECT DISTINCT profile_id FROM {EVENTS.name} WHERE profile_id IS NOT NULL ORDER BY profile_id"
    ).column(0)
    written = 0
    for start in range(0, len(ids), REBUILD_PROFILES):
        chunk = ids.slice(start, REBUILD_PROFILES)
        between = exp.column("profile_id").between(exp.Literal.string(chunk[0].as_py()), exp.Literal.string(chunk[-1].as_py()))
        written += _write_from_events(backend, between)
    return written


def summarise_again(backend: Backend, profile_ids: Sequence[str]) -> int:
    """Write these profile ids' rows anew from their stored events, after events of theirs were rewritten.

    The caller has deleted their old rows (erasure scrubs another person's identifiers
    out of events, and so out of traits, then calls this).
    """
    if not profile_ids:
        return 0
    return _write_from_events(backend, exp.column("profile_id").isin(*(exp.Literal.string(p) for p in profile_ids)))


def _write_from_events(backend: Backend, where: exp.Expr) -> int:
    events = backend.select(exp.select(*_COLUMNS).from_(EVENTS.name).where(where))
    rows = update(events, lambda _ids: PROFILE_SUMMARY.empty())
    if rows.num_rows:
        backend.insert(PROFILE_SUMMARY.name, rows)
    return rows.num_rows
