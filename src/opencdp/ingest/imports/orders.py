"""Orders (online or POS): one ``track`` "Order Completed" event per order.

Files have one row per order line (or, in JSON, an order with a nested
``products``/``lines`` array, exploded by the reader). Lines are validated one by
one, so a bad line is rejected alone and its order imported without it; an order
none of whose lines is usable is not imported. Lines are grouped by ``order_id``;
the first good line of an order supplies the order-level fields.

An order's lines must be next to each other in the file (any order within a batch
is fine): the lines of the order open at the end of a batch are carried into the
next batch, and lines of an order already written are rejected with the fix.

The buyer is ``userId`` = customer_id when known, else anonymousId
``loyalty:<card>``, ``phone:<E.164>``, ``email:<address>``, or ``pos-anon:<order_id>``
for a receipt with no identifier at all; card, phone and e-mail also go into traits
and ``context.externalIds`` so the identity stage can link them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencdp.ingest.imports.build import check_id_length, check_time, events_table
from opencdp.ingest.imports.context import Context
from opencdp.ingest.imports.frame import Frame
from opencdp.ingest.imports.jsontext import array_of, join_present, literal, number, obj
from opencdp.ingest.imports.normalise import (
    NOT_A_DATE_TIME,
    category_paths,
    emails,
    lower,
    mask,
    not_a_number,
    numbers,
    upper,
)
from opencdp.ingest.imports.reader import Chunk
from opencdp.storage.schema import ORDER_LINES

EVENT = "Order Completed"
DEFAULT_CHANNEL = "pos"
DEFAULT_CURRENCY = "RUB"
_ID_PREFIX = "imp:orders:"
_LINE_TEXT = ("product_id", "sku", "name", "category", "brand")
_LINE_NUMBERS = ("price", "quantity", "discount")


class OrdersImporter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.open: pa.Table | None = None
        """Good lines of the order still open at the end of the previous chunk."""
        self.closed: set[str] = set()
        """Orders already written; their lines showing up later are rejected."""

    def process(self, chunk: Chunk) -> None:
        frame = self.ctx.frame(chunk)
        lines = self._parse(frame)
        self._reject_reopened(frame, lines)
        self.ctx.reject_frame(frame)
        good = lines.filter(pa.array(frame.good))
        if self.open is not None:
            good = pa.concat_tables([self.open, good])
            self.open = None
        last = _last_valid(lines.column("order_id"))
        if last is not None and good.num_rows:
            still_open = pc.equal(good.column("order_id"), last)
            self.open = good.filter(still_open)
            good = good.filter(pc.invert(still_open))
        self._write(good)

    def finish(self) -> None:
        if self.open is not None:
            self._write(self.open)
            self.open = None

    # -- parsing -------------------------------------------------------------------
    def _parse(self, frame: Frame) -> pa.Table:
        """All rows' normalised values; problems are flagged on the frame."""
        ctx = self.ctx
        order_id = frame.text("order_id")
        frame.missing("order_id", "every line needs the number of its order (receipt)")
        check_id_length(frame, "order_id", order_id)
        frame.missing("ordered_at", "every line needs the date and time of its order")
        ordered = ctx.clock.timestamps(frame.text("ordered_at"))
        frame.flag(ordered.bad, "ordered_at", "invalid_timestamp", lambda v: f"{v!r} {NOT_A_DATE_TIME}")
        check_time(frame, "ordered_at", ordered.values, ctx.received_ms, ctx.max_future_ms)
        frame.missing("product_id", "every line needs the product it sold")
        check_id_length(frame, "product_id", frame.text("product_id"))

        values: dict[str, pa.Array] = {}
        frame.missing("quantity", "write how many were sold, e.g. 1")
        frame.missing("price", "write the unit price, e.g. 1990.00")
        for target in ("quantity", "price", "discount", "total", "revenue", "order_discount"):
            parsed = numbers(frame.text(target))
            frame.flag(parsed.bad, target, "invalid_number", not_a_number)
            values[target] = parsed.values
        frame.flag(mask(pc.less_equal(values["quantity"], 0)), "quantity", "invalid_number",
                   lambda v: f"{v!r} must be more than 0 (returns are not imported as orders)")
        frame.flag(mask(pc.less(values["price"], 0)), "price", "invalid_number",
                   lambda v: f"{v!r} must not be negative")

        customer_id = frame.text("customer_id")
        check_id_length(frame, "customer_id", customer_id)
        phone = ctx.phones.parse(frame.text("phone"))
        frame.flag(phone.bad, "phone", "invalid_phone", ctx.phones.problem)
        email = emails(frame.text("email"))
        frame.flag(email.bad, "email", "invalid_email", lambda v: f"{v!r} is not a valid e-mail address; write it as name@example.com")

        columns: dict[str, pa.Array] = {
            "order_id": order_id,
            "timestamp": ordered.values,
            "customer_id": customer_id,
            "loyalty_card": frame.text("loyalty_card"),
            "phone": phone.values,
            "email": email.values,
            "store_id": frame.text("store_id"),
            "channel": pc.fill_null(lower(frame.text("channel")), DEFAULT_CHANNEL),
            "currency": pc.fill_null(upper(frame.text("currency")), DEFAULT_CURRENCY),
            "total": values["total"],
            "revenue": values["revenue"],
            "order_discount": values["order_discount"],
            "product_id": frame.text("product_id"),
            "sku": frame.text("sku"),
            "name": frame.text("name"),
            "category": category_paths(frame.text("category")),
            "brand": frame.text("brand"),
            "price": values["price"],
            "quantity": values["quantity"],
            "discount": values["discount"],
        }
        return pa.table(columns)

    def _reject_reopened(self, frame: Frame, lines: pa.Table) -> None:
        if not self.closed:
            return
        order_ids = lines.column("order_id")
        seen = [v for v in pc.unique(order_ids).to_pylist() if v is not None and v in self.closed]
        if not seen:
            return
        again = mask(pc.is_in(order_ids, value_set=pa.array(seen, pa.string())))
        frame.flag_rows(
            again,
            "order_split",
            frame.resolved.column("order_id"),
            lambda i: f"order {order_ids[i].as_py()!r} continues here after lines of other orders; "
            "keep the lines of one order together (sort the file by order_id)",
        )

    # -- writing -------------------------------------------------------------------
    def _write(self, lines: pa.Table) -> None:
        if lines.num_rows == 0:
            return
        lines, starts = _group(lines)
        orders = lines.take(pa.array(starts))
        n = len(starts)
        ctx = self.ctx

        # Order amounts: as written, else from the lines.
        price = _floats(lines, "price")
        quantity = _floats(lines, "quantity")
        line_discount = np.nan_to_num(_floats(lines, "discount"))
        order_discount = np.nan_to_num(_floats(orders, "order_discount"))
        computed_total = np.add.reduceat(price * quantity - line_discount, starts) - order_discount
        total = pc.coalesce(orders.column("total"), pa.array(computed_total))
        revenue = pc.coalesce(orders.column("revenue"), total)
        has_discount = self.ctx.resolved is not None and (
            self.ctx.resolved.has("discount") or self.ctx.resolved.has("order_discount")
        )
        discount = pc.coalesce(orders.column("order_discount"), pa.array(np.add.reduceat(line_discount, starts)))

        user_id = orders.column("customer_id")
        anonymous = pc.coalesce(
            _prefixed("loyalty:", orders.column("loyalty_card")),
            _prefixed("phone:", orders.column("phone")),
            _prefixed("email:", orders.column("email")),
            _prefixed("pos-anon:", orders.column("order_id")),
        )
        anonymous = pc.if_else(pc.is_valid(user_id), pa.scalar(None, pa.string()), anonymous)

        message_id, properties, traits, contexts = self._documents(
            lines, starts, orders, total, revenue, discount if has_discount else None, anonymous
        )
        channel = orders.column("channel")
        events = events_table(
            n,
            {
                "message_id": message_id,
                "type": "track",
                "event": EVENT,
                "timestamp": orders.column("timestamp"),
                "received_at": ctx.received_ms,
                "user_id": user_id,
                "anonymous_id": anonymous,
                "source": ctx.source,
                "channel": channel,
                "properties": properties,
                "traits": traits,
                "context": contexts,
                # Typed columns, as normalize() extracts them from properties.
                "order_id": orders.column("order_id"),
                "revenue": revenue,
                "total": total,
                "currency": orders.column("currency"),
                "store_id": orders.column("store_id"),
                "lsn": 0,
            },
        )
        ctx.write(events, _order_lines(lines, starts, orders, message_id, user_id, anonymous))
        self.closed.update(orders.column("order_id").to_pylist())

    def _documents(
        self,
        lines: pa.Table,
        starts: np.ndarray,
        orders: pa.Table,
        total: pa.Array,
        revenue: pa.Array,
        discount: pa.Array | None,
        anonymous: pa.Array,
    ) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
        """Per order: message id, and properties, traits and context as JSON text.

        Built column-wise (see ``jsontext``): the same documents a dict per order
        would give, without a Python object per line.
        """
        resolved = self.ctx.resolved
        keys = [k for k in (*_LINE_TEXT, *_LINE_NUMBERS) if resolved is None or resolved.has(k)]
        line_members = [(k, literal(lines.column(k)) if k in _LINE_TEXT else number(lines.column(k))) for k in keys]
        products = array_of(obj(line_members), starts)
        order_members = [
            ("order_id", literal(orders.column("order_id"))),
            ("total", number(total)),
            ("revenue", number(revenue)),
        ]
        if discount is not None:
            order_members.append(("discount", number(discount)))
        order_members += [
            ("currency", literal(orders.column("currency"))),
            ("store_id", literal(orders.column("store_id"))),
            ("products", products),
        ]
        properties = obj(order_members)

        identifiers = [(name, literal(orders.column(name))) for name in ("loyalty_card", "phone", "email")]
        traits = obj(identifiers, empty_as_null=True)
        external = join_present(
            [
                pc.binary_join_element_wise('{"id":', values, f',"type":"{name}","collection":"users","encoding":"none"}}', "")
                for name, values in identifiers
            ]
        )
        contexts = pc.if_else(
            pc.equal(external, ""),
            pa.scalar(None, pa.string()),
            pc.binary_join_element_wise('{"externalIds":[', external, "]}", ""),
        )
        # Content-derived id: a re-import adds nothing, a corrected order is a new event.
        content = pc.binary_join_element_wise(
            pc.cast(orders.column("timestamp"), pa.string()),
            orders.column("channel"),
            orders.column("customer_id"),
            anonymous,
            properties,
            traits,
            "\x1f",
            null_handling="replace",
            null_replacement="",
        )
        ids = [_ID_PREFIX + hashlib.sha1(text).hexdigest() for text in pc.cast(content, pa.binary()).to_pylist()]
        return pa.array(ids, pa.string()), properties, traits, contexts


def _group(lines: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Lines reordered so each order's lines are adjacent (orders in first-seen order,
    lines in file order), with the index of each order's first line."""
    codes = pc.dictionary_encode(lines.column("order_id")).combine_chunks().indices
    codes = np.asarray(codes.to_numpy(zero_copy_only=False))
    order = np.argsort(codes, kind="stable")
    grouped = lines.take(pa.array(order))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_codes[1:] != sorted_codes[:-1]]))
    return grouped, starts


def _order_lines(
    lines: pa.Table,
    starts: np.ndarray,
    orders: pa.Table,
    message_id: pa.Array,
    user_id: pa.Array,
    anonymous: pa.Array,
) -> pa.Table:
    """``order_lines`` rows, as ``rows.events_and_lines`` makes them from products[]."""
    n = lines.num_rows
    counts = np.diff(np.append(starts, n))
    owner = pa.array(np.repeat(np.arange(len(starts)), counts))
    line_no = np.arange(n) - np.repeat(starts, counts)
    from_order = {
        "message_id": message_id,
        "order_id": orders.column("order_id"),
        "timestamp": orders.column("timestamp"),
        "user_id": user_id,
        "anonymous_id": anonymous,
        "channel": orders.column("channel"),
        "store_id": orders.column("store_id"),
        "currency": orders.column("currency"),
    }
    columns: dict[str, Any] = {name: pc.take(values, owner) for name, values in from_order.items()}
    columns["line_no"] = pa.array(line_no, pa.int64())
    columns["event"] = pa.repeat(pa.scalar(EVENT), n)
    columns["profile_id"] = pa.nulls(n, pa.string())  # the identity stage fills it
    for name in (*_LINE_TEXT, *_LINE_NUMBERS):
        columns[name] = lines.column(name)
    schema = ORDER_LINES.arrow_schema
    arrays = [pc.cast(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays], schema=schema)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


def _prefixed(prefix: str, values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(prefix, values, "")


def _last_valid(values: pa.Array) -> str | None:
    valid = values.drop_null()
    return valid[len(valid) - 1].as_py() if len(valid) else None
