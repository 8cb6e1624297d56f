"""Probabilistic dedupe of stored profiles: sure matches merged, likely ones queued for review."""

from __future__ import annotations

from typing import Any

from opencdp.identity.review import candidates, decide, profile_records, run_dedupe
from opencdp.identity.stage import stage_for
from opencdp.identity.synthetic import generate_customers
from opencdp.storage.base import Backend
from tests.identity.test_stage import send


def load_customers(backend: Backend, count: int) -> dict[str, int]:
    """Each synthetic CRM record as its own identify event; record id -> true person."""
    data = generate_customers(count, duplicate_share=0.3, seed=3)
    messages: list[dict[str, Any]] = []
    for i, record in enumerate(data.records.to_pylist()):
        traits = {"firstName": record["first_name"], "lastName": record["last_name"], "city": record["city"],
                  "email": record["email"], "phone": record["phone"],
                  "birthday": record["birthday"].isoformat() if record["birthday"] else None}
        messages.append({"type": "identify", "anonymousId": f"crm-{record['profile_id']}", "messageId": f"c{i}",
                         "timestamp": "2024-05-01T10:00:00Z", "traits": {k: v for k, v in traits.items() if v}})
    send(backend, *messages)
    return dict(zip(data.records.column("profile_id").to_pylist(), list(data.cluster_ids), strict=True))


def person_of_profiles(backend: Backend, truth: dict[str, int]) -> dict[str, set[int]]:
    graph = stage_for(backend).graph
    people: dict[str, set[int]] = {}
    for record, person in truth.items():
        profile = graph.profile_of(f"anonymous_id:crm-{record}")
        assert profile is not None
        people.setdefault(profile, set()).add(person)
    return people


def test_dedupe_merges_true_duplicates_only_and_queues_the_rest(backend: Backend) -> None:
    truth = load_customers(backend, 300)
    before = profile_records(backend).num_rows
    # Shared household phones and emails already join some people deterministically.
    impure_before = sum(len(p) > 1 for p in person_of_profiles(backend, truth).values())
    report = run_dedupe(backend)
    assert report.profiles == before and report.pairs > 0
    assert report.merged > 0
    impure_after = sum(len(p) > 1 for p in person_of_profiles(backend, truth).values())
    assert impure_after - impure_before <= max(1, report.merged // 20), "automatic merges join different people"
    merges = backend.rows("SELECT reason, evidence FROM profile_merges WHERE reason = 'probabilistic'")
    assert len(merges) == report.merged and "match_probability" in merges[0]["evidence"]
    again = run_dedupe(backend)
    assert again.merged == 0  # decided pairs are not proposed again; merged ones are one profile now


def test_review_queue_accept_and_reject(backend: Backend) -> None:
    send(
        backend,
        {"type": "identify", "anonymousId": "a", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
         "traits": {"firstName": "Анна", "lastName": "Петрова", "birthday": "1990-04-12", "city": "Казань"}},
        {"type": "identify", "anonymousId": "b", "messageId": "m2", "timestamp": "2024-05-01T11:00:00Z",
         "traits": {"firstName": "Anna", "lastName": "Petrova", "birthday": "1990-04-12", "city": "Kazan"}},
        {"type": "identify", "anonymousId": "c", "messageId": "m3", "timestamp": "2024-05-01T12:00:00Z",
         "traits": {"firstName": "Анна", "lastName": "Петрова", "birthday": "1990-12-04", "city": "Казань"}},
    )
    report = run_dedupe(backend, apply=False)  # queue everything for review
    queued = candidates(backend)
    assert report.merged == 0 and len(queued) == report.queued >= 1
    first = queued[0]
    assert first["evidence"] and first["status"] == "pending"
    result = decide(backend, first["profile_id_l"], first["profile_id_r"], accept=True, by="ak_test")
    assert result["status"] == "merged"
    graph = stage_for(backend).graph
    assert graph.canonical(first["profile_id_l"]) == graph.canonical(first["profile_id_r"])
    for other in candidates(backend)[:1]:
        assert decide(backend, other["profile_id_l"], other["profile_id_r"], accept=False, by="ak_test")["status"] == "rejected"
    assert backend.scalar("SELECT count(*) FROM profile_merges WHERE reason = 'manual'") == 1


def test_merge_protection_refuses_two_user_ids(backend: Backend) -> None:
    send(
        backend,
        {"type": "identify", "userId": "u1", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
         "traits": {"firstName": "Иван", "lastName": "Смирнов", "birthday": "1985-01-02", "city": "Тула"}},
        {"type": "identify", "userId": "u2", "messageId": "m2", "timestamp": "2024-05-01T11:00:00Z",
         "traits": {"firstName": "Иван", "lastName": "Смирнов", "birthday": "1985-01-02", "city": "Тула"}},
    )
    first, second = (stage_for(backend).graph.profile_of(f"user_id:{u}") for u in ("u1", "u2"))
    assert first and second
    try:
        stage_for(backend).link(first, second, reason="manual")
    except ValueError as error:
        assert "user id" in str(error)
    else:
        raise AssertionError("two user ids were merged")
