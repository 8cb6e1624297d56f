"""Catalog: products upserted, price and stock changes recorded once, with events."""

from __future__ import annotations

from pathlib import Path

from tests.imports.conftest import Store, iso_ms, ms, write

HEADER = (
    "product_id,sku,name,category,room,brand,price,old_price,stock,url,image_url,consumption_days,"
    "color,material,core,updated_at"
)
V1 = [
    "P1,SKU-1,Диван «Уют»,Мебель>Диваны,Гостиная,Акме,49990,59990,3,https://x.ru/p/P1,https://x.ru/i/P1.jpg,,серый,велюр,true,2024-05-01T00:00:00Z",
    "P2,SKU-2,Фильтр для воды,Кухня > Фильтры,Кухня,Аква,990,,0,,,90,,,false,2024-05-01T00:00:00Z",
]


def catalog(directory: Path, rows: list[str], name: str = "catalog.csv") -> Path:
    return write(directory / name, "\n".join([HEADER, *rows]) + "\n")


def test_products_are_upserted_with_attributes(store: Store) -> None:
    bad = "P3,,Кривой,,,,-5,,1,,,,,,,2024-05-01T00:00:00Z"
    report = store.run(catalog(store.dir, [*V1, bad]), "catalog")
    assert (report.rows_read, report.products_upserted, report.rejected, report.events_written) == (3, 2, 1, 0)
    p1, p2 = store.products()
    assert p1 == {
        "product_id": "P1",
        "sku": "SKU-1",
        "name": "Диван «Уют»",
        "category": "Мебель > Диваны",
        "room": "Гостиная",
        "brand": "Акме",
        "price": 49990.0,
        "old_price": 59990.0,
        "currency": "RUB",
        "stock": 3,
        "url": "https://x.ru/p/P1",
        "image_url": "https://x.ru/i/P1.jpg",
        "consumption_days": None,
        "attributes": {"color": "серый", "material": "велюр", "core": "true"},
        "updated_at": p1["updated_at"],
    }
    assert ms(p1["updated_at"]) == iso_ms("2024-05-01T00:00:00Z")
    assert (p2["category"], p2["consumption_days"], p2["stock"], p2["attributes"]) == ("Кухня > Фильтры", 90, 0, {"core": "false"})
    [reject] = store.quarantine()
    assert (reject["position"], reject["field"], reject["detail"]) == (4, "price", "column `price`: '-5' must not be negative")
    assert store.count("product_changes") == 0


def test_changes_are_recorded_once_with_events(store: Store) -> None:
    store.run(catalog(store.dir, V1), "catalog")
    v2 = [
        V1[0].replace(",49990,", ",44990,").replace(",3,https", ",0,https").replace("2024-05-01", "2024-05-02"),
        V1[1].replace(",0,,,90", ",5,,,90").replace("2024-05-01", "2024-05-02"),
    ]
    path = catalog(store.dir, v2, "catalog-v2.csv")
    report = store.run(path, "catalog")
    assert (report.price_changes, report.stock_changes, report.events_written) == (1, 2, 3)

    changed_at = iso_ms("2024-05-02T00:00:00Z")
    changes = [(c["product_id"], c["field"], c["old_value"], c["new_value"], ms(c["changed_at"])) for c in store.changes()]
    assert changes == [
        ("P1", "price", 49990.0, 44990.0, changed_at),
        ("P1", "stock", 3.0, 0.0, changed_at),
        ("P2", "stock", 0.0, 5.0, changed_at),
    ]
    events = sorted(store.events(), key=lambda e: (e["product_id"], e["event"]))
    assert [(e["event"], e["properties"]) for e in events] == [
        ("Product Out Of Stock", {"product_id": "P1", "old_stock": 3, "stock": 0}),
        ("Product Price Changed", {"product_id": "P1", "old_price": 49990.0, "price": 44990.0}),
        ("Product Back In Stock", {"product_id": "P2", "old_stock": 0, "stock": 5}),
    ]
    for event in events:
        assert (event["type"], event["anonymous_id"], event["user_id"], event["source"]) == ("track", "catalog", None, "import:catalog")
        assert ms(event["timestamp"]) == changed_at and event["message_id"].startswith("imp:catalog:")
    assert events[1]["price"] == 44990.0
    assert [p["price"] for p in store.products()] == [44990.0, 990.0]

    again = store.run(path, "catalog")  # same catalogue again: nothing changed
    assert (again.price_changes, again.stock_changes, again.events_written) == (0, 0, 0)
    assert store.count("product_changes") == 3 and store.count("events") == 3


def test_stock_change_without_crossing_zero_and_stale_rows(store: Store) -> None:
    store.run(catalog(store.dir, V1), "catalog")
    fewer = V1[0].replace(",3,https", ",2,https").replace("2024-05-01", "2024-05-03")
    store.run(catalog(store.dir, [fewer], "v3.csv"), "catalog")
    assert [e["event"] for e in store.events()] == ["Product Stock Changed"]

    stale = store.run(catalog(store.dir, V1, "old.csv"), "catalog")  # older updated_at than stored
    assert (stale.stock_changes, stale.price_changes, stale.products_upserted) == (0, 0, 1)  # P1 stale, P2 same
    assert store.products()[0]["stock"] == 2


def test_a_single_price_change_gives_one_row_and_one_event(store: Store) -> None:
    store.run(catalog(store.dir, V1), "catalog")
    cheaper = V1[1].replace(",990,", ",890,").replace("2024-05-01", "2024-06-01")
    report = store.run(catalog(store.dir, [cheaper], "v2.csv"), "catalog")
    assert (report.price_changes, report.stock_changes) == (1, 0)
    assert [(c["product_id"], c["old_value"], c["new_value"]) for c in store.changes()] == [("P2", 990.0, 890.0)]
    [event] = store.events()
    assert (event["event"], event["product_id"], event["properties"]) == (
        "Product Price Changed", "P2", {"product_id": "P2", "old_price": 990.0, "price": 890.0}
    )
