"""Purchase histories: a vectorised BG/NBD-style process with room progression.

Each customer buys at a Gamma-distributed rate while alive and churns after any purchase
with a Beta-distributed probability.  Orders follow the customer's room plan (kitchen set,
then table and chairs, then the next room), small baskets fill the gaps, and consumables
are bought again when they run out.  One loop iteration advances every live customer by
one purchase, so the Python loop runs per purchase *round*, never per customer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from opencdp.demo.catalog import Catalog
from opencdp.demo.config import DAY_MS, HOUR_MS
from opencdp.demo.people import People
from opencdp.demo.taxonomy import CATEGORIES, ROOM_BROWSE_WEIGHT, RoomPlan

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_ROUNDS = 200
SMALL, PROJECT, REFILL = 0, 1, 2
_CAT_ROOM = np.array([c.room for c in CATEGORIES], dtype=np.int64)
_QTY_LO = np.array([c.quantity[0] for c in CATEGORIES], dtype=np.int64)
_QTY_HI = np.array([c.quantity[1] for c in CATEGORIES], dtype=np.int64)
_BROWSE = np.array(ROOM_BROWSE_WEIGHT) / sum(ROOM_BROWSE_WEIGHT)
# Local hour-of-day profiles (weights per hour 0..23).
STORE_HOURS = np.array([0] * 10 + [3, 5, 7, 8, 8, 8, 9, 10, 10, 9, 7, 4] + [0, 0], dtype=np.float64)
ONLINE_HOURS = np.array(
    [2, 1, 0.5, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4, 4, 5, 5, 5, 5, 5, 6, 7, 9, 10, 10, 8, 5],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Orders:
    """Orders of one chunk, lines stored contiguously: ``line_start[o]:line_start[o+1]``."""

    customer: IntArray  # chunk-local customer index
    t: FloatArray  # days since the start of history
    at_ms: IntArray  # epoch milliseconds (local shop or browsing hours)
    online: BoolArray
    kind: IntArray  # SMALL, PROJECT or REFILL
    room: IntArray
    line_start: IntArray
    product: IntArray
    quantity: IntArray
    discount: IntArray  # per line, RUB
    total: IntArray  # per order: sum(price * quantity) - discounts
    churned_t: FloatArray  # per customer: day of churn, inf while still active

    @property
    def size(self) -> int:
        return len(self.customer)

    @property
    def lines_per_order(self) -> IntArray:
        return np.diff(self.line_start)


def local_times(
    rng: np.random.Generator, day: IntArray, offset_ms: IntArray, profile: FloatArray, start_ms: int
) -> IntArray:
    """Epoch ms on ``day`` (days since start of history) at a local hour drawn from ``profile``."""
    hour = rng.choice(24, size=len(day), p=profile / profile.sum())
    within = hour * HOUR_MS + rng.integers(0, HOUR_MS, len(day))
    return start_ms + day * DAY_MS + within - offset_ms


def line_discounts(rng: np.random.Generator, gross: IntArray) -> IntArray:
    """About a fifth of lines carry a promotion of 5-20 %, whole roubles."""
    promo = rng.random(len(gross)) < 0.2
    return np.where(promo, np.round(gross * rng.uniform(0.05, 0.2, len(gross))), 0).astype(np.int64)


def finish_orders(
    rng: np.random.Generator,
    catalog: Catalog,
    order_of_line: IntArray,
    product: IntArray,
    quantity: IntArray,
    n_orders: int,
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray, IntArray]:
    """Merge duplicate lines, price them and total each order.

    Returns ``line_start, product, quantity, discount, total, order_of_line`` with lines
    sorted by order.
    """
    key = order_of_line * catalog.size + product
    uniq, inverse = np.unique(key, return_inverse=True)
    quantity = np.bincount(inverse, weights=quantity, minlength=len(uniq)).astype(np.int64)
    order_of_line = uniq // catalog.size
    product = uniq % catalog.size
    discount = line_discounts(rng, catalog.price[product] * quantity)
    net = catalog.price[product] * quantity - discount
    total = np.bincount(order_of_line, weights=net, minlength=n_orders).astype(np.int64)
    line_start = np.zeros(n_orders + 1, dtype=np.int64)
    np.cumsum(np.bincount(order_of_line, minlength=n_orders), out=line_start[1:])
    return line_start, product, quantity, discount, total, order_of_line


def _quantities(rng: np.random.Generator, cats: IntArray) -> IntArray:
    lo, hi = _QTY_LO[cats], _QTY_HI[cats]
    return lo + np.floor((hi - lo + 1) * rng.random(len(cats)) ** 2).astype(np.int64)


def simulate(
    rng: np.random.Generator,
    people: People,
    catalog: Catalog,
    plan: RoomPlan,
    days: int,
    start_ms: int,
) -> Orders:
    n = people.size
    last_day = days - 0.6
    t = np.maximum(people.created_t, 1.0)
    alive = t < last_day
    room_ptr = np.zeros(n, dtype=np.int64)
    step_ptr = np.zeros(n, dtype=np.int64)
    cons_prod = np.full(n, -1, dtype=np.int64)
    cons_due = np.full(n, np.inf)
    bought = np.zeros(n, dtype=np.int64)
    churned_t = np.full(n, np.inf)
    at_signup = (people.created_t >= 1.0) & (rng.random(n) < 0.55)
    o_cust: list[IntArray] = []
    o_t: list[FloatArray] = []
    o_kind: list[IntArray] = []
    o_room: list[IntArray] = []
    l_order: list[IntArray] = []
    l_prod: list[IntArray] = []
    l_qty: list[IntArray] = []
    n_orders = 0
    for rnd in range(MAX_ROUNDS):
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        tn = t[idx] + rng.exponential(1.0, len(idx)) / people.rate[idx]
        if rnd == 0:
            tn = np.where(at_signup[idx], t[idx] + 0.01, tn)
        refill = cons_due[idx] < tn
        tn = np.where(refill, cons_due[idx], tn)
        ok = tn < last_day
        alive[idx[~ok]] = False
        idx, tn, refill = idx[ok], tn[ok], refill[ok]
        m = len(idx)
        if m == 0:
            continue
        t[idx] = tn
        unfinished = room_ptr[idx] < people.n_rooms[idx]
        room = people.room_order[idx, np.minimum(room_ptr[idx], people.room_order.shape[1] - 1)]
        p_project = np.where(bought[idx] == 0, 0.8, 0.45)
        project = ~refill & unfinished & (rng.random(m) < p_project)
        small_room = np.where(
            unfinished & (rng.random(m) < 0.5), room, rng.choice(len(_BROWSE), m, p=_BROWSE)
        )
        refill_room = _CAT_ROOM[catalog.cat[np.maximum(cons_prod[idx], 0)]]
        order_room = np.where(project, room, np.where(refill, refill_room, small_room))
        local = np.arange(m, dtype=np.int64)

        cats: list[IntArray] = []
        owners: list[IntArray] = []
        for k in range(plan.steps.shape[2]):
            core = plan.steps[room, np.minimum(step_ptr[idx], plan.steps.shape[1] - 1), k]
            mask = project & (core >= 0)
            cats.append(core[mask])
            owners.append(local[mask])
        n_side = np.where(
            project,
            rng.poisson(0.8, m),
            np.where(refill, rng.poisson(0.4, m), 1 + rng.poisson(0.9, m)),
        )
        side_owner = np.repeat(local, n_side)
        side_room = order_room[side_owner]
        pick = (rng.random(len(side_owner)) * plan.n_side[side_room]).astype(np.int64)
        cats.append(plan.side[side_room, pick])
        owners.append(side_owner)
        cat = np.concatenate(cats)
        owner = np.concatenate(owners)
        quantile = people.tier[idx[owner]] + rng.normal(0.0, 0.15, len(owner))
        product = catalog.pick(cat, quantile)
        if tn.max() > days - 30:  # recent orders avoid what is out of stock today
            sold_out = (catalog.stock[product] == 0) & (tn[owner] > days - 30)
            shifted = (
                catalog.cat_start[cat]
                + (product - catalog.cat_start[cat] + 1) % catalog.cat_count[cat]
            )
            product = np.where(sold_out, shifted, product)
        qty = _quantities(rng, cat)
        refill_owner = local[refill]
        product = np.concatenate([product, cons_prod[idx[refill]]])
        owner = np.concatenate([owner, refill_owner])
        qty = np.concatenate([qty, rng.integers(1, 3, len(refill_owner))])

        # Consumables in this basket schedule the next refill.
        cons_due[idx[refill]] = np.inf
        consumable = np.where(catalog.consumption[product] > 0, product, -1)
        newest = np.full(m, -1, dtype=np.int64)
        np.maximum.at(newest, owner, consumable)
        plan_refill = (newest >= 0) & (rng.random(m) < 0.7)
        who = idx[plan_refill]
        cons_prod[who] = newest[plan_refill]
        cons_due[who] = tn[plan_refill] + catalog.consumption[newest[plan_refill]] * rng.uniform(
            0.85, 1.3, len(who)
        )

        step_ptr[idx[project]] += 1
        done = project & (step_ptr[idx] >= plan.n_steps[room])
        room_ptr[idx[done]] += 1
        step_ptr[idx[done]] = 0
        bought[idx] += 1
        churn = rng.random(m) < people.dropout[idx] * np.where(refill, 0.5, 1.0)
        alive[idx[churn]] = False
        churned_t[idx[churn]] = tn[churn]

        o_cust.append(idx)
        o_t.append(tn)
        o_kind.append(np.where(refill, REFILL, np.where(project, PROJECT, SMALL)))
        o_room.append(order_room)
        l_order.append(owner + n_orders)
        l_prod.append(product)
        l_qty.append(qty)
        n_orders += m

    customer = _cat_int(o_cust)
    times = np.concatenate(o_t) if o_t else np.zeros(0)
    line_start, product, quantity, discount, total, _ = finish_orders(
        rng, catalog, _cat_int(l_order), _cat_int(l_prod), _cat_int(l_qty), n_orders
    )
    online = rng.random(n_orders) < people.online_share[customer]
    day = np.floor(times).astype(np.int64)
    offset = people.utc_offset_ms[customer]
    at_ms = np.where(
        online,
        local_times(rng, day, offset, ONLINE_HOURS, start_ms),
        local_times(rng, day, offset, STORE_HOURS, start_ms),
    )
    return Orders(
        customer=customer,
        t=times,
        at_ms=at_ms,
        online=online,
        kind=_cat_int(o_kind),
        room=_cat_int(o_room),
        line_start=line_start,
        product=product,
        quantity=quantity,
        discount=discount,
        total=total,
        churned_t=churned_t,
    )


def _cat_int(parts: list[IntArray]) -> IntArray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
