"""The paper's figures: R(p) against the mask ratio p (Figures 2-4).

Every figure is drawn from the per-run ratio tables the `measure_ratio` rule writes: one
row per (task, variant, seed, p) with R, its bootstrap CI over sentences, T and the lengths.
Seeds are the unit of replication: the line is the mean over seeds, the band the seed
spread (min to max), thin lines the single seeds. Figures 3 and 4 (KD and AC against raw)
add a row of paired per-seed differences: the raw, kd and ac runs of one seed share their
initialization and data order, so R(variant) - R(raw) of one seed isolates the variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.aggregate import seed_summary  # noqa: E402
from comma.io import atomic_path  # noqa: E402
from comma.tasks import TASK_COLORS, TASK_LABELS  # noqa: E402

VARIANT_LABELS = {"raw": "raw", "kd": "KD", "ac": "AC", "rawkept": "raw (KD's sentences)"}
VARIANT_STYLES = {"raw": "-", "kd": "--", "ac": ":", "rawkept": "-"}


def require_curves(
    runs: pd.DataFrame, curves: Sequence[tuple[str, str]], source: str | Path | None = None
) -> None:
    """Raise a ValueError naming every (task, variant) of `curves` without rows in `runs`."""
    present = set(zip(runs.task, runs.variant, strict=True))
    missing = [f"{task}/{variant}" for task, variant in curves if (task, variant) not in present]
    if missing:
        where = f"{source}" if source else "the ratio table"
        have = ", ".join(sorted(f"{t}/{v}" for t, v in present)) or "nothing"
        raise ValueError(
            f"{where} has no R(p) measurements for {', '.join(missing)} (task/variant); it "
            f"holds {have}. Train and measure those CoMMA runs first."
        )


def save_figure(fig, paths: Sequence[str | Path], *, dpi: int = 150, tight: bool = False) -> None:
    """Write `fig` to every path (the format from its suffix, PNG without one), each
    atomically, then close it."""
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(
                tmp,
                format=Path(path).suffix.lstrip(".") or "png",
                dpi=dpi,
                bbox_inches="tight" if tight else None,
            )
    plt.close(fig)


def plot_ratio_curves(
    runs: pd.DataFrame,
    curves: Sequence[tuple[str, str]],
    paths: Sequence[str | Path],
    *,
    panels: str = "single",
    title: str | None = None,
) -> None:
    """Draw R(p) for each (task, variant) in `curves` and save to every path in `paths`.

    panels="single": all curves in one axes (Figure 2); panels="task": one axes per task, its
    variants overlaid (Figures 3 and 4)."""
    require_curves(runs, curves)
    tasks = list(dict.fromkeys(task for task, _ in curves))
    n_axes = 1 if panels == "single" else len(tasks)
    fig, axes = plt.subplots(1, n_axes, figsize=(4.6 * n_axes, 3.6), squeeze=False)
    summary = seed_summary(runs)
    for task, variant in curves:
        ax = axes[0][0 if panels == "single" else tasks.index(task)]
        sel = summary[(summary.task == task) & (summary.variant == variant)]
        if sel.empty:
            raise ValueError(f"no ratio measurements for task {task!r}, variant {variant!r}")
        label = TASK_LABELS[task] if panels == "single" else VARIANT_LABELS[variant]
        if panels == "single" and variant != "raw":
            label += f" ({VARIANT_LABELS[variant]})"
        color = TASK_COLORS[task] if panels == "single" else None
        (line,) = ax.plot(
            sel.p, sel.R_mean, VARIANT_STYLES[variant], marker="o", color=color, label=label
        )
        ax.fill_between(sel.p, sel.R_min, sel.R_max, color=line.get_color(), alpha=0.18, lw=0)
        for _, one_seed in runs[(runs.task == task) & (runs.variant == variant)].groupby("seed"):
            ax.plot(one_seed.p, one_seed.R, color=line.get_color(), lw=0.6, alpha=0.5)
    for k, ax in enumerate(axes[0]):
        ax.set_xlabel("mask ratio p")
        ax.set_ylabel("attention density ratio R(p)")
        if panels == "task":
            ax.set_title(TASK_LABELS[tasks[k]])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, paths, tight=True)


# The three measures of target-token dependency, as columns of the per-run ratio tables.
MEASURE_AXES = {
    "R": "attention density ratio R(p)",
    "T": "raw target share of attention T(p)",
    "D": "masked-loss dependency D(p)",
}


def plot_dependency_measures(
    runs: pd.DataFrame, tasks: Sequence[str], paths: Sequence[str | Path], *, variant="raw"
) -> None:
    """R(p), T(p) and D(p) (:mod:`comma.dependency`) side by side, one panel each, every task
    of `tasks` in its colour: mean over seeds, seed min-max band, thin single seeds. Whether
    the three rank the tasks alike is what the findings judge."""
    require_curves(runs, [(task, variant) for task in tasks])
    missing = [m for m in MEASURE_AXES if m not in runs.columns]
    if missing:
        raise ValueError(
            f"the ratio tables have no {', '.join(missing)} column(s): measured by an older "
            "version; re-run measure_ratio"
        )
    fig, axes = plt.subplots(1, len(MEASURE_AXES), figsize=(13.5, 3.6), squeeze=False)
    for ax, (measure, axis_label) in zip(axes[0], MEASURE_AXES.items(), strict=True):
        for task in tasks:
            sel = runs[(runs.task == task) & (runs.variant == variant)]
            by_p = sel.groupby("p")[measure].agg(["mean", "min", "max"]).reset_index()
            color = TASK_COLORS[task]
            ax.plot(by_p.p, by_p["mean"], "-o", color=color, label=TASK_LABELS[task])
            ax.fill_between(by_p.p, by_p["min"], by_p["max"], color=color, alpha=0.18, lw=0)
            for _, one_seed in sel.groupby("seed"):
                ax.plot(one_seed.p, one_seed[measure], color=color, lw=0.6, alpha=0.5)
        ax.set_xlabel("mask ratio p")
        ax.set_ylabel(axis_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Target-token dependency by three measures (CoMMA, {VARIANT_LABELS[variant]} data)",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, paths, tight=True)


def paired_differences(runs: pd.DataFrame, variant: str, baseline: str = "raw") -> pd.DataFrame:
    """R(variant) - R(baseline) per task, seed and p, for the seeds that have both runs."""
    paired = runs[runs.variant.isin([variant, baseline])].pivot_table(
        index=["task", "seed", "p"], columns="variant", values="R"
    )
    if variant not in paired or baseline not in paired:
        return pd.DataFrame(columns=["task", "seed", "p", "difference"])
    difference = (paired[variant] - paired[baseline]).dropna().rename("difference")
    return difference.reset_index()


def plot_variant_comparison(
    runs: pd.DataFrame,
    variant: str,
    tasks: Sequence[str],
    paths: Sequence[str | Path],
    *,
    panel_notes: dict[str, str] | None = None,
    title: str | None = None,
    source: str | Path | None = None,
    baseline: str = "raw",
) -> None:
    """Figures 3 and 4: R(p) of `baseline` against `variant`, one column per task.

    Top row: both variants' R(p), mean over seeds with the seed min-max band and thin single
    seeds. Bottom row: the paired per-seed difference R(variant) - R(baseline) (below zero: the
    variant lowers R), one line per seed and their mean. `panel_notes` adds text to a task's
    title (e.g. "beyond the paper"). Raises ValueError, naming `source`, if a needed
    (task, variant) has no rows."""
    curves = [(task, v) for task in tasks for v in (baseline, variant)]
    require_curves(runs, curves, source)
    notes = panel_notes or {}
    fig, axes = plt.subplots(
        2,
        len(tasks),
        figsize=(4.4 * len(tasks), 5.6),
        squeeze=False,
        gridspec_kw={"height_ratios": [2.2, 1]},
        sharex=True,
    )
    summary = seed_summary(runs)
    differences = paired_differences(runs, variant, baseline)
    for k, task in enumerate(tasks):
        top, bottom = axes[0][k], axes[1][k]
        for v in (baseline, variant):
            sel = summary[(summary.task == task) & (summary.variant == v)]
            (line,) = top.plot(
                sel.p, sel.R_mean, VARIANT_STYLES[v], marker="o", label=VARIANT_LABELS[v]
            )
            top.fill_between(sel.p, sel.R_min, sel.R_max, color=line.get_color(), alpha=0.18, lw=0)
            for _, one_seed in runs[(runs.task == task) & (runs.variant == v)].groupby("seed"):
                top.plot(one_seed.p, one_seed.R, color=line.get_color(), lw=0.6, alpha=0.5)
        note = notes.get(task)
        top.set_title(TASK_LABELS[task] + (f" ({note})" if note else ""), fontsize=10)
        top.set_ylabel("attention density ratio R(p)")
        top.grid(alpha=0.3)
        top.legend(fontsize=8)
        diff = differences[differences.task == task]
        for seed, one_seed in diff.groupby("seed"):
            bottom.plot(one_seed.p, one_seed.difference, lw=0.8, alpha=0.7, label=f"seed {seed}")
        if not diff.empty:
            mean = diff.groupby("p").difference.mean()
            bottom.plot(mean.index, mean.to_numpy(), "k-", marker="o", ms=3, lw=1.5, label="mean")
        bottom.axhline(0.0, color="grey", lw=0.8)
        bottom.set_xlabel("mask ratio p")
        bottom.set_ylabel(f"R({VARIANT_LABELS[variant]}) - R({VARIANT_LABELS[baseline]})")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, paths, tight=True)
