"""Activating a broadcast: validated at once, planned in chunks with visible progress, resumable."""

from __future__ import annotations

import pytest

from opencdp.campaigns import broadcast, outbox, store
from opencdp.campaigns.store import DefinitionError
from opencdp.storage.base import Backend
from tests.campaigns.helpers import NOW, FakeChannel, channels, load, person, save_template


def _campaign(backend: Backend, campaign_id: str, n: int, **extra: object) -> None:
    from opencdp.segments import store as segments

    load(backend, [person(f"{campaign_id}-{i:02d}", plan=campaign_id) for i in range(n)])
    save_template(backend)
    segments.save(backend, f"seg-{campaign_id}", definition=f'traits.plan = "{campaign_id}"')
    store.save(backend, store.CAMPAIGN, campaign_id, campaign_id,
               {"segment": f"seg-{campaign_id}", "channel": "email", "template": "t1", **extra})


def test_planning_runs_in_chunks_with_progress_then_activates(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    _campaign(backend, "bg1", 7)
    monkeypatch.setattr(broadcast, "PLAN_CHUNK", 3)
    begun = broadcast.begin(backend, channels(FakeChannel()), "bg1", NOW)
    assert begun.status == store.PLANNING and begun.definition["planning"]["state"] == "running"
    assert outbox.rows_of(backend, "bg1") == []  # nothing planned by the request itself

    seen: list[tuple[int | None, int]] = []

    def progress() -> None:
        planning = store.require(backend, store.CAMPAIGN, "bg1").definition["planning"]
        seen.append((planning["audience"], planning["planned"]))
        assert store.require(backend, store.CAMPAIGN, "bg1").status == store.PLANNING
        assert len(outbox.rows_of(backend, "bg1")) == planning["planned"]  # what is planned is already sendable

    result = broadcast.run_planning(backend, "bg1", NOW, progress=progress)
    assert seen == [(7, 3), (7, 6), (7, 7)]
    assert result["planned"] == 7 and result["status"] == store.ACTIVE
    done = store.require(backend, store.CAMPAIGN, "bg1")
    assert done.status == store.ACTIVE and done.definition["planning"]["state"] == "done"
    # planning again (a restart mid-way) adds nothing twice
    broadcast.begin(backend, channels(FakeChannel()), "bg1", NOW)
    assert broadcast.run_planning(backend, "bg1", NOW)["planned"] == 0
    assert len(outbox.rows_of(backend, "bg1")) == 7


def test_a_bad_definition_is_refused_before_planning_and_a_pause_is_kept(backend: Backend) -> None:
    _campaign(backend, "bg2", 3)
    store.save(backend, store.CAMPAIGN, "bad", "bad", {"segment": "seg-bg2", "channel": "email", "template": "missing"})
    with pytest.raises(DefinitionError) as error:
        broadcast.begin(backend, channels(FakeChannel()), "bad", NOW)
    assert error.value.field == "template"
    assert store.require(backend, store.CAMPAIGN, "bad").status == store.DRAFT

    broadcast.begin(backend, channels(FakeChannel()), "bg2", NOW)
    store.set_status(backend, store.CAMPAIGN, "bg2", store.PAUSED)  # paused while being planned
    result = broadcast.run_planning(backend, "bg2", NOW)
    assert result["status"] == store.PAUSED and result["planning"]["state"] == "done"
