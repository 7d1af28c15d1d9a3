"""Benchmark `subscribers import`: time and memory for generated CSV files of several sizes.

    .venv/bin/python bench/import.py                  # 20,000 and 100,000 rows
    .venv/bin/python bench/import.py --rows 500000

Each size runs twice in a fresh subprocess, so peaks do not carry over: once for
wall time and peak RSS, once under tracemalloc (which slows Python down, so its
time is not reported). About 1% of rows are invalid and 1% repeat an address.
Memory that does not grow with the file shows as equal peaks across sizes.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from composer.store.csvio import import_csv  # noqa: E402
from composer.store.sqlite import SqliteSubscriberStore  # noqa: E402


def generate(path: Path, rows: int) -> None:
    """Write ``rows`` subscriber rows: mostly valid, some invalid, some repeated."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(("email", "name", "tier", "tags"))
        for n in range(rows):
            if n % 100 == 37:
                email = f"broken{n}@@example.com"
            elif n % 100 == 73:
                email = f"Reader{n - 1}@Example{(n - 1) % 50}.COM"
            else:
                email = f"Reader{n}@example{n % 50}.com"
            tier = "paid" if n % 7 == 0 else "free"
            writer.writerow((email, f"Reader Number {n}", tier, "2024;bench" if n % 3 else ""))


def measure(rows: int, trace: bool) -> dict[str, float]:
    """Import a fresh ``rows``-row file into a fresh database and report the cost."""
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "subscribers.csv"
        generate(csv_path, rows)
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        with SqliteSubscriberStore(Path(folder) / "subscribers.db") as store:
            report = import_csv(csv_path, store)
        seconds = time.perf_counter() - started
        traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    return {
        "seconds": seconds,
        "added": report.counts.added,
        "duplicates": report.counts.duplicates,
        "rejected": len(report.rejected),
        # ru_maxrss is KiB on Linux.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mib": traced_peak / 2**20,
    }


def run_child(rows: int, trace: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(rows)] + (["--trace"] if trace else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.trace)))
        return
    print(
        f"{'rows':>9} {'seconds':>8} {'rows/s':>8} {'added':>8} {'dups':>6} {'rejected':>8}"
        f" {'peak RSS':>10} {'tracemalloc':>12}"
    )
    for rows in args.rows:
        timed = run_child(rows, trace=False)
        traced = run_child(rows, trace=True)
        print(
            f"{rows:>9,} {timed['seconds']:>8.2f} {rows / timed['seconds']:>8,.0f}"
            f" {timed['added']:>8,.0f} {timed['duplicates']:>6,.0f} {timed['rejected']:>8,.0f}"
            f" {timed['peak_rss_mib']:>7.1f} MiB {traced['traced_peak_mib']:>8.2f} MiB"
        )


if __name__ == "__main__":
    main()
