"""profile_summary, the events' index by profile: kept by ``load`` on both engines, equal to a scan of the events."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pyarrow as pa
import pytest

from opencdp.storage import profile_summary
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_SUMMARY

T0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)


def event(message_id: str, profile_id: str | None, minutes: int, traits: dict[str, Any] | str | None = None,
          source: str = "web", lsn: int = 0) -> dict[str, Any]:
    at = T0 + dt.timedelta(minutes=minutes)
    text = json.dumps(traits) if isinstance(traits, dict) else traits
    return {"message_id": message_id, "type": "identify" if traits else "track", "event": "" if traits else "Product Viewed",
            "timestamp": at, "received_at": T0, "source": source, "channel": "web", "lsn": lsn,
            "profile_id": profile_id, "traits": text}


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{c: r.get(c) for c in EVENTS.arrow_schema.names} for r in rows], schema=EVENTS.arrow_schema)


def load(backend: Backend, rows: list[dict[str, Any]]) -> int:
    return backend.load(LoadBatch(table(rows), ORDER_LINES.empty())).inserted


def summary_of(backend: Backend, *profile_ids: str) -> profile_summary.Summary:
    ids = ", ".join(f"'{p}'" for p in profile_ids)
    rows = backend.rows(
        "SELECT events, first_seen, last_seen, traits FROM profile_summary "
        + ("FINAL " if backend.capabilities.dialect == "clickhouse" else "")
        + f"WHERE profile_id IN ({ids})"
    )
    return profile_summary.combine(
        (r["events"], _ms(r["first_seen"]), _ms(r["last_seen"]), r["traits"]) for r in rows
    )


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def scanned(backend: Backend, *profile_ids: str) -> profile_summary.Summary:
    """What a scan of the events gives: the reference the summary must equal."""
    ids = ", ".join(f"'{p}'" for p in profile_ids)
    rows = backend.rows(f"SELECT timestamp, message_id, traits, source FROM events WHERE profile_id IN ({ids})")
    rows.sort(key=lambda r: (r["timestamp"], r["message_id"]))
    traits: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            values = json.loads(row["traits"]) if row["traits"] else {}
        except ValueError:
            continue
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            traits.pop(name, None)
            traits[name] = {"value": value, "updated_at": row["timestamp"], "source": row["source"]}
    times = [r["timestamp"] for r in rows]
    return profile_summary.Summary(len(rows), min(times, default=None), max(times, default=None), traits)


def test_load_keeps_counts_times_and_latest_traits(backend: Backend) -> None:
    assert load(backend, [
        event("m1", "p1", 10, {"city": "Казань", "name": "Анна"}),
        event("m2", "p1", 5),
        event("m3", "p2", 7, {"city": "Омск"}),
        event("m4", None, 1),  # no profile: in no summary
    ]) == 4
    # Later batches: an older identify (arrives late) does not overwrite a newer value; a retried event counts once.
    assert load(backend, [
        event("m5", "p1", 2, {"city": "Пермь", "phone": "+79160000001"}, source="import:customers"),
        event("m1", "p1", 10, {"city": "Казань", "name": "Анна"}),
        event("m6", "p1", 30, {"name": "Анна Петровна"}, source="app"),
    ]) == 2
    got = summary_of(backend, "p1")
    assert (got.events, got.first_seen, got.last_seen) == (4, T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=30))
    assert {k: v["value"] for k, v in got.traits.items()} == {"city": "Казань", "name": "Анна Петровна", "phone": "+79160000001"}
    assert got.traits["phone"]["source"] == "import:customers" and got.traits["name"]["source"] == "app"
    assert got == scanned(backend, "p1")
    assert summary_of(backend, "p2") == scanned(backend, "p2")
    assert backend.scalar("SELECT count(DISTINCT profile_id) FROM profile_summary") == 2


def test_repeats_inside_one_batch_count_once(backend: Backend) -> None:
    load(backend, [event("m1", "p1", 1, {"tier": "gold"}, lsn=5), event("m1", "p1", 1, {"tier": "gold"}, lsn=9), event("m2", "p1", 2)])
    assert summary_of(backend, "p1").events == 2 == scanned(backend, "p1").events


def test_merged_ids_combine_and_bad_traits_are_skipped(backend: Backend) -> None:
    load(backend, [
        event("a1", "p_old", 1, {"email": "anna@example.ru", "city": "Казань"}),
        event("b1", "p_new", 3, {"city": "Москва"}),
        event("b2", "p_new", 4, "{not json"),
        event("b3", "p_new", 5, '["a list"]'),
    ])
    got = summary_of(backend, "p_old", "p_new")
    assert got.events == 4 and {k: v["value"] for k, v in got.traits.items()} == {"email": "anna@example.ru", "city": "Москва"}
    assert got == scanned(backend, "p_old", "p_new")


def test_random_batches_equal_a_scan_and_rebuild_gives_the_same(backend: Backend) -> None:
    rng = random.Random(7)
    profiles = [f"p{i}" for i in range(12)]
    sent: list[dict[str, Any]] = []
    for batch in range(6):
        rows = []
        for n in range(25):
            traits = {rng.choice("abc"): rng.randrange(5)} if rng.random() < 0.4 else None
            rows.append(event(f"m{batch}-{n}", rng.choice(profiles), rng.randrange(500), traits, source=f"s{batch}"))
        rows += rng.sample(sent, min(5, len(sent)))  # retries of earlier events
        sent += rows
        load(backend, rows)
    for profile_id in profiles:
        assert summary_of(backend, profile_id) == scanned(backend, profile_id), profile_id
    incremental = backend.rows("SELECT profile_id, events, traits FROM profile_summary"
                               + (" FINAL" if backend.capabilities.dialect == "clickhouse" else "") + " ORDER BY profile_id")
    backend.execute("TRUNCATE TABLE profile_summary")
    assert profile_summary.rebuild(backend) == len(profiles)
    rebuilt = backend.rows("SELECT profile_id, events, traits FROM profile_summary ORDER BY profile_id")
    assert [(r["profile_id"], r["events"], json.loads(r["traits"] or "{}")) for r in rebuilt] == [
        (r["profile_id"], r["events"], json.loads(r["traits"] or "{}")) for r in incremental
    ]


def test_create_schema_fills_a_new_summary_from_stored_events(backend: Backend) -> None:
    backend.insert(EVENTS.name, table([event("m1", "p1", 1, {"city": "Казань"}), event("m2", "p1", 2)]))  # as before the table existed
    backend.execute("DROP TABLE profile_summary")
    backend.create_schema()
    assert backend.scalar(f"SELECT count(*) FROM {PROFILE_SUMMARY.name}") == 1
    assert summary_of(backend, "p1") == scanned(backend, "p1")


def test_a_failed_load_leaves_neither_events_nor_summary(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    load(backend, [event("m1", "p1", 1, {"city": "Казань"})])
    if not backend.capabilities.transactions:
        return  # ClickHouse: no transactions; the summary insert follows the events insert (see clickhouse/backend.py)

    def broken(name: str, position: int) -> pa.Table:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(backend, "checkpoint_table", broken)
    with pytest.raises(RuntimeError, match="disk is full"):
        backend.load(LoadBatch(table([event("m2", "p1", 2, {"city": "Омск"})]), ORDER_LINES.empty()), ("loader", 7))
    got = summary_of(backend, "p1")
    assert got.events == 1 and got.traits["city"]["value"] == "Казань" and got == scanned(backend, "p1")
