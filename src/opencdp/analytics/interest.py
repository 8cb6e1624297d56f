"""Current interest: which room (top category group) each profile is furnishing now.

The furniture-chain case: a customer furnishes one room at a time — kitchen set first,
then table and chairs — and marketing should follow. Every recent signal counts toward
the room of its category, weighted by what it is and by how recent it is:

    interest(room) = sum over signals of weight(kind) * 0.5 ** (age_days / half_life)

with purchases (online and in store, from order lines) weighing ``BUY``, cart adds
``ADD`` and product views ``VIEW``. The current room is the one with the most interest;
its share of all the profile's interest says how focused they are.

A room is *finished* when the profile has bought every core category of it (ever):
``Settings.analytics_core_categories`` lists them per room, else products whose
``attributes.core`` is true define them. The *next likely room* comes from what other
customers did: transitions between the rooms of consecutive first purchases ("after the
kitchen, the living room"), excluding rooms the profile has finished and the current one;
without any history the rooms' overall popularity as a first room decides.

``store`` writes ``interest_room``, ``interest_share``, ``interest_room_finished`` (1/0),
``interest_next_room`` and ``interest_finished_rooms`` as scores.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.analytics.sql import Engine, col, events_of, lit, order_lines
from opencdp.storage.base import Backend
from opencdp.storage.schema import PRODUCTS

BUY, ADD, VIEW = 3.0, 2.0, 1.0
VIEW_EVENTS = ("Product Viewed",)
ADD_EVENTS = ("Product Added",)


@dataclass(frozen=True)
class Settings:
    half_life_days: float = 30.0
    window_days: int = 180
    core: Mapping[str, Sequence[str]] | None = None
    """Room -> its core categories (full paths); None: from the catalogue's ``attributes.core``."""

    @classmethod
    def from_settings(cls, settings: Any) -> Settings:
        if settings is None:
            return cls()
        return cls(settings.analytics_interest_half_life_days, settings.analytics_interest_window_days,
                   settings.analytics_core_categories or None)  # fmt: skip


def signals_query(engine: Engine, now: dt.datetime, settings: Settings, *, keyed: bool = False) -> exp.Select:
    """``profile_id, room, interest`` per profile and room over the window (``keyed``: profiles as ``Engine.key``)."""
    start = now - dt.timedelta(days=settings.window_days)
    lines = order_lines(engine, start, now, keyed=keyed)
    bought = exp.select("profile_id", "ts", "category", exp.alias_(lit(BUY), "w")).from_(
        exp.alias_(exp.Subquery(this=lines), "l", table=True)
    )
    viewed = events_of(
        engine, (*VIEW_EVENTS, *ADD_EVENTS), start, now,
        extra=[
            exp.alias_(col("category", "e"), "category"),
            exp.alias_(exp.Case().when(exp.In(this=col("event", "e"), expressions=[lit(n) for n in ADD_EVENTS]), lit(ADD))
                       .else_(lit(VIEW)), "w"),
        ],
        keyed=keyed,
    )  # fmt: skip
    union = exp.union(bought, viewed, distinct=False)
    age = engine.days_between(col("ts"), engine.time(now))
    decay = exp.Pow(this=lit(0.5), expression=exp.Div(this=age, expression=lit(float(settings.half_life_days))))
    room = engine.room(col("category"))
    return (
        exp.select(col("profile_id"), exp.alias_(room, "room"), exp.alias_(exp.Sum(this=exp.Mul(this=col("w"), expression=decay)), "interest"))
        .from_(exp.alias_(exp.Subquery(this=union), "s", table=True))
        .where(exp.and_(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())),
                        exp.Not(this=exp.Is(this=room.copy(), expression=exp.Null()))))
        .group_by(col("profile_id"), exp.column("room"))
    )


def core_categories(backend: Backend, settings: Settings) -> dict[str, set[str]]:
    """Room -> its core categories."""
    from opencdp.analytics.sql import room_of

    if settings.core:
        return {room: set(cats) for room, cats in settings.core.items() if cats}
    engine = Engine(backend)
    flag = engine.json_text(col("attributes"), "core")
    query = (
        exp.select(exp.alias_(exp.Distinct(expressions=[col("category")]), "category"))
        .from_(backend.table_ref(PRODUCTS))
        .where(exp.In(this=exp.Lower(this=exp.Coalesce(this=flag, expressions=[lit("")])), expressions=[lit("true"), lit("1"), lit("yes")]))
    )
    found: dict[str, set[str]] = {}
    for row in backend.rows(query):
        room = room_of(row["category"])
        if room:
            found.setdefault(room, set()).add(row["category"])
    return found


def _room_firsts(backend: Backend, now: dt.datetime, *, keyed: bool = False) -> pa.Table:
    """``profile_id, room, first_ms``: when each profile first bought in each room (before ``now``)."""
    engine = Engine(backend)
    lines = exp.select(col("profile_id"), col("ts"), exp.alias_(engine.room(col("category")), "line_room")).from_(
        exp.alias_(exp.Subquery(this=order_lines(engine, None, now, keyed=keyed)), "l", table=True)
    )
    query = (
        exp.select(col("profile_id"), exp.alias_(col("line_room"), "room"), exp.alias_(engine.epoch_ms(exp.Min(this=col("ts"))), "first_ms"))
        .from_(exp.alias_(exp.Subquery(this=lines), "x", table=True))
        .where(exp.and_(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())),
                        exp.Not(this=exp.Is(this=col("line_room"), expression=exp.Null()))))
        .group_by(col("profile_id"), col("line_room"))
    )
    return backend.select(query)


def _finished(backend: Backend, now: dt.datetime, core: Mapping[str, set[str]], *, keyed: bool = False) -> dict[str, set[str]]:
    """Profile -> the rooms whose every core category it has bought (only those pairs leave the engine)."""
    if not core:
        return {}
    engine = Engine(backend)
    categories = sorted({c for cats in core.values() for c in cats})
    lines = (
        exp.select(col("profile_id"), exp.alias_(engine.room(col("category")), "line_room"), col("category"))
        .from_(exp.alias_(exp.Subquery(this=order_lines(engine, None, now, keyed=keyed)), "l", table=True))
        .where(exp.In(this=col("category"), expressions=[lit(c) for c in categories]))
    )
    needed = exp.Case()
    for room, cats in sorted(core.items()):
        needed = needed.when(col("line_room").eq(lit(room)), lit(len(cats)))
    counted = (
        exp.select(col("profile_id"), col("line_room"), exp.alias_(exp.Count(this=exp.Distinct(expressions=[col("category")])), "bought"),
                   exp.alias_(exp.Max(this=needed.else_(lit(-1))), "needed"))
        .from_(exp.alias_(exp.Subquery(this=lines), "x", table=True))
        .where(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())))
        .group_by(col("profile_id"), col("line_room"))
    )  # fmt: skip
    query = exp.select("profile_id", "line_room").from_(exp.alias_(exp.Subquery(this=counted), "c", table=True)).where(
        exp.EQ(this=col("bought"), expression=col("needed"))
    )
    table = backend.select(query)
    done: dict[str, set[str]] = {}
    for profile, room in zip(table.column("profile_id").to_pylist(), table.column("line_room").to_pylist(), strict=True):
        done.setdefault(str(profile), set()).add(str(room))
    return done


@dataclass
class Interest:
    profile_ids: list[str]
    room: list[str]
    share: list[float]
    finished: list[int]
    next_room: list[str | None]
    finished_rooms: list[str | None]
    transitions: dict[str, dict[str, float]]
    core: dict[str, list[str]]


def compute(backend: Backend, now: dt.datetime, settings: Settings | None = None, *, keyed: bool = False) -> Interest:
    """Every profile's current room, finished rooms and next room.

    ``keyed`` (for the report, which only counts): profiles are ``Engine.key`` integers, shown as
    text, instead of their ids — grouping millions of signals on integers is several times cheaper.
    """
    settings = settings or Settings.from_settings(backend.settings)
    engine = Engine(backend)
    scores = backend.select(signals_query(engine, now, settings, keyed=keyed))
    core = core_categories(backend, settings)
    firsts = _room_firsts(backend, now, keyed=keyed)
    done = _finished(backend, now, core, keyed=keyed)

    ordered = _ordered(firsts)
    transitions = _transitions(ordered)
    popularity = _first_rooms(ordered)

    # current room: the top interest per profile (ties: the room name, for a stable answer)
    ids: list[str] = []
    rooms: list[str] = []
    shares: list[float] = []
    if scores.num_rows:
        profile = _codes(scores.column("profile_id"))
        room_names = pc.dictionary_encode(scores.column("room").combine_chunks())
        room_rank = np.argsort(np.argsort(np.asarray(room_names.dictionary.to_pylist(), dtype=object)))
        room_code = np.asarray(room_names.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        interest = np.asarray(scores.column("interest").to_numpy(zero_copy_only=False), dtype=np.float64)
        order = np.lexsort((room_rank[room_code], -interest, profile))  # by profile, most interest, room name
        starts = np.flatnonzero(np.r_[True, profile[order][1:] != profile[order][:-1]])
        totals = np.add.reduceat(interest[order], starts)
        top = order[starts]
        ids = [str(p) for p in scores.column("profile_id").take(pa.array(top)).to_pylist()]
        rooms = [str(r) for r in room_names.dictionary.take(pa.array(room_code[top])).to_pylist()]
        shares = np.round(interest[top] / np.where(totals > 0, totals, 1.0), 4).tolist()
    # most profiles have finished no room: their next room follows from the current room alone;
    # the few with finished rooms are patched in by position
    plain = {room: _next(room, set(), transitions, popularity) for room in set(rooms)}
    nexts = [plain[room] for room in rooms]
    finished = [0] * len(ids)
    finished_rooms: list[str | None] = [None] * len(ids)
    if done and ids:
        owners = list(done)
        where = pc.index_in(pa.array(owners, pa.string()), value_set=pa.array(ids, pa.string())).to_pylist()
        for owner, i in zip(owners, where, strict=True):
            if i is None:
                continue
            rooms_done = done[owner]
            finished[i] = int(rooms[i] in rooms_done)
            finished_rooms[i] = ",".join(sorted(rooms_done))
            nexts[i] = _next(rooms[i], rooms_done, transitions, popularity)
    return Interest(ids, rooms, shares, finished, nexts, finished_rooms, transitions, {r: sorted(c) for r, c in core.items()})


def _codes(values: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """An integer per distinct value (hash-encoded: no sort of the text)."""
    encoded = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


Ordered = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], list[str]]


def _ordered(firsts: pa.Table) -> Ordered:
    """Profiles' first purchases per room in time order: (profile codes, room codes, room names)."""
    if not firsts.num_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), []
    pid = _codes(firsts.column("profile_id"))
    rooms = pc.dictionary_encode(firsts.column("room").combine_chunks())
    names = [str(r) for r in rooms.dictionary.to_pylist()]
    codes = np.asarray(rooms.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))
    first_ms = np.asarray(firsts.column("first_ms").to_numpy(zero_copy_only=False), dtype=np.int64)
    order = np.lexsort((rank[codes], first_ms, pid))
    return pid[order], codes[order], names


def _transitions(ordered: Ordered) -> dict[str, dict[str, float]]:
    """P(next room | room) from the order in which customers first bought in each room."""
    pid, room, names = ordered
    if not len(pid):
        return {}
    same = pid[1:] == pid[:-1]
    pairs = room[:-1][same] * len(names) + room[1:][same]
    codes, counts = np.unique(pairs, return_counts=True)
    found: dict[str, Counter[str]] = {}
    for code, n in zip(codes.tolist(), counts.tolist(), strict=True):
        found.setdefault(names[code // len(names)], Counter())[names[code % len(names)]] = n
    return {a: {b: round(n / sum(c.values()), 4) for b, n in c.most_common()} for a, c in sorted(found.items())}


def _first_rooms(ordered: Ordered) -> list[str]:
    """Rooms by how often they were a customer's first, most first."""
    pid, room, names = ordered
    if not len(pid):
        return []
    first = np.r_[True, pid[1:] != pid[:-1]]
    codes, counts = np.unique(room[first], return_counts=True)
    ranked = sorted(zip(codes.tolist(), counts.tolist(), strict=True), key=lambda kv: (-kv[1], names[kv[0]]))
    return [names[c] for c, _ in ranked]


def _next(room: str, finished: set[str], transitions: Mapping[str, Mapping[str, float]], popularity: Sequence[str]) -> str | None:
    skip = finished | {room}
    for candidate, _ in sorted(transitions.get(room, {}).items(), key=lambda kv: (-kv[1], kv[0])):
        if candidate not in skip:
            return candidate
    return next((r for r in popularity if r not in skip), None)


def store(backend: Backend, now: dt.datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Compute and store the interest scores; returns counts per current room."""
    from opencdp.profiles.scores import write_scores

    found = compute(backend, now, settings)
    version = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-interest"
    metrics = {"transitions": found.transitions, "core": found.core}
    ids = found.profile_ids
    for name, values, text in (
        ("interest_room", pa.array(found.room, pa.string()), "the room the profile is furnishing now"),
        ("interest_share", pa.array(found.share, pa.float64()), "share of the profile's recent interest in that room"),
        ("interest_room_finished", pa.array(found.finished, pa.int64()), "1 when every core item of that room was bought"),
        ("interest_next_room", pa.array(found.next_room, pa.string()), "the next likely room"),
        ("interest_finished_rooms", pa.array(found.finished_rooms, pa.string()), "rooms with every core item bought"),
    ):
        write_scores(backend, name, ids, values, model_version=version, metrics=metrics, description=text, at=now)
    return {"profiles": len(ids), "rooms": dict(Counter(found.room).most_common()), "finished": sum(found.finished)}


def profile_interest(backend: Backend, profile_ids: Sequence[str], now: dt.datetime, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Interest per room for a few profiles (all their rooms, not only the top one), for the report."""
    settings = settings or Settings.from_settings(backend.settings)
    engine = Engine(backend)
    query = signals_query(engine, now, settings)
    query = query.where(exp.In(this=col("profile_id"), expressions=[lit(p) for p in profile_ids]), append=True)
    rows = backend.rows(query)
    return sorted(({"profile_id": r["profile_id"], "room": r["room"], "interest": round(float(r["interest"]), 4)} for r in rows),
                  key=lambda r: (r["profile_id"], -r["interest"]))  # fmt: skip
