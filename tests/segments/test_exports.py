"""Members in and out on every engine: pages, exports, snapshots and uploaded lists."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pyarrow.parquet as pq
import pytest

from opencdp.segments import exports, membership, store
from opencdp.segments.ast import SegmentError
from opencdp.segments.store import SegmentNotFound
from opencdp.storage.base import Backend
from tests.segments.test_membership import NOW, load_events, orders, people


@pytest.fixture
def shop(backend: Backend) -> Backend:
    people(backend)
    segment, _ = store.save(backend, "buyers", definition='count("Order Completed") >= 1')
    membership.refresh(backend, segment, NOW)
    return backend


def test_pages_follow_the_profile_id(shop: Backend) -> None:
    first = exports.members_page(shop, "buyers", limit=2)
    assert [m["profile_id"] for m in first["members"]] == ["p1", "p2"] and first["next"] == "p2"
    last = exports.members_page(shop, "buyers", limit=2, cursor=first["next"])
    assert [m["profile_id"] for m in last["members"]] == ["p5"] and last["next"] is None
    with pytest.raises(SegmentNotFound):
        exports.members_page(shop, "nope")


@pytest.mark.parametrize("page", [1, 2, 100])
def test_exports_read_back_the_same_in_every_format(shop: Backend, page: int) -> None:
    csv_rows = list(csv.DictReader(io.StringIO(b"".join(exports.export(shop, "buyers", "csv", page=page)).decode())))
    jsonl_rows = [json.loads(line) for line in b"".join(exports.export(shop, "buyers", "jsonl", page=page)).decode().splitlines()]
    table = pq.read_table(io.BytesIO(b"".join(exports.export(shop, "buyers", "parquet", page=page))))
    assert [r["profile_id"] for r in csv_rows] == [r["profile_id"] for r in jsonl_rows] == table.column("profile_id").to_pylist() == ["p1", "p2", "p5"]
    assert csv_rows[0]["since"] == jsonl_rows[0]["since"]
    assert table.schema.field("since").type.tz == "UTC"


def test_an_empty_segment_exports_a_header_or_nothing(shop: Backend) -> None:
    store.save(shop, "nobody", definition="count() > 1000")
    assert b"".join(exports.export(shop, "nobody", "csv")) == b"profile_id,since\n"
    assert b"".join(exports.export(shop, "nobody", "jsonl")) == b""
    assert pq.read_table(io.BytesIO(b"".join(exports.export(shop, "nobody", "parquet")))).num_rows == 0


def test_identifiers_come_from_the_graph_and_can_be_masked(shop: Backend) -> None:
    found = exports.identifiers(shop, ["p1", "p2", "p5"])
    assert found["p1"] == {"email": "anna@example.ru", "phone": "+79161234567", "user_id": "u1"}
    assert found["p5"] == {"email": None, "phone": None, "user_id": None}
    masked = exports.identifiers(shop, ["p1"], mask=True)["p1"]
    assert masked["email"] == "a***@example.ru" and masked["phone"] == "+7916*****67" and masked["user_id"] == "u1"


def test_snapshot_is_frozen(shop: Backend) -> None:
    found = exports.snapshot(shop, "buyers", "buyers_then", now=NOW)
    assert found["kind"] == "static" and found["size"] == 3 and "snapshot of `buyers`" in found["description"]
    load_events(shop, orders("p3", 1, start=50))
    segment = store.get(shop, "buyers")
    assert segment is not None
    assert membership.refresh(shop, segment, NOW + dt.timedelta(minutes=1)).size == 4
    frozen = store.get(shop, "buyers_then")
    assert frozen is not None and membership.refresh(shop, frozen, NOW + dt.timedelta(minutes=1)).size == 3
    assert membership.stored_members(shop, "buyers_then") == {"p1", "p2", "p5"}
    with pytest.raises(exports.SegmentExists):
        exports.snapshot(shop, "buyers", "buyers_then")


def test_upload_normalises_and_reports_every_unmatched_row(shop: Backend) -> None:
    data = "\ufeffEmail\nAnna@Example.RU\nnull\nvera@example.ru\nvera@example.ru\nnot-an-email\n,\n\n"
    report = exports.upload(shop, "vip", data.encode(), "email", name="VIP")
    assert report.segment["size"] == 2 and report.segment["kind"] == "uploaded" and report.segment["name"] == "VIP"
    assert [(u.line, u.value, u.reason) for u in report.unmatched] == [
        (3, "null", "a placeholder, not a real email"),
        (6, "not-an-email", "not a valid email"),
    ]  # blank lines (7, 8) are not rows
    assert (report.rows, report.matched) == (5, 3)
    assert report.rows == report.matched + len(report.unmatched)
    assert membership.stored_members(shop, "vip") == {"p1", "p3"}
    entered = shop.rows("SELECT profile_id FROM events WHERE event = 'Segment Entered' AND properties LIKE '%\"vip\"%' ORDER BY profile_id")
    assert [r["profile_id"] for r in entered] == ["p1", "p3"]


def test_upload_of_a_column_by_header_among_several(shop: Backend) -> None:
    data = b"name,user_id\nAnna,u1\nNobody,u404\n"
    report = exports.upload(shop, "by_user", data, "user_id")
    assert report.segment["size"] == 1 and [(u.line, u.value) for u in report.unmatched] == [(3, "u404")]


def test_upload_refuses_what_it_cannot_read(shop: Backend) -> None:
    with pytest.raises(SegmentError, match="identifier"):
        exports.upload(shop, "x", b"a\n", "fax")
    with pytest.raises(SegmentError, match="no rows"):
        exports.upload(shop, "x", b"\n\n", "email")
    with pytest.raises(SegmentError, match="UTF-8"):
        exports.upload(shop, "x", "анна@пример.рф".encode("cp1251"), "email")
    with pytest.raises(exports.SegmentExists):
        exports.upload(shop, "buyers", b"anna@example.ru\n", "email")
    assert store.get(shop, "x") is None


def test_preview_does_not_store(shop: Backend) -> None:
    found = exports.preview(shop, 'traits.city = "Kazan"', sample=1, now=NOW)
    assert found["size"] == 2 and found["sample"] == ["p1"] and found["text"] == 'traits.city = "Kazan"'
    assert [s.segment_id for s in store.list_segments(shop)] == ["buyers"]
