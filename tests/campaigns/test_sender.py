"""The sender: consent at send time, exactly once across a crash, retries, suppression, caps, quiet hours."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from opencdp.campaigns import outbox
from opencdp.campaigns.channels.base import Message, SendResult
from opencdp.campaigns.channels.cascade import Cascade, CascadeStep
from opencdp.campaigns.channels.receipts import ReceiptRegistry
from opencdp.campaigns.registry import Channels
from opencdp.campaigns.sender import Sender, SenderOptions
from opencdp.campaigns.tracking import Signer
from opencdp.consent import suppressions
from opencdp.storage.base import Backend
from tests.campaigns.helpers import (
    NOW,
    Crash,
    FakeChannel,
    event,
    load,
    person,
    save_template,
    sender,
)


def _plan(backend: Backend, profiles: list[str], *, transactional: bool = False, topic: str = "marketing",
          at: dt.datetime = NOW) -> None:
    n = len(profiles)
    outbox.plan(backend, campaign_id="c1", step_id="send", profile_ids=profiles, variants=["A"] * n,
                channels=["email"] * n, templates=["t1"] * n, not_before=[at] * n, topic=topic,
                transactional=transactional, now=at)


def _states(backend: Backend) -> dict[str, tuple[str, str | None]]:
    return {r["profile_id"]: (r["state"], r["reason"]) for r in outbox.rows_of(backend, "c1")}


def test_no_send_without_consent(backend: Backend) -> None:
    load(backend, [person("yes", first_name="Anna"), person("no", consent=False), person("never", consent=None),
                   person("later", consent=True)])
    load(backend, [event("later", type="track", name="Unsubscribed", properties={"channel": "email"}, at=NOW - dt.timedelta(hours=1))])
    save_template(backend)
    _plan(backend, ["yes", "no", "never", "later"])
    fake = FakeChannel()
    sender(backend, fake).run_until_idle()
    assert [m.to for m in fake.calls] == ["yes@shop.test"]
    states = _states(backend)
    assert states["yes"][0] == "sent"
    assert states["no"] == ("skipped", "no_consent")
    assert states["never"] == ("skipped", "no_consent")
    assert states["later"] == ("skipped", "no_consent")
    message = fake.calls[0]
    assert message.subject == "Hi Anna"
    assert "/m/c/" in (message.html or "") and "/m/o/" in (message.html or "")
    assert message.list_unsubscribe and message.list_unsubscribe_post
    sent = backend.rows("SELECT event, profile_id, properties FROM events WHERE event = 'Message Sent'")
    assert [r["profile_id"] for r in sent] == ["yes"] and '"campaign_id":"c1"' in sent[0]["properties"]


def test_transactional_bypasses_caps_not_consent(backend: Backend) -> None:
    load(backend, [person("a"), person("out", consent=None)])
    load(backend, [event("out", name="Consent Updated", properties={"channel": "email", "topic": "transactional", "status": "opted_out"})])
    save_template(backend)
    _plan(backend, ["a", "out"], transactional=True, topic="transactional")
    fake = FakeChannel()
    sender(backend, fake, caps={"all": [0, 0]}).run_until_idle()
    assert [m.to for m in fake.calls] == ["a@shop.test"]
    assert _states(backend)["out"] == ("skipped", "no_consent")


def test_crash_mid_send_no_loss_no_duplicate(backend: Backend) -> None:
    profiles = [f"p{i:02d}" for i in range(30)]
    load(backend, [person(p) for p in profiles])
    save_template(backend)
    _plan(backend, profiles)
    provider = FakeChannel(crash_after=7)
    with pytest.raises(Crash):
        sender(backend, provider, batch=10).run_until_idle()
    states = [r["state"] for r in outbox.rows_of(backend, "c1")]
    # claimed before the hand-off: the batch that crashed, and the next one, claimed and rendered meanwhile
    assert states.count("sending") == 20 and states.count("planned") == 10
    provider.crash_after = None  # the same provider (it dedupes by message id), a new sender process
    result = sender(backend, provider, batch=10).run_until_idle()
    assert result.sent == 30
    rows = outbox.rows_of(backend, "c1")
    assert {r["state"] for r in rows} == {"sent"}
    assert sorted(provider.accepted) == sorted(r["message_id"] for r in rows)  # none lost
    assert len(provider.accepted) == 30  # one message per profile at the provider
    resent = [m.message_id for m in provider.calls]
    assert len(resent) - len(set(resent)) <= 7  # only hand-offs cut short by the crash were repeated, same id
    events = backend.rows("SELECT count(*) AS n, count(DISTINCT profile_id) AS u FROM events WHERE event = 'Message Sent'")[0]
    assert events["n"] == 30 and events["u"] == 30


def test_transient_errors_retry_with_backoff_then_permanent_suppresses(backend: Backend) -> None:
    load(backend, [person("a"), person("b")])
    save_template(backend)
    _plan(backend, ["a", "b"])
    fake = FakeChannel([SendResult.transient("421 try later", retry_after_s=60), SendResult.permanent("550 no such user")])
    s = sender(backend, fake, batch=1)
    s.run_until_idle()
    states = {r["profile_id"]: r for r in outbox.rows_of(backend, "c1")}
    retried = next(r for r in states.values() if r["state"] == "planned")
    failed = next(r for r in states.values() if r["state"] == "failed")
    assert retried["attempts"] == 1 and retried["not_before"].replace(tzinfo=dt.UTC) >= NOW + dt.timedelta(seconds=60)
    assert suppressions.is_suppressed(backend, "email", failed["address"])
    later = sender(backend, fake, batch=1)
    later.clock = lambda: NOW + dt.timedelta(minutes=2)
    later.run_until_idle()
    assert {r["profile_id"]: r["state"] for r in outbox.rows_of(backend, "c1")}[retried["profile_id"]] == "sent"
    assert len({m.message_id for m in fake.calls}) == 2 and len(fake.calls) == 3  # the retry reused the id


def test_suppressed_caps_and_quiet_hours(backend: Backend) -> None:
    load(backend, [person("s"), person("c"), person("q", timezone="Asia/Vladivostok")])  # 22:00 in Vladivostok
    suppressions.add(backend, "email", "s@shop.test", "complaint")
    save_template(backend)
    outbox.plan(backend, campaign_id="old", step_id="send", profile_ids=["c"], variants=["A"], channels=["email"],
                templates=["t1"], not_before=[NOW - dt.timedelta(hours=1)], now=NOW - dt.timedelta(hours=1))
    fake = FakeChannel()
    sender(backend, fake, caps={"all": [1, 5]}).run_until_idle()  # the old campaign reaches c first
    _plan(backend, ["s", "c", "q"])
    sender(backend, fake, caps={"all": [1, 5]}).run_until_idle()
    states = _states(backend)
    assert states["s"] == ("skipped", "suppressed")
    assert states["c"] == ("skipped", "frequency_cap")
    assert states["q"] == ("planned", "quiet_hours")
    row = next(r for r in outbox.rows_of(backend, "c1") if r["profile_id"] == "q")
    assert row["not_before"].replace(tzinfo=dt.UTC) == dt.datetime(2026, 6, 1, 23, 0, tzinfo=dt.UTC)  # 09:00 there


def test_a_broken_template_fails_the_message_without_suppressing_the_address(backend: Backend) -> None:
    load(backend, [person("a")])
    save_template(backend, html="<html><body>{% for x in profile.email %}{{ x.y.z() }}{% endfor %}</body></html>")
    _plan(backend, ["a"])
    fake = FakeChannel()
    sender(backend, fake).run_until_idle()
    assert fake.calls == [] and _states(backend)["a"][0] == "failed"
    assert not suppressions.is_suppressed(backend, "email", "a@shop.test")


def test_receipts_deliver_bounce_and_complain(backend: Backend) -> None:
    from opencdp.campaigns import feedback
    from opencdp.campaigns.channels.receipts import Receipt

    load(backend, [person("a"), person("b"), person("c")])
    save_template(backend)
    _plan(backend, ["a", "b", "c"])
    fake = FakeChannel()
    sender(backend, fake).run_until_idle()
    ids = {r["profile_id"]: r for r in outbox.rows_of(backend, "c1")}
    counts = feedback.apply(backend, "email", [
        Receipt(f"<{ids['a']['message_id']}@shop.test>", "delivered"),
        Receipt(ids["b"]["provider_message_id"], "failed", True, "550 5.1.1 no such user"),
        Receipt(ids["c"]["provider_message_id"], "complained", True),
        Receipt("<unknown@x>", "delivered"),
    ])
    assert counts == {"delivered": 1, "bounced": 1, "complained": 1, "ignored": 0, "unknown": 1}
    assert _states(backend)["a"][0] == "delivered" and _states(backend)["b"][0] == "failed"
    assert suppressions.is_suppressed(backend, "email", "b@shop.test") and suppressions.is_suppressed(backend, "email", "c@shop.test")
    names = {r["event"] for r in backend.rows("SELECT event FROM events WHERE source = 'campaigns'")}
    assert {"Message Delivered", "Message Bounced", "Message Complained"} <= names


class Batching(FakeChannel):
    """A provider with a batch API: records the size of each ``send_many`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def send(self, message: Message) -> SendResult:
        raise AssertionError("a channel with send_many must get the batch, not one message at a time")

    def send_many(self, messages: Sequence[Message]) -> list[SendResult]:
        self.batches.append(len(messages))
        return [FakeChannel.send(self, m) for m in messages]


def test_a_batch_goes_to_the_channel_in_one_send_many(backend: Backend) -> None:
    profiles = [f"p{i:02d}" for i in range(25)]
    load(backend, [person(p) for p in profiles] + [person("out", consent=False)])
    save_template(backend)
    _plan(backend, [*profiles, "out"])
    provider = Batching()
    result = sender(backend, provider, batch=10).run_until_idle()
    assert result.sent == 25 and result.skipped == 1
    assert len(provider.batches) == 3 and sum(provider.batches) == 25  # one call per batch, without the skipped row
    assert {r["state"] for r in outbox.rows_of(backend, "c1") if r["profile_id"] != "out"} == {"sent"}


def test_a_cascade_gets_each_steps_address(backend: Backend) -> None:
    viber, sms = FakeChannel([SendResult.permanent("not a viber user")] * 2), FakeChannel()
    viber.name, sms.name = "viber", "sms"  # type: ignore[misc]
    chain = Cascade([CascadeStep(viber), CascadeStep(sms)], ReceiptRegistry())
    load(backend, [event("a", type="identify", traits={"phone": "+79161234567", "viber_id": "vb-a", "sms_consent": True}),
                   event("b", type="identify", traits={"phone": "+79167654321", "sms_consent": True})])
    save_template(backend, channel="any", text="Hello {{ profile.id }}")
    outbox.plan(backend, campaign_id="c1", step_id="send", profile_ids=["a", "b"], variants=["A"] * 2,
                channels=["email"] * 2, templates=["t1"] * 2, not_before=[NOW] * 2, now=NOW)
    run = Sender(backend, Channels({"email": {"kind": "cascade"}}, factory=lambda k, c: chain), Signer(b"k" * 32),
                 SenderOptions(threads=2, batch=50), clock=lambda: NOW)
    assert run.run_until_idle().sent == 2
    assert sorted(m.to for m in viber.calls) == ["+79167654321", "vb-a"]  # b has no Viber id: Viber by phone
    assert sorted(m.to for m in sms.calls) == ["+79161234567", "+79167654321"]
    sent_to = {m.profile_id: m.data["addresses"] for m in viber.calls}
    assert sent_to == {"a": {"viber": "vb-a", "sms": "+79161234567"}, "b": {"viber": "+79167654321", "sms": "+79167654321"}}


def test_two_threads_sending_at_once_send_each_message_once(backend: Backend) -> None:
    import threading

    profiles = [f"q{i:02d}" for i in range(24)]
    load(backend, [person(p) for p in profiles])
    save_template(backend)
    _plan(backend, profiles)
    provider = FakeChannel()
    shared = sender(backend, provider, batch=4)  # the server's loop and a send asked for through the API
    threads = [threading.Thread(target=shared.run_until_idle) for _ in range(2)] + [threading.Thread(target=shared.step)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    shared.run_until_idle()
    assert {r["state"] for r in outbox.rows_of(backend, "c1")} == {"sent"}
    sent = [m.message_id for m in provider.calls]
    assert len(sent) == len(set(sent)) == 24


def test_worker_processes_render_what_this_process_renders(backend: Backend) -> None:
    """A batch rendered by the worker pool is message for message the batch rendered here; consent still decides."""
    profiles = [f"w{i:02d}" for i in range(12)]
    load(backend, [person(p, first_name=f"N{p}", consent=p != "w03") for p in profiles])
    save_template(backend, html='<html><body><p>Hi {{ profile.first_name }}</p>{% for p in params.lines %}'
                                '<a href="https://shop.test/p/{{ p }}">{{ p }}</a>{% endfor %}</body></html>')
    n = len(profiles)
    outbox.plan(backend, campaign_id="c1", step_id="send", profile_ids=profiles, variants=["A"] * n,
                channels=["email"] * n, templates=["t1"] * n, not_before=[NOW] * n, params=['{"lines": ["a", "b"]}'] * n,
                now=NOW)
    pooled = FakeChannel()
    first = sender(backend, pooled, render_processes=1, render_pool_min=1)
    try:
        first.run_until_idle()
    finally:
        first.close()
    assert sorted(m.to for m in pooled.calls) == sorted(f"{p}@shop.test" for p in profiles if p != "w03")
    assert _states(backend)["w03"] == ("skipped", "no_consent")
    # the same rows rendered in this process give the same messages
    rows = {r["profile_id"]: r for r in outbox.rows_of(backend, "c1")}
    here = sender(backend, FakeChannel())
    from opencdp.campaigns import recipients, rendering, store, templates

    people = recipients.load(backend, profiles, scores=False)
    template = templates.Template.from_dict(store.get(backend, store.TEMPLATE, "t1").definition, "t1")  # type: ignore[union-attr]
    for message in pooled.calls:
        row = rows[message.profile_id or ""]
        ref = rendering.ref_of(row, "email")
        again = here.message(row, ref, template, people[row["profile_id"]], {"id": "c1", "name": "c1", "recommendation_block": None})
        assert again == message
    assert "/m/c/" in (pooled.calls[0].html or "") and "Hi N" in (pooled.calls[0].html or "")
