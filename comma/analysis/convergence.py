"""How many CoMMA training steps R(p) needs: the R(p) the trainer measured on a validation
slice at every checkpoint (``R@p`` in ``metrics.jsonl``, :func:`comma.stages.comma.ratio_probe`),
per task and seed, against the step, and the first checkpoint from which the seeds' mean R
stays within the seed spread of its final value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.curves import read_metrics  # noqa: E402
from comma.analysis.plots import save_figure  # noqa: E402
from comma.io import atomic_path  # noqa: E402
from comma.tasks import TASK_COLORS, TASK_LABELS, TASK_NAMES  # noqa: E402

__all__ = ["probe_table", "converged_steps", "ratio_convergence"]


def probe_table(runs: Sequence[tuple[str, int, str | Path]]) -> pd.DataFrame:
    """(task, seed, metrics path) -> one row per probed checkpoint: task, seed, step and R,
    the mean of the ``R@p`` values over the p grid. A file without them is named."""
    tables = []
    for task, seed, path in runs:
        metrics = read_metrics(path)
        columns = [c for c in metrics.columns if str(c).startswith("R@")]
        if not columns:
            raise ValueError(
                f"{path}: no R(p) at checkpoints (R@p columns); train with "
                "ratio.probe_sentences > 0"
            )
        probed = metrics.dropna(subset=columns)
        tables.append(
            pd.DataFrame(
                {
                    "task": task,
                    "seed": int(seed),
                    "step": probed.step.astype(int),
                    "R": probed[columns].mean(axis=1),
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def converged_steps(table: pd.DataFrame) -> pd.DataFrame:
    """Per task: the final step, the seeds' final R (mean, std), and ``converged_step``, the
    first checkpoint from which the mean over seeds stays within one seed std of its final
    value (with one seed the spread is 0, so only the final step qualifies)."""
    rows = []
    for task, runs in table.groupby("task", sort=False):
        final_step = int(runs.step.max())
        final = runs[runs.step == final_step].R
        spread = float(final.std(ddof=1)) if len(final) > 1 else 0.0
        curve = runs.groupby("step").R.mean().sort_index()
        off = (curve - float(final.mean())).abs() > spread + 1e-12
        later_ok = ~off[::-1].cummax()[::-1]  # True where no later checkpoint is off
        converged = int(curve.index[later_ok.to_numpy()].min())
        rows.append(
            {
                "task": task,
                "seeds": int(runs.seed.nunique()),
                "checkpoints": int(curve.size),
                "final_step": final_step,
                "final_R": float(final.mean()),
                "final_R_std": spread,
                "converged_step": converged,
            }
        )
    return pd.DataFrame(rows)


def ratio_convergence(
    runs: Sequence[tuple[str, int, str | Path]], plot_path: str | Path, table_path: str | Path
) -> pd.DataFrame:
    """The figure (one panel per task: each seed, their mean, the final value +- the seed
    std, the converged step) and a Markdown table of :func:`converged_steps`."""
    table = probe_table(runs)
    summary = converged_steps(table)
    tasks = [t for t in TASK_NAMES if t in set(table.task)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        runs_of_task = table[table.task == task]
        color = TASK_COLORS.get(task)
        for _, seed_runs in runs_of_task.groupby("seed"):
            ax.plot(seed_runs.step, seed_runs.R, color=color, alpha=0.35, lw=0.8)
        curve = runs_of_task.groupby("step").R.mean()
        ax.plot(curve.index, curve.values, color=color, lw=2, label="mean over seeds")
        row = summary[summary.task == task].iloc[0]
        ax.axhspan(
            row.final_R - row.final_R_std, row.final_R + row.final_R_std, color=color, alpha=0.12
        )
        ax.axvline(row.converged_step, color="k", ls="--", lw=0.8, label="within seed spread")
        ax.set_title(TASK_LABELS.get(task, task), fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("R (mean over p), validation slice")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("R(p) of CoMMA (raw) during training", fontsize=10)
    fig.tight_layout()
    save_figure(fig, [plot_path], dpi=120)
    lines = [
        "# R(p) against training steps",
        "",
        "R is the mean over the p grid of R(p) on a validation slice, measured at every "
        "checkpoint. *Converged at* is the first checkpoint from which the mean over seeds "
        "stays within one seed std of its final value.",
        "",
        "| task | seeds | checkpoints | final step | final R | seed std | converged at |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.itertuples(index=False):
        lines.append(
            f"| {TASK_LABELS.get(r.task, r.task)} | {r.seeds} | {r.checkpoints} | "
            f"{r.final_step} | {r.final_R:.4f} | {r.final_R_std:.4f} | {r.converged_step} |"
        )
    with atomic_path(table_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
