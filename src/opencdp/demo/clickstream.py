"""Expands planned sessions into Segment page/screen, track and identify calls.

A session is a fixed sequence of blocks (landing page, identify, search, category page,
product views, add-to-cart, cart, checkout, order).  Each block is built for all sessions
at once; ``timeline.assemble`` then interleaves them into per-session timelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import reference as ref
from opencdp.demo import text
from opencdp.demo.catalog import Catalog
from opencdp.demo.events import EventColumns
from opencdp.demo.marketing import Campaigns
from opencdp.demo.people import People
from opencdp.demo.purchases import Orders
from opencdp.demo.sessions import Sessions
from opencdp.demo.taxonomy import ROOMS, SEARCH_QUERIES, RoomPlan
from opencdp.demo.timeline import Stream, assemble

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ROOM_TITLES = ("Кухня", "Гостиная", "Спальня", "Детская", "Ванная", "Прихожая", "Домашний офис")
_ROOM_TITLES_JSON = [text.js(t) for t in ROOM_TITLES]
_QUERIES = [q for room in SEARCH_QUERIES for q in room]
_QUERIES_JSON = [text.js(q) for q in _QUERIES]
_QUERIES_URL = [quote(q) for q in _QUERIES]
_QUERY_START = np.cumsum([0, *[len(r) for r in SEARCH_QUERIES]])[:-1]
_QUERY_COUNT = np.array([len(r) for r in SEARCH_QUERIES])


@dataclass(frozen=True)
class _Context:
    """What every block builder needs about the chunk."""

    rng: np.random.Generator
    s: Sessions
    people: People
    orders: Orders
    order_ids: pa.Array
    catalog: Catalog
    web: BoolArray
    page_kind: pa.Array  # "page" on the web, "screen" in the apps
    order: IntArray  # the session's order, 0 when none (check ``has_order``)
    has_order: BoolArray
    lines: IntArray  # order lines of the session's order


def _gather(values: IntArray, index: IntArray, mask: BoolArray) -> IntArray:
    """``values[index]`` where ``mask`` holds, 0 elsewhere (``index`` may be invalid there)."""
    if len(values) == 0:
        return np.zeros(len(index), dtype=np.int64)
    return np.where(mask, values[np.where(mask, index, 0)], 0)


def _interleave(first: pa.Array, second: pa.Array) -> pa.Array:
    n = len(first)
    order = np.stack([np.arange(n), np.arange(n) + n], axis=1).ravel()
    return text.take(pa.concat_arrays([first, second]), order)


def _pages(web: BoolArray, path: text.Part, title: text.Part, query: text.Part = "") -> pa.Array:
    """Page/screen properties; app screens carry no URL."""
    n = len(web)
    path, title, query = (text.full(p, n) for p in (path, title, query))
    head = text.where(web, text.cat('{"url":"', ref.SITE, path, query, '",'), "{")
    return text.cat(head, '"path":"', path, '","title":', title, "}")


def _page(
    c: _Context,
    stream: Stream,
    idx: IntArray,
    name: str,
    properties: pa.Array,
    landing: bool = False,
) -> None:
    stream.add(idx, text.take(c.page_kind, idx), name=name, properties=properties, landing=landing)


def _ranges(counts: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Session of each item, its index within the session, and each session's first item."""
    start = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=start[1:])
    session = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return session, np.arange(len(session)) - start[session], start


def expand(
    rng: np.random.Generator,
    sessions: Sessions,
    people: People,
    orders: Orders,
    order_ids: pa.Array,
    catalog: Catalog,
    plan: RoomPlan,
    campaigns: Campaigns,
    window_end_ms: int,
) -> EventColumns:
    s = sessions
    web = s.channel == 0
    has_order = s.order >= 0
    order = np.maximum(s.order, 0)
    c = _Context(
        rng=rng,
        s=s,
        people=people,
        orders=orders,
        order_ids=order_ids,
        catalog=catalog,
        web=web,
        page_kind=text.where(web, "page", "screen"),
        order=order,
        has_order=has_order,
        lines=_gather(orders.lines_per_order, order, has_order),
    )
    stream = Stream()
    _landing(c, stream, campaigns)
    last_viewed = _products(c, stream, plan)
    _checkout(c, stream, last_viewed)
    return assemble(rng, s, people, stream, campaigns, window_end_ms)


def _landing(c: _Context, stream: Stream, campaigns: Campaigns) -> None:
    """Home page, login, search and category page."""
    s, rng = c.s, c.rng
    # Direct visits land on the home page half of the time, otherwise deeper in the site;
    # campaign links land on the room's category page.
    home = (s.utm < 0) & (rng.random(s.size) < 0.5)
    category = (s.utm >= 0) | (rng.random(s.size) < np.where(home, 0.8, 0.4))
    idx = np.flatnonzero(home)
    _page(c, stream, idx, "Home", _pages(c.web[idx], "/", text.js(ref.HOME_TITLE)), landing=True)

    idx = np.flatnonzero(s.login)
    stream.add(idx, "identify", traits=text.take(_traits(c.people), s.owner[idx]))

    idx = np.flatnonzero(s.search)
    room = s.room[idx]
    query = _QUERY_START[room] + (rng.random(len(idx)) * _QUERY_COUNT[room]).astype(np.int64)
    url_query = text.cat("?q=", text.lookup(_QUERIES_URL, query))
    _page(c, stream, idx, "Search", _pages(c.web[idx], "/search", '"Поиск"', url_query))
    searched = text.cat('{"query":', text.lookup(_QUERIES_JSON, query), "}")
    stream.add(idx, "track", event="Products Searched", properties=searched, quick=True)

    idx = np.flatnonzero(category)
    room = s.room[idx]
    utm_query = pa.concat_arrays([campaigns.utm_query, pa.array([""])])
    utm = np.where(s.utm[idx] >= 0, s.utm[idx], len(campaigns.utm_query))
    path = text.cat("/c/", text.lookup(ROOMS, room))
    title = text.lookup(_ROOM_TITLES_JSON, room)
    _page(c, stream, idx, "Category", _pages(c.web[idx], path, title, text.take(utm_query, utm)))


def _products(c: _Context, stream: Stream, plan: RoomPlan) -> IntArray:
    """Product views (browsing first, then the order's products), adds and the cart page.

    Returns the last product viewed in each session.
    """
    s, rng, orders, catalog = c.s, c.rng, c.orders, c.catalog
    counts = s.n_views + c.lines  # at least one per session
    v_sess, j, v_start = _ranges(counts)
    from_order = j >= s.n_views[v_sess]
    line = orders.line_start[c.order[v_sess]] + j - s.n_views[v_sess]
    room = s.room[v_sess]
    cat = plan.all_cats[room, (rng.random(len(v_sess)) * plan.n_cats[room]).astype(np.int64)]
    tier = np.concatenate([c.people.tier, rng.beta(2.0, 2.6, s.visitors)])
    browsed = catalog.pick(cat, tier[s.owner[v_sess]] + rng.normal(0, 0.2, len(v_sess)))
    product = np.where(from_order, _gather(orders.product, line, from_order), browsed)
    n = len(v_sess)
    pages = _pages(
        c.web[v_sess],
        text.cat("/p/", text.take(catalog.product_id, product)),
        text.take(catalog.name_json, product),
    )
    viewed = text.cat("{", text.take(catalog.fragment, product), ',"currency":"RUB"}')
    stream.add(
        np.repeat(v_sess, 2),
        _interleave(text.take(c.page_kind, v_sess), text.full("track", n)),
        name=_interleave(text.full("Product", n), pa.nulls(n, pa.string())),
        event=_interleave(pa.nulls(n, pa.string()), text.full("Product Viewed", n)),
        properties=_interleave(pages, viewed),
        quick=np.tile([False, True], n),
    )
    last_viewed = product[v_start + counts - 1] if n else np.zeros(s.size, dtype=np.int64)

    # Add to cart: the order's lines, or the last product viewed (abandoned cart).
    a_counts = np.where(c.has_order, c.lines, s.n_adds)
    a_sess, a_j, _ = _ranges(a_counts)
    in_order = c.has_order[a_sess]
    a_line = orders.line_start[c.order[a_sess]] + a_j
    a_product = np.where(in_order, _gather(orders.product, a_line, in_order), last_viewed[a_sess])
    quantity = np.where(in_order, _gather(orders.quantity, a_line, in_order), 1)
    cart_id = text.uuid4(rng, s.size)
    added = text.cat(
        "{",
        text.take(catalog.fragment, a_product),
        ',"currency":"RUB","quantity":',
        text.num(quantity),
        ',"cart_id":"',
        text.take(cart_id, a_sess),
        '"}',
    )
    stream.add(a_sess, "track", event="Product Added", properties=added)
    idx = np.flatnonzero(a_counts > 0)
    _page(c, stream, idx, "Cart", _pages(c.web[idx], "/cart", '"Корзина"'))
    return last_viewed


def _checkout(c: _Context, stream: Stream, last_viewed: IntArray) -> None:
    """Checkout page, Checkout Started (also when abandoned) and Order Completed."""
    s, orders, catalog = c.s, c.orders, c.catalog
    products = _order_products(orders, catalog)
    idx = np.flatnonzero(c.has_order | s.checkout)
    o = c.order[idx]
    ordered = c.has_order[idx]
    single = text.cat("[{", text.take(catalog.fragment, last_viewed[idx]), ',"quantity":1}]')
    value = np.where(ordered, _gather(orders.total, o, ordered), catalog.price[last_viewed[idx]])
    head = text.where(ordered, text.cat('{"order_id":"', _take_safe(c.order_ids, o), '",'), "{")
    started = text.cat(
        head,
        '"value":',
        text.num(value),
        ',"currency":"RUB","products":',
        text.where(ordered, _take_safe(products, o), single),
        "}",
    )
    _page(c, stream, idx, "Checkout", _pages(c.web[idx], "/checkout", '"Оформление заказа"'))
    stream.add(idx, "track", event="Checkout Started", properties=started, quick=True)

    idx = np.flatnonzero(c.has_order)
    o = c.order[idx]
    line_order = np.repeat(np.arange(orders.size), orders.lines_per_order)
    discount = np.bincount(line_order, weights=orders.discount, minlength=orders.size)
    total = text.num(orders.total[o])
    completed = text.cat(
        '{"order_id":"',
        text.take(c.order_ids, o),
        '","total":',
        total,
        ',"revenue":',
        total,
        ',"discount":',
        text.num(discount[o].astype(np.int64)),
        ',"currency":"RUB","products":',
        text.take(products, o),
        "}",
    )
    stream.add(idx, "track", event="Order Completed", properties=completed)


def _take_safe(values: pa.Array, index: IntArray) -> pa.Array:
    """``values[index]``, or nulls when ``values`` is empty (no orders in the chunk)."""
    if len(values) == 0:
        return pa.nulls(len(index), pa.string())
    return text.take(values, index)


def _traits(people: People) -> pa.Array:
    """Identify traits as the website knows them: clean e-mail, names, E.164 phone."""
    email = text.where(people.has_email, text.cat('"email":"', people.email, '",'), "")
    phone_number = text.cat(',"phone":"+7', text.padded(people.phone_number, 10), '"')
    phone = text.where(people.has_phone, phone_number, "")
    first, last = people.first_name_json, people.last_name_json
    return text.cat("{", email, '"firstName":', first, ',"lastName":', last, phone, "}")


def _order_products(orders: Orders, catalog: Catalog) -> pa.Array:
    """The ``products`` JSON array of every order."""
    quantity = text.num(orders.quantity)
    item = text.cat("{", text.take(catalog.fragment, orders.product), ',"quantity":', quantity, "}")
    return text.cat("[", text.list_join(item, orders.lines_per_order), "]")
