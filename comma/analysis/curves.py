"""How training went: the loss against the step of every trained model, read from the
trainer's ``metrics.jsonl`` (one JSON object per step: step, loss, lr, seconds, ...), one panel
per model family (AR teachers, CoMMA, NAR) and task (:func:`plot_training_curves`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.plots import save_figure  # noqa: E402
from comma.tasks import TASK_NAMES  # noqa: E402

FAMILY_LABELS = {"teacher": "AR teacher", "comma": "CoMMA", "nar": "NAR"}


@dataclass(frozen=True)
class Curve:
    """One training run's metrics file and where it goes in the figure."""

    family: str  # teacher | comma | nar
    task: str
    label: str  # the line's legend entry: variant, variant/seed, ...
    path: str
    group: str = ""  # lines of one group share a color (e.g. the seeds of a variant)


def read_metrics(path: str | Path) -> pd.DataFrame:
    """The per-step metrics of a training run (at least step and loss); bad lines are named."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
    table = pd.DataFrame(rows)
    missing = [c for c in ("step", "loss") if c not in table.columns]
    if table.empty or missing:
        raise ValueError(f"{path}: no per-step metrics with step and loss")
    return table


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean over `window` steps (shorter at the start)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(values.size) + 1 - window, 0)
    return (cumulative[1:] - cumulative[starts]) / (np.arange(values.size) + 1 - starts)


def plot_training_curves(
    curves: Sequence[Curve], path: str | Path, *, smoothing: int = 25, title: str | None = None
) -> None:
    """Loss against step: one row per model family, one column per task; light raw losses,
    a running mean over `smoothing` steps on top. Log-scaled loss axis."""
    if not curves:
        raise ValueError("no training runs to plot")
    families = [f for f in FAMILY_LABELS if any(c.family == f for c in curves)]
    families += sorted({c.family for c in curves} - set(families))
    tasks = [t for t in TASK_NAMES if any(c.task == t for c in curves)]
    tasks += sorted({c.task for c in curves} - set(tasks))
    fig, axes = plt.subplots(
        len(families),
        len(tasks),
        figsize=(4.4 * len(tasks), 3.0 * len(families)),
        squeeze=False,
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, family in enumerate(families):
        for col, task in enumerate(tasks):
            ax = axes[row][col]
            mine = [c for c in curves if c.family == family and c.task == task]
            if not mine:
                ax.set_axis_off()
                continue
            groups = list(dict.fromkeys(c.group or c.label for c in mine))
            labelled, lowest = set(), np.inf
            for curve in mine:
                metrics = read_metrics(curve.path)
                lowest = min(lowest, float(metrics.loss.min()))
                group = curve.group or curve.label
                color = colors[groups.index(group) % len(colors)]
                loss = metrics.loss.to_numpy(dtype=float)
                ax.plot(metrics.step, loss, color=color, alpha=0.15, lw=0.5)
                ax.plot(
                    metrics.step,
                    smooth(loss, smoothing),
                    color=color,
                    lw=1.0,
                    label=None if group in labelled else group,
                )
                labelled.add(group)
            ax.set_title(f"{FAMILY_LABELS.get(family, family)}, {task.upper()}", fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss")
            if lowest > 0:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, [path], dpi=120)
