"""A/B tests and control groups: assignment, statistics against known values, automatic winner, uplift."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from opencdp.campaigns import broadcast, outbox, reports, store, tracking
from opencdp.campaigns.experiments import (
    CONTROL,
    assign,
    chi_square,
    in_global_control,
    probability_to_beat,
    winner,
    z_test,
)
from opencdp.campaigns.tracking import MessageRef
from opencdp.storage.base import Backend
from tests.campaigns.helpers import (
    NOW,
    FakeChannel,
    channels,
    event,
    load,
    person,
    save_template,
    sender,
)


def test_assignment_is_stable_weighted_and_holds_out() -> None:
    profiles = [f"p{i}" for i in range(20_000)]
    first = [assign("c1", p, [("A", 1), ("B", 3)], holdout_percent=10) for p in profiles]
    assert first == [assign("c1", p, [("A", 1), ("B", 3)], holdout_percent=10) for p in profiles]
    share = {v: first.count(v) / len(first) for v in ("A", "B", CONTROL)}
    assert share[CONTROL] == pytest.approx(0.10, abs=0.01)
    assert share["B"] / share["A"] == pytest.approx(3, rel=0.08)
    other = [assign("c2", p, [("A", 1), ("B", 3)], holdout_percent=10) for p in profiles]
    assert sum(a == b for a, b in zip(first, other, strict=True)) < 0.7 * len(first)  # campaigns draw independently
    members = sum(in_global_control(p, 5, NOW, 90) for p in profiles)
    assert members / len(profiles) == pytest.approx(0.05, abs=0.006)
    redrawn = sum(in_global_control(p, 5, NOW + dt.timedelta(days=90), 90) != in_global_control(p, 5, NOW, 90) for p in profiles)
    assert redrawn > 0.05 * len(profiles)


def test_statistics_match_textbook_values() -> None:
    z, p = z_test(120, 1000, 100, 1000)
    pooled = 220 / 2000
    assert z == pytest.approx((0.12 - 0.10) / math.sqrt(pooled * (1 - pooled) * 2 / 1000))
    assert z == pytest.approx(1.4293, abs=1e-4) and p == pytest.approx(0.1529, abs=1e-4)  # 2 * (1 - Phi(1.4293))
    assert chi_square([(120, 1000), (100, 1000)]) == pytest.approx(p, rel=1e-9)  # 2x2 chi-square = z squared
    assert probability_to_beat(120, 1000, 100, 1000) == pytest.approx(0.925, abs=0.01)
    assert winner({"A": (100, 1000), "B": (160, 1000)}) == "B"
    assert winner({"A": (100, 1000), "B": (105, 1000)}) is None
    assert winner({"A": (100, 1000), "B": (105, 1000)}, deadline_passed=True) == "B"


def test_winner_goes_to_the_rest_and_report_has_uplift(backend: Backend) -> None:
    profiles = [f"p{i:03d}" for i in range(200)]
    load(backend, [person(p, plan="news") for p in profiles])
    save_template(backend, "ta")
    save_template(backend, "tb")
    from opencdp.segments import store as segments

    segments.save(backend, "news", definition='traits.plan = "news"')
    definition = broadcast.validate(backend, channels(FakeChannel()), {
        "segment": "news", "channel": "email", "holdout_percent": 10,
        "variants": [{"name": "A", "template": "ta"}, {"name": "B", "template": "tb"}],
        "experiment": {"test_percent": 50, "metric": "clicked", "deadline_hours": 4}})
    store.save(backend, store.CAMPAIGN, "ab", "A/B", definition, status=store.ACTIVE)
    planned = broadcast.plan(backend, "ab", definition, NOW)
    assert 70 < planned < 130  # the test share only
    fake = FakeChannel()
    sender(backend, fake, caps={}).run_until_idle()
    rows = outbox.rows_of(backend, "ab")
    sent = [r for r in rows if r["state"] == "sent"]
    clicks = [MessageRef(r["message_id"], "ab", "send", r["profile_id"], r["variant"], "email")
              for r in sent if r["variant"] == "B" or int(r["profile_id"][1:]) % 10 == 0]
    tracking.record(backend, tracking.event_rows(tracking.CLICKED, clicks, NOW + dt.timedelta(minutes=5)))
    orders = [event(c.profile_id, name="Order Completed", revenue=100.0, at=NOW + dt.timedelta(hours=1)) for c in clicks]
    control = [r["profile_id"] for r in rows if r["variant"] == CONTROL]
    orders.append(event(control[0], name="Order Completed", revenue=50.0, at=NOW + dt.timedelta(hours=2)))
    load(backend, orders)
    assert broadcast.decide(backend, "ab", store.require(backend, store.CAMPAIGN, "ab").definition, NOW + dt.timedelta(hours=1)) == "B"
    after = outbox.rows_of(backend, "ab")
    assert len(after) == 200
    late = [r for r in after if r["profile_id"] not in {x["profile_id"] for x in rows}]
    assert {r["variant"] for r in late} <= {"B", CONTROL} and any(r["variant"] == "B" for r in late)
    report = reports.campaign_report(backend, "ab")
    b, c = report["variants"]["B"], report["variants"][CONTROL]
    assert b["clicked"] == b["sent"] and b["converted"] == b["sent"] and b["revenue"] == 100.0 * b["sent"]
    assert c["converted"] == 1 and c["conversion_rate"] == pytest.approx(1 / c["recipients"])
    uplift = next(t for t in report["tests"] if t["metric"] == "conversion" and t["variant"] == "B")
    assert uplift["uplift"] > 1 and uplift["probability_to_beat"] > 0.99
