"""What each import kind reads: its target columns, which are required, and whether
unmapped file columns are kept.

Target names double as the default file column names, so the files the demo
generator writes (and any export using these headers) need no mapping file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Kind = Literal["customers", "orders", "catalog", "events"]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True)
class Spec:
    kind: str
    targets: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]
    """Each entry is a group of targets of which the file must provide at least one."""
    keeps_extras: bool
    """Unmapped columns are kept: as custom traits (customers) or product attributes (catalog)."""


CUSTOMERS = Spec(
    "customers",
    (
        "customer_id",
        "email",
        "phone",
        "first_name",
        "last_name",
        "gender",
        "birthday",
        "city",
        "timezone",
        "country",
        "loyalty_card",
        "bonus_balance",
        "bonus_expires_at",
        "email_consent",
        "sms_consent",
        "created_at",
        "updated_at",
    ),
    required=(("customer_id", "email", "phone"),),
    keeps_extras=True,
)

ORDERS = Spec(
    "orders",
    (
        # order level (repeated on every line; the first good line of an order wins)
        "order_id",
        "ordered_at",
        "customer_id",
        "loyalty_card",
        "phone",
        "email",
        "store_id",
        "channel",
        "currency",
        "total",
        "revenue",
        "order_discount",
        # line level
        "product_id",
        "sku",
        "name",
        "category",
        "brand",
        "price",
        "quantity",
        "discount",
    ),
    required=(("order_id",), ("ordered_at",), ("product_id",), ("quantity",), ("price",)),
    keeps_extras=False,
)

CATALOG = Spec(
    "catalog",
    (
        "product_id",
        "sku",
        "name",
        "category",
        "room",
        "brand",
        "price",
        "old_price",
        "currency",
        "stock",
        "url",
        "image_url",
        "consumption_days",
        "updated_at",
    ),
    required=(("product_id",),),
    keeps_extras=True,
)

EVENTS = Spec(
    "events",
    (
        "type",
        "message_id",
        "timestamp",
        "original_timestamp",
        "sent_at",
        "user_id",
        "anonymous_id",
        "group_id",
        "previous_id",
        "event",
        "name",
        "channel",
        "properties",
        "traits",
        "context",
        "integrations",
    ),
    required=(("type",), ("user_id", "anonymous_id")),
    keeps_extras=False,
)

SPECS: dict[str, Spec] = {s.kind: s for s in (CUSTOMERS, ORDERS, CATALOG, EVENTS)}
