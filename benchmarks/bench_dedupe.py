"""Probabilistic dedupe of customer records: wall time, peak memory, and quality.

Generates synthetic Russian retail customers (``opencdp.identity.synthetic``: 20%
duplicate records with typos, Latin spellings, swapped day and month, other e-mail
providers, missing fields, and relatives who share phones and e-mails), runs
``find_matches`` on them, and scores the pairs against the ground truth. Baselines
in the same process: the same model with its fixed probabilities (no training), and
an exact match on e-mail or phone, which is what a CDP without fuzzy matching does.

    .venv/bin/python benchmarks/bench_dedupe.py [--records 100000] [--duplicate-share 0.2]

Target: 100,000 records in <= 120 s on a 2-core machine; precision >= 0.95 at
auto-merge and recall >= 0.9 at review.
"""

from __future__ import annotations

import argparse
import resource
import time

import duckdb
import pyarrow as pa
from _server import machine, print_table

from opencdp.identity.dedupe import DedupeSettings, find_matches
from opencdp.identity.synthetic import PairQuality, generate_customers, pair_quality

TARGET_S = 120.0


def exact_contact_pairs(records: pa.Table) -> pa.Table:
    """Pairs with the same e-mail or phone, all as ``merge``: the no-fuzzy baseline."""
    con = duckdb.connect()
    con.register("records", records)
    sql = """
        SELECT l.profile_id AS profile_id_l, r.profile_id AS profile_id_r, 'merge' AS decision
        FROM records l JOIN records r ON lower(l.email) = lower(r.email)
        WHERE l.profile_id < r.profile_id
        UNION
        SELECT l.profile_id, r.profile_id, 'merge'
        FROM records l JOIN records r ON l.phone = r.phone
        WHERE l.profile_id < r.profile_id
    """
    pairs = con.sql(sql).to_arrow_table()
    con.close()
    return pairs


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def row(name: str, seconds: float, quality: PairQuality) -> tuple[str, ...]:
    return (
        name,
        f"{seconds:.1f}",
        f"{quality.review_pairs:,}",
        f"{quality.merge_pairs:,}",
        f"{quality.merge_precision:.3f}",
        f"{quality.merge_recall:.3f}",
        f"{quality.review_precision:.3f}",
        f"{quality.review_recall:.3f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duplicate-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print("bench_dedupe: probabilistic matching of customer records (Splink on DuckDB)")
    print(f"  machine:  {machine()}")
    started = time.perf_counter()
    customers = generate_customers(
        args.records, duplicate_share=args.duplicate_share, seed=args.seed
    )
    records = customers.records
    print(
        f"  data:     {records.num_rows:,} records, {len(customers.true_pairs()):,} true duplicate"
        f" pairs, generated in {time.perf_counter() - started:.1f} s"
    )
    rss_before = peak_rss_mb()

    started = time.perf_counter()
    matches = find_matches(records, DedupeSettings())
    trained_s = time.perf_counter() - started
    rss_after = peak_rss_mb()

    started = time.perf_counter()
    fixed = find_matches(records, DedupeSettings(min_records_for_training=records.num_rows + 1))
    fixed_s = time.perf_counter() - started

    started = time.perf_counter()
    exact = exact_contact_pairs(records)
    exact_s = time.perf_counter() - started

    quality = pair_quality(matches, customers)
    print_table(
        "pairs and quality against the ground truth (merge: p >= 0.95, review: p >= 0.70)",
        [
            (
                "method",
                "wall s",
                "pairs",
                "merge",
                "merge prec",
                "merge rec",
                "review prec",
                "review rec",
            ),
            row("find_matches (trained)", trained_s, quality),
            row("find_matches, fixed m/u", fixed_s, pair_quality(fixed, customers)),
            row("exact e-mail or phone", exact_s, pair_quality(exact, customers)),
        ],
    )
    print(
        f"\npeak RSS: {rss_after:,.0f} MB after find_matches "
        f"({rss_before:,.0f} MB before it, with the generated data)"
    )
    met = trained_s <= TARGET_S and quality.merge_precision >= 0.95 and quality.review_recall >= 0.9
    print(
        f"target <= {TARGET_S:.0f} s, precision >= 0.95 at merge, recall >= 0.9 at review: "
        f"{trained_s:.1f} s, {quality.merge_precision:.3f}, {quality.review_recall:.3f} -> "
        f"{'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
