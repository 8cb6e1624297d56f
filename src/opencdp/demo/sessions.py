"""Web and app sessions: when people browse, where they land and who they are known as."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from opencdp.demo import reference as ref
from opencdp.demo.config import DAY_MS, Window
from opencdp.demo.marketing import Campaigns, Engagement
from opencdp.demo.people import People
from opencdp.demo.purchases import ONLINE_HOURS, PROJECT, Orders, local_times
from opencdp.demo.taxonomy import ROOM_BROWSE_WEIGHT

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

VISITORS_PER_CUSTOMER = 0.25  # anonymous-only visitors generated alongside each chunk
_BROWSE = np.array(ROOM_BROWSE_WEIGHT) / sum(ROOM_BROWSE_WEIGHT)
_CITY_WEIGHTS = np.array([c.weight for c in ref.CITIES]) / sum(c.weight for c in ref.CITIES)


@dataclass(frozen=True)
class Sessions:
    """Sessions of a chunk. Owners below ``customers`` are customers, the rest visitors."""

    owner: IntArray
    channel: IntArray  # 0 web (page calls), 1 app (screen calls)
    anchor_ms: IntArray  # session start, or the order time for purchase sessions
    order: IntArray  # online order completed in the session, -1 if none
    room: IntArray
    utm: IntArray  # campaign / ad index (see Campaigns), -1 for direct traffic
    n_views: IntArray  # product views besides the products of the order
    search: BoolArray
    n_adds: IntArray  # add-to-cart outside an order (abandoned carts)
    checkout: BoolArray  # abandoned checkout
    login: BoolArray  # the session where this device first logs in (identify call)
    identified: BoolArray  # the device is logged in during the session
    customers: int
    visitors: int

    @property
    def size(self) -> int:
        return len(self.owner)


@dataclass
class _Batch:
    owner: IntArray
    channel: IntArray
    anchor_ms: IntArray
    order: IntArray
    room: IntArray
    utm: IntArray
    n_views: IntArray
    search: BoolArray
    n_adds: IntArray
    checkout: BoolArray


def _batch(
    rng: np.random.Generator,
    owner: IntArray,
    channel: IntArray,
    anchor_ms: IntArray,
    room: IntArray,
    utm: IntArray,
    *,
    views: float,
    p_add: float,
    order: IntArray | None = None,
) -> _Batch:
    """Sessions with 1 + Poisson(``views``) product views and an add-to-cart chance ``p_add``.

    Purchase sessions (``order`` given) browse Poisson(``views``) products, then view and
    add the order's lines.
    """
    n = len(owner)
    adds = (rng.random(n) < p_add).astype(np.int64)
    return _Batch(
        owner=owner,
        channel=channel,
        anchor_ms=anchor_ms,
        order=np.full(n, -1, dtype=np.int64) if order is None else order,
        room=room,
        utm=utm,
        n_views=rng.poisson(views, n) + (0 if order is not None else 1),
        search=rng.random(n) < 0.2,
        n_adds=adds if order is None else np.zeros(n, dtype=np.int64),
        checkout=(adds > 0) & (rng.random(n) < 0.25) if order is None else np.zeros(n, dtype=bool),
    )


def plan_sessions(
    rng: np.random.Generator,
    people: People,
    orders: Orders,
    engagement: Engagement,
    campaigns: Campaigns,
    window: Window,
) -> Sessions:
    n = people.size
    days = window.days
    start = window.start_ms
    ads = campaigns.ads

    def channel_of(owner: IntArray) -> IntArray:
        return (people.app_user[owner] & (rng.random(len(owner)) < 0.7)).astype(np.int64)

    def maybe_ad(size: int, share: float) -> IntArray:
        return np.where(rng.random(size) < share, rng.choice(ads, size), -1)

    batches: list[_Batch] = []
    online = np.flatnonzero(orders.online)
    owner = orders.customer[online]
    batches.append(
        _batch(
            rng,
            owner,
            channel_of(owner),
            orders.at_ms[online],
            orders.room[online],
            maybe_ad(len(online), 0.12),
            views=0.4,
            p_add=0.0,
            order=online,
        )
    )

    # Research before a furniture project, whichever channel it is bought in (ROPO).
    project = np.flatnonzero((orders.kind == PROJECT) & (rng.random(orders.size) < 0.25))
    anchor = (
        orders.at_ms[project]
        - rng.integers(1, 10, len(project)) * DAY_MS
        - rng.integers(0, DAY_MS // 2, len(project))
    )
    keep = anchor > start + DAY_MS
    project, anchor = project[keep], anchor[keep]
    owner = orders.customer[project]
    batches.append(
        _batch(
            rng,
            owner,
            channel_of(owner),
            anchor,
            orders.room[project],
            maybe_ad(len(project), 0.2),
            views=1.5,
            p_add=0.15,
        )
    )

    # Everyday browsing while the customer is around.
    lo = np.maximum(people.created_t - 20.0, 1.0)
    hi = np.minimum(orders.churned_t + 45.0, days - 1.0)
    span = np.maximum(hi - lo, 0.0)
    count = rng.poisson(people.browse_rate * span)
    owner = np.repeat(np.arange(n, dtype=np.int64), count)
    day = np.floor(lo[owner] + rng.random(len(owner)) * span[owner]).astype(np.int64)
    anchor = local_times(rng, day, people.utc_offset_ms[owner], ONLINE_HOURS, start)
    pick = np.minimum(rng.choice(3, len(owner), p=[0.5, 0.3, 0.2]), people.n_rooms[owner] - 1)
    room = np.where(
        rng.random(len(owner)) < 0.75,
        people.room_order[owner, pick],
        rng.choice(len(_BROWSE), len(owner), p=_BROWSE),
    )
    batches.append(
        _batch(
            rng,
            owner,
            channel_of(owner),
            anchor,
            room,
            maybe_ad(len(owner), 0.1),
            views=0.6,
            p_add=0.12,
        )
    )

    # Visits from e-mail and SMS links.
    owner = engagement.clicks_customer
    batches.append(
        _batch(
            rng,
            owner,
            np.zeros(len(owner), np.int64),
            engagement.clicks_ms,
            campaigns.room[engagement.clicks_campaign],
            engagement.clicks_campaign,
            views=1.0,
            p_add=0.08,
        )
    )

    # Visitors who never log in.
    visitors = round(n * VISITORS_PER_CUSTOMER)
    count = 1 + rng.poisson(0.4, visitors)
    owner = n + np.repeat(np.arange(visitors, dtype=np.int64), count)
    offset = (
        np.array([c.utc_offset_hours for c in ref.CITIES])[
            rng.choice(len(ref.CITIES), len(owner), p=_CITY_WEIGHTS)
        ]
        * 3_600_000
    )
    anchor = local_times(rng, rng.integers(1, days - 1, len(owner)), offset, ONLINE_HOURS, start)
    channel = (rng.random(len(owner)) < 0.1).astype(np.int64)
    batches.append(
        _batch(
            rng,
            owner,
            channel,
            anchor,
            rng.choice(len(_BROWSE), len(owner), p=_BROWSE),
            maybe_ad(len(owner), 0.45),
            views=1.3,
            p_add=0.08,
        )
    )

    merged = {f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(_Batch)}
    owner, channel, anchor = merged["owner"], merged["channel"], merged["anchor_ms"]

    # A device is identified from its first login on: the first purchase, or a sign-in.
    customer = owner < n
    after_signup = anchor >= start + np.round(people.created_t[np.minimum(owner, n - 1)] * DAY_MS)
    candidate = customer & (
        (merged["order"] >= 0) | (after_signup & (rng.random(len(owner)) < 0.1))
    )
    key = owner * 2 + channel
    first_login = np.full(2 * (n + visitors), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_login, key[candidate], anchor[candidate])
    login = candidate & (anchor == first_login[key])
    return Sessions(
        owner=owner,
        channel=channel,
        anchor_ms=anchor,
        order=merged["order"],
        room=merged["room"],
        utm=merged["utm"],
        n_views=merged["n_views"],
        search=merged["search"],
        n_adds=merged["n_adds"],
        checkout=merged["checkout"],
        login=login,
        identified=customer & (anchor >= first_login[key]),
        customers=n,
        visitors=visitors,
    )
