"""Turns blocks of session calls into timed Segment messages with identities and context."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import reference as ref
from opencdp.demo import text
from opencdp.demo.events import EventColumns
from opencdp.demo.marketing import Campaigns
from opencdp.demo.people import People, random_ips
from opencdp.demo.sessions import Sessions

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_WEB_PREFIX = [
    f'{{"channel":"web","library":{ref.WEB_LIBRARY},"userAgent":{text.js(ua)},'
    '"locale":"ru-RU","timezone":"'
    for ua in ref.WEB_USER_AGENTS
]
_APP_PREFIX = [f'{{"channel":"app",{app},"locale":"ru-RU","timezone":"' for app in ref.APP_CONTEXTS]
_CITY_WEIGHTS = np.array([c.weight for c in ref.CITIES]) / sum(c.weight for c in ref.CITIES)
_TIMEZONES = [c.timezone for c in ref.CITIES]


def _strings(value: str | pa.Array | None, n: int) -> pa.Array:
    if isinstance(value, pa.Array):
        return value
    return pa.repeat(pa.scalar(value, pa.string()), n)


@dataclass
class Stream:
    """Blocks of calls, each block listing its sessions in ascending order.

    Blocks must be added in the order they happen within a session; ``quick`` marks a call
    fired right after the previous one (a track call following its page view) and
    ``landing`` the page that opens a session, before any identify call.
    """

    session: list[IntArray] = field(default_factory=list)
    quick: list[BoolArray] = field(default_factory=list)
    landing: list[BoolArray] = field(default_factory=list)
    kind: list[pa.Array] = field(default_factory=list)
    event: list[pa.Array] = field(default_factory=list)
    name: list[pa.Array] = field(default_factory=list)
    properties: list[pa.Array] = field(default_factory=list)
    traits: list[pa.Array] = field(default_factory=list)

    def add(
        self,
        session: IntArray,
        kind: str | pa.Array,
        *,
        event: str | pa.Array | None = None,
        name: str | pa.Array | None = None,
        properties: pa.Array | None = None,
        traits: pa.Array | None = None,
        quick: bool | BoolArray = False,
        landing: bool = False,
    ) -> None:
        n = len(session)
        self.session.append(np.asarray(session, dtype=np.int64))
        self.quick.append(np.broadcast_to(np.asarray(quick, dtype=bool), (n,)))
        self.landing.append(np.full(n, landing))
        self.kind.append(_strings(kind, n))
        self.event.append(_strings(event, n))
        self.name.append(_strings(name, n))
        self.properties.append(_strings(properties, n))
        self.traits.append(_strings(traits, n))


def _contexts(
    rng: np.random.Generator, s: Sessions, people: People, campaigns: Campaigns
) -> pa.Array:
    """Segment ``context`` JSON per session: library/device, locale, timezone, IP, UTM tags."""
    visitors = s.visitors
    city = np.concatenate([people.city, rng.choice(len(ref.CITIES), visitors, p=_CITY_WEIGHTS)])
    agent = np.concatenate([people.web_agent, rng.integers(0, len(_WEB_PREFIX), visitors)])
    app = np.concatenate([people.app_kind, rng.integers(0, len(_APP_PREFIX), visitors)])
    ip = pa.concat_arrays([people.ip, random_ips(rng, visitors)])
    prefix = np.where(s.channel == 0, agent[s.owner], len(_WEB_PREFIX) + app[s.owner])
    utm_context = pa.concat_arrays([campaigns.utm_context, pa.array([""])])
    utm_pick = np.where(s.utm >= 0, s.utm, len(campaigns.utm_context))
    return text.cat(
        text.lookup(_WEB_PREFIX + _APP_PREFIX, prefix),
        text.lookup(_TIMEZONES, city[s.owner]),
        '","ip":"',
        text.take(ip, s.owner),
        '"',
        text.take(utm_context, utm_pick),
        "}",
    )


def assemble(
    rng: np.random.Generator,
    s: Sessions,
    people: People,
    stream: Stream,
    campaigns: Campaigns,
    end_ms: int,
) -> EventColumns:
    """Order calls within sessions, time them, and attach ids and context."""
    session = np.concatenate(stream.session) if stream.session else np.zeros(0, np.int64)
    order = np.argsort(session, kind="stable")
    session = session[order]
    n = len(session)
    quick = np.concatenate(stream.quick)[order] if n else np.zeros(0, bool)
    landing = np.concatenate(stream.landing)[order] if n else np.zeros(0, bool)

    # Seconds to minutes between pages, a moment between a page and its track call.
    slow = np.clip(rng.exponential(35_000, n), 2_000, 300_000).astype(np.int64)
    gap = np.where(quick, rng.integers(100, 1_500, n), slow)
    first = np.ones(n, dtype=bool)
    first[1:] = session[1:] != session[:-1]
    gap[first] = 0
    elapsed = np.cumsum(gap)
    offset = elapsed - elapsed[np.flatnonzero(first)][np.cumsum(first) - 1]
    duration = np.zeros(s.size, dtype=np.int64)
    np.maximum.at(duration, session, offset)
    # Purchase sessions end with the order; nothing may run past the end of history.
    begin = np.where(s.order >= 0, s.anchor_ms - duration, s.anchor_ms)
    begin = np.minimum(begin, end_ms - 1_000 - duration)
    timestamp = begin[session] + offset

    anonymous = text.uuid4(rng, 2 * (s.customers + s.visitors))
    customer = np.minimum(s.owner, max(s.customers - 1, 0))
    user_id = text.nulls_where(~s.identified, text.take(people.customer_id, customer))
    context = _contexts(rng, s, people, campaigns)

    take = pa.array(order)
    by_session = pa.array(session)
    before_login = s.login[session] & landing
    cols = EventColumns()
    cols.add(
        pa.concat_arrays(stream.kind).take(take) if n else None,
        timestamp,
        user_id=text.nulls_where(before_login, user_id.take(by_session)),
        anonymous_id=text.take(anonymous, s.owner * 2 + s.channel).take(by_session),
        event=pa.concat_arrays(stream.event).take(take) if n else None,
        name=pa.concat_arrays(stream.name).take(take) if n else None,
        properties=pa.concat_arrays(stream.properties).take(take) if n else None,
        traits=pa.concat_arrays(stream.traits).take(take) if n else None,
        context=context.take(by_session),
    )
    return cols
