"""Delivery policy: may this message go to this person now, and if not, skip or wait?

Checked by the sender for every message right before the hand-off to the channel, in this
order (the first that says no decides):

1. **address**: the profile has one on the channel (else skipped ``no_address``);
2. **consent** on the channel and topic (``opencdp.consent.model``): only ``opted_in`` passes,
   and for the ``transactional`` topic anything but ``opted_out``; else ``no_consent``.
   Transactional messages need consent too (the transactional topic's rule): nothing bypasses it;
3. **suppression list**: hard bounces, complaints, manual blocks (``suppressed``);
4. **global control group**: marketing messages skip its members (``global_control``);
5. **quiet hours** in the recipient's time zone: deferred to the end (not transactional);
6. **frequency caps** per channel and across channels, per day and per week (not
   transactional): ``frequency_cap``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opencdp.campaigns.recipients import Recipient
from opencdp.consent.model import TRANSACTIONAL

ALL = "all"


@dataclass(frozen=True)
class Decision:
    send: bool
    reason: str | None = None
    defer_until: dt.datetime | None = None


SEND = Decision(True)


def _clock(text: str) -> dt.time:
    hours, _, minutes = text.partition(":")
    return dt.time(int(hours), int(minutes or 0))


def zone_of(recipient: Recipient, default: str) -> ZoneInfo:
    name = recipient.traits.get("timezone") or recipient.traits.get("time_zone") or default
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def quiet_until(now: dt.datetime, zone: ZoneInfo, quiet: Sequence[str]) -> dt.datetime | None:
    """When quiet hours end if ``now`` is inside them in ``zone``; None when it is not."""
    if len(quiet) != 2:
        return None
    start, end = _clock(quiet[0]), _clock(quiet[1])
    local = now.astimezone(zone)
    t = local.time()
    inside = (start <= t or t < end) if start > end else (start <= t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, end, tzinfo=zone).astimezone(dt.UTC)


def next_local_window(now: dt.datetime, zone: ZoneInfo, start: str, end: str) -> dt.datetime:
    """The earliest time at or after ``now`` that is inside [start, end) local time in ``zone``."""
    s, e = _clock(start), _clock(end)
    local = now.astimezone(zone)
    t = local.time()
    inside = (s <= t < e) if s < e else (t >= s or t < e)
    if inside:
        return now
    day = local.date() if t < s else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, s, tzinfo=zone).astimezone(dt.UTC)


@dataclass
class Caps:
    """Counts of messages already sent to each profile (per channel and in total), day and week."""

    limits: Mapping[str, Sequence[int]]
    day: dict[tuple[str, str], int] = field(default_factory=dict)
    week: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_sent(cls, limits: Mapping[str, Sequence[int]], sent: Sequence[tuple[str, str, dt.datetime]], now: dt.datetime) -> Caps:
        caps = cls(limits)
        for profile_id, channel, at in sent:
            at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
            caps.count(profile_id, channel, day=now - at < dt.timedelta(days=1))
        return caps

    def count(self, profile_id: str, channel: str, *, day: bool = True) -> None:
        for key in ((profile_id, channel), (profile_id, ALL)):
            self.week[key] = self.week.get(key, 0) + 1
            if day:
                self.day[key] = self.day.get(key, 0) + 1

    def over(self, profile_id: str, channel: str) -> bool:
        for scope in (channel, ALL):
            limit = self.limits.get(scope)
            if not limit:
                continue
            key = (profile_id, scope)
            if len(limit) > 0 and self.day.get(key, 0) >= limit[0]:
                return True
            if len(limit) > 1 and self.week.get(key, 0) >= limit[1]:
                return True
        return False


def decide(
    recipient: Recipient,
    *,
    address: str | None,
    consent_channel: str,
    topic: str,
    transactional: bool,
    suppressed: bool,
    in_global_control: bool,
    channel: str,
    caps: Caps,
    now: dt.datetime,
    quiet: Sequence[str],
    default_zone: str,
) -> Decision:
    if not address:
        return Decision(False, "no_address")
    status = recipient.consent(consent_channel, topic)
    allowed = status != "opted_out" if topic == TRANSACTIONAL else status == "opted_in"
    if not allowed:
        return Decision(False, "no_consent")
    if suppressed:
        return Decision(False, "suppressed")
    if transactional:
        return SEND
    if in_global_control:
        return Decision(False, "global_control")
    until = quiet_until(now, zone_of(recipient, default_zone), quiet)
    if until is not None:
        return Decision(False, "quiet_hours", defer_until=until)
    if caps.over(recipient.profile_id, channel):
        return Decision(False, "frequency_cap")
    return SEND
