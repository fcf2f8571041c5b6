"""Benchmark: how many CoMMA steps until the model uses the target, at one or more lrs.

Trains one raw CoMMA per learning rate on a prepared corpus (the mini preset's architecture
and batch from config.yaml, one thread) with the trainer's probe at every `--every` steps, and
prints R(p) and the masked-loss dependency D(p) (mean over the p grid; D also at each p) on
the first 64 validation sentences against the step, side by side per lr, with each run's
wall time. The measurement behind training.comma.max_steps
(docs/measurements/comma_steps_by_dependency.md).

    .venv/bin/python benchmarks/comma_dependency_curve.py --task nmt --data work/data/nmt \\
        --lr 1e-3 3e-3 --steps 1500 [--seed 1] [--every 100] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.analysis.curves import read_metrics  # noqa: E402
from comma.stages.comma import train_comma  # noqa: E402
from comma.workflow_config import family_settings  # noqa: E402

P_GRID = (0.1, 0.3, 0.5)


def curve(task: str, data: Path, lr: float, steps: int, seed: int, every: int, out: Path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    architecture, training = family_settings(config, "comma", task)
    training = {
        **training,
        "max_steps": steps,
        "lr": lr,
        "checkpoint_every": every,
    }
    run = out / f"{task}_lr{lr:g}_seed{seed}"
    start = time.perf_counter()
    train_comma(
        task,
        data,
        run / "model.pt",
        run / "metrics.jsonl",
        architecture=architecture,
        training=training,
        seed=seed,
        threads=1,
        probe=dict(sentences=64, p_grid=list(P_GRID), mask_seed=0),
    )
    wall = time.perf_counter() - start
    metrics = read_metrics(run / "metrics.jsonl").dropna(subset=[f"R@{P_GRID[0]:g}"])
    table = metrics[["step"]].astype(int).copy()
    table["R"] = metrics[[f"R@{p:g}" for p in P_GRID]].mean(axis=1)
    table["D"] = metrics[[f"D@{p:g}" for p in P_GRID]].mean(axis=1)
    for p in P_GRID:
        table[f"D@{p:g}"] = metrics[f"D@{p:g}"]
    return table.set_index("step"), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=["nmt", "asr", "tts"])
    parser.add_argument("--data", type=Path, required=True, help="a prepared work/data/{task}")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        tables = {}
        for lr in args.lr:
            table, wall = curve(args.task, args.data, lr, args.steps, args.seed, args.every, out)
            tables[lr] = table
            print(f"{args.task} lr {lr:g}: {args.steps} steps in {wall:.0f} s wall", flush=True)
    columns = ["R", "D"] + [f"D@{p:g}" for p in P_GRID]
    header = " | ".join(f"lr {lr:g} {c}" for lr in tables for c in columns)
    print(f"\n| step | {header} |")
    print("|---:|" + "---:|" * (len(columns) * len(tables)))
    steps = sorted(set().union(*(t.index for t in tables.values())))
    for step in steps:
        cells = [
            f"{tables[lr].loc[step, c]:.3f}" if step in tables[lr].index else ""
            for lr in tables
            for c in columns
        ]
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
