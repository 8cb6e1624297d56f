"""Tests of the demo shop generator (opencdp.demo)."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from opencdp.demo import DemoConfig, DemoSummary, generate

END = datetime.date(2024, 6, 30)
DAYS = 365
WINDOW_START = datetime.datetime(2023, 7, 2, tzinfo=datetime.UTC)  # END - DAYS + 1 day
WINDOW_END = datetime.datetime(2024, 7, 1, tzinfo=datetime.UTC)  # exclusive
CUSTOMERS = 500

CATALOG_COLUMNS = [
    "product_id", "sku", "name", "category", "room", "brand", "price", "old_price", "stock",
    "url", "image_url", "consumption_days", "color", "material", "core", "updated_at",
]  # fmt: skip
CUSTOMER_COLUMNS = [
    "customer_id", "email", "phone", "first_name", "last_name", "gender", "birthday", "city",
    "timezone", "country", "loyalty_card", "bonus_balance", "bonus_expires_at",
    "email_consent", "sms_consent", "created_at",
]  # fmt: skip
POS_COLUMNS = [
    "order_id", "loyalty_card", "phone", "store_id", "channel", "ordered_at", "product_id",
    "quantity", "price", "discount", "total", "currency",
]  # fmt: skip
EVENT_COLUMNS = [
    "type", "message_id", "timestamp", "user_id", "anonymous_id", "event", "name",
    "properties", "traits", "context",
]  # fmt: skip
ROOMS = {"kitchen", "living_room", "bedroom", "kids", "bathroom", "hallway", "office"}
CYRILLIC = re.compile("[А-Яа-яЁё]")


def read_csv(path: Path) -> list[dict[str, Any]]:
    """All columns as text; unquoted empty fields are None."""
    with path.open(encoding="utf-8") as fh:
        header = [h.strip('"') for h in fh.readline().strip().split(",")]
    options = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    return pacsv.read_csv(path, convert_options=options).to_pylist()


@dataclass
class Run:
    summary: DemoSummary
    out: Path
    catalog: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    pos: list[dict[str, Any]]
    events: list[dict[str, Any]]
    progress: list[tuple[int, int]]

    @property
    def product_ids(self) -> set[str]:
        return {p["product_id"] for p in self.catalog}

    def tracks(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


def _run(out: Path, seed: int = 42, customers: int = CUSTOMERS) -> Run:
    calls: list[tuple[int, int]] = []
    config = DemoConfig(customers=customers, seed=seed, end=END, days=DAYS)
    summary = generate(out, config, progress=lambda done, total: calls.append((done, total)))
    events = pa.concat_tables([pq.read_table(p) for p in summary.event_paths]).to_pylist()
    return Run(
        summary=summary,
        out=out,
        catalog=read_csv(summary.catalog_path),
        customers=read_csv(summary.customers_path),
        pos=read_csv(summary.pos_orders_path),
        events=events,
        progress=calls,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("demo-a"))


def _file_bytes(summary: DemoSummary) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in summary.paths}


def test_same_seed_gives_identical_files(run: Run, tmp_path: Path) -> None:
    again = generate(
        tmp_path / "again", DemoConfig(customers=CUSTOMERS, seed=42, end=END, days=DAYS)
    )
    assert _file_bytes(again) == _file_bytes(run.summary)


def test_different_seed_differs(run: Run, tmp_path: Path) -> None:
    other = generate(
        tmp_path / "other", DemoConfig(customers=CUSTOMERS, seed=7, end=END, days=DAYS)
    )
    first, second = _file_bytes(run.summary), _file_bytes(other)
    for name in ("catalog.csv", "customers.csv", "pos_orders.csv", "events-00000.parquet"):
        assert first[name] != second[name], name


def test_rerun_into_same_directory_removes_stale_event_files(tmp_path: Path) -> None:
    (tmp_path / "events-00042.parquet").write_bytes(b"stale")
    summary = generate(tmp_path, DemoConfig(customers=50, end=END))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in summary.paths)


def test_columns(run: Run) -> None:
    assert list(run.catalog[0]) == CATALOG_COLUMNS
    assert list(run.customers[0]) == CUSTOMER_COLUMNS
    assert list(run.pos[0]) == POS_COLUMNS
    schema = pq.read_schema(run.summary.event_paths[0])
    assert schema.names == EVENT_COLUMNS
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")


def test_row_counts_and_summary(run: Run) -> None:
    s = run.summary
    assert s.products == len(run.catalog) == 2000
    assert s.customers == len(run.customers) == CUSTOMERS
    assert s.pos_lines == len(run.pos)
    assert s.pos_orders == len({r["order_id"] for r in run.pos})
    assert s.events == len(run.events)
    assert s.online_orders == len(run.tracks("Order Completed"))
    assert 10 * CUSTOMERS <= s.events <= 35 * CUSTOMERS  # about 20 per customer
    assert 0.5 * CUSTOMERS <= s.pos_orders <= 2.5 * CUSTOMERS
    share_online = s.online_orders / (s.online_orders + s.pos_orders)
    assert 0.25 <= share_online <= 0.55
    assert run.progress[-1] == (CUSTOMERS, CUSTOMERS)


def test_catalog_is_realistic(run: Run) -> None:
    by_category: dict[str, list[int]] = {}
    for p in run.catalog:
        by_category.setdefault(p["category"], []).append(int(p["price"]))
        assert p["room"] in ROOMS
        assert " > " in p["category"]
        assert p["url"] == f"https://demo-shop.example/p/{p['product_id']}"
        if p["old_price"] is not None:
            assert int(p["old_price"]) > int(p["price"])
    assert min(by_category["Living room > Sofas"]) >= 20_000
    assert max(by_category["Living room > Sofas"]) <= 150_000
    assert max(by_category["Bathroom > Towels"]) <= 2_000
    assert len({p["product_id"] for p in run.catalog}) == len(run.catalog)
    core = {p["category"] for p in run.catalog if p["core"] == "true"}
    assert {
        "Kitchen > Kitchen sets",
        "Kitchen > Tables",
        "Kitchen > Chairs",
        "Living room > Sofas",
    } <= core
    assert "Bathroom > Cosmetics" not in core
    consumables = {p["category"] for p in run.catalog if p["consumption_days"] is not None}
    assert "Bathroom > Cosmetics" in consumables and "Living room > Sofas" not in consumables


def test_out_of_stock_products_exist_and_are_viewed(run: Run) -> None:
    sold_out = {p["product_id"] for p in run.catalog if p["stock"] == "0"}
    assert 0.02 * len(run.catalog) < len(sold_out) < 0.1 * len(run.catalog)
    viewed = {json.loads(e["properties"])["product_id"] for e in run.tracks("Product Viewed")}
    assert viewed & sold_out


def test_referential_integrity(run: Run) -> None:
    products = run.product_ids
    assert {r["product_id"] for r in run.pos} <= products
    for name in ("Product Viewed", "Product Added"):
        assert {json.loads(e["properties"])["product_id"] for e in run.tracks(name)} <= products
    for name in ("Order Completed", "Checkout Started"):
        for e in run.tracks(name):
            assert {p["product_id"] for p in json.loads(e["properties"])["products"]} <= products
    cards = {c["loyalty_card"] for c in run.customers if c["loyalty_card"] is not None}
    pos_cards = {r["loyalty_card"] for r in run.pos if r["loyalty_card"] is not None}
    assert pos_cards and pos_cards <= cards
    customer_ids = {c["customer_id"] for c in run.customers}
    assert {e["user_id"] for e in run.events if e["user_id"] is not None} <= customer_ids


def test_pos_orders_are_consistent(run: Run) -> None:
    orders: dict[str, list[dict[str, Any]]] = {}
    for r in run.pos:
        orders.setdefault(r["order_id"], []).append(r)
        assert r["channel"] == "pos" and r["currency"] == "RUB"
        assert re.fullmatch(r"store-\d{2}", r["store_id"])
        assert r["order_id"].startswith("S" + r["store_id"][6:] + "-")
    for lines in orders.values():
        assert (
            len({(r["total"], r["ordered_at"], r["loyalty_card"], r["store_id"]) for r in lines})
            == 1
        )
        net = sum(int(r["price"]) * int(r["quantity"]) - int(r["discount"]) for r in lines)
        assert int(lines[0]["total"]) == net
        assert len({r["product_id"] for r in lines}) == len(lines)
    anonymous = [
        o
        for o, lines in orders.items()
        if lines[0]["loyalty_card"] is None and lines[0]["phone"] is None
    ]
    by_phone = [
        o for o, lines in orders.items() if lines[0]["loyalty_card"] is None and lines[0]["phone"]
    ]
    assert anonymous and by_phone


def test_online_orders_are_consistent(run: Run) -> None:
    completed = run.tracks("Order Completed")
    assert completed
    started = {json.loads(e["properties"]).get("order_id") for e in run.tracks("Checkout Started")}
    for e in completed:
        props = json.loads(e["properties"])
        assert e["user_id"] is not None
        gross = sum(p["price"] * p["quantity"] for p in props["products"])
        assert props["total"] == props["revenue"] == gross - props["discount"]
        assert props["currency"] == "RUB" and props["order_id"] in started
    assert len({json.loads(e["properties"])["order_id"] for e in completed}) == len(completed)


def test_identify_links_anonymous_ids_to_users(run: Run) -> None:
    identifies = [e for e in run.events if e["type"] == "identify"]
    assert identifies
    for e in identifies:
        assert e["user_id"] and e["anonymous_id"]
        traits = json.loads(e["traits"])
        assert {"firstName", "lastName"} <= set(traits)
    first_identify = {}
    for e in sorted(identifies, key=lambda e: e["timestamp"]):
        first_identify.setdefault(e["anonymous_id"], e["timestamp"])
    anonymous_before = [
        e for e in run.events
        if e["user_id"] is None and e["anonymous_id"] in first_identify
        and e["timestamp"] < first_identify[e["anonymous_id"]]
    ]  # fmt: skip
    assert anonymous_before, "someone browses anonymously before logging in"
    identified_ids = {e["anonymous_id"] for e in run.events if e["user_id"] and e["anonymous_id"]}
    never = {e["anonymous_id"] for e in run.events if e["anonymous_id"]} - identified_ids
    assert never, "some visitors stay anonymous"


def test_event_shapes(run: Run) -> None:
    kinds = Counter(e["type"] for e in run.events)
    assert set(kinds) == {"track", "page", "screen", "identify"}
    names = {e["event"] for e in run.events if e["type"] == "track"}
    assert {
        "Products Searched", "Product Viewed", "Product Added", "Checkout Started",
        "Order Completed", "Email Delivered", "Email Opened", "Email Link Clicked",
        "SMS Delivered",
    } <= names  # fmt: skip
    assert len({e["message_id"] for e in run.events}) == len(run.events)
    for e in run.events:
        context = json.loads(e["context"])
        assert context["channel"] in ("web", "app", "server")
        assert e["user_id"] or e["anonymous_id"]
        if e["type"] in ("page", "screen"):
            assert e["name"] and json.loads(e["properties"])["path"].startswith("/")
            assert (e["type"] == "page") == (context["channel"] == "web")
        if e["type"] == "track":
            assert e["event"] and e["name"] is None
    email_visits = [
        e for e in run.events
        if e["type"] == "page" and json.loads(e["context"]).get("campaign", {}).get("source") == "email"
    ]  # fmt: skip
    assert email_visits
    clicked = json.loads(run.tracks("Email Link Clicked")[0]["properties"])
    assert {"campaign_id", "campaign_name", "email_subject", "link_url"} <= set(clicked)


def test_timestamps_within_history(run: Run) -> None:
    for e in run.events:
        assert WINDOW_START <= e["timestamp"] < WINDOW_END
    for r in run.pos:
        at = datetime.datetime.fromisoformat(r["ordered_at"])
        assert WINDOW_START <= at < WINDOW_END
    for c in run.customers:
        assert datetime.datetime.fromisoformat(c["created_at"]) < WINDOW_END


def test_customers(run: Run) -> None:
    emails = [c["email"] for c in run.customers]
    present = [e for e in emails if e is not None]
    assert 0.9 * CUSTOMERS < len(present) < CUSTOMERS
    assert any(e != e.strip() or e != e.lower() for e in present), "some messy e-mails"
    assert len({e.strip().lower() for e in present}) == len(present)
    phones = [c["phone"] for c in run.customers if c["phone"] is not None]
    assert 0.9 * CUSTOMERS < len(phones) < CUSTOMERS
    assert any(p.startswith("+7") for p in phones) and any(p.startswith("8 (") for p in phones)
    assert all(len(re.sub(r"\D", "", p)[-10:]) == 10 for p in phones)
    cards = [c["loyalty_card"] for c in run.customers if c["loyalty_card"] is not None]
    assert 0.5 * CUSTOMERS < len(cards) < 0.7 * CUSTOMERS
    assert all(len(card) == 13 and card.isdigit() for card in cards)
    for c in run.customers:
        assert c["gender"] in ("f", "m") and c["country"] == "RU"
        age = (END - datetime.date.fromisoformat(c["birthday"])).days / 365.25
        assert 18 <= age <= 80.5
        assert c["email_consent"] in ("true", "false") and c["sms_consent"] in ("true", "false")
    moscow = [c for c in run.customers if c["city"] == "Moscow"]
    assert moscow and all(c["timezone"] == "Europe/Moscow" for c in moscow)
    assert all(
        c["timezone"] == "Asia/Novosibirsk" for c in run.customers if c["city"] == "Novosibirsk"
    )


def test_customers_sign_up_before_their_purchases(run: Run) -> None:
    created = {c["loyalty_card"]: c["created_at"] for c in run.customers if c["loyalty_card"]}
    for r in run.pos:
        if r["loyalty_card"] is not None:
            assert created[r["loyalty_card"]] <= r["ordered_at"]


def test_utf8_cyrillic_preserved(run: Run) -> None:
    raw = run.summary.catalog_path.read_bytes().decode("utf-8")
    assert CYRILLIC.search(raw)
    assert all(CYRILLIC.search(c["first_name"]) for c in run.customers)
    viewed = run.tracks("Product Viewed")[0]["properties"]
    assert CYRILLIC.search(viewed) and "\\u04" not in viewed


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DemoConfig(customers=0)
    with pytest.raises(ValueError):
        DemoConfig(days=3)
    # History ends with yesterday, so no demo event lies in the future.
    assert DemoConfig().end == datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)


@pytest.mark.slow
def test_one_million_customers_under_five_minutes(tmp_path: Path) -> None:
    started = time.monotonic()
    summary = generate(tmp_path, DemoConfig(customers=1_000_000, end=END))
    elapsed = time.monotonic() - started
    assert summary.customers == 1_000_000
    assert summary.events > 15_000_000
    assert elapsed < 300, f"took {elapsed:.0f}s"
