"""Aggregation of the per-run R(p) tables (rule ``aggregate_ratio``): every run in one table,
and their summary over seeds per (task, variant, p)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from comma.io import write_csv, write_lines

__all__ = ["read_runs", "seed_summary", "aggregate_ratio"]


def read_runs(run_csvs: Sequence[str | Path]) -> pd.DataFrame:
    """The per-run R(p) tables (measure_ratio's ratio.csv) as one, ordered by task, variant,
    seed and p."""
    if not run_csvs:
        raise ValueError("no R(p) tables to read")
    runs = pd.concat([pd.read_csv(path) for path in run_csvs], ignore_index=True)
    return runs.sort_values(["task", "variant", "seed", "p"], kind="stable", ignore_index=True)


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max of R over seeds per (task, variant, p)."""
    grouped = runs.groupby(["task", "variant", "p"], sort=True)["R"]
    summary = grouped.agg(R_mean="mean", R_std="std", R_min="min", R_max="max", seeds="count")
    return summary.reset_index()


def aggregate_ratio(
    run_csvs: Sequence[str | Path],
    runs_csv: str | Path,
    summary_csv: str | Path,
    summary_md: str | Path,
) -> pd.DataFrame:
    """Concatenate per-run R(p) tables; summarize over seeds per (task, variant, p)."""
    runs = read_runs(run_csvs)
    summary = seed_summary(runs)
    extra = (
        runs.groupby(["task", "variant", "p"], sort=True)
        .agg(
            CI_halfwidth=("R_ci_high", "mean"),
            CI_low=("R_ci_low", "mean"),
            T_mean=("T", "mean"),
            D_mean=("D", "mean"),
            D_std=("D", "std"),
            M_mean=("M", "mean"),
            N_mean=("N", "mean"),
            M_over_N=("M_over_N", "mean"),
        )
        .reset_index()
    )
    extra["CI_halfwidth"] = (extra.pop("CI_halfwidth") - extra.pop("CI_low")) / 2
    summary = summary.merge(extra, on=["task", "variant", "p"])
    write_csv(runs, runs_csv)
    write_csv(summary, summary_csv)
    lines = [
        "# Attention density ratio R(p)",
        "",
        "Mean over seeds, with the seed spread (std, min-max) next to the mean bootstrap 95 % "
        "CI half-width over sentences. T: raw share of attention on the target side; D: the "
        "masked-loss dependency (1 - loss of the masked positions with the rest of the target "
        "visible / their loss with the whole target masked; reads neither attention nor "
        "lengths), mean and std over seeds; M, N: mean source and target lengths (positions "
        "CoMMA attends over).",
        "",
        "| task | variant | p | R mean | R std | R min | R max | seeds | CI ± | T | D | D std "
        "| M | N | M/N |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.itertuples(index=False):
        lines.append(
            f"| {r.task} | {r.variant} | {r.p:.2f} | {r.R_mean:.4f} | {r.R_std:.4f} | "
            f"{r.R_min:.4f} | {r.R_max:.4f} | {r.seeds} | {r.CI_halfwidth:.4f} | {r.T_mean:.4f} "
            f"| {r.D_mean:.4f} | {r.D_std:.4f} | {r.M_mean:.1f} | {r.N_mean:.1f} "
            f"| {r.M_over_N:.2f} |"
        )
    write_lines(summary_md, lines)
    return summary
