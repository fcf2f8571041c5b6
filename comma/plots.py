"""The paper's figures: R(p) against the mask ratio p (Figures 2-4).

Every figure is drawn from the per-run ratio tables the `measure_ratio` rule writes: one
row per (task, variant, seed, p) with R, its bootstrap CI over sentences, T and the lengths.
Seeds are the unit of replication: the line is the mean over seeds, the band the seed
spread (min to max), thin lines the single seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from comma.io import atomic_path  # noqa: E402

TASK_LABELS = {"nmt": "NMT", "asr": "ASR", "tts": "TTS"}
TASK_COLORS = {"nmt": "tab:blue", "asr": "tab:red", "tts": "tab:green"}
VARIANT_LABELS = {"raw": "raw", "kd": "KD", "ac": "AC"}
VARIANT_STYLES = {"raw": "-", "kd": "--", "ac": ":"}


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max of R over seeds per (task, variant, p)."""
    grouped = runs.groupby(["task", "variant", "p"], sort=True)["R"]
    summary = grouped.agg(R_mean="mean", R_std="std", R_min="min", R_max="max", seeds="count")
    return summary.reset_index()


def _save(fig, paths: Sequence[str | Path]) -> None:
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=150, bbox_inches="tight")
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
    _save(fig, paths)
