"""Catalog: products upserted into ``products``, with price and stock history.

Each batch is compared with the stored products of its ids. A price or stock
change appends a ``product_changes`` row and writes a ``track`` event on
anonymousId ``catalog`` ("Product Price Changed", "Product Back In Stock",
"Product Out Of Stock", "Product Stock Changed") so journeys can react to it.

Writes go events -> product_changes -> products. Change events have ids derived
from the product, the values and the stored version they replace, and change rows
are written only for events the store did not already have: if an import stops
half-way, running it again records each change once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from opencdp.ingest.imports.build import (
    check_id_length,
    check_time,
    content_id,
    events_table,
    json_text,
)
from opencdp.ingest.imports.context import Context
from opencdp.ingest.imports.frame import Frame
from opencdp.ingest.imports.normalise import (
    NOT_A_DATE_TIME,
    category_paths,
    integers,
    mask,
    not_a_number,
    numbers,
    upper,
)
from opencdp.ingest.imports.reader import Chunk
from opencdp.storage.base import Backend
from opencdp.storage.schema import PRODUCT_CHANGES, PRODUCTS

CHANNEL = "import"
ANONYMOUS_ID = "catalog"  # the events are about a product, not a person
DEFAULT_CURRENCY = "RUB"
_TEXT = ("sku", "name", "room", "brand", "url", "image_url")
_encode = msgspec.json.Encoder().encode


@dataclass
class _Change:
    product_id: str
    field: str
    old: float
    new: float
    at_ms: int
    event: str
    properties: dict[str, Any]
    message_id: str


class CatalogImporter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stored: _Stored | None = None

    def process(self, chunk: Chunk) -> None:
        frame = self.ctx.frame(chunk)
        products = self._parse(frame)
        self.ctx.reject_frame(frame)
        products = _last_per_product(products.filter(pa.array(frame.good)))
        if products.num_rows == 0:
            return
        if self.stored is None:
            self.stored = _Stored(self.ctx.backend)
        compared = self.stored.compare(products)
        changes = _changes(compared)
        ctx = self.ctx
        if changes:
            result = ctx.write_now(self._events(changes))
            new = set(result.new_message_ids)
            recorded = [c for c in changes if c.message_id in new]
            if recorded:
                ctx.backend.insert(PRODUCT_CHANGES.name, _change_rows(recorded))
            ctx.report.price_changes += sum(1 for c in recorded if c.field == "price")
            ctx.report.stock_changes += sum(1 for c in recorded if c.field == "stock")
        ctx.backend.upsert(PRODUCTS, products)
        fresh = compared.filter(_fresh(compared))
        self.stored.update(fresh)
        ctx.report.products_upserted += fresh.num_rows

    def finish(self) -> None:
        pass

    def _parse(self, frame: Frame) -> pa.Table:
        ctx = self.ctx
        frame.missing("product_id", "every product needs its id")
        product_id = frame.text("product_id")
        check_id_length(frame, "product_id", product_id)
        values: dict[str, pa.Array] = {}
        for target in ("price", "old_price"):
            parsed = numbers(frame.text(target))
            frame.flag(parsed.bad, target, "invalid_number", not_a_number)
            frame.flag(mask(pc.less(parsed.values, 0)), target, "invalid_number", lambda v: f"{v!r} must not be negative")
            values[target] = parsed.values
        for target in ("stock", "consumption_days"):
            parsed = integers(frame.text(target))
            frame.flag(parsed.bad, target, "invalid_number", lambda v: f"{v!r} is not a whole number")
            values[target] = parsed.values
        frame.flag(mask(pc.less(values["consumption_days"], 0)), "consumption_days", "invalid_number",
                   lambda v: f"{v!r} must not be negative")
        updated = ctx.clock.timestamps(frame.text("updated_at"))
        frame.flag(updated.bad, "updated_at", "invalid_timestamp", lambda v: f"{v!r} {NOT_A_DATE_TIME}")
        check_time(frame, "updated_at", updated.values, ctx.received_ms, ctx.max_future_ms)

        columns: dict[str, Any] = {name: frame.text(name) for name in _TEXT}
        columns.update(values)
        columns["product_id"] = product_id
        columns["category"] = category_paths(frame.text("category"))
        columns["currency"] = pc.fill_null(upper(frame.text("currency")), DEFAULT_CURRENCY)
        columns["attributes"] = _attributes(frame)
        columns["updated_at"] = pc.fill_null(updated.values, ctx.received_ms)
        schema = PRODUCTS.arrow_schema
        return pa.Table.from_arrays([pc.cast(columns[f.name], f.type) for f in schema], schema=schema)

    def _events(self, changes: list[_Change]) -> pa.Table:
        ctx = self.ctx
        n = len(changes)
        return events_table(
            n,
            {
                "message_id": [c.message_id for c in changes],
                "type": "track",
                "event": [c.event for c in changes],
                "timestamp": pa.array([c.at_ms for c in changes], pa.int64()),
                "received_at": ctx.received_ms,
                "anonymous_id": ANONYMOUS_ID,
                "source": ctx.source,
                "channel": CHANNEL,
                "properties": [json_text(c.properties) for c in changes],
                # Typed columns, as normalize() extracts them from properties.
                "product_id": [c.product_id for c in changes],
                "price": [c.properties.get("price") for c in changes],
                "lsn": 0,
            },
        )


class _Stored:
    """Price, stock and version of the stored products, read once per import and kept
    current as batches are written (one query: per-batch IN-lists of thousands of ids
    are slow to build and to run)."""

    def __init__(self, backend: Backend) -> None:
        query = exp.select("product_id", "price", "stock", "updated_at").from_(backend.table_ref(PRODUCTS))
        table = backend.select(query)
        self.table = pa.table(
            {
                "product_id": pc.cast(table.column("product_id"), pa.string()),
                "old_price": pc.cast(table.column("price"), pa.float64()),
                "old_stock": pc.cast(table.column("stock"), pa.int64()),
                "old_at": _epoch_ms(table.column("updated_at")),
            }
        )

    def compare(self, products: pa.Table) -> pa.Table:
        """The batch's product_id, price, stock, at (ms) with the stored old_price, old_stock, old_at."""
        incoming = pa.table(
            {
                "product_id": products.column("product_id"),
                "price": products.column("price"),
                "stock": products.column("stock"),
                "at": _epoch_ms(products.column("updated_at")),
            }
        )
        return incoming.join(self.table, "product_id", join_type="left outer", use_threads=False)

    def update(self, fresh: pa.Table) -> None:
        """Take the written rows of a batch as the new stored state."""
        if fresh.num_rows == 0:
            return
        kept = self.table.filter(pc.invert(pc.is_in(self.table.column("product_id"), value_set=fresh.column("product_id"))))
        written = pa.table(
            {
                "product_id": fresh.column("product_id"),
                "old_price": fresh.column("price"),
                "old_stock": fresh.column("stock"),
                "old_at": fresh.column("at"),
            }
        )
        self.table = pa.concat_tables([kept, written]).combine_chunks()


def _fresh(compared: pa.Table) -> pa.Array:
    """Rows not older than the stored version (older ones the upsert leaves alone)."""
    old_at = compared.column("old_at")
    return pc.or_kleene(pc.is_null(old_at), pc.greater_equal(compared.column("at"), old_at))


def _changes(compared: pa.Table) -> list[_Change]:
    """Price and stock changes of the fresh rows against the stored state."""
    fresh = _fresh(compared)
    changes: list[_Change] = []
    for field, new, old in (("price", "price", "old_price"), ("stock", "stock", "old_stock")):
        changed = pc.and_(fresh, pc.fill_null(pc.not_equal(compared.column(new), compared.column(old)), False))
        for row in compared.filter(changed).to_pylist():
            pid, at, old_at, before, after = row["product_id"], row["at"], row["old_at"], row[old], row[new]
            if field == "price":
                props = {"product_id": pid, "old_price": before, "price": after}
                changes.append(_change(pid, field, before, after, at, old_at, "Product Price Changed", props))
            else:
                props = {"product_id": pid, "old_stock": before, "stock": after}
                changes.append(_change(pid, field, before, after, at, old_at, _stock_event(before, after), props))
    return changes


def _change(
    pid: str, field: str, old: float, new: float, at: int, old_at: int, event: str, props: dict[str, Any]
) -> _Change:
    # The stored version is part of the id: the same change made again later is a new event.
    message_id = content_id("imp:catalog:", [pid, field, old, new, old_at, at])
    return _Change(pid, field, float(old), float(new), at, event, props, message_id)


def _stock_event(old: int, new: int) -> str:
    if old <= 0 < new:
        return "Product Back In Stock"
    if old > 0 >= new:
        return "Product Out Of Stock"
    return "Product Stock Changed"


def _change_rows(changes: list[_Change]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "product_id": [c.product_id for c in changes],
            "changed_at": pa.array([c.at_ms for c in changes], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "field": [c.field for c in changes],
            "old_value": [c.old for c in changes],
            "new_value": [c.new for c in changes],
        },
        schema=PRODUCT_CHANGES.arrow_schema,
    )


def _attributes(frame: Frame) -> pa.Array:
    """JSON object of the unmapped columns (color, material, ...), empty cells left out."""
    extras = [(name, frame.extra(name).to_pylist()) for name in frame.resolved.extras]
    if not extras:
        return pa.nulls(frame.n, pa.string())
    out: list[str | None] = []
    for i in range(frame.n):
        attributes = {name: values[i] for name, values in extras if values[i] is not None}
        out.append(json_text(attributes))
    return pa.array(out, pa.string())


def _last_per_product(products: pa.Table) -> pa.Table:
    """The last row of each product id in the batch (a later row corrects an earlier one)."""
    ids = products.column("product_id").to_pylist()
    last = {pid: i for i, pid in enumerate(ids)}
    if len(last) == len(ids):
        return products
    return products.take(pa.array(sorted(last.values()), pa.int64()))


def _epoch_ms(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Timestamps (any unit or zone) as epoch milliseconds."""
    kind = values.type
    if pa.types.is_timestamp(kind):
        values = pc.cast(values, pa.timestamp("ms", tz=kind.tz))
        return pc.cast(values, pa.int64())
    return values

