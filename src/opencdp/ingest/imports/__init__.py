"""Bulk import of CRM customers, orders, the product catalogue and Segment events.

``import_file`` reads CSV, Parquet or JSON Lines in batches, normalises values
(e-mails, phones to E.164, date-times), turns rows into events with historical
timestamps and loads them idempotently: message ids derive from content, so
importing the same file twice adds nothing. Bad rows are kept, with the reason,
in the quarantine table and a reject file; they never stop the import.
"""

from __future__ import annotations

from opencdp.ingest.imports.mapping import Mapping, Options, load_mapping
from opencdp.ingest.imports.reader import FORMATS
from opencdp.ingest.imports.report import ImportReport, RejectedRow
from opencdp.ingest.imports.run import import_file
from opencdp.ingest.imports.targets import KINDS, Kind

__all__ = [
    "FORMATS",
    "KINDS",
    "ImportReport",
    "Kind",
    "Mapping",
    "Options",
    "RejectedRow",
    "import_file",
    "load_mapping",
]
