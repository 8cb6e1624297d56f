"""Scenarios: refused before activation with the reason; triggers, steps, goal exit and re-entry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from opencdp.campaigns import library, outbox, scenarios, store
from opencdp.campaigns.engine import Engine
from opencdp.campaigns.store import DefinitionError
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS, JOURNEYS, PRODUCT_CHANGES
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

SEND = {"id": "mail", "type": "send", "channel": "email", "template": "t1"}


def _definition(**changes: Any) -> dict[str, Any]:
    return {"trigger": {"type": "event", "event": "Checkout Started"}, "steps": [dict(SEND)], **changes}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"steps": [{"id": "a", "type": "wait", "duration": "1h", "next": "b"},
                    {"id": "b", "type": "condition", "event": "X", "then": "a", "else": None}]}, "steps[", "cycle: a -> b -> a"),
        ({"trigger": {"type": "segment_entered", "segment": "nope"}}, "trigger.segment", "not a saved segment"),
        ({"steps": [{**SEND, "channel": "viber"}]}, "steps[0].channel", "not a configured channel"),
        ({"steps": [{**SEND, "template": "missing"}]}, "steps[0].template", "not a saved template"),
        ({"steps": [{**SEND, "next": "ghost"}]}, "steps[0].next", "not a step id"),
        ({"steps": [{"id": "w", "type": "wait", "duration": "soon"}]}, "steps[0].duration", "duration"),
        ({"trigger": {"type": "sometimes"}}, "trigger.type", "must be one of"),
        ({"steps": [{"id": "h", "type": "webhook", "url": "http://169.254.169.254/latest/meta-data/"}, dict(SEND)]},
         "steps[0].url", "internal address"),
    ],
)
def test_invalid_scenarios_are_refused_naming_the_field(backend: Backend, changes: dict[str, Any], field: str, words: str) -> None:
    save_template(backend)
    with pytest.raises(DefinitionError) as error:
        scenarios.validate(backend, channels(FakeChannel()), _definition(**changes))
    assert error.value.field is not None and error.value.field.startswith(field)
    assert words in error.value.detail


def test_an_internal_webhook_is_allowed_only_through_the_setting(backend: Backend) -> None:
    save_template(backend)
    hook = {"steps": [{"id": "h", "type": "webhook", "url": "http://127.0.0.1:9/crm"}, dict(SEND)]}
    with pytest.raises(DefinitionError):
        scenarios.validate(backend, channels(FakeChannel()), _definition(**hook))
    allowing = channels(FakeChannel())
    allowing.extra["webhook_allowed_networks"] = ["127.0.0.0/8"]
    scenarios.validate(backend, allowing, _definition(**hook))


def _activate(backend: Backend, scenario_id: str, definition: dict[str, Any]) -> dict[str, Any]:
    checked = scenarios.validate(backend, channels(FakeChannel()), definition)
    store.save(backend, store.SCENARIO, scenario_id, scenario_id, checked, status=store.ACTIVE)
    return checked


def _events(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVENTS.arrow_schema)


def test_abandoned_cart_with_filter_wait_goal_exit_and_reentry(backend: Backend) -> None:
    load(backend, [person("a", first_name="Anna"), person("b"), person("c")])
    save_template(backend, html="<html><body>{% for i in cart %}{{ i.name }}{% endfor %}</body></html>")
    _activate(backend, "cart", _definition(
        trigger={"type": "event", "event": "Checkout Started", "where": {"properties.value": {">=": 100}}},
        goal={"event": "Order Completed"}, reentry={"policy": "after_exit"},
        steps=[{"id": "wait", "type": "wait", "duration": "1h"}, dict(SEND)]))
    clock = [NOW]
    engine = Engine(backend, clock=lambda: clock[0])
    cart = {"value": 150, "products": [{"product_id": "k1", "name": "Kitchen set", "price": 150}]}
    started = [event(p, name="Checkout Started", properties=cart, at=NOW) for p in ("a", "b")]
    started.append(event("c", name="Checkout Started", properties={"value": 5}, at=NOW))  # filtered out
    load(backend, started)
    engine.observe(_events(started))
    engine.tick()
    assert engine.stats.entered == 2
    again = [event("a", name="Checkout Started", properties=cart, at=NOW)]
    engine.observe(_events(again))
    engine.tick()
    assert engine.stats.skipped_reentry == 1  # still in the journey
    order = [event("b", name="Order Completed", at=NOW + dt.timedelta(minutes=30))]
    load(backend, order)
    engine.observe(_events(order))
    clock[0] = NOW + dt.timedelta(minutes=30)
    engine.tick()
    clock[0] = NOW + dt.timedelta(hours=1, minutes=1)
    engine.tick()
    rows = outbox.rows_of(backend, "cart")
    assert [r["profile_id"] for r in rows] == ["a"]  # b ordered: the goal ended the journey before the send
    fake = FakeChannel()
    s = sender(backend, fake)
    s.clock = lambda: clock[0]
    s.run_until_idle()
    assert [m.to for m in fake.calls] == ["a@shop.test"] and "Kitchen set" in (fake.calls[0].html or "")
    journeys = {r["profile_id"]: r for r in backend.current(JOURNEYS).to_pylist()}
    assert journeys["a"]["state"] == "done" and journeys["b"]["state"] == "exited"


def test_split_update_trait_and_back_in_stock(backend: Backend) -> None:
    load(backend, [person(f"p{i}") for i in range(24)])
    load(backend, [event(f"p{i}", name="Product Viewed", product_id="sofa", at=NOW - dt.timedelta(days=2)) for i in range(24)])
    save_template(backend)
    _activate(backend, "stock", {
        "trigger": {"type": "back_in_stock", "within_days": 30},
        "steps": [{"id": "ab", "type": "split", "branches": [{"name": "A", "next": "mail"}, {"name": "control", "next": "tag"}]},
                  dict(SEND), {"id": "tag", "type": "update_trait", "trait": "saw_stock", "value": True}]})
    engine = Engine(backend, clock=lambda: NOW)
    engine._catalogue_mark = NOW - dt.timedelta(minutes=1)
    backend.insert(PRODUCT_CHANGES.name, pa.Table.from_pylist(
        [{"product_id": "sofa", "changed_at": NOW - dt.timedelta(seconds=5), "field": "stock", "old_value": 0, "new_value": 3}],
        schema=PRODUCT_CHANGES.arrow_schema))
    engine.tick()
    assert engine.stats.entered == 24
    rows = outbox.rows_of(backend, "stock")
    assert 4 < len(rows) < 20 and {r["variant"] for r in rows} == {"A"}  # the control branch got nothing
    tagged = backend.scalar("SELECT count(DISTINCT profile_id) FROM events WHERE traits LIKE '%saw_stock%'")
    assert tagged == 24
    engine.tick()  # the same change is not seen twice
    assert engine.stats.entered == 24


def test_library_scenarios_install_and_validate(backend: Backend) -> None:
    from opencdp.campaigns.registry import Channels

    config = Channels({"email": {"kind": "email"}, "sms": {"kind": "sms"}}, factory=lambda k, c: FakeChannel())
    for name in library.names():
        stored = library.install(backend, name)
        assert stored.status == store.DRAFT
        if name == "win_back":
            with pytest.raises(DefinitionError, match="at_risk"):
                scenarios.validate(backend, config, stored.definition)
        else:
            scenarios.validate(backend, config, stored.definition)


def test_birthday_segment_entry_and_webhook(backend: Backend) -> None:
    from opencdp.segments import membership
    from opencdp.segments import store as segments

    load(backend, [person("bday", birthday="1990-06-04", first_name="Ira"), person("other", birthday="1990-07-04")])
    save_template(backend)
    _activate(backend, "bd", {"trigger": {"type": "date", "trait": "birthday", "days_before": 3},
                              "steps": [dict(SEND)]})
    segments.save(backend, "gold", definition='traits.tier = "gold"')
    _activate(backend, "welcome_gold", {"trigger": {"type": "segment_entered", "segment": "gold"},
                                        "steps": [{"id": "hook", "type": "webhook", "url": "https://crm.example/hook"}, dict(SEND)]})
    calls: list[tuple[str, dict[str, Any]]] = []
    engine = Engine(backend, clock=lambda: NOW, post=lambda url, body: calls.append((url, body)))
    engine._segment_mark = NOW - dt.timedelta(days=3650)
    segment = segments.get(backend, "gold")
    assert segment is not None
    membership.refresh(backend, segment, dt.datetime.now(dt.UTC))  # the baseline: nobody is gold yet
    load(backend, [person("vip", tier="gold")])
    membership.refresh(backend, segment, dt.datetime.now(dt.UTC))  # writes Segment Entered for vip
    engine.clock = lambda: dt.datetime.now(dt.UTC)
    engine.tick()
    in_three_days = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)
    due_today = {p for p, day in (("bday", (6, 4)), ("other", (7, 4))) if (in_three_days.month, in_three_days.day) == day}
    assert {r["profile_id"] for r in outbox.rows_of(backend, "bd")} == due_today  # the real clock: usually nobody
    assert [r["profile_id"] for r in outbox.rows_of(backend, "welcome_gold")] == ["vip"]
    assert calls and calls[0][0] == "https://crm.example/hook" and calls[0][1]["profile_id"] == "vip"
    birthday = Engine(backend, clock=lambda: NOW)  # 1 June: Ira's birthday is in 3 days
    birthday.tick()
    birthday._dates_at = None
    birthday.tick()  # the same date is entered once
    assert {r["profile_id"] for r in outbox.rows_of(backend, "bd")} == {"bday"} | due_today


def test_rate_limit_spaces_sends() -> None:
    import time

    from opencdp.campaigns.registry import RateLimit

    limit = RateLimit(50)
    start = time.perf_counter()
    for _ in range(75):
        limit.acquire()
    assert time.perf_counter() - start >= 0.45  # 50 at once (the burst), 25 more at 50/s


def test_parametric_audience_bound_from_the_entering_event(backend: Backend) -> None:
    from opencdp.segments import store as segments

    load(backend, [person("kazan", city="Kazan"), person("perm", city="Perm")])
    save_template(backend)
    segments.save(backend, "in_city", definition="traits.city = $city")
    _activate(backend, "local", _definition(
        trigger={"type": "event", "event": "Store Visited"},
        audience={"segment": "in_city", "params": {"city": "properties.store_city"}}))
    engine = Engine(backend, clock=lambda: NOW)
    visits = [event(p, name="Store Visited", properties={"store_city": "Kazan"}, at=NOW) for p in ("kazan", "perm")]
    load(backend, visits)
    engine.observe(_events(visits))
    engine.tick()
    assert [r["profile_id"] for r in outbox.rows_of(backend, "local")] == ["kazan"]


def test_an_event_a_stage_writes_itself_starts_a_scenario(backend: Backend) -> None:
    """RFM cell changes are written by the analytics stage, not the loader: "became at risk" still triggers."""
    from opencdp.storage.base import LoadBatch
    from opencdp.storage.schema import ORDER_LINES

    load(backend, [person("a"), person("b")])
    save_template(backend)
    _activate(backend, "winback", _definition(trigger={"type": "event", "event": "RFM Cell Changed", "where": {"properties.to": "at_risk"}}))
    engine = Engine(backend, clock=lambda: NOW)
    backend.observers = [engine.observe]
    try:
        changes = [event("a", name="RFM Cell Changed", properties={"from": "loyal", "to": "at_risk"}, at=NOW),
                   event("b", name="RFM Cell Changed", properties={"from": "new", "to": "promising"}, at=NOW)]
        backend.record_events(LoadBatch(_events(changes), ORDER_LINES.empty()))
        engine.tick()
    finally:
        backend.observers = None
    assert [r["profile_id"] for r in outbox.rows_of(backend, "winback")] == ["a"]
