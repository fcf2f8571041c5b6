"""Benchmark: wall time of mini corpus generation and of each preparation rule.

Runs the data and preparation stages of the workflow from scratch in a temporary directory
(default: the mini preset; `--configfile` for another) and prints, per job, the seconds and
peak memory Snakemake's `benchmark:` files recorded, plus the end-to-end wall time.

    .venv/bin/python benchmarks/data_pipeline.py [--cores 2] [--configfile tests/tiny.yaml]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="2")
    parser.add_argument("--configfile", help="config merged over config.yaml")
    parser.add_argument("--target", default="results/data_summary.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="comma-bench-") as workdir:
        cmd = [
            str(Path(sys.executable).with_name("snakemake")),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            workdir,
            args.target,
            "--cores",
            args.cores,
            "--quiet",
        ]
        if args.configfile:
            cmd += ["--configfile", str(Path(args.configfile).resolve())]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start

        rows = []
        for tsv in sorted((Path(workdir) / "logs" / "benchmarks").rglob("*.tsv")):
            with open(tsv, newline="") as f:
                record = next(csv.DictReader(f, delimiter="\t"))
            job = str(tsv.relative_to(Path(workdir) / "logs" / "benchmarks").with_suffix(""))
            rows.append((job, float(record["s"]), record.get("max_rss", "-")))

    print(f"{'job':<40} {'seconds':>9} {'max RSS MB':>11}")
    for job, seconds, rss in rows:
        print(f"{job:<40} {seconds:>9.2f} {rss:>11}")
    print(f"{'sum of jobs':<40} {sum(s for _, s, _ in rows):>9.2f}")
    print(f"{'wall time, --cores ' + args.cores:<40} {wall:>9.2f}")


if __name__ == "__main__":
    main()
