"""Runs the demo shop: catalogue once, then customers chunk by chunk, streaming to disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import text
from opencdp.demo.catalog import build_catalog
from opencdp.demo.clickstream import expand
from opencdp.demo.config import CHUNK_CUSTOMERS, DemoConfig, DemoSummary, Window
from opencdp.demo.marketing import Campaigns, engage
from opencdp.demo.people import People, customers_table, make_people
from opencdp.demo.pos import Stores, pos_table
from opencdp.demo.purchases import Orders, simulate
from opencdp.demo.sessions import plan_sessions
from opencdp.demo.taxonomy import room_plan
from opencdp.demo.writer import Outputs, clear_outputs

IntArray = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]

BONUS_RATE = 0.05  # bonus roubles per rouble spent by card holders
BONUS_LIFETIME_DAYS = 180
WELCOME_BONUS = 500


def generate(out_dir: Path, config: DemoConfig, progress: Progress | None = None) -> DemoSummary:
    """Write catalog.csv, customers.csv, pos_orders.csv and events-NNNNN.parquet to ``out_dir``.

    Memory stays bounded by one chunk of customers; ``progress(done, total)`` is called
    after each chunk.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(out_dir)
    window = Window.of(config)
    catalog = build_catalog(config.products, config.seed, window.end_ms)
    plan = room_plan()
    campaigns = Campaigns.build(config.seed, window)
    stores = Stores.build(config.stores)
    next_online = 1
    pos_orders = 0
    online_orders = 0
    with Outputs(out_dir) as out:
        out.write_catalog(catalog.table)
        for chunk, first in enumerate(range(0, config.customers, CHUNK_CUSTOMERS)):
            size = min(CHUNK_CUSTOMERS, config.customers - first)
            rng = np.random.default_rng([config.seed, 0, chunk])
            people = make_people(rng, first, size, window)
            orders = simulate(rng, people, catalog, plan, window.days, window.start_ms)
            engagement = engage(rng, people, campaigns, window)
            balance, expires = _bonuses(rng, people, orders, window)
            consent = people.email_consent & ~engagement.unsubscribed
            created = _signup_times(rng, people, orders, window)
            out.write_customers(customers_table(people, created, balance, expires, consent))
            pos = pos_table(
                rng, people, orders, catalog, plan, stores, window.days, window.start_ms
            )
            pos_orders += len(pos.column("order_id").unique())
            out.write_pos(pos)
            del pos
            order_ids, next_online = _online_order_ids(orders, next_online)
            online_orders += int(orders.online.sum())
            sessions = plan_sessions(rng, people, orders, engagement, campaigns, window)
            events = expand(
                rng, sessions, people, orders, order_ids, catalog, plan, campaigns, window.end_ms
            )
            events.extend(engagement.events)
            out.write_events(events.table(rng))
            del events, sessions, engagement, orders, people
            if progress is not None:
                progress(first + size, config.customers)
    return DemoSummary(
        products=catalog.size,
        customers=out.customers.rows,
        pos_orders=pos_orders,
        pos_lines=out.pos.rows,
        online_orders=online_orders,
        events=out.events,
        catalog_path=out.catalog.path,
        customers_path=out.customers.path,
        pos_orders_path=out.pos.path,
        event_paths=tuple(out.event_paths),
    )


def _online_order_ids(orders: Orders, next_number: int) -> tuple[pa.Array, int]:
    """``W00000001``-style ids numbered in time order across the run (all orders get one)."""
    online = np.flatnonzero(orders.online)
    online = online[np.argsort(orders.at_ms[online], kind="stable")]
    number = np.zeros(orders.size, dtype=np.int64)
    number[online] = next_number + np.arange(len(online))
    return text.cat("W", text.padded(number, 8)), next_number + len(online)


def _signup_times(
    rng: np.random.Generator, people: People, orders: Orders, window: Window
) -> IntArray:
    """Sign-up times, moved to just before the first purchase when that came the same day."""
    created = people.created_ms(window)
    first = np.full(people.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, orders.customer, orders.at_ms)
    before = first - rng.integers(60_000, 20 * 60_000, people.size)
    return np.where(first < created, before, created)


def _bonuses(
    rng: np.random.Generator, people: People, orders: Orders, window: Window
) -> tuple[IntArray, IntArray]:
    """Loyalty balances: 5 % of card holders' spend, expiring 180 days after the last purchase."""
    n = people.size
    card = people.has_card[orders.customer]
    earned = np.bincount(
        orders.customer[card], weights=orders.total[card] * BONUS_RATE, minlength=n
    )
    last = np.full(n, -np.inf)
    np.maximum.at(last, orders.customer, orders.t)
    active = people.has_card & (last + BONUS_LIFETIME_DAYS > window.days)
    balance = np.where(active, np.round(earned * rng.uniform(0.1, 1.0, n)), 0).astype(np.int64)
    expires = np.where(
        balance > 0,
        window.start_day
        + np.floor(np.where(active, last, 0)).astype(np.int64)
        + BONUS_LIFETIME_DAYS,
        0,
    )
    welcome = people.has_card & ~np.isfinite(last) & (people.created_t + 60 > window.days)
    balance = np.where(welcome, WELCOME_BONUS, balance)
    expires = np.where(
        welcome, window.start_day + np.floor(people.created_t).astype(np.int64) + 60, expires
    )
    return balance, expires.astype(np.int64)
