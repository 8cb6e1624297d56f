"""Reports, RFM, cohorts, interest and BI export on both engines, against the hand-built shop.

Expected figures are written out by hand or computed here in plain Python from
``dataset.ORDERS`` / ``dataset.OTHER`` — never by running the report's SQL again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from fastapi.testclient import TestClient

from opencdp.analytics import cohorts, export, interest, rfm, views
from opencdp.analytics.params import Period, ReportError
from opencdp.analytics.reports import run_report
from opencdp.config import Settings
from opencdp.profiles.scores import read_scores
from opencdp.storage.base import Backend
from opencdp.storage.schema import SEGMENT_MEMBERS, SEGMENTS
from tests.analytics import dataset
from tests.analytics.dataset import LATER, NOW, ORDERS, at, canonical


@pytest.fixture
def shop(backend: Backend) -> Backend:
    dataset.load(backend)
    return backend


def _cells(backend: Backend) -> dict[str, str]:
    table = read_scores(backend, "rfm_cell")
    return dict(zip(table.column("profile_id").to_pylist(), table.column("value").to_pylist(), strict=True))


def _cell_events(backend: Backend) -> list[dict[str, object]]:
    rows = backend.rows("SELECT message_id, profile_id, properties FROM events WHERE event = 'RFM Cell Changed' ORDER BY profile_id")
    return [{"profile_id": r["profile_id"], **json.loads(r["properties"])} for r in rows]


FIXED = rfm.Scoring(method="fixed")  # r [30, 90, 180, 365] days, f [1, 2, 3, 5] orders


def test_rfm_fixed_cells_stored_and_changes_written_once(shop: Backend) -> None:
    first = rfm.run(shop, NOW, scoring=FIXED)
    # by hand: a R5 F3 (a2's POS order is a's), b 137 days R3 F1, c R5 F5, d 273 days R2 F3, e R5 F1, f 120 days R3 F2
    assert _cells(shop) == {"a": "potential_loyal", "b": "about_to_sleep", "c": "champions", "d": "at_risk",
                            "e": "new", "f": "need_attention"}  # fmt: skip
    assert first.changes == 0 and _cell_events(shop) == []  # the first run sets the baseline
    scores = read_scores(shop, "rfm_score")
    assert dict(zip(scores.column("profile_id").to_pylist(), scores.column("value").to_pylist(), strict=True))["c"] == "541"  # M 1500 is below the first cut, 5000
    second = rfm.run(shop, LATER, scoring=FIXED)
    later = {"a": "need_attention", "b": "hibernating", "c": "loyal", "d": "at_risk", "e": "about_to_sleep", "f": "hibernating"}
    assert _cells(shop) == later
    events = _cell_events(shop)
    assert second.changes == 5
    assert [(e["profile_id"], e["from"], e["to"]) for e in events] == [
        ("a", "potential_loyal", "need_attention"), ("b", "about_to_sleep", "hibernating"), ("c", "champions", "loyal"),
        ("e", "new", "about_to_sleep"), ("f", "need_attention", "hibernating"),
    ]  # fmt: skip
    rfm._write_changes(shop, rfm.ORDERS, [("a", "potential_loyal", "need_attention", 0)],
                       rfm.score(rfm.measure(shop, rfm.ORDERS, LATER, FIXED), FIXED), LATER)  # a retry of the same write
    assert len(_cell_events(shop)) == 5
    runs = run_report(shop, "rfm", {"method": "fixed"}, LATER)["history"]
    assert [(r["changes"], r["cells"].get("hibernating", 0)) for r in runs] == [(0, 0), (5, 2)]
    assert runs[1]["changed_to"] == {"hibernating": 2, "loyal": 1, "need_attention": 1, "about_to_sleep": 1}


def test_rfm_quantiles_match_numpy(shop: Backend) -> None:
    people = sorted({canonical(p) for p, *_ in ORDERS if p})
    recency = np.array([(NOW - max(w for w, _ in dataset.orders_of(p))).total_seconds() / 86400 for p in people])
    frequency = np.array([len(dataset.orders_of(p)) for p in people], dtype=float)
    monetary = np.array([sum(t for _, t in dataset.orders_of(p)) for p in people])
    scored = rfm.score(rfm.measure(shop, rfm.ORDERS, NOW, rfm.Scoring()), rfm.Scoring())
    got = dict(zip(scored.profile_ids.to_pylist(), zip(scored.r.tolist(), scored.f.tolist(), scored.m.tolist(), strict=True), strict=True))
    for i, person in enumerate(people):
        def grade(values: np.ndarray, v: float) -> int:
            return 1 + sum(1 for c in np.quantile(values, [0.2, 0.4, 0.6, 0.8]) if v > c)

        assert got[person] == (6 - grade(recency, recency[i]), grade(frequency, frequency[i]), grade(monetary, monetary[i])), person


def test_rfm_matrix_report_counts_and_revenue(shop: Backend) -> None:
    report = run_report(shop, "rfm", {"method": "fixed"}, NOW)
    cells = {c["cell"]: c for c in report["table"]}
    assert cells["at_risk"]["profiles"] == 1 and cells["at_risk"]["value"] == 12000.0
    assert cells["potential_loyal"]["value"] == 3500.0  # a's own 3000 plus a2's 500
    assert sum(c["profiles"] for c in report["grid"]) == 6
    assert next(c for c in report["grid"] if c["r"] == 5 and c["f"] == 4)["cell"] == "champions"


def test_engagement_rfm(shop: Backend) -> None:
    rfm.run(shop, NOW, kind="engagement", scoring=FIXED)
    table = read_scores(shop, "engagement_cell")
    cells = dict(zip(table.column("profile_id").to_pylist(), table.column("value").to_pylist(), strict=True))
    # a: open and click 4 days ago (F2); b: one open 92 days ago (R3, F1); c: one open 3 days ago (the delivery is not engagement)
    assert cells == {"a": "potential_loyal", "b": "about_to_sleep", "c": "new"}
    m = read_scores(shop, "engagement_m")
    assert dict(zip(m.column("profile_id").to_pylist(), m.column("value").to_pylist(), strict=True))["a"] == 1.0


def test_sales_by_day_channel_room_store(shop: Backend) -> None:
    report = run_report(shop, "sales", {"from": "2026-05-01", "to": "2026-05-31"}, NOW)
    expected: dict[str, float] = defaultdict(float)
    offline: dict[str, float] = defaultdict(float)
    for _, when, total, channel, store, _ in ORDERS:
        if at(2026, 5, 1, 0) <= when < NOW:
            expected[when.date().isoformat()] += total
            if channel == "pos" or store:
                offline[when.date().isoformat()] += total
    series = {s["name"]: dict(s["points"]) for s in report["series"]}
    assert len(series["revenue"]) == 31
    assert {k: v for k, v in series["revenue"].items() if v} == expected
    assert {k: v for k, v in series["revenue_offline"].items() if v} == offline
    n = sum(1 for o in ORDERS if at(2026, 5, 1, 0) <= o[1] < NOW)
    assert report["summary"] == {"revenue": sum(expected.values()), "orders": n, "avg_check": round(sum(expected.values()) / n, 2)}
    assert report["by_store"][0] == {"store_id": "S1", "orders": 2, "revenue": 1200.0, "avg_check": 600.0}
    rooms = {r["room"]: r["revenue"] for r in report["by_room"]}
    assert rooms == {"Kitchen": 1600.0, "Bathroom": 700.0, "Kids room": 50.0}
    # a2's receipt holds tables and chairs: one kitchen order, not two
    assert {r["room"]: r["orders"] for r in report["by_room"]} == {"Kitchen": 3, "Bathroom": 1, "Kids room": 1}
    weekly = run_report(shop, "sales", {"from": "2026-05-01", "to": "2026-05-31", "interval": "week"}, NOW)
    points = dict(weekly["series"][0]["points"])
    assert points["2026-05-25"] == 1000 + 100 + 50 and points["2026-05-18"] == 500 and points["2026-04-27"] == 0


def test_retention_cohorts_monthly(shop: Backend) -> None:
    found = cohorts.retention(shop, Period(at(2025, 6, 1, 0), NOW, "month"), periods=3, now=NOW)
    month = lambda d: d.year * 12 + d.month - 1  # noqa: E731
    firsts = {p: min(w for w, _ in dataset.orders_of(p)) for p in {canonical(p) for p, *_ in ORDERS if p}}
    expected: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for person, first in firsts.items():
        for when, _ in dataset.orders_of(person):
            expected[dt.date(first.year, first.month, 1).isoformat()][month(when) - month(first)].add(person)
    got = {c["cohort"]: c for c in found["groups"][0]["cohorts"]}
    assert set(got) == set(expected)
    for cohort, periods in expected.items():
        size = len(periods[0])
        assert got[cohort]["size"] == size
        for row in got[cohort]["periods"]:
            assert row["active"] == len(periods.get(row["period"], set())), (cohort, row)
    assert [r["revenue"] for r in got["2025-07-01"]["periods"]] == [5000.0, 3000.0, 4000.0, 0.0]
    assert got["2025-07-01"]["periods"][1]["revenue_retention"] == 60.0
    assert len(got["2026-05-01"]["periods"]) == 1  # later periods have not happened yet


def test_cohorts_split_by_window_side_by_side(shop: Backend) -> None:
    report = run_report(shop, "cohorts", {"from": "2026-01-01", "to": "2026-05-31", "split_from": "2026-01-01",
                                          "split_to": "2026-01-31", "periods": "2"}, NOW)  # fmt: skip
    groups = {g["group"]: g for g in report["groups"]}
    assert [c["size"] for c in groups["acquired in window"]["cohorts"]] == [2]  # b and f
    assert groups["acquired in window"]["curve"][1]["percent"] == 50.0  # f bought again in February
    assert sum(c["size"] for c in groups["the rest"]["cohorts"]) == 2  # a (March), e (May)


def test_activity_dau_wau_mau(shop: Backend) -> None:
    report = run_report(shop, "activity", {"from": "2026-05-25", "to": "2026-05-31"}, NOW)
    series = {s["name"]: dict(s["points"]) for s in report["series"]}
    assert series["dau"]["2026-05-31"] == 3  # a, b (views), e (order, checkout)
    assert series["dau"]["2026-05-29"] == 1  # c opened an email; the delivery is not activity
    assert series["wau"] == {"2026-05-25": 4}  # a, b, c, e
    assert series["active_buyers"]["2026-05-25"] == 1
    assert series["sessions"]["2026-05-31"] == 7  # a: four events an hour apart (4), b one (1), e two an hour apart (2)


def test_funnel_conversion_and_median_time(shop: Backend) -> None:
    report = run_report(shop, "funnel", {"from": "2026-05-01", "to": "2026-05-31", "steps": "Product Viewed,Product Added"}, NOW)
    assert [(r["event"], r["profiles"]) for r in report["table"]] == [("Product Viewed", 2), ("Product Added", 1)]
    assert report["table"][1]["conversion_from_first"] == 0.5
    assert report["table"][1]["median_seconds_from_previous"] == 3 * 3600  # a viewed at 10:00, added at 13:00


def test_interest_current_room_finished_and_next(shop: Backend) -> None:
    settings = interest.Settings(core=dataset.CORE)
    interest.store(shop, NOW, settings)

    def score(name: str) -> dict[str, object]:
        t = read_scores(shop, name)
        return dict(zip(t.column("profile_id").to_pylist(), t.column("value").to_pylist(), strict=True))

    # a: kitchen set, table, chairs 7-12 days ago (3 x 3 x ~0.8) beat the sofa views of yesterday (~1 x 4)
    assert score("interest_room") == {"a": "Kitchen", "b": "Bathroom", "c": "Kitchen", "e": "Kids room", "f": "Living room"}
    assert score("interest_room_finished")["a"] == 1.0 and score("interest_room_finished")["c"] == 0.0
    assert score("interest_finished_rooms") == {"a": "Kitchen"}
    # f went from the kitchen to the living room: the next room after a finished kitchen
    assert score("interest_next_room")["a"] == "Living room"
    half = 0.5 ** (1 / 30)
    rows = interest.profile_interest(shop, ["a"], NOW, settings)
    living = next(r["interest"] for r in rows if r["room"] == "Living room")
    expected = 3 * 0.5 ** ((NOW - at(2026, 3, 10)).total_seconds() / 86400 / 30) + sum(
        w * 0.5 ** ((NOW - t).total_seconds() / 86400 / 30) for _, t, e, c in dataset.OTHER
        if _ == "a" and c == "Living room > Sofas" for w in [2.0 if e == "Product Added" else 1.0]
    )
    assert living == pytest.approx(expected, abs=1e-3) and half < 1


def _segment(backend: Backend, segment_id: str, members: list[str]) -> None:
    when = at(2026, 1, 1)
    backend.upsert(SEGMENTS, pa.Table.from_pylist([{
        "segment_id": segment_id, "name": segment_id.title(), "definition": "true", "tree": "{}", "kind": "static",
        "status": "active", "created_at": when, "updated_at": when, "deleted": False}], schema=SEGMENTS.arrow_schema))  # fmt: skip
    backend.upsert(SEGMENT_MEMBERS, pa.Table.from_pylist(
        [{"segment_id": segment_id, "profile_id": p, "member": True, "since": when, "updated_at": when} for p in members],
        schema=SEGMENT_MEMBERS.arrow_schema))  # fmt: skip


def test_segment_kpis(shop: Backend) -> None:
    _segment(shop, "abc", ["a", "b", "c"])
    report = run_report(shop, "segment_kpis", {"from": "2026-05-01", "to": "2026-05-31", "costs": "abc:400", "margin": "0.5"}, NOW)
    row = report["table"][0]
    # May: a (two orders, one as a2) and c bought -> 1000 + 500 + 100; a, b, c bought before May; b did not come back
    assert (row["size"], row["buyers"], row["orders"], row["revenue"]) == (3, 2, 3, 1600.0)
    assert row["conversion_rate"] == 0.6667 and row["avg_check"] == 533.33
    assert row["retention_rate"] == 0.6667 and row["churn_rate"] == 0.3333
    assert row["ltv"] == round((3500 + 300 + 1500) / 3, 2)
    assert (row["opens"], row["clicks"], row["unsubscribes"]) == (2, 1, 1)
    assert row["profit"] == 1600 * 0.5 - 400 and row["roi"] == 1.0


def test_empty_range_gives_empty_series(shop: Backend) -> None:
    for name in ("sales", "activity", "base"):
        report = run_report(shop, name, {"from": "2030-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, NOW)
        assert all(s["points"] == [] for s in report["series"]), name
    report = run_report(shop, "sales", {"from": "2020-01-01", "to": "2020-01-03"}, NOW)
    assert report["series"][0]["points"] == [["2020-01-01", 0], ["2020-01-02", 0], ["2020-01-03", 0]]
    assert report["by_room"] == [] and report["summary"]["avg_check"] is None
    assert run_report(shop, "funnel", {"from": "2030-01-01", "to": "2030-01-05", "steps": "a,b"}, NOW)["table"][0]["profiles"] == 0
    assert run_report(shop, "customers", {"from": "2030-01-01", "to": "2030-02-01"}, NOW)["table"] == []


@pytest.mark.parametrize(("name", "params", "field"), [
    ("sales", {"interval": "year"}, "interval"),
    ("sales", {"from": "yesterday"}, "from"),
    ("sales", {"from": "2026-05-03", "to": "2026-05-01"}, "from"),
    ("sales", {"colour": "red"}, "colour"),
    ("funnel", {"steps": "only-one"}, "steps"),
    ("customers", {"limit": "0"}, "limit"),
    ("segment_kpis", {"segments": "nope"}, "segments"),
    ("rfm", {"kind": "visits"}, "kind"),
    ("rfm", {"method": "median"}, "method"),
    ("cohorts", {"split_from": "2026-01-01"}, "split_to"),
    ("nope", {}, "name"),
])  # fmt: skip
def test_bad_parameters_name_the_parameter(shop: Backend, name: str, params: dict[str, str], field: str) -> None:
    with pytest.raises(ReportError) as error:
        run_report(shop, name, params, NOW)
    assert error.value.field == field and error.value.status == 422


def test_api_reports_and_422(shop: Backend, tmp_path: Path) -> None:
    from opencdp.web.app import create_app

    app = create_app(Settings(data_dir=tmp_path / "data", loader_interval_s=3600), backend=shop)
    with TestClient(app) as client:
        _, admin = app.state.keys.create("admin", "tests")
        headers = {"Authorization": f"Bearer {admin}"}
        assert client.get("/api/v1/reports/sales").status_code == 401
        answer = client.get("/api/v1/reports/sales?from=2026-05-20&to=2026-05-25&as_of=2026-06-01", headers=headers)
        assert answer.status_code == 200
        body = answer.json()
        assert body["report"] == "sales" and body["series"][0]["points"][0] == ["2026-05-20", 500]
        bad = client.get("/api/v1/reports/sales?interval=hour", headers=headers)
        assert bad.status_code == 422 and bad.json()["field"] == "interval"
        funnel = client.get("/api/v1/reports/funnel?steps=Product%20Viewed&steps=Product%20Added&from=2026-05-01&as_of=2026-06-01",
                            headers=headers)  # fmt: skip
        assert funnel.json()["table"][1]["profiles"] == 1
        assert client.get("/api/v1/reports/nope", headers=headers).json()["field"] == "name"
        scored = client.post("/api/v1/reports/rfm/score?as_of=2026-06-01&method=fixed", headers=headers)
        assert scored.status_code == 200 and scored.json()["cells"]["champions"] == 1
        assert {r["name"] for r in client.get("/api/v1/reports", headers=headers).json()["reports"]} >= {"sales", "rfm", "cohorts"}


def test_bi_views_and_export(shop: Backend, tmp_path: Path) -> None:
    rfm.run(shop, NOW, scoring=FIXED)
    _segment(shop, "abc", ["a", "b"])
    views.create_views(shop)
    orders = shop.rows("SELECT profile_id, amount, kind FROM bi_orders WHERE profile_id = 'a'")
    assert sorted(r["amount"] for r in orders) == [500.0, 1000.0, 2000.0]  # a2's order is a's
    profiles = {r["profile_id"]: r for r in shop.rows("SELECT profile_id, orders, revenue FROM bi_profiles")}
    assert profiles["a"]["orders"] == 3 and profiles["a"]["revenue"] == 3500.0 and "a2" not in profiles
    assert shop.rows("SELECT count(*) AS n FROM bi_scores WHERE name = 'rfm_cell'")[0]["n"] == 6
    assert {r["profile_id"] for r in shop.rows("SELECT profile_id FROM bi_segment_members")} == {"a", "b"}
    rooms = {r["room"] for r in shop.rows("SELECT DISTINCT room FROM bi_order_lines")}
    assert rooms == {"Kitchen", "Living room", "Bathroom", "Bedroom", "Kids room"}
    result = export.export(shop, tmp_path / "bi", fmt="parquet", now=NOW)
    assert result["rows"]["bi_orders"] == len(ORDERS)
    data = pads.dataset(tmp_path / "bi" / "bi_orders", format="parquet", partitioning="hive").to_table()
    assert data.num_rows == len(ORDERS) and "date" in data.column_names
    assert (tmp_path / "bi" / "bi_orders" / "date=2026-05-25").is_dir()
    assert (tmp_path / "bi" / "bi_scores" / f"date={NOW.date().isoformat()}").is_dir()
    csv = export.export(shop, tmp_path / "csv", fmt="csv", datasets=["bi_order_lines"])
    assert csv["rows"]["bi_order_lines"] == sum(len(o[5]) for o in ORDERS)
    with pytest.raises(ReportError) as error:
        export.export(shop, tmp_path / "x", fmt="xlsx")
    assert error.value.field == "format"


def test_value_scores(shop: Backend) -> None:
    cohorts.store_value_scores(shop, NOW)
    ltv = read_scores(shop, "historic_ltv")
    assert dict(zip(ltv.column("profile_id").to_pylist(), ltv.column("value").to_pylist(), strict=True))["a"] == 3500.0
    room = read_scores(shop, "value_top_room")
    assert dict(zip(room.column("profile_id").to_pylist(), room.column("value").to_pylist(), strict=True))["a"] == "Living room"
    report = run_report(shop, "value", {"from": "2025-06-01", "to": "2026-05-31"}, NOW)
    assert report["buyers"] == 6 and report["revenue"] == sum(o[2] for o in ORDERS if o[0])
    assert {b["orders"]: b["profiles"] for b in report["by_orders"]}["3"] == 2  # a and d


def test_base_dynamics(shop: Backend) -> None:
    from opencdp.storage.schema import IDENTITIES

    when = at(2025, 6, 3)
    shop.upsert(IDENTITIES, pa.Table.from_pylist([
        {"identifier": f"email:{p}@x.ru", "kind": "email", "value": f"{p}@x.ru", "profile_id": p, "first_seen": when,
         "message_id": "i", "updated_at": when, "deleted": False} for p in ("a", "a2", "b")
    ], schema=IDENTITIES.arrow_schema))  # fmt: skip
    report = run_report(shop, "base", {"from": "2025-06-02", "to": "2025-06-04"}, NOW)
    series = {s["name"]: [y for _, y in s["points"]] for s in report["series"]}
    # identify events of a..f on June 1st..6th; a2 is a (counted once, for email too)
    assert series["new"] == [1, 1, 1] and series["total"] == [2, 3, 4] and series["identified"] == [2, 3, 4]
    assert series["reachable_email"] == [0, 2, 2] and series["reachable_sms"] == [0, 0, 0]


def test_rfm_cell_usable_in_a_segment(shop: Backend) -> None:
    from opencdp.segments.sql import members
    from opencdp.segments.text import parse

    rfm.run(shop, NOW, scoring=FIXED)
    assert members(shop, parse('computed.rfm_cell = "at_risk"'), NOW) == {"d"}
    assert members(shop, parse("computed.rfm_r = 5 and computed.rfm_f >= 4"), NOW) == {"c"}


def test_cohorts_of_any_event_returning_with_orders(shop: Backend) -> None:
    found = cohorts.retention(shop, Period(at(2026, 3, 1, 0), NOW, "month"), cohort_event="Email Opened",
                              return_event="first_purchase", periods=2, now=NOW)  # fmt: skip
    got = {c["cohort"]: c for c in found["groups"][0]["cohorts"]}
    # first opens: b in March, a and c in May; only c ordered after opening (May 30th, 100)
    assert {k: c["size"] for k, c in got.items()} == {"2026-03-01": 1, "2026-05-01": 2}
    assert got["2026-05-01"]["periods"][0] == {"period": 0, "active": 1, "percent": 50.0, "revenue": 100.0, "revenue_retention": 100.0}
    assert [r["active"] for r in got["2026-03-01"]["periods"]] == [0, 0, 0]


def test_top_and_bottom_customers(shop: Backend) -> None:
    report = run_report(shop, "customers", {"from": "2025-06-01", "to": "2026-05-31", "limit": "2"}, NOW)
    totals = sorted(((sum(t for _, t in dataset.orders_of(p)), p) for p in dataset.PEOPLE), reverse=True)
    assert [r["profile_id"] for r in report["table"]] == [p for _, p in totals[:2]] == ["d", "a"]
    assert [r["profile_id"] for r in report["bottom"]] == ["e", "b"]
    assert report["table"][1] == {"profile_id": "a", "revenue": 3500.0, "orders": 3, "avg_check": 1166.67,
                                  "last_order": "2026-05-25T12:00:00+00:00"}  # fmt: skip
