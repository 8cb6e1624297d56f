"""Demo shop generator: a realistic home-and-furniture retailer as bulk-import files.

``generate(out_dir, DemoConfig(...))`` writes ``catalog.csv``, ``customers.csv``,
``pos_orders.csv`` and ``events-00000.parquet``... deterministically for a given seed
and end date, in bounded memory (customers are produced in fixed-size chunks).
"""

from __future__ import annotations

from opencdp.demo.catalog import CATALOG_COLUMNS
from opencdp.demo.config import DemoConfig, DemoSummary
from opencdp.demo.events import EVENT_SCHEMA
from opencdp.demo.generator import generate
from opencdp.demo.people import CUSTOMER_COLUMNS
from opencdp.demo.pos import POS_COLUMNS

__all__ = [
    "CATALOG_COLUMNS",
    "CUSTOMER_COLUMNS",
    "EVENT_SCHEMA",
    "POS_COLUMNS",
    "DemoConfig",
    "DemoSummary",
    "generate",
]
