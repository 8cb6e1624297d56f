"""The identity graph: which identifiers belong to one person, decided by flat rules.

Each event is an *observation*: its identifiers, in priority order, at its event
time. ``IdentityGraph.observe`` resolves it to a profile:

- no known identifier: a new profile;
- identifiers of one profile: attach the new ones to it (up to the per-kind limit;
  identifiers over the limit are dropped and recorded);
- identifiers of several profiles: merge them into the oldest, unless that would
  put two different user ids in one profile (merge protection). Then, going from
  the most to the least trusted identifier, each one that would bring a second
  user id is dropped from the event and recorded as a conflict, and matching goes
  on with the rest.

The result must not depend on the order events arrive in. Without a conflict or
a limit, attaching and merging are unions, which commute. Where a rule dropped an
identifier, the outcome depends on what was known at that moment, so the graph is
defined as the result of observing every event in event-time order; an event that
arrives late into such a *contested* part of the graph makes the graph replay that
part's observations in event-time order (``recompute``).

The graph reports what changed (``Changes``) so the caller can store it with the
events: identifier owners, merges with their cause, and conflicts.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opencdp.identity.identifiers import USER_ID, Rules, kind_of

Key = tuple[int, str]
"""Observation order: (event time in epoch ms, message id)."""


@dataclass(eq=False, slots=True)  # compared and hashed by identity; slots: one object less per profile
class Profile:
    id: str
    first: Key
    last: Key
    user_id: str | None = None
    identifiers: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    """How many identifiers of each kind it holds (a plain dict: a Counter costs ~1 µs to make)."""
    observations: dict[tuple[str, ...], Key] = field(default_factory=dict)
    """Each distinct identifier set seen, with its earliest occurrence: enough to replay."""
    contested: bool = False


@dataclass(frozen=True)
class Merge:
    merged_id: str
    into_id: str
    key: Key | None
    reason: str
    evidence: tuple[str, ...]
    """The identifiers of the event that made the merge."""
    absorbed: tuple[str, ...] = ()
    """The identifiers the merged profile held: what an unmerge gives back."""


@dataclass(frozen=True)
class Conflict:
    key: Key
    identifier: str
    profile_id: str | None
    other_profile_id: str | None
    reason: str  # user_id_conflict | limit


@dataclass
class Changes:
    owners: dict[str, str | None] = field(default_factory=dict)
    """identifier -> its profile now (None: it no longer identifies anyone)."""
    redirects: dict[str, str] = field(default_factory=dict)
    """old profile id -> the profile it is now part of."""
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    first_seen: dict[str, Key] = field(default_factory=dict)
    """identifier -> the observation that first carried it."""
    split_ids: set[str] = field(default_factory=set)
    """Profiles an operator split out (their id maps to themselves again)."""
    recomputed: set[str] = field(default_factory=set)
    """Profile ids whose events may now belong elsewhere (a replay moved identifiers)."""

    def __bool__(self) -> bool:
        return bool(self.owners or self.redirects or self.merges or self.conflicts or self.split_ids)


@dataclass
class _Decision:
    group: list[Profile]
    new: list[str]
    dropped: list[tuple[str, str, Profile | None]]  # identifier, reason, its profile


def _all_owned_by(owners: Mapping[str, str], identifiers: Sequence[str], owner: str) -> bool:
    for identifier in identifiers:  # noqa: SIM110 (a loop: all() of a generator costs more, once per event)
        if owners.get(identifier) != owner:
            return False
    return True


def _over_limit(adds: Mapping[str, int], counts: Mapping[str, int], limits: Mapping[str, int], default_limit: int) -> str | None:
    """Why adding ``adds`` to ``counts`` breaks a per-kind limit (a second user id first), or None."""
    reason = None
    for kind, n in adds.items():
        if counts.get(kind, 0) + n > limits.get(kind, default_limit):
            if kind == USER_ID:
                return "user_id_conflict"
            reason = "limit"
    return reason


class IdentityGraph:
    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules or Rules()
        self.owner: dict[str, str] = {}
        self.profiles: dict[str, Profile] = {}
        self.redirect: dict[str, str] = {}
        self._contests: dict[str, set[str]] = {}
        self._recorded: set[tuple[Key, str, str]] = set()
        self._dropped_unowned: dict[str, set[str]] = {}
        self._created: list[Profile] | None = None  # profiles a replay creates
        self.max_replay_profiles = 64
        self.stats_unreplayed = 0
        self.apart: list[tuple[frozenset[str], frozenset[str]]] = []
        """Identifier sets of profiles an operator split: never merged again, whatever events say."""
        self.changes = Changes()
        self._fresh = itertools.count()

    # -- queries -----------------------------------------------------------------
    def profile_of(self, identifier: str) -> str | None:
        return self.owner.get(identifier)

    def canonical(self, profile_id: str) -> str:
        while profile_id in self.redirect:
            profile_id = self.redirect[profile_id]
        return profile_id

    def partition(self) -> set[frozenset[str]]:
        """The graph itself: groups of identifiers that identify one person."""
        return {frozenset(p.identifiers) for p in self.profiles.values()}

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    # -- observing ---------------------------------------------------------------
    def observe(self, identifiers: Sequence[str], key: Key) -> str | None:
        """Resolve one event's identifiers (in priority order); its profile id, or None without any."""
        if not identifiers:
            return None
        owners = self.owner
        owner = owners.get(identifiers[0])
        if owner is not None and _all_owned_by(owners, identifiers, owner):
            # Most events: every identifier already belongs to one profile. Nothing to decide
            # unless the event is late into a contested profile.
            profile = self.profiles[owner]
            if key >= profile.last or not profile.contested:
                self._seen(profile, tuple(identifiers), key)
                return owner
        touched = set()
        for identifier in identifiers:
            if identifier in self.owner:
                touched.add(self.profiles[self.owner[identifier]])
            else:  # profiles that once had to drop it were shaped by its absence
                for profile_id in self._dropped_unowned.get(identifier, ()):
                    live = self.profiles.get(self.canonical(profile_id))
                    if live is not None:
                        touched.add(live)
        late = any(key < p.last for p in touched)
        if late:
            decision = self._decide(identifiers)
            if decision.dropped or any(p.contested for p in touched):
                return self._recompute(touched, tuple(identifiers), key)
        return self._apply(tuple(identifiers), key)

    def _decide(self, identifiers: Sequence[str]) -> _Decision:
        """Which profiles the event joins and which identifiers it must drop (no change made).

        One rule covers merge protection and limits: the profile the event ends up in
        may hold at most ``rules.limit`` identifiers of each kind (user ids: 1). Going
        from the most trusted identifier down, one that would break it is dropped.
        """
        group: list[Profile] = []
        new: list[str] = []
        dropped: list[tuple[str, str, Profile | None]] = []
        counts: dict[str, int] = {}  # plain dicts: Counter construction and update cost ~µs per call
        limits, default_limit = self.rules.limits, self.rules.default_limit
        for identifier in identifiers:
            owner = self.owner.get(identifier)
            profile = self.profiles[owner] if owner is not None else None
            if profile is not None and profile in group:
                continue
            if profile is not None and self.apart and any(self._kept_apart(profile, g) for g in group):
                dropped.append((identifier, "kept_apart", profile))
                continue
            adds: Mapping[str, int] = profile.kinds if profile is not None else {kind_of(identifier): 1}
            over = _over_limit(adds, counts, limits, default_limit)
            if over is not None:
                dropped.append((identifier, over, profile))
                continue
            for kind, n in adds.items():
                counts[kind] = counts.get(kind, 0) + n
            if profile is None:
                new.append(identifier)
            else:
                group.append(profile)
        return _Decision(group, new, dropped)

    def _apply(self, identifiers: tuple[str, ...], key: Key, reason: str = "shared_identifier") -> str | None:
        decision = self._decide(identifiers)
        if not decision.group and not decision.new:
            return None  # every identifier was dropped
        if decision.group:
            survivor = min(decision.group, key=lambda p: (p.first, p.id))
        else:
            survivor = self._new_profile(key)
        for profile in decision.group:
            if profile is not survivor:
                self._merge(profile, survivor, key, identifiers, reason)
        for identifier in decision.new:
            self._attach(identifier, survivor, key)
        self._seen(survivor, identifiers, key)
        for identifier, reason, owner in decision.dropped:
            if (key, identifier, reason) not in self._recorded:  # a replay restates recorded conflicts
                self._recorded.add((key, identifier, reason))
                self.changes.conflicts.append(Conflict(key, identifier, owner.id if owner else None, survivor.id, reason))
            survivor.contested = True
            if owner is None:
                self._dropped_unowned.setdefault(identifier, set()).add(survivor.id)
            else:
                owner.contested = True
                self._contests.setdefault(owner.id, set()).add(survivor.id)
                self._contests.setdefault(survivor.id, set()).add(owner.id)
        return survivor.id

    @staticmethod
    def _seen(profile: Profile, identifiers: tuple[str, ...], key: Key) -> None:
        """Record an observation. A repeat of a known one decides nothing, so it moves nothing."""
        known = profile.observations.get(identifiers)
        if known is not None and key >= known:
            return
        profile.observations[identifiers] = key
        if key < profile.first:
            profile.first = key
        if key > profile.last:
            profile.last = key

    def _new_profile(self, key: Key) -> Profile:
        digest = hashlib.blake2b(f"{key[1]}/{next(self._fresh)}".encode(), digest_size=10).hexdigest()
        profile = Profile(id=f"p_{digest}", first=key, last=key)
        self.profiles[profile.id] = profile
        if self._created is not None:
            self._created.append(profile)
        return profile

    def _attach(self, identifier: str, profile: Profile, key: Key) -> None:
        for dropped_by in self._dropped_unowned.get(identifier, ()):
            # a profile that had to drop this identifier left it free for this one: the two
            # decisions hang together, so a late event into either replays both
            other = self.profiles.get(self.canonical(dropped_by))
            if other is not None and other is not profile:
                profile.contested = other.contested = True
                self._contests.setdefault(profile.id, set()).add(other.id)
                self._contests.setdefault(other.id, set()).add(profile.id)
        self.owner[identifier] = profile.id
        profile.identifiers.append(identifier)
        kind = kind_of(identifier)
        profile.kinds[kind] = profile.kinds.get(kind, 0) + 1
        if kind == USER_ID:
            profile.user_id = identifier
        self.changes.owners[identifier] = profile.id
        self.changes.first_seen.setdefault(identifier, key)

    def _merge(self, merged: Profile, into: Profile, key: Key | None, evidence: Iterable[str], reason: str = "shared_identifier") -> None:
        for identifier in merged.identifiers:
            self.owner[identifier] = into.id
            self.changes.owners[identifier] = into.id
        into.identifiers.extend(merged.identifiers)
        for kind, n in merged.kinds.items():
            into.kinds[kind] = into.kinds.get(kind, 0) + n
        into.user_id = into.user_id or merged.user_id
        into.first, into.last = min(into.first, merged.first), max(into.last, merged.last)
        for identifiers, seen in merged.observations.items():
            known = into.observations.get(identifiers)
            into.observations[identifiers] = seen if known is None else min(known, seen)
        into.contested = into.contested or merged.contested
        partners = self._contests.pop(merged.id, set())
        for partner in partners:
            links = self._contests.setdefault(partner, set())
            links.discard(merged.id)
            if partner != into.id:
                links.add(into.id)
                self._contests.setdefault(into.id, set()).add(partner)
        del self.profiles[merged.id]
        self.redirect[merged.id] = into.id
        self.changes.redirects[merged.id] = into.id
        self.changes.merges.append(Merge(merged.id, into.id, key, reason, tuple(evidence), tuple(merged.identifiers)))

    def link(self, one: str, other: str, key: Key, reason: str) -> str:
        """Merge two profiles on an outside decision (a probabilistic match, an operator).

        The link is kept as an observation of both profiles' strongest identifiers, so a
        replay makes it again. Merge protection still applies: ValueError if it refuses.
        """
        first, second = self.profiles[self.canonical(one)], self.profiles[self.canonical(other)]
        if first is second:
            return first.id
        anchors = tuple(sorted({min(p.identifiers, key=self.rules.rank) for p in (first, second)}, key=self.rules.rank))
        refused = self._decide(anchors).dropped
        if refused:
            raise ValueError(f"merge protection refuses it: {refused[0][1].replace('_', ' ')} ({refused[0][0]})")
        survivor = self._apply(anchors, key, reason)
        assert survivor is not None
        return survivor

    def _kept_apart(self, one: Profile, other: Profile) -> bool:
        mine, theirs = set(one.identifiers), set(other.identifiers)
        return any((mine & a and theirs & b) or (mine & b and theirs & a) for a, b in self.apart)

    # -- operator actions ----------------------------------------------------------
    def split(self, profile_id: str, identifiers: Iterable[str], new_id: str, at: Key) -> None:
        """Undo a wrong merge: move ``identifiers`` out of a profile into ``new_id``, kept apart for good."""
        profile = self.profiles[profile_id]
        moving = [i for i in profile.identifiers if i in set(identifiers)]
        if not moving or len(moving) == len(profile.identifiers):
            raise ValueError("a split must move some, but not all, of the profile's identifiers")
        moved_observations = {ids: seen for ids, seen in profile.observations.items() if set(ids) & set(moving)}
        first = min(moved_observations.values(), default=at)
        split = Profile(id=new_id, first=first, last=max(moved_observations.values(), default=at))
        self.profiles[new_id] = split
        self.redirect.pop(new_id, None)
        self.changes.redirects.pop(new_id, None)
        for identifier in moving:
            profile.identifiers.remove(identifier)
            profile.kinds[kind_of(identifier)] -= 1  # held: the key is there
            if profile.user_id == identifier:
                profile.user_id = None
            self._attach(identifier, split, first)
        split.observations.update(moved_observations)
        self.apart.append((frozenset(profile.identifiers), frozenset(moving)))
        self.changes.merges.append(Merge(new_id, profile_id, at, "unmerge", tuple(moving)))
        self.changes.split_ids.add(new_id)

    # -- replay ------------------------------------------------------------------
    def _recompute(self, touched: set[Profile], identifiers: tuple[str, ...], key: Key) -> str | None:
        """Replay the contested part of the graph (plus this observation) in event-time order."""
        region: dict[str, Profile] = {}
        pending = [p.id for p in touched]
        while pending:
            profile_id = pending.pop()
            if profile_id in region or profile_id not in self.profiles:
                continue
            region[profile_id] = self.profiles[profile_id]
            pending.extend(self._contests.get(profile_id, ()))
            if len(region) > self.max_replay_profiles:
                # A contested tangle this large (shared family phones across many people) is
                # not replayed: the event is applied as it comes, and the graph remembers it.
                self.stats_unreplayed += 1
                return self._apply(identifiers, key)
        observations: dict[tuple[str, ...], Key] = {identifiers: key}
        previous_owner: dict[str, str] = {}
        for profile in region.values():
            for seen_identifiers, seen in profile.observations.items():
                known = observations.get(seen_identifiers)
                observations[seen_identifiers] = seen if known is None else min(known, seen)
            for identifier in profile.identifiers:
                previous_owner[identifier] = profile.id
                del self.owner[identifier]
            del self.profiles[profile.id]
            for partner in self._contests.pop(profile.id, set()):
                self._contests.get(partner, set()).discard(profile.id)
        merges_before = len(self.changes.merges)
        self._created = []
        for seen_identifiers, seen in sorted(observations.items(), key=lambda item: item[1]):
            self._apply(seen_identifiers, seen)
        # The replay restates old decisions: its merges are not news. What is: where old ids went.
        del self.changes.merges[merges_before:]
        self._keep_old_ids(region, previous_owner)
        for old_id in region:
            if old_id in self.redirect:
                evidence = tuple(i for i, pid in previous_owner.items() if pid == old_id)
                self.changes.merges.append(Merge(old_id, self.canonical(old_id), key, "recomputed", evidence))
        for identifier in previous_owner:
            if identifier not in self.owner:
                self.changes.owners[identifier] = None
        self.changes.recomputed.update(region)
        owner = next((self.owner[i] for i in identifiers if i in self.owner), None)
        return owner

    def _keep_old_ids(self, region: dict[str, Profile], previous_owner: dict[str, str]) -> None:
        """Give replayed profiles the ids they had where possible; redirect the others."""
        fresh = [p for p in self._created or () if p.id in self.profiles]
        self._created = None
        held: dict[str, list[str]] = {}
        for identifier, old_id in previous_owner.items():
            held.setdefault(old_id, []).append(identifier)
        taken: set[str] = set()
        for profile in sorted(fresh, key=lambda p: p.first):
            votes = Counter(previous_owner[i] for i in profile.identifiers if i in previous_owner)
            old = next((pid for pid, _ in votes.most_common() if pid not in taken), None)
            if old is None:
                continue
            taken.add(old)
            self._rename(profile, old)
        for old_id in region:
            if old_id in taken:
                self.redirect.pop(old_id, None)
                self.changes.redirects.pop(old_id, None)
                continue
            # An old profile that no longer exists: send its id where most of its identifiers went.
            votes = Counter(self.owner[i] for i in held.get(old_id, ()) if i in self.owner)
            target = votes.most_common(1)[0][0] if votes else None
            if target is not None:
                self.redirect[old_id] = target
                self.changes.redirects[old_id] = target

    def _rename(self, profile: Profile, new_id: str) -> None:
        old_id = profile.id
        if old_id == new_id:
            return
        del self.profiles[old_id]
        profile.id = new_id
        self.profiles[new_id] = profile
        for identifier in profile.identifiers:
            self.owner[identifier] = new_id
            self.changes.owners[identifier] = new_id
        for partner in self._contests.pop(old_id, set()):
            links = self._contests.setdefault(partner, set())
            links.discard(old_id)
            links.add(new_id)
            self._contests.setdefault(new_id, set()).add(partner)
        self.redirect.pop(old_id, None)
        self.changes.redirects.pop(old_id, None)
        for conflict_index, conflict in enumerate(self.changes.conflicts):
            if old_id in (conflict.profile_id, conflict.other_profile_id):
                self.changes.conflicts[conflict_index] = Conflict(
                    conflict.key,
                    conflict.identifier,
                    new_id if conflict.profile_id == old_id else conflict.profile_id,
                    new_id if conflict.other_profile_id == old_id else conflict.other_profile_id,
                    conflict.reason,
                )
