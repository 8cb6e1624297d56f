"""The demo shop at benchmark scale, built once per size and shared by the benchmarks.

``shop_store(customers)`` returns the path of a DuckDB store under
``bench-data/shop-<customers>/store/opencdp.duckdb`` holding the demo shop (events with
their typed columns, order lines, POS orders, CRM customers, the catalogue, profiles
assigned as ``bench_segments.load_store`` does). It is generated and loaded on first use
(a lock file makes a second process wait for the first) and never written afterwards:
open it read-only, or copy it (``private_copy``) before writing.

    .venv/bin/python benchmarks/_shop.py --customers 1000000   # build it ahead of time
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent / "bench-data"


def shop_store(customers: int = 1_000_000) -> Path:
    """The path of the built store for ``customers`` (built now if missing)."""
    from bench_segments import load_store

    from opencdp.config import Settings
    from opencdp.demo.config import DemoConfig
    from opencdp.demo.generator import generate
    from opencdp.storage import open_backend

    work = ROOT / f"shop-{customers}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "store" / "opencdp.duckdb"
    done = work / "store" / ".complete"
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return path
        demo = work / "demo"
        if not (demo / "customers.csv").exists():
            start = time.perf_counter()
            generate(demo, DemoConfig(customers=customers))
            print(f"generated the demo shop ({customers:,} customers) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        shutil.rmtree(work / "store", ignore_errors=True)
        settings = Settings(data_dir=work / "store", duckdb_memory_limit="4GB")
        backend = open_backend(settings)
        try:
            backend.create_schema()
            start = time.perf_counter()
            counts = load_store(backend, demo)
            backend.execute("CHECKPOINT")
            print(f"loaded {counts} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        finally:
            backend.close()
        done.touch()
        return path


def private_copy(customers: int, target: Path) -> Path:
    """A writable copy of the shop's store at ``target`` (a directory used as ``Settings.data_dir``)."""
    source = shop_store(customers)
    target.mkdir(parents=True, exist_ok=True)
    copy = target / "opencdp.duckdb"
    if not copy.exists():
        shutil.copyfile(source, copy)
    return copy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    print(shop_store(parser.parse_args().customers))
