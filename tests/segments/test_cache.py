"""The real-time evaluator's in-memory rows of active profiles, on every engine: copied once,
then kept current from observed events; merges, repeats, eviction and order lines."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from opencdp.segments import membership
from opencdp.segments.cache import ProfileCache
from opencdp.segments.store import Segment
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES, PROFILE_MAP, SEGMENT_MEMBERS
from tests.segments.test_membership import NOW, event, table_of


def mapped(backend: Backend, *pairs: tuple[str, str], at: dt.datetime = NOW) -> None:
    rows = [{"profile_id": p, "canonical_id": c, "updated_at": at} for p, c in pairs]
    backend.upsert(PROFILE_MAP, table_of(PROFILE_MAP.arrow_schema, rows))


def stored(backend: Backend, rows: list[dict[str, Any]], lines: list[dict[str, Any]] | None = None) -> pa.Table:
    events = table_of(EVENTS.arrow_schema, rows)
    backend.load(LoadBatch(events, table_of(ORDER_LINES.arrow_schema, lines or [])))
    return events


def kept(cache: ProfileCache, *canonical: str) -> list[str]:
    target = ProfileCache(cache.backend).store  # an empty store of the same tables
    cache.extract(canonical, target)
    return sorted(target.current(EVENTS).column("message_id").to_pylist())


def test_copied_once_then_kept_current_from_observed_events(backend: Backend) -> None:
    mapped(backend, ("a", "a"), ("b", "b"))
    stored(backend, [event("a1", "a", "Product Viewed"), event("b1", "b", "Product Viewed")])
    cache = ProfileCache(backend)
    cache.sync({"a": "a"}, [], {"a"})
    assert kept(cache, "a") == ["a1"] and cache.copied == 1

    line = {"message_id": "a2", "line_no": 0, "timestamp": NOW, "event": "Order Completed", "channel": "web", "product_id": "chair", "profile_id": "a"}
    new = stored(backend, [event("a2", "a", "Order Completed", at=NOW)], [line])
    cache.sync({"a": "a"}, [new], {"a"})
    assert kept(cache, "a") == ["a1", "a2"] and cache.copied == 1  # added, not copied again
    lines = ProfileCache(backend).store
    cache.extract({"a"}, lines)
    assert lines.current(ORDER_LINES).column("product_id").to_pylist() == ["chair"]

    cache.sync({"a": "a"}, [new], {"a"})  # the same event observed twice (a retry) is kept once
    assert kept(cache, "a") == ["a1", "a2"]


def test_a_merge_into_a_resident_profile_copies_it_again(backend: Backend) -> None:
    mapped(backend, ("a", "a"), ("anon", "anon"))
    stored(backend, [event("a1", "a", "Product Viewed"), event("n1", "anon", "Product Viewed")])
    cache = ProfileCache(backend)
    cache.sync({"a": "a", "anon": "anon"}, [], {"a", "anon"})
    mapped(backend, ("anon", "a"), at=NOW + dt.timedelta(seconds=1))  # anon logs in as a
    new = stored(backend, [event("a2", "a", "Product Viewed", at=NOW)])
    cache.sync({"a": "a"}, [new], {"a"})  # only a's event was observed: the member list shows the merge
    assert kept(cache, "a") == ["a1", "a2", "n1"]
    assert "anon" not in cache.resident


def test_least_recently_used_profiles_are_dropped(backend: Backend) -> None:
    mapped(backend, *((p, p) for p in "abc"))
    stored(backend, [event(f"{p}1", p, "Product Viewed") for p in "abc"])
    cache = ProfileCache(backend, max_profiles=2)
    for p in "abc":
        cache.sync({p: p}, [], {p})
    assert list(cache.resident) == ["b", "c"] and kept(cache, "a") == []
    cache.sync({"a": "a"}, [], {"a"})
    assert kept(cache, "a") == ["a1"] and list(cache.resident) == ["c", "a"]


def test_an_old_copy_is_copied_again(backend: Backend) -> None:
    mapped(backend, ("a", "a"))
    stored(backend, [event("a1", "a", "Product Viewed")])
    cache = ProfileCache(backend, max_age_s=0.0)
    cache.sync({"a": "a"}, [], {"a"})
    stored(backend, [event("a2", "a", "Product Viewed")])  # written around the loader (an import): not observed
    cache.sync({"a": "a"}, [], {"a"})
    assert kept(cache, "a") == ["a1", "a2"] and cache.copied == 2


def test_memberships_are_copied_and_kept_current_from_every_write(backend: Backend) -> None:
    mapped(backend, ("a", "a"), ("b", "b"))
    stored(backend, [event("a1", "a", "Product Viewed"), event("b1", "b", "Product Viewed")])
    vip = Segment("vip", "vip", "", None)
    membership.write_changes(backend, vip, membership.Change("vip", entered=["a"]), NOW, "")
    cache = ProfileCache(backend)
    cache.sync({"a": "a", "b": "b"}, [], {"a", "b"})

    def members() -> list[tuple[str, str, bool]]:
        target = ProfileCache(backend).store
        cache.extract({"a", "b"}, target)
        return sorted((r["segment_id"], r["profile_id"], r["member"]) for r in target.current(SEGMENT_MEMBERS).to_pylist())

    assert members() == [("vip", "a", True)]  # copied with the profile
    later = NOW + dt.timedelta(seconds=1)  # an API refresh or a scheduled one: written around real time
    membership.write_changes(backend, vip, membership.Change("vip", entered=["b"], exited=["a"]), later, "refresh")
    assert members() == [("vip", "a", False), ("vip", "b", True)]
    assert cache.copied == 2  # kept current, not copied again
