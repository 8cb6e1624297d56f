"""A small hand-built shop for the segment tests: about thirty people, a furniture and cosmetics
catalogue with its stock history, orders with lines, views, carts, e-mails and NPS answers.

``load(backend)`` writes it into a store; ``as_data()`` gives the same rows to the reference
interpreter. Every test's expected members are worked out by hand from the story of each
person below (all times relative to ``NOW``, ``d`` = days ago, ``h`` = hours ago):

=========  ==============================================================================
anna       orders 25d 2100 [face cream], 15d 2500 [serum x2], 5d 1400 [face cream, lotion];
           an order after NOW (ignored); viewed Sofa Grey 2024-05-10 while out of stock;
           opened trigger 10d, mass 100d; clicked size-M in a mass e-mail 5d;
           Moscow, born 1990-06-05, signed up 2023-04-28, anna@example.ru
boris      orders 200d 500 [table], 20d 1000, 10d 1500, 3d 2000 (cosmetics); viewed Sofa Green
           2024-05-10 (out of stock then and now); added to cart 3h (no order after);
           opened trigger 20d, mass 30d; clicked size-L (mass) 5d; two identifies at the same
           time: Kazan then Saint Petersburg (the later message id wins); born 1985-06-01,
           signed up 2024-05-20
vera       orders 40d, 28d, 12d 3000 each (cosmetics), 1h30m 150 [t-shirts]; viewed a t-shirt
           3h, added 2h; opened mass 15d; clicked size-M in a trigger e-mail 5d; Moscow,
           born 2000-02-29
gleb       orders 20d 2500 [face cream], 10d 2500 [lotion], 8d 5000 [kitchen set], 4h 25
           [t-shirt]; viewed a table 3d, added 5h (the order 4h is exactly 1h later);
           opened trigger 10d and one e-mail without a kind 20d; clicked size-M (mass) 200d;
           Novosibirsk, born 1995-05-31
dasha      orders 20d, 10d 3000 (cosmetics); merged with dasha-old, whose order 15d 3000
           [lotion, floor lamp] and identify (Kazan, dasha@old.ru, 300d) count for her;
           her own identify 100d says Samara
egor       order 20d [kitchen set]; added to cart 30 minutes ago; delivered trigger 5d
fedor      orders 50d 2500 [kitchen set Loft], 10d 320 [chairs x4], 10d-2h 25 [t-shirt];
           added to cart 10d (the t-shirt order 2h later)
galina     order 90d [kitchen set]
ilya       orders 100d [chairs x4], 40d [table], 30d [kitchen set], 2d-2h [t-shirt];
           viewed a t-shirt 2d1h, added 2d
kirill     orders 200d [kitchen set, table, chairs x4], 5d [Sofa Grey]; viewed the armchair
           8d, 7d; clicked size-M (mass) 12d and size-L (mass) 2d
lena       viewed Sofa Grey 2024-05-27, the armchair 05-28, Sofa Green 05-29; opened trigger
           40d, 60d; merged with lena-old (born 2010-06-08); Kazan, signed up 2024-05-25
mark       order 2d [floor lamp]; viewed Sofa Green 20d, 3d; Moscow, born 1970-12-31,
           signed up 2024-05-31T23:00+03:00
nina       viewed Sofa Grey 3d; added to cart exactly 1h ago; Perm, birthday "not a date"
oleg       order 400d [armchair]; viewed the armchair 10d, 9d
pavel      orders 100d 300, 60d 400 [chairs x5]; NPS 10 (30d); delivered mass 10d; Kazan
rita       order 200d 300; NPS 9 (20d); delivered trigger 3d; Kazan; address first
           {city Kazan, street Baumana}, then 10d {street Kremlyovskaya}
sasha      order 50d 500; NPS 8; Kazan
taras      order 40d 600; NPS 10; Kazan 300d, Moscow 50d
ulyana     orders 80d 150, 70d 250; NPS 9; Kazan
vlad       order 300d 260; NPS 10 (15d); delivered mass 10d; Moscow 200d, Kazan 20d
wanda      viewed Kitchen set Loft 2024-05-15 (out of stock then and now)
xenia      viewed Face serum 2024-05-10 (its only stock change is later), Sofa Grey 2024-04-20
yana       viewed face cream 5h, added 4h, ordered 3h40m [face cream] 900, added again 2h
zoya       orders 200d [table], 15d [kitchen set, chairs x4] (chairs in the same order)
pyotr      Kazan 100d, then city set to null 10d (the trait is cleared); pyotr@x.ru
semyon     NPS "10" as text (an import); Omsk
quiet      in profile_map, no events at all
=========  ==============================================================================

Not people: events of ``p-ghost`` (not in profile_map: nobody's) and anonymous events
without a profile.
"""

from __future__ import annotations

import datetime as dt
import json
from itertools import count
from typing import Any

import pyarrow as pa

from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import (
    EVENTS,
    ORDER_LINE_EVENT_COLUMNS,
    ORDER_LINES,
    PRODUCT_CHANGES,
    PRODUCTS,
    PROFILE_MAP,
    Table,
)
from tests.segments.reference import Data

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
UTC = dt.UTC


def ago(days: float = 0, hours: float = 0, minutes: float = 0) -> dt.datetime:
    return NOW - dt.timedelta(days=days, hours=hours, minutes=minutes)


def at(year: int, month: int, day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


PEOPLE = [
    "anna", "boris", "vera", "gleb", "dasha", "egor", "fedor", "galina", "ilya", "kirill", "lena", "mark", "nina",
    "oleg", "pavel", "rita", "sasha", "taras", "ulyana", "vlad", "wanda", "xenia", "yana", "zoya", "pyotr", "semyon",
    "quiet",
]
"""Every canonical profile (the universe), by short name; the profile id is ``p-<name>``."""


def pid(name: str) -> str:
    return f"p-{name}"


UNIVERSE = frozenset(pid(n) for n in PEOPLE)

# -- the catalogue ----------------------------------------------------------------------------

CATALOGUE_TIME = at(2024, 1, 1)
_PRODUCTS = [
    # product_id, name, category, room, price, stock now
    ("k-set-1", "Kitchen set Nordic", "Kitchen > Kitchen sets", "Kitchen", 1500.0, 5),
    ("k-set-2", "Kitchen set Loft", "Kitchen > Kitchen sets", "Kitchen", 2500.0, 0),
    ("k-table-1", "Dining table Oak", "Kitchen > Tables", "Kitchen", 400.0, 3),
    ("k-chair-1", "Chair Oak", "Kitchen > Chairs", "Kitchen", 80.0, 20),
    ("l-sofa-1", "Sofa Grey", "Living room > Sofas", "Living room", 900.0, 2),
    ("l-sofa-2", "Sofa Green", "Living room > Sofas", "Living room", 1100.0, 0),
    ("l-arm-1", "Armchair Bergen", "Living room > Armchairs", "Living room", 500.0, 4),
    ("l-lamp-1", "Floor lamp", "Living room > Lighting", "Living room", 120.0, 7),
    ("c-face-1", "Face cream", "Cosmetics > Face", None, 900.0, 50),
    ("c-face-2", "Face serum", "Cosmetics > Face", None, 1200.0, 8),
    ("c-body-1", "Body lotion", "Cosmetics > Body", None, 300.0, 10),
    ("t-shirt-1", "T-shirt", "Clothing > T-shirts", None, 25.0, 100),
]


def _product(product_id: str, name: str, category: str, room: str | None, price: float, stock: int,
             updated_at: dt.datetime = CATALOGUE_TIME) -> dict[str, Any]:
    return {
        "product_id": product_id, "sku": product_id.upper(), "name": name, "category": category, "room": room,
        "brand": "Opencdp Home", "price": price, "currency": "RUB", "stock": stock, "updated_at": updated_at,
    }


CATALOGUE = {p[0]: _product(*p) for p in _PRODUCTS}
PRODUCT_ROWS = [
    # An older version of Sofa Grey (out of stock): the newest version (stock 2) is current.
    _product("l-sofa-1", "Sofa Grey", "Living room > Sofas", "Living room", 950.0, 0, at(2023, 12, 1)),
    *CATALOGUE.values(),
]


def _change(product_id: str, changed_at: dt.datetime, old: float, new: float, field: str = "stock") -> dict[str, Any]:
    return {"product_id": product_id, "changed_at": changed_at, "field": field, "old_value": old, "new_value": new}


PRODUCT_CHANGE_ROWS = [
    _change("l-sofa-1", at(2024, 3, 1), 5, 3),
    _change("l-sofa-1", at(2024, 5, 1), 3, 0),  # out of stock from May 1st ...
    _change("l-sofa-1", at(2024, 5, 25), 0, 2),  # ... back on May 25th
    _change("l-sofa-2", at(2024, 5, 5), 4, 0),  # out of stock since May 5th
    _change("k-set-2", at(2024, 5, 1), 2, 0),  # out of stock since May 1st
    _change("c-face-2", at(2024, 5, 20), 0, 8),  # the only change of the serum: nothing known before May 20th
    _change("l-arm-1", at(2024, 4, 1), 550, 500, field="price"),  # a price change is not a stock level
]

# -- events ------------------------------------------------------------------------------------

_ids = count(1)


def _event(profile: str | None, when: dt.datetime, name: str, *, kind: str = "track", channel: str = "web",
           properties: dict[str, Any] | None = None, traits: dict[str, Any] | None = None,
           **columns: Any) -> dict[str, Any]:
    """One event row; message ids increase in the order events are written here (ties by time)."""
    row: dict[str, Any] = {
        "message_id": f"m{next(_ids):04d}", "type": kind, "event": name, "timestamp": when, "received_at": when,
        "source": "test", "channel": channel, "lsn": 1, "profile_id": profile,
        "properties": json.dumps(properties, ensure_ascii=False) if properties is not None else None,
        "traits": json.dumps(traits, ensure_ascii=False) if traits is not None else None,
        "_lines": [],
    }
    row.update(columns)
    return row


def identify(name: str, when: dt.datetime, **traits: Any) -> dict[str, Any]:
    return _event(pid(name), when, "", kind="identify", traits=traits, user_id=name)


def track(name: str | None, when: dt.datetime, event: str, **properties: Any) -> dict[str, Any]:
    profile = None if name is None else pid(name)
    product_id = properties.get("product_id")
    return _event(profile, when, event, properties=properties, product_id=product_id)


def order(name: str | None, when: dt.datetime, total: float, *lines: str | tuple[str, int]) -> dict[str, Any]:
    """An Order Completed event; each line is a product id, or (product id, quantity)."""
    items = [(line, 1) if isinstance(line, str) else line for line in lines]
    products = [{"product_id": p, "quantity": q, "price": CATALOGUE[p]["price"]} for p, q in items]
    row = track(name, when, "Order Completed", order_id=f"o-{next(_ids)}", total=total, products=products)
    row.update(total=total, currency="RUB", order_id=json.loads(row["properties"])["order_id"])
    row["_lines"] = [
        {
            "line_no": n, "product_id": p, "sku": CATALOGUE[p]["sku"], "name": CATALOGUE[p]["name"],
            "category": CATALOGUE[p]["category"], "brand": CATALOGUE[p]["brand"], "price": CATALOGUE[p]["price"],
            "quantity": float(q),
        }
        for n, (p, q) in enumerate(items)
    ]
    return row


def view(name: str, when: dt.datetime, product_id: str) -> dict[str, Any]:
    return track(name, when, "Product Viewed", product_id=product_id, price=CATALOGUE[product_id]["price"])


def added(name: str, when: dt.datetime, product_id: str) -> dict[str, Any]:
    return track(name, when, "Product Added", product_id=product_id)


def email(name: str, when: dt.datetime, event: str, kind: str | None, **properties: Any) -> dict[str, Any]:
    if kind is not None:
        properties["campaign_kind"] = kind
    row = track(name, when, event, campaign=f"{kind or 'unknown'}-campaign", **properties)
    row["channel"] = "email"
    return row


def nps(name: str, when: dt.datetime, score: int | str) -> dict[str, Any]:
    return track(name, when, "Survey Answered", survey="nps", score=score)


OPENED, DELIVERED, CLICKED = "Email Opened", "Email Delivered", "Email Link Clicked"

EVENT_ROWS: list[dict[str, Any]] = [
    # anna
    identify("anna", ago(400), city="Moscow", birthday="1990-06-05", created_at="2023-04-28T10:00:00Z",
             email="anna@example.ru"),
    order("anna", ago(25), 2100, "c-face-1"),
    order("anna", ago(15), 2500, ("c-face-2", 2)),
    order("anna", ago(5), 1400, "c-face-1", "c-body-1"),
    order("anna", NOW + dt.timedelta(days=1), 5000, ("c-face-1", 5)),  # after NOW: never counts
    view("anna", at(2024, 5, 10), "l-sofa-1"),
    email("anna", ago(10), OPENED, "trigger"),
    email("anna", ago(10), DELIVERED, "trigger"),
    email("anna", ago(100), OPENED, "mass"),
    email("anna", ago(5), CLICKED, "mass", button="size-M"),
    # boris
    identify("boris", ago(300), city="Kazan"),
    identify("boris", ago(300), city="Saint Petersburg", birthday="1985-06-01", created_at="2024-05-20T09:00:00Z",
             email="boris@mail.ru"),
    order("boris", ago(200), 500, "k-table-1"),
    order("boris", ago(20), 1000, "c-face-1"),
    order("boris", ago(10), 1500, ("c-body-1", 5)),
    order("boris", ago(3), 2000, "c-face-2"),
    view("boris", at(2024, 5, 10), "l-sofa-2"),
    added("boris", ago(hours=3), "k-chair-1"),
    email("boris", ago(20), OPENED, "trigger"),
    email("boris", ago(30), OPENED, "mass"),
    email("boris", ago(5), CLICKED, "mass", button="size-L"),
    # vera
    identify("vera", ago(200), city="Moscow", birthday="2000-02-29", email="vera@example.ru"),
    order("vera", ago(40), 3000, "c-body-1"),
    order("vera", ago(28), 3000, "c-face-1"),
    order("vera", ago(12), 3000, "c-face-2"),
    view("vera", ago(hours=3), "t-shirt-1"),
    added("vera", ago(hours=2), "t-shirt-1"),
    order("vera", ago(hours=1, minutes=30), 150, ("t-shirt-1", 6)),
    email("vera", ago(15), OPENED, "mass"),
    email("vera", ago(5), CLICKED, "trigger", button="size-M"),
    # gleb
    identify("gleb", ago(150), city="Novosibirsk", birthday="1995-05-31"),
    order("gleb", ago(20), 2500, "c-face-1"),
    order("gleb", ago(10), 2500, "c-body-1"),
    order("gleb", ago(8), 5000, "k-set-1"),
    view("gleb", ago(3), "k-table-1"),
    added("gleb", ago(hours=5), "t-shirt-1"),
    order("gleb", ago(hours=4), 25, "t-shirt-1"),
    email("gleb", ago(10), OPENED, "trigger"),
    email("gleb", ago(20), OPENED, None),
    email("gleb", ago(200), CLICKED, "mass", button="size-M"),
    # dasha, and dasha-old merged into her
    identify("dasha-old", ago(300), city="Kazan", email="dasha@old.ru"),
    identify("dasha", ago(100), city="Samara"),
    order("dasha", ago(20), 3000, "c-face-1"),
    order("dasha", ago(10), 3000, "c-face-2"),
    order("dasha-old", ago(15), 3000, "c-body-1", "l-lamp-1"),
    # egor
    order("egor", ago(20), 1500, "k-set-1"),
    added("egor", ago(minutes=30), "k-chair-1"),
    email("egor", ago(5), DELIVERED, "trigger"),
    # fedor
    order("fedor", ago(50), 2500, "k-set-2"),
    order("fedor", ago(10), 320, ("k-chair-1", 4)),
    added("fedor", ago(10), "t-shirt-1"),
    order("fedor", ago(10, hours=-2), 25, "t-shirt-1"),
    # galina
    order("galina", ago(90), 1500, "k-set-1"),
    # ilya
    order("ilya", ago(100), 320, ("k-chair-1", 4)),
    order("ilya", ago(40), 400, "k-table-1"),
    order("ilya", ago(30), 1500, "k-set-1"),
    view("ilya", ago(2, hours=1), "t-shirt-1"),
    added("ilya", ago(2), "t-shirt-1"),
    order("ilya", ago(2, hours=-2), 25, "t-shirt-1"),
    # kirill
    order("kirill", ago(200), 2220, "k-set-1", "k-table-1", ("k-chair-1", 4)),
    order("kirill", ago(5), 900, "l-sofa-1"),
    view("kirill", ago(8), "l-arm-1"),
    view("kirill", ago(7), "l-arm-1"),
    email("kirill", ago(12), CLICKED, "mass", button="size-M"),
    email("kirill", ago(2), CLICKED, "mass", button="size-L"),
    # lena, and lena-old merged into her
    identify("lena-old", ago(200), birthday="2010-06-08"),
    identify("lena", ago(50), city="Kazan", created_at="2024-05-25"),
    view("lena", at(2024, 5, 27), "l-sofa-1"),
    view("lena", at(2024, 5, 28), "l-arm-1"),
    view("lena", at(2024, 5, 29), "l-sofa-2"),
    email("lena", ago(40), OPENED, "trigger"),
    email("lena", ago(60), OPENED, "trigger"),
    # mark
    identify("mark", ago(1), city="Moscow", birthday="1970-12-31T00:00:00Z", created_at="2024-05-31T23:00:00+03:00"),
    order("mark", ago(2), 120, "l-lamp-1"),
    view("mark", ago(20), "l-sofa-2"),
    view("mark", ago(3), "l-sofa-2"),
    # nina
    identify("nina", ago(30), city="Perm", birthday="not a date"),
    view("nina", ago(3), "l-sofa-1"),
    added("nina", ago(hours=1), "l-sofa-1"),
    # oleg
    order("oleg", ago(400), 500, "l-arm-1"),
    view("oleg", ago(10), "l-arm-1"),
    view("oleg", ago(9), "l-arm-1"),
    # pavel
    identify("pavel", ago(120), city="Kazan", email="pavel@example.ru"),
    order("pavel", ago(100), 300, "c-body-1"),
    order("pavel", ago(60), 400, ("k-chair-1", 5)),
    nps("pavel", ago(30), 10),
    email("pavel", ago(10), DELIVERED, "mass"),
    # rita
    identify("rita", ago(300), city="Kazan", address={"city": "Kazan", "street": "Baumana"}),
    identify("rita", ago(10), address={"street": "Kremlyovskaya"}),
    order("rita", ago(200), 300, "c-face-1"),
    nps("rita", ago(20), 9),
    email("rita", ago(3), DELIVERED, "trigger"),
    # sasha
    identify("sasha", ago(100), city="Kazan"),
    order("sasha", ago(50), 500, "c-body-1"),
    nps("sasha", ago(10), 8),
    # taras
    identify("taras", ago(300), city="Kazan"),
    identify("taras", ago(50), city="Moscow"),
    order("taras", ago(40), 600, "t-shirt-1"),
    nps("taras", ago(30), 10),
    # ulyana
    identify("ulyana", ago(100), city="Kazan"),
    order("ulyana", ago(80), 150, "c-body-1"),
    order("ulyana", ago(70), 250, ("t-shirt-1", 10)),
    nps("ulyana", ago(25), 9),
    # vlad
    identify("vlad", ago(200), city="Moscow"),
    identify("vlad", ago(20), city="Kazan"),
    order("vlad", ago(300), 260, "c-body-1"),
    nps("vlad", ago(15), 10),
    email("vlad", ago(10), DELIVERED, "mass"),
    # wanda, xenia
    view("wanda", at(2024, 5, 15), "k-set-2"),
    view("xenia", at(2024, 5, 10), "c-face-2"),
    view("xenia", at(2024, 4, 20), "l-sofa-1"),
    # yana
    view("yana", ago(hours=5), "c-face-1"),
    added("yana", ago(hours=4), "c-face-1"),
    order("yana", ago(hours=3, minutes=40), 900, "c-face-1"),
    added("yana", ago(hours=2), "c-face-2"),
    # zoya
    order("zoya", ago(200), 400, "k-table-1"),
    order("zoya", ago(15), 1820, "k-set-1", ("k-chair-1", 4)),
    # pyotr, semyon
    identify("pyotr", ago(100), city="Kazan", email="pyotr@x.ru"),
    identify("pyotr", ago(10), city=None),
    identify("semyon", ago(40), city="Omsk"),
    nps("semyon", ago(5), "10"),
    # nobody's: a profile id not in profile_map, and events without a profile
    order("ghost", ago(5), 3000, "c-face-1"),
    order("ghost", ago(4), 3000, "c-face-1"),
    order("ghost", ago(3), 3000, "c-face-1"),
    identify("ghost", ago(3), city="Kazan"),
    order(None, ago(2), 3000, "c-face-1"),
]

MERGED = {"dasha-old": "dasha", "lena-old": "lena"}
PROFILE_MAP_FIRST = at(2023, 1, 1)
PROFILE_MAP_MERGED = at(2024, 5, 1)


def profile_map_rows() -> list[dict[str, Any]]:
    """Each profile standing alone, then the merged ones redirected (the newest row wins)."""
    alone = [
        {"profile_id": pid(n), "canonical_id": pid(n), "updated_at": PROFILE_MAP_FIRST} for n in [*PEOPLE, *MERGED]
    ]
    merged = [
        {"profile_id": pid(old), "canonical_id": pid(new), "updated_at": PROFILE_MAP_MERGED}
        for old, new in MERGED.items()
    ]
    return alone + merged


# -- writing ----------------------------------------------------------------------------------


def _lines() -> list[dict[str, Any]]:
    return [
        {**line, **{name: row.get(name) for name in ORDER_LINE_EVENT_COLUMNS}}
        for row in EVENT_ROWS
        for line in row["_lines"]
    ]


def _table(table: Table, rows: list[dict[str, Any]]) -> pa.Table:
    schema = table.arrow_schema
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def load(backend: Backend) -> Backend:
    """Write the data set into an empty store; current-state tables get their older versions first."""
    backend.load(LoadBatch(_table(EVENTS, EVENT_ROWS), _table(ORDER_LINES, _lines())))
    for version in sorted({r["updated_at"] for r in PRODUCT_ROWS}):
        backend.upsert(PRODUCTS, _table(PRODUCTS, [r for r in PRODUCT_ROWS if r["updated_at"] == version]))
    backend.insert(PRODUCT_CHANGES.name, _table(PRODUCT_CHANGES, PRODUCT_CHANGE_ROWS))
    rows = profile_map_rows()
    for version in sorted({r["updated_at"] for r in rows}):
        backend.upsert(PROFILE_MAP, _table(PROFILE_MAP, [r for r in rows if r["updated_at"] == version]))
    return backend


def as_data() -> Data:
    """The same rows as ``load`` writes, for ``reference_members``."""
    events = [{k: v for k, v in row.items() if k != "_lines"} for row in EVENT_ROWS]
    return Data(
        events=events,
        order_lines=_lines(),
        products=list(PRODUCT_ROWS),
        product_changes=list(PRODUCT_CHANGE_ROWS),
        profile_map=profile_map_rows(),
    )


def ids(*names: str) -> set[str]:
    """Profile ids of people by short name: ``ids("anna", "boris")``."""
    unknown = set(names) - set(PEOPLE)
    assert not unknown, f"not in the data set: {unknown}"
    return {pid(n) for n in names}
