"""Named blocks: an algorithm, business rules and a size, with optional A/B variants.

A block is what a site, an app, an e-mail or a consultant's screen asks for by name
(``GET /api/v1/recommendations/{block}``). It is validated whole when saved — unknown
algorithm, a size out of range, bad rules, variant weights — so serving never meets a
broken definition. Variants replace any of algorithm, rules and size; a visitor is
assigned to one by a stable hash of the block and the visitor, so they see the same
variant everywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.recommendations.rules import RuleError, Rules
from opencdp.storage.base import Backend
from opencdp.storage.schema import RECOMMENDATION_BLOCKS

ALGORITHMS: dict[str, str] = {
    "personal": "especially for you: collaborative filtering on the profile's history, blended with the current session",
    "popular": "most viewed and bought overall (decayed); by category with the `categories` rule or `category=`",
    "most_viewed": "most viewed products",
    "most_bought": "most bought products",
    "trending": "popularity with a short half-life: what is rising now",
    "recently_viewed": "the profile's recently viewed products, newest first",
    "similar": "products like the context product: catalogue attributes and co-views",
    "bought_together": "bought in the same order as the context products (support, confidence, lift thresholds)",
    "also_bought": "bought by the customers who bought the context products",
    "complementary": "other-category products customers buy after the context products",
}
CONTEXT_ALGORITHMS = ("similar", "bought_together", "also_bought", "complementary")
"""Algorithms about products (``product_id=``); without one they use the profile's last viewed or bought product."""
MAX_SIZE = 100
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BlockNotFound(TerminalError):
    code = "not_found"
    status = 404


class BlockExists(TerminalError):
    code = "conflict"
    status = 409


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    algorithm: str
    size: int
    rules: Rules


@dataclass(frozen=True)
class Block:
    block_id: str
    name: str
    algorithm: str
    size: int
    rules: Rules
    description: str = ""
    variants: tuple[Variant, ...] = field(default_factory=tuple)

    def variant_for(self, visitor: str) -> Variant:
        """The visitor's variant (a stable hash, so the same everywhere); the block itself without variants."""
        if not self.variants:
            return Variant("default", 1.0, self.algorithm, self.size, self.rules)
        digest = hashlib.sha256(f"{self.block_id}:{visitor}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in self.variants)
        for variant in self.variants:
            point -= variant.weight
            if point < 0:
                return variant
        return self.variants[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.block_id, "name": self.name, "description": self.description, "algorithm": self.algorithm,
            "size": self.size, "rules": self.rules.to_dict(),
            "variants": [{"name": v.name, "weight": v.weight, "algorithm": v.algorithm, "size": v.size,
                          "rules": v.rules.to_dict()} for v in self.variants],
        }

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Block:
        """A block from its JSON form, checked whole; a ``RuleError`` names the first bad field."""
        block_id = raw.get("id")
        if not isinstance(block_id, str) or not _ID.match(block_id):
            raise RuleError(f"block id {block_id!r}: use 1-64 letters, digits, '_' and '-'", field="id")
        known = {"id", "name", "description", "algorithm", "size", "rules", "variants"}
        for name in raw:
            if name not in known:
                raise RuleError(f"unknown block field `{name}`; fields are {', '.join(sorted(known))}", field=name)
        algorithm = _algorithm(raw.get("algorithm"), "algorithm")
        size = _size(raw.get("size", 10), "size")
        rules_raw = raw.get("rules") or {}
        if not isinstance(rules_raw, Mapping):
            raise RuleError("`rules` must be an object", field="rules")
        rules = Rules.parse(rules_raw)
        variants_raw = raw.get("variants") or []
        if not isinstance(variants_raw, list):
            raise RuleError("`variants` must be a list of {name, weight, algorithm?, size?, rules?}", field="variants")
        variants: list[Variant] = []
        for n, item in enumerate(variants_raw):
            where = f"variants.{n}"
            if not isinstance(item, Mapping):
                raise RuleError("a variant is an object {name, weight, algorithm?, size?, rules?}", field=where)
            variant_name = item.get("name")
            if not isinstance(variant_name, str) or not _ID.match(variant_name) or variant_name in {v.name for v in variants}:
                raise RuleError(f"variant name {variant_name!r} must be a unique slug", field=f"{where}.name")
            weight = item.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                raise RuleError(f"variant weight must be a number > 0, not {weight!r}", field=f"{where}.weight")
            extra = set(item) - {"name", "weight", "algorithm", "size", "rules"}
            if extra:
                raise RuleError(f"unknown variant field `{sorted(extra)[0]}`", field=f"{where}.{sorted(extra)[0]}")
            variant_rules = rules if "rules" not in item else Rules.parse({**rules_raw, **(item["rules"] or {})}, f"{where}.rules")
            variants.append(Variant(
                variant_name, float(weight), _algorithm(item.get("algorithm", algorithm), f"{where}.algorithm"),
                _size(item.get("size", size), f"{where}.size"), variant_rules,
            ))
        if len(variants) == 1:
            raise RuleError("an A/B test needs at least two variants (or none)", field="variants")
        name = raw.get("name") or block_id
        if not isinstance(name, str) or len(name) > 200:
            raise RuleError("`name` must be text of at most 200 characters", field="name")
        description = raw.get("description") or ""
        if not isinstance(description, str):
            raise RuleError("`description` must be text", field="description")
        return cls(block_id, name, algorithm, size, rules, description, tuple(variants))


def _algorithm(value: Any, where: str) -> str:
    if value not in ALGORITHMS:
        raise RuleError(f"unknown algorithm {value!r}; one of {', '.join(ALGORITHMS)}", field=where)
    return str(value)


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise RuleError(f"`size` must be a whole number from 1 to {MAX_SIZE}, not {value!r}", field=where)
    return value


# -- the store ---------------------------------------------------------------------------------
def save(backend: Backend, block: Block, now: dt.datetime | None = None, *, created_at: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    _write(backend, block, now, created_at or now, deleted=False)


def _write(backend: Backend, block: Block, now: dt.datetime, created_at: dt.datetime, *, deleted: bool) -> None:
    row = {"block_id": block.block_id, "name": block.name, "definition": json.dumps(block.to_dict()),
           "created_at": created_at, "updated_at": now, "deleted": deleted}
    backend.upsert(RECOMMENDATION_BLOCKS, pa.Table.from_pylist([row], schema=RECOMMENDATION_BLOCKS.arrow_schema))


def list_blocks(backend: Backend) -> list[Block]:
    query = (
        exp.select("definition").from_(backend.table_ref(RECOMMENDATION_BLOCKS))
        .where(exp.column("deleted").eq(exp.false())).order_by("block_id")
    )
    return [Block.parse(json.loads(row["definition"])) for row in backend.rows(query)]


def get(backend: Backend, block_id: str) -> Block | None:
    query = (
        exp.select("definition").from_(backend.table_ref(RECOMMENDATION_BLOCKS))
        .where(exp.and_(exp.column("block_id").eq(exp.Literal.string(block_id)), exp.column("deleted").eq(exp.false())))
    )
    rows = backend.rows(query)
    return Block.parse(json.loads(rows[0]["definition"])) if rows else None


def require(backend: Backend, block_id: str) -> Block:
    block = get(backend, block_id)
    if block is None:
        names = [b.block_id for b in list_blocks(backend)]
        known = f"; blocks are: {', '.join(names)}" if names else "; create one with POST /api/v1/recommendations/blocks"
        raise BlockNotFound(f"no recommendation block `{block_id}`{known}", field="block")
    return block


def delete(backend: Backend, block_id: str, now: dt.datetime | None = None) -> None:
    block = require(backend, block_id)
    now = now or dt.datetime.now(dt.UTC)
    _write(backend, block, now, now, deleted=True)


DEMO_BLOCKS: tuple[dict[str, Any], ...] = (
    {"id": "for_you", "name": "Especially for you", "algorithm": "personal", "size": 8,
     "rules": {"max_per_category": 3, "repurchase_days": {"Living room": 365, "Bedroom": 365, "Kitchen": 365}}},
    {"id": "similar", "name": "Similar products", "algorithm": "similar", "size": 8},
    {"id": "bought_together", "name": "Bought together", "algorithm": "bought_together", "size": 4},
    {"id": "complete_the_room", "name": "Complete the room", "algorithm": "complementary", "size": 6},
    {"id": "bestsellers", "name": "Bestsellers", "algorithm": "popular", "size": 10, "rules": {"max_per_category": 2}},
    {"id": "recently_viewed", "name": "Recently viewed", "algorithm": "recently_viewed", "size": 10,
     "rules": {"exclude_purchased": False}},
)
"""The blocks the demo shop starts with (``opencdp demo load``), one per kind of shelf a shop shows."""


def seed_demo_blocks(backend: Backend) -> list[str]:
    """Save the ``DEMO_BLOCKS`` the store lacks (a block of the same id is left as it is); their ids."""
    added = []
    for raw in DEMO_BLOCKS:
        if get(backend, raw["id"]) is None:
            save(backend, Block.parse(raw))
            added.append(raw["id"])
    return added
