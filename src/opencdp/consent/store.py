"""A profile's consent, computed from its events: the latest change per channel and topic wins.

The store keeps no consent state of its own: SQL selects the events that may
record consent (identify calls whose traits name a consent field, and the consent
events of ``opencdp.consent.model``) for the canonical profiles asked about
(``profile_map`` redirects merged profiles, so consent given on one device before a
merge counts after it), and ``opencdp.consent.model.parse_event`` reads them here.
Changes are folded in event-time order, ties broken by message id: an older event
that arrives late never overrides a newer one. With nothing recorded, a channel
and topic is ``unknown``, which means no consent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from opencdp.consent.model import (
    CONSENT_EVENTS,
    TRAIT_MARKERS,
    UNKNOWN,
    ConsentChange,
    Ignored,
    channel_of,
    parse_event,
    topic_of,
)
from opencdp.identity.profiles import canonical_ids, members_of
from opencdp.storage.base import Backend
from opencdp.storage.schema import EVENTS

_CHUNK = 2000  # profile ids per query: keeps IN lists a reasonable size
_COLUMNS = ("message_id", "type", "event", "timestamp", "source", "properties", "traits", "profile_id")


@dataclass
class History:
    """A profile's consent changes, oldest first, and the consent parts of its events that were ignored."""

    changes: list[ConsentChange] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)

    def current(self) -> list[ConsentChange]:
        """The latest change per channel and topic, ordered by channel and topic."""
        return latest(self.changes)


def latest(changes: Iterable[ConsentChange]) -> list[ConsentChange]:
    """The last change per (channel, topic) of changes given oldest first."""
    state: dict[tuple[str, str], ConsentChange] = {}
    for change in changes:
        state[(change.channel, change.topic)] = change
    return [state[key] for key in sorted(state)]


def history(backend: Backend, canonical: Sequence[str]) -> dict[str, History]:
    """Consent histories of canonical profile ids (every id given has an entry, maybe empty)."""
    result = {profile: History() for profile in canonical}
    members = members_of(backend, sorted(result))
    ids = sorted(members)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), _CHUNK):
        rows += backend.select(candidates(ids[start : start + _CHUNK])).to_pylist()
    rows.sort(key=lambda row: (row["timestamp"], row["message_id"]))  # chunks each come sorted, not together
    for row in rows:
        row["profile_id"] = members[row["profile_id"]]
        parsed = parse_event(row)
        entry = result[row["profile_id"]]
        entry.changes.extend(parsed.changes)
        entry.ignored.extend(parsed.ignored)
    return result


def candidates(profile_ids: Sequence[str]) -> exp.Select:
    """The events stored under these profile ids that may record consent, oldest first.

    ``profile_ids`` must include every id merged into a profile (``members_of``):
    events keep the profile id they were loaded with.
    """
    lowered = exp.Lower(this=exp.column("traits"))
    mentions = exp.or_(*(exp.Like(this=lowered, expression=exp.Literal.string(f"%{m}%")) for m in TRAIT_MARKERS))
    identify = exp.and_(exp.column("type").eq(exp.Literal.string("identify")), exp.paren(mentions))
    consent_event = exp.and_(
        exp.column("type").eq(exp.Literal.string("track")),
        exp.column("event").isin(*(exp.Literal.string(name) for name in CONSENT_EVENTS)),
    )
    # Identify calls have event '': naming the event values lets ClickHouse use its (event, timestamp) key.
    names = exp.column("event").isin(*(exp.Literal.string(name) for name in ("", *CONSENT_EVENTS)))
    return (
        exp.select(*_COLUMNS)
        .from_(exp.to_table(EVENTS.name))
        .where(
            exp.and_(
                names,
                exp.column("profile_id").isin(*(exp.Literal.string(i) for i in profile_ids), copy=False),
                exp.paren(exp.or_(identify, consent_event)),
                copy=False,
            ),
            copy=False,
        )
        .order_by("timestamp", "message_id", copy=False)  # no deep copies of the thousands of ids
    )


def current_consents(backend: Backend, profile_id: str) -> list[ConsentChange]:
    """The profile's current consent per channel and topic (only those ever recorded).

    A merged profile id answers for the profile it is now part of; an unknown id has none.
    """
    canonical = canonical_ids(backend, [profile_id]).get(profile_id, profile_id)
    return history(backend, [canonical])[canonical].current()


def consent_of(backend: Backend, profile_ids: Iterable[str], channel: str, topic: str = "marketing") -> dict[str, str]:
    """Each profile id -> its status on ``channel`` and ``topic`` (``unknown`` if never recorded).

    Ids are answered as given, also merged or unknown ones. Raises ``ConsentError`` for a
    channel or topic that is not valid.
    """
    channel, topic = channel_of(channel), topic_of(topic)
    given = list(dict.fromkeys(profile_ids))
    known = canonical_ids(backend, given)
    canonical = {i: known.get(i, i) for i in given}
    status: dict[str, str] = {}
    for profile, entry in history(backend, sorted(set(canonical.values()))).items():
        for change in entry.changes:  # oldest first: the last one standing wins
            if change.channel == channel and change.topic == topic:
                status[profile] = change.status.value
    return {i: status.get(canonical[i], UNKNOWN) for i in given}
