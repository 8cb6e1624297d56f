"""Benchmark: import 1M POS order lines into a fresh DuckDB store.

Generates ``pos_orders.csv`` in the demo generator's layout (one row per line,
1-5 lines per receipt, phones in mixed Russian formats, a third of receipts
anonymous), times a plain pyarrow read of the file as the baseline, then times
``import_file`` and prints rows/s and the ratio to the baseline.

    .venv/bin/python benchmarks/bench_import.py [--lines 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from opencdp.config import Settings
from opencdp.ingest.imports import import_file
from opencdp.storage.duckdb import DuckDBBackend

_HEADER = [
    "order_id",
    "loyalty_card",
    "phone",
    "store_id",
    "channel",
    "ordered_at",
    "product_id",
    "quantity",
    "price",
    "discount",
    "total",
    "currency",
]


def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def generate(path: Path, lines: int, seed: int = 7) -> int:
    """Write ``lines`` order lines; returns the number of orders."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=lines // 3 + 10)
    counts = counts[: np.searchsorted(np.cumsum(counts), lines) + 1]
    counts[-1] -= int(counts.sum()) - lines
    orders = len(counts)
    customers = rng.integers(0, 150_000, size=orders)
    anonymous = rng.random(orders) < 0.33
    with_phone = rng.random(orders) < 0.3
    store = rng.integers(1, 41, size=orders)
    at_s = 1_700_000_000 + np.sort(rng.integers(0, 365 * 86_400, size=orders))
    national = 9_000_000_000 + (customers * 387_420_489 + 12_345_678) % 1_000_000_000
    style = customers % 3
    digits = _text(national)
    phone = pc.choose(
        pa.array(style.astype(np.int8)),
        pc.binary_join_element_wise("+7", digits, ""),
        pc.binary_join_element_wise("8", digits, ""),
        pc.binary_join_element_wise(
            "8 (",
            pc.utf8_slice_codeunits(digits, 0, 3),
            ") ",
            pc.utf8_slice_codeunits(digits, 3, 6),
            "-",
            pc.utf8_slice_codeunits(digits, 6, 8),
            "-",
            pc.utf8_slice_codeunits(digits, 8, 10),
            "",
        ),
    )
    card = pc.binary_join_element_wise("2", _text(100_000_000_000 + customers * 7_919), "")
    null_text = pa.scalar(None, pa.string())
    card = pc.if_else(pa.array(anonymous | with_phone), null_text, card)
    phone = pc.if_else(pa.array(anonymous | ~with_phone), null_text, phone)

    owner = np.repeat(np.arange(orders), counts)
    price = rng.integers(100, 50_000, size=lines) // 10 * 10
    quantity = np.where(rng.random(lines) < 0.85, 1, rng.integers(2, 5, size=lines))
    discount = np.where(rng.random(lines) < 0.2, price * quantity // 10, 0)
    total = np.add.reduceat(price * quantity - discount, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    stamps = pc.strftime(pa.array(at_s, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%SZ")
    take = pa.array(owner)
    table = pa.table(
        {
            "order_id": pc.take(pc.binary_join_element_wise("R", _text(np.arange(1, orders + 1)), ""), take),
            "loyalty_card": pc.take(card, take),
            "phone": pc.take(phone, take),
            "store_id": pc.take(pc.binary_join_element_wise("store-", _text(store), ""), take),
            "channel": pa.repeat(pa.scalar("pos"), lines),
            "ordered_at": pc.take(stamps, take),
            "product_id": pc.binary_join_element_wise("P", _text(rng.integers(1, 20_000, size=lines)), ""),
            "quantity": pa.array(quantity),
            "price": pa.array(price),
            "discount": pa.array(discount),
            "total": pa.array(total[owner]),
            "currency": pa.repeat(pa.scalar("RUB"), lines),
        }
    ).select(_HEADER)
    pcsv.write_csv(table, path)
    return orders


def baseline(path: Path) -> float:
    """Seconds to read the file with pyarrow, all columns as text, in batches."""
    started = time.perf_counter()
    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(use_threads=False),
        convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(_HEADER, pa.string())),
    )
    rows = sum(batch.num_rows for batch in reader)
    assert rows > 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="write the file and store here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = args.keep or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        path = work / "pos_orders.csv"
        started = time.perf_counter()
        orders = generate(path, args.lines)
        print(f"generated {args.lines:,} lines / {orders:,} orders ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - started:.1f} s")

        read_s = baseline(path)
        print(f"baseline pyarrow read: {read_s:.2f} s ({args.lines / read_s:,.0f} rows/s)")

        store = work / "bench.duckdb"
        for suffix in ("", ".wal"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        backend = DuckDBBackend(store)
        backend.create_schema()
        settings = Settings(data_dir=work / "data")
        try:
            cpu = time.process_time()
            report = import_file(backend, path, "orders", settings=settings)
            cpu = time.process_time() - cpu  # every thread's, the engine's included: steadier than wall time
            print(f"import: {report.seconds:.2f} s ({report.rows_read / report.seconds:,.0f} rows/s), "
                  f"{report.events_written:,} events, {report.order_lines:,} lines, {report.rejected} rejected")
            print(f"import CPU time: {cpu:.1f} s ({cpu / args.lines * 1e6:.1f} µs per line)")
            print(f"ratio import / baseline read: {report.seconds / read_s:.1f}x")
            again = import_file(backend, path, "orders", settings=settings)
            print(f"re-import (all duplicates): {again.seconds:.2f} s, {again.events_written} new, "
                  f"{again.duplicates:,} duplicates")
        finally:
            backend.close()


if __name__ == "__main__":
    main()
