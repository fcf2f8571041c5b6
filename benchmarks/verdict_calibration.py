"""Benchmark: how often the verdict rule calls pure noise "reproduced" (issue 24).

Draws null findings with the run's own noise and no effect, and runs every check of
`comma.analysis.findings` on them:

* R(p) tables: every task and variant at one level per measure, flat in p (no ranking, no
  slope, no KD or AC effect). Each CoMMA run (task, variant, seed) is off by its own seed
  noise, with the seed std of the mini `all` run per task and measure (R's std for T, which is
  read from the same attention, with the same draw: R and T of a run move together), and each
  (run, p) by sentence noise, the bootstrap CI over sentences / 1.96. The rawkept twin of a raw
  run is off by the twin spread that run measured (sqrt(3) x the RMS over p of raw - rawkept
  seed means; ASR's twins are the same run).
* Tables 2-4: every NAR model of a task at one level (no KD or AC gain), the AR teacher at the
  same level (no gap), each NAR model and seed off by the relative seed std of the run's
  tables.

Prints, per claim, the rate of false "reproduced" (before and after Holm's correction) and the
share of files with any false "reproduced" among the tested claims. Claim 1 (CoMMA uses the
target) is a bar on D, not an effect, and is left out. Goal: at most 5 % each.

    .venv/bin/python benchmarks/verdict_calibration.py [--files 400] [--seed 0]
        [--summary docs/measurements/mini_all_ratio_summary_2026-12-01.md]
        [--tables docs/measurements/mini_all_table{2,3,4}_2026-12-01.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.analysis.findings import check_claims  # noqa: E402
from comma.analysis.verdicts import REPRODUCED, judge  # noqa: E402

MEASUREMENTS = REPO / "docs" / "measurements"
SUMMARY = MEASUREMENTS / "mini_all_ratio_summary_2026-12-01.md"
TABLES = [MEASUREMENTS / f"mini_all_table{k}_2026-12-01.md" for k in (2, 3, 4)]
VARIANTS = ("raw", "rawkept", "kd", "ac")
SEEDS = (1, 2, 3)
# One level per task and metric (the mini run's NAR models, rounded): only the noise matters.
LEVELS = {
    "nmt": {"bleu": 12.0, "wer": 62.0},
    "asr": {"bleu": 20.0, "wer": 90.0},
    "tts": {"mcd": 3.5, "mel_l1": 0.9},
}
# The NAR rows of Tables 2-4: (task, model, corpus, constraint), as the study's tables name them.
NAR_ROWS = {
    2: [("nmt", "NAT", "kd", "ac"), ("asr", "NAR-ASR", "raw", "ac"), ("tts", "FS", "kd", "ac")],
    3: [
        ("nmt", "NAT", "kd", "ac"),
        ("nmt", "NAT w/o KD", "raw", "ac"),
        ("tts", "FS", "kd", "ac"),
        ("tts", "FS w/o KD", "raw", "ac"),
    ],
    4: [
        ("nmt", "NAT", "kd", "ac"),
        ("nmt", "NAT w/o AC", "kd", "noac"),
        ("asr", "NAR-ASR", "raw", "ac"),
        ("asr", "NAR-ASR w/o AC", "raw", "noac"),
        ("tts", "FS", "kd", "ac"),
        ("tts", "FS w/o AC", "kd", "noac"),
    ],
}


def read_summary(path: Path) -> pd.DataFrame:
    """The rows of a `ratio_summary` Markdown table (task, variant, p, R mean, R std, ...)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    table = pd.DataFrame(rows, columns=header)
    for column in header[2:]:
        table[column] = pd.to_numeric(table[column])
    return table


def run_noise(summary: pd.DataFrame) -> dict:
    """Per task: seed std of R and D, sentence std, twin std of R, T and D, levels."""
    noise = {}
    for task, rows in summary.groupby("task"):
        raw = rows[rows.variant == "raw"].set_index("p")
        kept = rows[rows.variant == "rawkept"].set_index("p")
        twin = {
            m: math.sqrt(3 * float(((raw[c] - kept[c]) ** 2).mean()))
            for m, c in (("R", "R mean"), ("T", "T"), ("D", "D"))
        }
        noise[task] = {
            "seed": {
                "R": rows["R std"].mean(),
                "T": rows["R std"].mean(),
                "D": rows["D std"].mean(),
            },
            "sentence": float((rows["CI ±"] / 1.96).mean()),
            "twin": twin,
        }
    levels = {m: float(summary[c].mean()) for m, c in (("R", "R mean"), ("T", "T"), ("D", "D"))}
    return {"tasks": noise, "levels": levels, "p": sorted(set(summary.p))}


def relative_seed_std(paths: list[Path]) -> dict[tuple[str, int], float]:
    """Mean relative std (std / mean) of the NAR rows' metrics, per task and metric position
    (0 primary-or-first, 1 second) as the tables print them: "a ± b / c ± d"."""
    found: dict[tuple[str, int], list[float]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) < 6 or "±" not in cells[-1]:
                continue
            task = cells[0].split()[0].lower()
            for k, (mean, std) in enumerate(re.findall(r"([\d.]+) ± ([\d.]+)", cells[-1])):
                if float(mean) > 0:
                    found.setdefault((task, k), []).append(float(std) / float(mean))
    return {key: float(np.mean(v)) for key, v in found.items()}


def null_runs(rng: np.random.Generator, noise: dict) -> pd.DataFrame:
    rows = []
    for task, n in noise["tasks"].items():
        for seed in SEEDS:
            draws = {}
            for variant in VARIANTS:
                if variant == "rawkept":
                    z = {m: draws["raw"][m] + rng.normal(0, n["twin"][m]) for m in ("R", "T", "D")}
                else:
                    shared = rng.normal()
                    z = {
                        "R": shared * n["seed"]["R"],
                        "T": shared * n["seed"]["T"],
                        "D": rng.normal(0, n["seed"]["D"]),
                    }
                draws[variant] = z
                for p in noise["p"]:
                    row = {"task": task, "variant": variant, "seed": seed, "p": p, "M_over_N": 1.0}
                    for m in ("R", "T", "D"):
                        row[m] = noise["levels"][m] + z[m] + rng.normal(0, n["sentence"])
                    rows.append(row)
    runs = pd.DataFrame(rows)
    # where the twins are the same run (the teacher dropped nothing), rawkept is raw exactly
    for task, n in noise["tasks"].items():
        if max(n["twin"].values()) == 0:
            raw = runs[(runs.task == task) & (runs.variant == "raw")]
            kept = runs.index[(runs.task == task) & (runs.variant == "rawkept")]
            runs.loc[kept, ["R", "T", "D"]] = raw[["R", "T", "D"]].to_numpy()
    return runs


def null_tables(rng: np.random.Generator, rel: dict) -> dict[str, pd.DataFrame]:
    tables = {}
    for k, nar_rows in NAR_ROWS.items():
        rows = []
        tasks = sorted({t for t, *_ in nar_rows})
        for task in tasks:
            metrics = {m: LEVELS[task].get(m, math.nan) for m in ("bleu", "wer", "mcd", "mel_l1")}
            rows.append(
                dict(task=task, model="AR", kind="AR", corpus="raw", constraint="", **metrics)
            )
        for (task, model, corpus, constraint), seed in itertools.product(nar_rows, SEEDS):
            metrics = {}
            for position, (metric, level) in enumerate(LEVELS[task].items()):
                metrics[metric] = level * (1 + rng.normal(0, rel.get((task, position), 0.02)))
            rows.append(
                dict(
                    task=task,
                    model=model,
                    kind="NAR",
                    corpus=corpus,
                    constraint=constraint,
                    seed=seed,
                    **metrics,
                )
            )
        tables[f"table{k}"] = pd.DataFrame(rows)
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=400, help="null findings files to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", type=Path, default=SUMMARY)
    parser.add_argument(
        "--tables", type=Path, nargs=3, default=TABLES, help="the run's Tables 2, 3 and 4 (.md)"
    )
    args = parser.parse_args()
    noise = run_noise(read_summary(args.summary))
    rel = relative_seed_std(args.tables)
    rng = np.random.default_rng(args.seed)
    after, before, tested_files, any_after, any_before = Counter(), Counter(), Counter(), 0, 0
    start = time.time()
    for _ in range(args.files):
        findings = check_claims(null_runs(rng, noise), **null_tables(rng, rel))
        hit_after = hit_before = False
        for f in findings:
            if f.test is None or f.claim.startswith("Every raw CoMMA uses the target"):
                continue
            tested_files[f.claim] += 1
            raw_p = judge(dataclasses.replace(f.test, p_holm=math.nan)) == REPRODUCED
            # before Holm: the test, the seeds and the floor alone
            before[f.claim] += raw_p
            after[f.claim] += f.verdict == REPRODUCED
            hit_before |= raw_p
            hit_after |= f.verdict == REPRODUCED
        any_after += hit_after
        any_before += hit_before
    seconds = time.time() - start
    print(f"{args.files} null findings files in {seconds:.0f} s; noise from {args.summary.name}")
    for task, n in noise["tasks"].items():
        print(
            f"  {task.upper()}: seed std R {n['seed']['R']:.4f}, D {n['seed']['D']:.4f}; "
            f"sentence std {n['sentence']:.4f}; twin std "
            + ", ".join(f"{m} {v:.4f}" for m, v in n["twin"].items())
        )
    print("\nfalse 'reproduced' per claim: before Holm (test, seeds, floor) / after Holm")
    for claim, n in tested_files.items():
        print(f"  {before[claim] / n:6.1%} / {after[claim] / n:6.1%}  {claim}")
    worst = max(after[c] / n for c, n in tested_files.items())
    print(
        f"\nworst claim after Holm: {worst:.1%}; files with any false 'reproduced': "
        f"{any_after / args.files:.1%} after Holm ({any_before / args.files:.1%} before), "
        f"over {len(tested_files)} tested claims. Goal: <= 5 % each."
    )


if __name__ == "__main__":
    main()
