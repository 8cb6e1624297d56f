"""RFM scoring and lifecycle cells, on orders or on message engagement.

Recency, frequency and monetary value are measured per canonical profile in the engine
(one group-by over the order events); scoring and naming happen in numpy:

* each measure gets a score 1..5 from four ascending cut points, either the 20/40/60/80 %
  quantiles of this run (``method="quantile"``) or fixed thresholds a shop sets
  (``Settings.analytics_rfm_thresholds``). A value equal to a cut point falls in the lower
  class; recency is reversed (few days since the last order is a 5). With quantiles many
  one-order customers tie at the lowest cut point of F: they all score 1, as they should.
* the R x F grid is named with the usual lifecycle cells (``CELLS``);
* ``score`` stores ``<prefix>_r/_f/_m`` (numbers), ``<prefix>_score`` ("545") and
  ``<prefix>_cell`` ("champions") as scores, i.e. as computed traits a segment can use:
  ``computed.rfm_cell = "at_risk"``;
* a profile whose cell differs from the stored one gets an ``RFM Cell Changed`` event
  (``properties.from`` / ``properties.to``), so a trigger can react to "became at risk"
  (``to = "at_risk"``). The first run only sets the baseline: there is no previous cell
  to compare with, so it writes no events (a profile scored for the first time later
  gets one with ``from`` null).

Engagement RFM is the same on ``Email Opened`` / ``Email Link Clicked`` / ``SMS Link
Clicked`` / ``Push Opened``: R = days since the last open or click, F = opens and clicks,
M = clicks (prefix ``engagement``, event ``Engagement Cell Changed``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlglot import exp

from opencdp.analytics.params import ReportError
from opencdp.analytics.sql import Engine, col, events_of, lit, orders
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, RFM_RUNS

# (cell, R scores, F scores): every one of the 25 R x F cells has exactly one name.
CELLS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential_loyal", (4, 5), (2, 3)),
    ("new", (5,), (1,)),
    ("promising", (4,), (1,)),
    ("need_attention", (3,), (2, 3)),
    ("about_to_sleep", (3,), (1,)),
    ("at_risk", (1, 2), (3, 4)),
    ("cant_lose", (1, 2), (5,)),
    ("hibernating", (2,), (1, 2)),
    ("lost", (1,), (1, 2)),
)
CELL_LABELS = {
    "champions": "Champions (VIP)", "loyal": "Loyal", "potential_loyal": "Potential loyalists", "new": "New",
    "promising": "Promising", "need_attention": "Need attention", "about_to_sleep": "About to sleep",
    "at_risk": "At risk", "cant_lose": "Can't lose them", "hibernating": "Hibernating", "lost": "Lost",
}  # fmt: skip
_GRID = np.empty((6, 6), dtype=object)
for _name, _rs, _fs in CELLS:
    for _r in _rs:
        for _f in _fs:
            _GRID[_r, _f] = _name

_CELL_INDEX = np.zeros(36, dtype=np.int64)
"""The index in ``CELLS`` of each R x F square, numbered r * 6 + f."""
for _i, (_name, _rs, _fs) in enumerate(CELLS):
    for _r in _rs:
        for _f in _fs:
            _CELL_INDEX[_r * 6 + _f] = _i

DEFAULT_THRESHOLDS: dict[str, list[float]] = {
    "r": [30, 90, 180, 365],
    "f": [1, 2, 3, 5],
    "m": [5_000, 15_000, 40_000, 100_000],
}
ENGAGEMENT_EVENTS = ("Email Opened", "Email Link Clicked", "SMS Link Clicked", "Push Opened")
CLICK_EVENTS = ("Email Link Clicked", "SMS Link Clicked")
KINDS = ("orders", "engagement")
METHODS = ("quantile", "fixed")


@dataclass(frozen=True)
class Kind:
    """What is measured: orders (RFM) or engagement with messages."""

    name: str
    prefix: str
    """Score names: ``<prefix>_cell``, ``<prefix>_r`` ..."""
    event: str
    """The event written when a profile changes cell."""


ORDERS = Kind("orders", "rfm", "RFM Cell Changed")
ENGAGEMENT = Kind("engagement", "engagement", "Engagement Cell Changed")


def kind_of(name: str) -> Kind:
    if name == "orders":
        return ORDERS
    if name == "engagement":
        return ENGAGEMENT
    raise ReportError(f"`kind` must be one of {', '.join(KINDS)}, not {name!r}", field="kind")


@dataclass(frozen=True)
class Scoring:
    """How measures become 1..5 scores."""

    method: str = "quantile"
    thresholds: Mapping[str, Sequence[float]] = field(default_factory=lambda: DEFAULT_THRESHOLDS)
    window_days: int | None = None
    """Only orders (engagement events) of the last so many days; None: all history."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ReportError(f"`method` must be one of {', '.join(METHODS)}, not {self.method!r}", field="method")
        for key in ("r", "f", "m"):
            cuts = list(self.thresholds.get(key, DEFAULT_THRESHOLDS[key]))
            if len(cuts) != 4 or any(b < a for a, b in itertools.pairwise(cuts)):
                raise ReportError(
                    f"thresholds for `{key}` must be 4 ascending cut points (e.g. {DEFAULT_THRESHOLDS[key]}), not {cuts}",
                    field=f"thresholds.{key}",
                )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> Scoring:
        values: dict[str, Any] = {}
        if settings is not None:
            values = {
                "method": settings.analytics_rfm_method,
                "thresholds": settings.analytics_rfm_thresholds or DEFAULT_THRESHOLDS,
                "window_days": settings.analytics_rfm_window_days,
            }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class Scored:
    """Per-profile measures, scores and cells of one run (numpy columns, aligned)."""

    profile_ids: pa.Array
    recency: npt.NDArray[np.float64]
    frequency: npt.NDArray[np.float64]
    monetary: npt.NDArray[np.float64]
    r: npt.NDArray[np.int64]
    f: npt.NDArray[np.int64]
    m: npt.NDArray[np.int64]
    cuts: dict[str, list[float]]

    @property
    def cells(self) -> npt.NDArray[Any]:
        return _GRID[self.r, self.f] if len(self.r) else np.array([], dtype=object)

    def __len__(self) -> int:
        return len(self.profile_ids)


def measures_query(
    engine: Engine, kind: Kind, now: dt.datetime, window_days: int | None, *, keyed: bool = False
) -> exp.Select:
    """Per-profile measures; ``keyed``: profiles as ``Engine.key`` (for counts, when no id is kept)."""
    start = now - dt.timedelta(days=window_days) if window_days else None
    if kind is ORDERS:
        source = orders(engine, start, now, keyed=keyed)
        money = exp.Sum(this=col("amount"))
    else:
        clicked = exp.In(this=col("event", "e"), expressions=[lit(n) for n in CLICK_EVENTS])
        source = events_of(
            engine, ENGAGEMENT_EVENTS, start, now,
            extra=[exp.alias_(exp.Case().when(clicked, lit(1.0)).else_(lit(0.0)), "amount")], keyed=keyed,
        )  # fmt: skip
        money = exp.Sum(this=col("amount"))
    return (
        exp.select(
            col("profile_id"),
            exp.alias_(engine.days_between(exp.Max(this=col("ts")), engine.time(now)), "recency"),
            exp.alias_(exp.cast(exp.Count(this=exp.Star()), exp.DataType.build("DOUBLE")), "frequency"),
            exp.alias_(exp.Coalesce(this=money, expressions=[lit(0.0)]), "monetary"),
        )
        .from_(exp.alias_(exp.Subquery(this=source), "o", table=True))
        .where(exp.Not(this=exp.Is(this=col("profile_id"), expression=exp.Null())))
        .group_by(col("profile_id"))
    )


def measure(backend: Backend, kind: Kind, now: dt.datetime, scoring: Scoring, *, keyed: bool = False) -> pa.Table:
    """``profile_id, recency (days), frequency, monetary`` of every profile with orders (engagement)."""
    engine = Engine(backend)
    return backend.select(measures_query(engine, kind, now, scoring.window_days, keyed=keyed))


def score(table: pa.Table, scoring: Scoring) -> Scored:
    """Scores 1..5 and cut points for measured profiles."""
    recency = _floats(table, "recency")
    frequency = _floats(table, "frequency")
    monetary = _floats(table, "monetary")
    cuts: dict[str, list[float]] = {}
    for key, values in (("r", recency), ("f", frequency), ("m", monetary)):
        if scoring.method == "quantile":
            cuts[key] = [float(x) for x in np.quantile(values, [0.2, 0.4, 0.6, 0.8])] if len(values) else []
        else:
            cuts[key] = [float(x) for x in scoring.thresholds.get(key, DEFAULT_THRESHOLDS[key])]
    return Scored(
        table.column("profile_id").combine_chunks() if table.num_rows else pa.array([], pa.string()),
        recency, frequency, monetary,
        5 - _above(recency, cuts["r"]), 1 + _above(frequency, cuts["f"]), 1 + _above(monetary, cuts["m"]),
        cuts,
    )  # fmt: skip


def _floats(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64) if table.num_rows else np.zeros(0)


def _above(values: npt.NDArray[np.float64], cuts: Sequence[float]) -> npt.NDArray[np.int64]:
    """How many cut points each value is strictly above (0..4)."""
    if not len(cuts):
        return np.zeros(len(values), dtype=np.int64)
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="left").astype(np.int64)


# -- storing scores and cell changes ---------------------------------------------------------------


@dataclass
class Run:
    kind: str
    profiles: int
    cells: dict[str, int]
    cuts: dict[str, list[float]]
    changes: int
    changed_to: dict[str, int]
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run(
    backend: Backend,
    now: dt.datetime,
    *,
    kind: str = "orders",
    scoring: Scoring | None = None,
) -> Run:
    """Score every profile, write cell-change events, then store the new scores."""
    from opencdp.profiles.scores import read_scores, score_info, write_scores

    which = kind_of(kind)
    scoring = scoring or Scoring.from_settings(backend.settings)
    scored = score(measure(backend, which, now, scoring), scoring)
    cells = scored.cells
    cell_name = f"{which.prefix}_cell"
    had_baseline = score_info(backend, cell_name) is not None
    previous = read_scores(backend, cell_name)
    before = dict(zip(previous.column("profile_id").to_pylist(), previous.column("value").to_pylist(), strict=True))
    ids = scored.profile_ids.to_pylist()
    changed = [
        (pid, before.get(pid), str(cell), i)
        for i, (pid, cell) in enumerate(zip(ids, cells, strict=True))
        if before.get(pid) != cell
    ] if had_baseline else []  # fmt: skip
    if changed:
        _write_changes(backend, which, changed, scored, now)
    version = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S") + f"-{which.prefix}"
    counts = dict(sorted(_counts(cells).items()))
    metrics = {"cuts": scored.cuts, "method": scoring.method, "window_days": scoring.window_days, "cells": counts}
    label = "orders" if which is ORDERS else "message engagement"
    for suffix, values, text in (
        ("r", scored.r, "recency score 1-5"),
        ("f", scored.f, "frequency score 1-5"),
        ("m", scored.m, "monetary score 1-5"),
    ):
        write_scores(backend, f"{which.prefix}_{suffix}", scored.profile_ids, pa.array(values, pa.int64()),
                     model_version=version, metrics=metrics, description=f"RFM on {label}: {text}", at=now)  # fmt: skip
    digits = [f"{r}{f}{m}" for r, f, m in zip(scored.r.tolist(), scored.f.tolist(), scored.m.tolist(), strict=True)]
    write_scores(backend, f"{which.prefix}_score", scored.profile_ids, pa.array(digits, pa.string()),
                 model_version=version, metrics=metrics, description=f"RFM on {label}: R, F and M digits", at=now)  # fmt: skip
    write_scores(backend, cell_name, scored.profile_ids, pa.array(cells.tolist(), pa.string()), model_version=version,
                 metrics=metrics, description=f"RFM on {label}: lifecycle cell ({', '.join(CELL_LABELS)})", at=now)  # fmt: skip
    result = Run(
        which.name, len(scored), counts, scored.cuts, len(changed), dict(sorted(_counts([c[2] for c in changed]).items())), version
    )
    backend.insert(RFM_RUNS.name, pa.Table.from_pylist([{
        "kind": which.name, "at": now, "model_version": version, "profiles": len(scored), "cells": json.dumps(counts),
        "cuts": json.dumps(scored.cuts), "changes": len(changed), "changed_to": json.dumps(result.changed_to),
    }], schema=RFM_RUNS.arrow_schema))  # fmt: skip
    return result


def history(backend: Backend, kind: str = "orders", since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Earlier scoring runs: cell sizes and changes per run, oldest first."""
    if not backend.column_names(RFM_RUNS.name):  # a store opened read-only, created before this table
        return []
    engine = Engine(backend)
    conditions: list[exp.Expr] = [col("kind").eq(lit(kind_of(kind).name))]
    if since is not None:
        conditions.append(exp.GTE(this=col("at"), expression=engine.time(since)))
    query = (
        exp.select(exp.alias_(engine.epoch_ms(col("at")), "at_ms"), "profiles", "cells", "changes", "changed_to")
        .from_(backend.table_ref(RFM_RUNS))
        .where(exp.and_(*conditions))
        .order_by("at_ms")
    )
    return [
        {"at": dt.datetime.fromtimestamp(int(r["at_ms"]) / 1000, dt.UTC).isoformat(), "profiles": int(r["profiles"]),
         "cells": json.loads(r["cells"]), "changes": int(r["changes"]), "changed_to": json.loads(r["changed_to"] or "{}")}
        for r in backend.rows(query)
    ]  # fmt: skip


def _counts(values: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for value in values:
        found[str(value)] = found.get(str(value), 0) + 1
    return found


def _write_changes(
    backend: Backend, kind: Kind, changed: list[tuple[str, str | None, str, int]], scored: Scored, now: dt.datetime
) -> None:
    """One ``<kind> Cell Changed`` event per change; the id is stable for (kind, profile, from, to, run time),
    so writing the same run again adds nothing (the load skips known message ids)."""
    stamp = hashlib.sha1(f"{kind.event}|{now.astimezone(dt.UTC).isoformat()}".encode()).hexdigest()[:16]
    message_ids, profiles, properties = [], [], []
    for pid, old, new, i in changed:
        message_ids.append(f"cell-{stamp}:{pid}:{old or ''}>{new}")
        profiles.append(pid)
        properties.append(json.dumps({
            "score": f"{kind.prefix}_cell", "from": old, "to": new,
            "r": int(scored.r[i]), "f": int(scored.f[i]), "m": int(scored.m[i]),
        }))  # fmt: skip
    n = len(profiles)
    received = dt.datetime.now(dt.UTC)
    events = EVENTS.filled(
        n,
        message_id=pa.array(message_ids, pa.string()),
        type="track", event=kind.event, timestamp=now, received_at=received,
        source="analytics", channel="system", properties=pa.array(properties, pa.string()), lsn=0,
        profile_id=pa.array(profiles, pa.string()),
    )  # fmt: skip
    backend.record_events(LoadBatch(events, ORDER_LINES.empty(), dedupe_since=min(now, received) - dt.timedelta(days=1)))


# -- the R x F matrix report -------------------------------------------------------------------------------


def matrix(backend: Backend, now: dt.datetime, *, kind: str = "orders", scoring: Scoring | None = None) -> dict[str, Any]:
    """Counts and value per R x F cell, and per named cell (computed now, nothing stored)."""
    which = kind_of(kind)
    scoring = scoring or Scoring.from_settings(backend.settings)
    scored = score(measure(backend, which, now, scoring, keyed=True), scoring)
    # counts and sums per R x F square and per named cell, a bincount each (not a mask per cell)
    square = scored.r * 6 + scored.f
    per_square = np.bincount(square, minlength=36)
    value_per_square = np.bincount(square, weights=scored.monetary, minlength=36)
    grid: list[dict[str, Any]] = []
    for r in range(5, 0, -1):
        for f in range(1, 6):
            grid.append({"r": r, "f": f, "cell": str(_GRID[r, f]), "profiles": int(per_square[r * 6 + f]),
                         "value": round(float(value_per_square[r * 6 + f]), 2)})  # fmt: skip
    names = [name for name, _, _ in CELLS]
    cell = _CELL_INDEX[square] if len(square) else np.zeros(0, dtype=np.int64)
    sums = {
        what: np.bincount(cell, weights=values, minlength=len(names))
        for what, values in (("value", scored.monetary), ("recency", scored.recency), ("frequency", scored.frequency))
    }
    counts = np.bincount(cell, minlength=len(names))
    named = []
    for i, name in enumerate(names):
        count = int(counts[i])
        named.append({
            "cell": name, "label": CELL_LABELS[name], "profiles": count,
            "share": round(count / len(scored), 4) if len(scored) else 0.0,
            "value": round(float(sums["value"][i]), 2),
            "avg_recency_days": round(float(sums["recency"][i] / count), 1) if count else None,
            "avg_frequency": round(float(sums["frequency"][i] / count), 2) if count else None,
        })  # fmt: skip
    return {
        "grid": grid, "cells": named, "cuts": scored.cuts, "profiles": len(scored),
        "value_name": "revenue" if which is ORDERS else "clicks",
    }  # fmt: skip
