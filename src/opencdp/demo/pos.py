"""Offline till purchases: store network and the rows of pos_orders.csv."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import reference as ref
from opencdp.demo import text
from opencdp.demo.catalog import Catalog
from opencdp.demo.people import People, format_phones
from opencdp.demo.purchases import STORE_HOURS, Orders, finish_orders, local_times
from opencdp.demo.taxonomy import ROOM_BROWSE_WEIGHT, RoomPlan

IntArray = npt.NDArray[np.int64]

POS_COLUMNS: tuple[str, ...] = (
    "order_id", "loyalty_card", "phone", "store_id", "channel", "ordered_at", "product_id",
    "quantity", "price", "discount", "total", "currency",
)  # fmt: skip
WALK_IN_SHARE = 0.1  # anonymous shoppers per identified offline order


@dataclass
class Stores:
    """Store network; ``next_number`` keeps per-store receipt counters across chunks."""

    city: IntArray
    next_number: IntArray
    width: int

    @classmethod
    def build(cls, count: int) -> Stores:
        weights = np.array([c.weight for c in ref.CITIES])
        share = weights / weights.sum() * count
        per_city = np.floor(share).astype(np.int64)
        if per_city.sum() < count:
            order = np.argsort(-(share - per_city), kind="stable")
            per_city[order[: count - int(per_city.sum())]] += 1
        city = np.repeat(np.arange(len(ref.CITIES), dtype=np.int64), per_city)
        return cls(city, np.ones(count, dtype=np.int64), max(2, len(str(count))))

    @property
    def size(self) -> int:
        return len(self.city)

    def home_stores(self, rng: np.random.Generator, city: IntArray) -> IntArray:
        """A store in the customer's city, or any store for cities without one."""
        first = np.searchsorted(self.city, city, side="left")
        count = np.searchsorted(self.city, city, side="right") - first
        local = first + (rng.random(len(city)) * np.maximum(count, 1)).astype(np.int64)
        anywhere = rng.integers(0, self.size, len(city))
        return np.where(count > 0, local, anywhere)


def pos_table(
    rng: np.random.Generator,
    people: People,
    orders: Orders,
    catalog: Catalog,
    plan: RoomPlan,
    stores: Stores,
    days: int,
    start_ms: int,
) -> pa.Table:
    """Rows of pos_orders.csv for the chunk's offline orders plus anonymous walk-ins."""
    offline = np.flatnonzero(~orders.online)
    cust = orders.customer[offline]
    home = stores.home_stores(rng, people.city[cust])
    store = np.where(
        rng.random(len(offline)) < 0.85, home, rng.integers(0, stores.size, len(offline))
    )
    at_ms = orders.at_ms[offline]
    counts = orders.lines_per_order[offline]
    line_idx = _ranges(orders.line_start[offline], counts)
    product = orders.product[line_idx]
    quantity = orders.quantity[line_idx]
    discount = orders.discount[line_idx]
    total = orders.total[offline]

    # How the shopper identified at the till.
    card_holder = people.has_card[cust]
    with_phone = people.has_phone[cust]
    u = rng.random(len(offline))
    phone_only = card_holder & with_phone & (u < 0.12)
    card_and_phone = card_holder & with_phone & (u >= 0.12) & (u < 0.2)
    card = text.nulls_where(phone_only | ~card_holder, text.take(people.card, cust))
    phone_style = rng.integers(0, 5, len(offline))
    phone_number = np.where(phone_only | card_and_phone, people.phone_number[cust], 0)
    phone = format_phones(phone_number, phone_style)

    walk = _walk_ins(
        rng, catalog, plan, stores, round(len(offline) * WALK_IN_SHARE), days, start_ms
    )
    n_walk = len(walk[0])
    store = np.concatenate([store, walk[0]])
    at_ms = np.concatenate([at_ms, walk[1]])
    counts = np.concatenate([counts, walk[2]])
    product = np.concatenate([product, walk[3]])
    quantity = np.concatenate([quantity, walk[4]])
    discount = np.concatenate([discount, walk[5]])
    total = np.concatenate([total, walk[6]])
    card = pa.concat_arrays([card, pa.nulls(n_walk, pa.string())])
    phone = pa.concat_arrays([phone, pa.nulls(n_walk, pa.string())])

    # Receipt numbers run per store in time order, continuing across chunks.
    by_store = np.lexsort((at_ms, store))
    sorted_store = store[by_store]
    first_in_store = np.searchsorted(sorted_store, sorted_store, side="left")
    number = np.empty(len(store), dtype=np.int64)
    number[by_store] = stores.next_number[sorted_store] + np.arange(len(store)) - first_in_store
    stores.next_number += np.bincount(store, minlength=stores.size)
    store_text = text.padded(store + 1, stores.width)
    order_id = text.cat("S", store_text, "-", text.padded(number, 7))

    chrono = np.lexsort((number, store, at_ms))
    row_order = np.repeat(chrono, counts[chrono])
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    row_line = _ranges(starts[chrono], counts[chrono])
    ordered_at = text.iso_seconds(at_ms)
    rows = len(row_line)
    table = pa.table(
        {
            "order_id": text.take(order_id, row_order),
            "loyalty_card": text.take(card, row_order),
            "phone": text.take(phone, row_order),
            "store_id": text.take(text.cat("store-", store_text), row_order),
            "channel": pa.repeat(pa.scalar("pos", pa.string()), rows),
            "ordered_at": text.take(ordered_at, row_order),
            "product_id": text.take(catalog.product_id, product[row_line]),
            "quantity": pa.array(quantity[row_line], pa.int64()),
            "price": pa.array(catalog.price[product[row_line]], pa.int64()),
            "discount": pa.array(discount[row_line], pa.int64()),
            "total": pa.array(total[row_order], pa.int64()),
            "currency": pa.repeat(pa.scalar("RUB", pa.string()), rows),
        }
    )
    return table.select(list(POS_COLUMNS))


def _ranges(starts: IntArray, counts: IntArray) -> IntArray:
    """Concatenation of ``range(s, s + c)`` for each pair, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(total, dtype=np.int64)


def _walk_ins(
    rng: np.random.Generator,
    catalog: Catalog,
    plan: RoomPlan,
    stores: Stores,
    n: int,
    days: int,
    start_ms: int,
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray, IntArray, IntArray]:
    """Anonymous small baskets: store, time, line counts, lines and totals."""
    store = rng.integers(0, stores.size, n)
    offsets = (
        np.array([c.utc_offset_hours for c in ref.CITIES], dtype=np.int64)[stores.city[store]]
        * 3_600_000
    )
    at_ms = local_times(rng, rng.integers(1, days, n), offsets, STORE_HOURS, start_ms)
    weights = np.array(ROOM_BROWSE_WEIGHT) / sum(ROOM_BROWSE_WEIGHT)
    room = rng.choice(len(weights), n, p=weights)
    n_lines = 1 + rng.poisson(0.7, n)
    owner = np.repeat(np.arange(n, dtype=np.int64), n_lines)
    line_room = room[owner]
    cat = plan.side[line_room, (rng.random(len(owner)) * plan.n_side[line_room]).astype(np.int64)]
    product = catalog.pick(cat, rng.beta(2.0, 3.0, len(owner)))
    quantity = 1 + (rng.random(len(owner)) < 0.2).astype(np.int64)
    line_start, product, quantity, discount, total, _ = finish_orders(
        rng, catalog, owner, product, quantity, n
    )
    return store, at_ms, np.diff(line_start), product, quantity, discount, total
