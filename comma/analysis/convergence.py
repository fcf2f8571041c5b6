"""How many CoMMA training steps the measures need: R(p) and the masked-loss dependency D(p)
the trainer measured on a validation slice at every checkpoint (``R@p`` and ``D@p`` in
``metrics.jsonl``, :func:`comma.stages.comma.ratio_probe`), per task and seed, against the
step, and the first checkpoint from which the seeds' mean stays within the seed spread of its
final value. R settling is not enough: an undertrained CoMMA spreads its attention in a stable
pattern long before it uses the target (D near 0), so the D curve says whether the models the
study measures predict from the target at all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.curves import read_metrics  # noqa: E402
from comma.analysis.plots import save_figure  # noqa: E402
from comma.io import write_lines  # noqa: E402
from comma.tasks import TASK_COLORS, TASK_LABELS, TASK_NAMES  # noqa: E402

__all__ = ["probe_table", "converged_steps", "ratio_convergence"]


MEASURE_LABELS = {
    "R": "R (mean over p), validation slice",
    "D": "D (mean over p), validation slice",
}


def probe_table(runs: Sequence[tuple[str, int, str | Path]]) -> pd.DataFrame:
    """(task, seed, metrics path) -> one row per probed checkpoint: task, seed, step, R and D,
    each the mean of its ``R@p`` / ``D@p`` values over the p grid (D is NaN for runs probed
    before D was measured). A file without R is named."""
    tables = []
    for task, seed, path in runs:
        metrics = read_metrics(path)
        r_columns = [c for c in metrics.columns if str(c).startswith("R@")]
        d_columns = [c for c in metrics.columns if str(c).startswith("D@")]
        if not r_columns:
            raise ValueError(
                f"{path}: no R(p) at checkpoints (R@p columns); train with "
                "ratio.probe_sentences > 0"
            )
        probed = metrics.dropna(subset=r_columns)
        tables.append(
            pd.DataFrame(
                {
                    "task": task,
                    "seed": int(seed),
                    "step": probed.step.astype(int),
                    "R": probed[r_columns].mean(axis=1),
                    "D": probed[d_columns].mean(axis=1) if d_columns else np.nan,
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def converged_steps(table: pd.DataFrame, measure: str = "R") -> pd.DataFrame:
    """Per task: the final step, the seeds' final value of `measure` (R or D: mean, std), and
    ``converged_step``, the first checkpoint from which the mean over seeds stays within one
    seed std of its final value (with one seed the spread is 0, so only the final step
    qualifies). Columns ``final_{measure}``, ``final_{measure}_std``."""
    rows = []
    for task, runs in table.dropna(subset=[measure]).groupby("task", sort=False):
        final_step = int(runs.step.max())
        final = runs[runs.step == final_step][measure]
        spread = float(final.std(ddof=1)) if len(final) > 1 else 0.0
        curve = runs.groupby("step")[measure].mean().sort_index()
        off = (curve - float(final.mean())).abs() > spread + 1e-12
        later_ok = ~off[::-1].cummax()[::-1]  # True where no later checkpoint is off
        converged = int(curve.index[later_ok.to_numpy()].min())
        rows.append(
            {
                "task": task,
                "seeds": int(runs.seed.nunique()),
                "checkpoints": int(curve.size),
                "final_step": final_step,
                f"final_{measure}": float(final.mean()),
                f"final_{measure}_std": spread,
                "converged_step": converged,
            }
        )
    return pd.DataFrame(rows)


def _settled(converged_step: float, final_step: int) -> str:
    """yes when a measure stays within its seed spread over the last quarter of training."""
    return "yes" if converged_step <= 0.75 * final_step else "no"


def ratio_convergence(
    runs: Sequence[tuple[str, int, str | Path]], plot_path: str | Path, table_path: str | Path
) -> pd.DataFrame:
    """The figure (a row per measure, R and, where probed, D; a panel per task: each seed,
    their mean, the final value +- the seed std, the converged step) and a Markdown table of
    :func:`converged_steps` by R and by D. Returns the summary by R, with D's final value and
    converged step as ``final_D``, ``final_D_std``, ``converged_step_D``."""
    table = probe_table(runs)
    summaries = {m: converged_steps(table, m) for m in ("R", "D")}
    measures = [m for m in ("R", "D") if not summaries[m].empty]
    tasks = [t for t in TASK_NAMES if t in set(table.task)]
    fig, axes = plt.subplots(
        len(measures), len(tasks), figsize=(4.2 * len(tasks), 3.0 * len(measures)), squeeze=False
    )
    for axes_row, measure in zip(axes, measures, strict=True):
        summary = summaries[measure].set_index("task")
        for ax, task in zip(axes_row, tasks, strict=True):
            runs_of_task = table[table.task == task].dropna(subset=[measure])
            color = TASK_COLORS.get(task)
            ax.set_title(f"{TASK_LABELS.get(task, task)}: {measure}", fontsize=10)
            ax.set_xlabel("training step")
            ax.set_ylabel(MEASURE_LABELS[measure], fontsize=8)
            ax.grid(alpha=0.3)
            if task not in summary.index:
                continue
            for _, seed_runs in runs_of_task.groupby("seed"):
                ax.plot(seed_runs.step, seed_runs[measure], color=color, alpha=0.35, lw=0.8)
            curve = runs_of_task.groupby("step")[measure].mean()
            ax.plot(curve.index, curve.values, color=color, lw=2, label="mean over seeds")
            row = summary.loc[task]
            final, std = row[f"final_{measure}"], row[f"final_{measure}_std"]
            ax.axhspan(final - std, final + std, color=color, alpha=0.12)
            ax.axvline(row.converged_step, color="k", ls="--", lw=0.8, label="within seed spread")
            if measure == "D":
                ax.axhline(0.0, color="grey", lw=0.6)
            ax.legend(fontsize=7)
    fig.suptitle("R(p) and D(p) of CoMMA (raw) during training", fontsize=10)
    fig.tight_layout()
    save_figure(fig, [plot_path], dpi=120)
    by_d = summaries["D"].reindex(columns=["task", "final_D", "final_D_std", "converged_step"])
    summary = summaries["R"].merge(
        by_d.rename(columns={"converged_step": "converged_step_D"}), on="task", how="left"
    )
    lines = [
        "# R(p) and D(p) against training steps",
        "",
        "R and D are the means over the p grid of R(p) and of the masked-loss dependency D(p) "
        "on a validation slice, measured at every checkpoint. *Converged at* is the first "
        "checkpoint from which the mean over seeds stays within one seed std of its final "
        "value; *settled* says whether that is within the first three quarters of the "
        "training, i.e. the measure moved by less than its seed std over the last quarter. A D "
        "near 0 at the final step means the models barely use the target: their R then "
        "describes how an undertrained model spreads its attention, not how target tokens "
        "depend on each other.",
        "",
        "| task | seeds | checkpoints | final step | final R | seed std | R converged at "
        "| R settled | final D | seed std | D converged at | D settled |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in summary.itertuples(index=False):
        d_cells = (
            "n/a | n/a | n/a | n/a"
            if pd.isna(r.final_D)
            else f"{r.final_D:.4f} | {r.final_D_std:.4f} | {int(r.converged_step_D)} | "
            f"{_settled(r.converged_step_D, r.final_step)}"
        )
        lines.append(
            f"| {TASK_LABELS.get(r.task, r.task)} | {r.seeds} | {r.checkpoints} | "
            f"{r.final_step} | {r.final_R:.4f} | {r.final_R_std:.4f} | {r.converged_step} | "
            f"{_settled(r.converged_step, r.final_step)} | {d_cells} |"
        )
    write_lines(table_path, lines)
    return summary
