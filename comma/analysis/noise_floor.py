"""The noise floor of the dependency claims, measured on the run's own twin CoMMA runs.

The raw and rawkept CoMMA runs of one task and seed share initialization and training recipe,
and their corpora are identical but for the handful of sentences the teacher's output dropped
(NMT: 2 of 19,131 on the mini corpus): a difference between them is an effect of nothing that
matters to any claim, only of training's sensitivity to its exact data. The floor of a per-seed
statistic is the largest absolute raw - rawkept difference over the seeds, per task and measure
(R, T, D); an effect below it is inconclusive however consistent its sign.

Two statistics are floored: ``level`` (a run's measure, mean over the p grid: the KD and AC
differences, the rankings) and ``slope`` (its least-squares slope against p: "falls with p").
Where a task's rawkept corpus is its raw corpus (the teacher dropped nothing), the twins are
the same run and differ by exactly 0 at every seed and p, which measures nothing: that task
borrows the largest floor of the other tasks for the same measure and statistic, and is named
as borrowing it.
Without rawkept runs the floor is not measured (NaN) and no dependency claim is reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

LEVEL, SLOPE = "level", "slope"
TWINS = ("raw", "rawkept")
# Twin differences at or below this are the same run measured twice (the rawkept corpus is raw).
IDENTICAL = 1e-12


def per_seed(rows: pd.DataFrame, measure: str, kind: str = LEVEL) -> pd.Series:
    """`measure` of the runs in `rows` (one task and variant), one value per seed: the mean
    over p (``level``) or the least-squares slope against p (``slope``)."""
    if kind == LEVEL:
        return rows.groupby("seed")[measure].mean()
    if kind == SLOPE:
        by_seed = rows.groupby("seed")
        x = rows.p - by_seed.p.transform("mean")
        y = rows[measure] - by_seed[measure].transform("mean")
        den = (x * x).groupby(rows.seed).sum()
        return ((x * y).groupby(rows.seed).sum() / den).where(den > 0)
    raise ValueError(f"unknown statistic {kind!r}: {LEVEL} or {SLOPE}")


@dataclass
class NoiseFloors:
    """Floors by (task, measure, statistic); `borrowed`: the keys whose twins were identical
    and that took the largest floor of the other tasks."""

    values: dict[tuple[str, str, str], float] = field(default_factory=dict)
    borrowed: set[tuple[str, str, str]] = field(default_factory=set)

    def get(self, tasks: Iterable[str], measure: str, kind: str = LEVEL) -> float:
        """The floor of an effect that reads `tasks`: the largest of theirs (NaN if any task
        has none)."""
        floors = [self.values.get((t, measure, kind), math.nan) for t in tasks]
        return max(floors) if floors and not any(math.isnan(f) for f in floors) else math.nan

    def text(self, measures: Iterable[str], tasks: Iterable[str]) -> str:
        """One line per statistic: each task's floor by measure (borrowed ones marked *)."""
        parts = []
        for kind, what in ((LEVEL, "level (mean over p)"), (SLOPE, "slope against p")):
            cells = []
            for task in tasks:
                values = []
                for m in measures:
                    v = self.values.get((task, m, kind), math.nan)
                    mark = "*" if (task, m, kind) in self.borrowed else ""
                    values.append(f"{m} {'n/a' if math.isnan(v) else f'{v:.4f}'}{mark}")
                cells.append(f"{task.upper()} " + ", ".join(values))
            parts.append(f"{what}: " + "; ".join(cells))
        return ". ".join(parts)


def noise_floors(runs: pd.DataFrame, measures: Iterable[str] = ("R", "T", "D")) -> NoiseFloors:
    """The floors of the R(p) tables `runs` (columns task, variant, seed, p and the
    measures): max over seeds of |statistic(raw) - statistic(rawkept)|, per task, measure and
    statistic; see the module's docstring for the identical twins."""
    floors = NoiseFloors()
    identical: list[tuple[str, str, str]] = []
    for task, rows in runs[runs.variant.isin(TWINS)].groupby("task"):
        for measure in measures:
            if measure not in rows or rows[measure].isna().all():
                continue
            pointwise = rows.pivot_table(index=["seed", "p"], columns="variant", values=measure)
            if not set(TWINS) <= set(pointwise.columns):
                continue
            gaps = (pointwise[TWINS[0]] - pointwise[TWINS[1]]).dropna().abs()
            if gaps.empty:
                continue
            same_run = float(gaps.max()) <= IDENTICAL
            for kind in (LEVEL, SLOPE):
                if same_run:
                    identical.append((task, measure, kind))
                    continue
                a, b = (per_seed(rows[rows.variant == v], measure, kind) for v in TWINS)
                floors.values[(task, measure, kind)] = float((a - b).dropna().abs().max())
    for key in identical:
        _, measure, kind = key
        others = [v for (t, m, k), v in floors.values.items() if m == measure and k == kind]
        if others:
            floors.values[key] = max(others)
            floors.borrowed.add(key)
    return floors
