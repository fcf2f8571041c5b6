"""How many CoMMA training steps the measures need: R(p) and the masked-loss dependency D(p)
the trainer measured on a validation slice at every checkpoint (``R@p`` and ``D@p`` in
``metrics.jsonl``, :func:`comma.stages.comma.ratio_probe`), per task and seed, against the
step, and the first checkpoint from which the seeds' mean stays within the seed spread of its
final value. R settling is not enough: an undertrained CoMMA spreads its attention in a stable
pattern long before it uses the target (D near 0), so the D curve says whether the models the
study measures predict from the target at all.

Every CoMMA variant (raw, kd, rawkept, ac) is probed alike, so the same checkpoints also say
whether the study's comparisons would read the same had training stopped earlier
(:func:`comparison_directions`): the paired per-seed difference of the findings (KD against
rawkept, AC against raw) at every checkpoint, and the first from which its sign stays the
final one. A measure that still rises may leave its comparisons settled; that is what the
verdicts read."""

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

__all__ = [
    "probe_table",
    "converged_steps",
    "comparison_directions",
    "ratio_convergence",
]


MEASURE_LABELS = {
    "R": "R (mean over p), validation slice",
    "D": "D (mean over p), validation slice",
}
VARIANT_ORDER = ("raw", "kd", "rawkept", "ac")
VARIANT_STYLES = {"raw": "-", "kd": "--", "rawkept": ":", "ac": "-."}

# The comparisons the findings make (comma.analysis.findings_ratio.check_kd / check_variant):
# variant -> the runs it is compared with, seed by seed. KD is compared with rawkept (the raw
# targets of the sentences the KD corpus keeps) and falls back to raw where a study has none.
COMPARISONS = {"kd": ("rawkept", "raw"), "ac": ("raw",)}


def probe_table(runs: Sequence[tuple[str, str, int, str | Path]]) -> pd.DataFrame:
    """(task, variant, seed, metrics path) -> one row per probed checkpoint: task, variant,
    seed, step, R and D, each the mean of its ``R@p`` / ``D@p`` values over the p grid (D is NaN
    for runs probed before D was measured). A file without R is named."""
    tables = []
    for task, variant, seed, path in runs:
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
                    "variant": variant,
                    "seed": int(seed),
                    "step": probed.step.astype(int),
                    "R": probed[r_columns].mean(axis=1),
                    "D": probed[d_columns].mean(axis=1) if d_columns else np.nan,
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def converged_steps(table: pd.DataFrame, measure: str = "R") -> pd.DataFrame:
    """Per task and variant: the final step, the seeds' final value of `measure` (R or D: mean,
    std), and ``converged_step``, the first checkpoint from which the mean over seeds stays
    within one seed std of its final value (with one seed the spread is 0, so only the final
    step qualifies). Columns ``final_{measure}``, ``final_{measure}_std``."""
    rows = []
    probed = table.dropna(subset=[measure])
    for (task, variant), runs in probed.groupby(["task", "variant"], sort=False):
        final_step = int(runs.step.max())
        final = runs[runs.step == final_step][measure]
        spread = float(final.std(ddof=1)) if len(final) > 1 else 0.0
        curve = runs.groupby("step")[measure].mean().sort_index()
        off = (curve - float(final.mean())).abs() > spread + 1e-12
        rows.append(
            {
                "task": task,
                "variant": variant,
                "seeds": int(runs.seed.nunique()),
                "checkpoints": int(curve.size),
                "final_step": final_step,
                f"final_{measure}": float(final.mean()),
                f"final_{measure}_std": spread,
                "converged_step": _first_of_last_run(~off),
            }
        )
    return pd.DataFrame(rows)


def _first_of_last_run(ok: pd.Series) -> int:
    """The first index (step) from which `ok` holds at every later step (the last one counts
    even when it alone holds: a series that ends off returns its last step)."""
    later_ok = ~(~ok)[::-1].cummax()[::-1]
    steps = ok.index[later_ok.to_numpy()]
    return int(steps.min()) if len(steps) else int(ok.index.max())


def comparison_directions(table: pd.DataFrame, measure: str = "R") -> pd.DataFrame:
    """Per task and comparison of the findings (:data:`COMPARISONS`: kd against rawkept, or raw
    where a task has no rawkept runs; ac against raw), by `measure`: the paired per-seed
    difference baseline - variant at every checkpoint both runs of a seed probed (the findings'
    orientation: positive where the variant lowers the measure), its seeds' mean and std at the
    final step, how many seeds' final differences share its sign (``seeds_with_sign``), and
    ``direction_step``, the first checkpoint from which the seeds' mean keeps the sign it ends
    with. Tasks without the variant's runs are left out."""
    rows = []
    probed = table.dropna(subset=[measure])
    for task, runs in probed.groupby("task", sort=False):
        present = set(runs.variant)
        for variant, baselines in COMPARISONS.items():
            baseline = next((b for b in baselines if b in present), None)
            if variant not in present or baseline is None:
                continue
            paired = runs[runs.variant.isin([baseline, variant])].pivot_table(
                index=["step", "seed"], columns="variant", values=measure
            )
            diff = (paired[baseline] - paired[variant]).dropna()
            if diff.empty:
                continue
            final_step = int(diff.index.get_level_values("step").max())
            final = diff.xs(final_step, level="step")
            curve = diff.groupby(level="step").mean().sort_index()
            sign = np.sign(float(final.mean()))
            rows.append(
                {
                    "task": task,
                    "variant": variant,
                    "baseline": baseline,
                    "measure": measure,
                    "seeds": int(final.size),
                    "final_step": final_step,
                    "difference": float(final.mean()),
                    "difference_std": float(final.std(ddof=1)) if final.size > 1 else 0.0,
                    # a sign the seeds disagree on is noise, however early it settles
                    "seeds_with_sign": int((np.sign(final) == sign).sum()),
                    "direction_step": _first_of_last_run(np.sign(curve) == sign),
                }
            )
    return pd.DataFrame(rows)


def _settled(converged_step: float, final_step: int) -> str:
    """yes when a measure stays within its seed spread over the last quarter of training."""
    return "yes" if converged_step <= 0.75 * final_step else "no"


def _plot(table: pd.DataFrame, summaries: dict[str, pd.DataFrame], plot_path) -> None:
    """A row per measure, a panel per task: the raw runs' seeds (thin), every variant's mean over
    seeds (a line style per variant), the raw runs' final value +- the seed std (band) and
    their converged step (dashed vertical)."""
    measures = [m for m in ("R", "D") if not summaries[m].empty]
    tasks = [t for t in TASK_NAMES if t in set(table.task)]
    fig, axes = plt.subplots(
        len(measures), len(tasks), figsize=(4.2 * len(tasks), 3.0 * len(measures)), squeeze=False
    )
    for axes_row, measure in zip(axes, measures, strict=True):
        summary = summaries[measure].set_index(["task", "variant"])
        for ax, task in zip(axes_row, tasks, strict=True):
            of_task = table[table.task == task].dropna(subset=[measure])
            color = TASK_COLORS.get(task)
            ax.set_title(f"{TASK_LABELS.get(task, task)}: {measure}", fontsize=10)
            ax.set_xlabel("training step")
            ax.set_ylabel(MEASURE_LABELS[measure], fontsize=8)
            ax.grid(alpha=0.3)
            variants = [v for v in VARIANT_ORDER if v in set(of_task.variant)]
            variants += sorted(set(of_task.variant) - set(variants))
            for variant in variants:
                runs = of_task[of_task.variant == variant]
                style = VARIANT_STYLES.get(variant, "-")
                if variant == "raw":
                    for _, seed_runs in runs.groupby("seed"):
                        ax.plot(seed_runs.step, seed_runs[measure], color=color, alpha=0.3, lw=0.7)
                curve = runs.groupby("step")[measure].mean()
                ax.plot(curve.index, curve.values, color=color, ls=style, lw=1.8, label=variant)
            if (task, "raw") in summary.index:
                row = summary.loc[(task, "raw")]
                final, std = row[f"final_{measure}"], row[f"final_{measure}_std"]
                ax.axhspan(final - std, final + std, color=color, alpha=0.12)
                ax.axvline(row.converged_step, color="k", ls="--", lw=0.8)
            if measure == "D":
                ax.axhline(0.0, color="grey", lw=0.6)
            if variants:
                ax.legend(fontsize=7, title="mean over seeds", title_fontsize=7)
    # the band and the dashed line are explained in report/ratio_convergence.rst
    fig.suptitle("R(p) and D(p) of CoMMA during training", fontsize=10)
    fig.tight_layout()
    save_figure(fig, [plot_path], dpi=120)


def ratio_convergence(
    runs: Sequence[tuple[str, str, int, str | Path]],
    plot_path: str | Path,
    table_path: str | Path,
) -> pd.DataFrame:
    """The figure (:func:`_plot`) and a Markdown file with two tables: :func:`converged_steps`
    by R and by D per task and variant, and :func:`comparison_directions` by R and by D.
    Returns the first, by R, with D's final value and converged step as ``final_D``,
    ``final_D_std``, ``converged_step_D``."""
    table = probe_table(runs)
    summaries = {m: converged_steps(table, m) for m in ("R", "D")}
    _plot(table, summaries, plot_path)
    by_d = summaries["D"].reindex(
        columns=["task", "variant", "final_D", "final_D_std", "converged_step"]
    )
    summary = summaries["R"].merge(
        by_d.rename(columns={"converged_step": "converged_step_D"}),
        on=["task", "variant"],
        how="left",
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
        "| task | variant | seeds | checkpoints | final step | final R | seed std "
        "| R converged at | R settled | final D | seed std | D converged at | D settled |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    summary = summary.sort_values(
        ["task", "variant"],
        key=lambda c: c.map(TASK_NAMES.index if c.name == "task" else order.get),
    ).reset_index(drop=True)
    for r in summary.itertuples(index=False):
        d_cells = (
            "n/a | n/a | n/a | n/a"
            if pd.isna(r.final_D)
            else f"{r.final_D:.4f} | {r.final_D_std:.4f} | {int(r.converged_step_D)} | "
            f"{_settled(r.converged_step_D, r.final_step)}"
        )
        lines.append(
            f"| {TASK_LABELS.get(r.task, r.task)} | {r.variant} | {r.seeds} | {r.checkpoints} | "
            f"{r.final_step} | {r.final_R:.4f} | {r.final_R_std:.4f} | {r.converged_step} | "
            f"{_settled(r.converged_step, r.final_step)} | {d_cells} |"
        )
    directions = pd.concat([comparison_directions(table, m) for m in ("R", "D")], ignore_index=True)
    if not directions.empty:
        lines += [
            "",
            "## Would the comparisons read the same had training stopped earlier?",
            "",
            "The findings' paired per-seed differences (baseline - variant: positive where the "
            "variant lowers the measure) at every checkpoint both runs of a seed probed. "
            "*Same sign since* is the first checkpoint from which the seeds' mean difference "
            "keeps the sign it ends with; *settled* says whether that is within the first three "
            "quarters of the training. A comparison can settle while the measures still rise; "
            "a sign the seeds disagree on at the final step (*seeds with that sign* below all) "
            "is within the seed noise, however early it settles.",
            "",
            "| task | comparison | measure | seeds | final step | difference | seed std "
            "| seeds with that sign | same sign since | settled |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in directions.itertuples(index=False):
            lines.append(
                f"| {TASK_LABELS.get(r.task, r.task)} | {r.baseline} - {r.variant} | {r.measure} "
                f"| {r.seeds} | {r.final_step} | {r.difference:+.4f} | {r.difference_std:.4f} "
                f"| {r.seeds_with_sign} of {r.seeds} | {r.direction_step} "
                f"| {_settled(r.direction_step, r.final_step)} |"
            )
    write_lines(table_path, lines)
    return summary
