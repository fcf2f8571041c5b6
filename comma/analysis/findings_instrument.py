"""Claim 1, the instrument check (beyond the paper): does each raw CoMMA use the target at all?

R and T are read from CoMMA's attention, which measures target-token dependency only if the
model predicts the masked tokens from the visible target. D (the masked-loss dependency, mean
over p) says whether it does: :func:`check_uses_target` judges it, and
:func:`without_target_use` makes inconclusive every R or T verdict that rests on the attention
of a task whose raw CoMMA barely uses the target.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from comma.analysis.findings_ratio import raw_runs
from comma.analysis.verdicts import (
    INCONCLUSIVE,
    MIN_DEPENDENCY,
    MIN_SEEDS,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    graded_verdict,
    seed_note,
)
from comma.tasks import TASK_LABELS


def target_use(runs: pd.DataFrame) -> pd.DataFrame | None:
    """D of each raw run (task, seed), the mean over p; None when the runs have no D."""
    raw = raw_runs(runs)
    if "D" not in raw or raw.D.isna().all():
        return None
    return raw.groupby(["task", "seed"]).D.mean().unstack("seed")


def check_uses_target(
    runs: pd.DataFrame, min_dependency: float = MIN_DEPENDENCY, min_seeds: int = MIN_SEEDS
) -> Finding:
    """Beyond the paper, the premise of every attention-based claim: the raw CoMMA predicts the
    masked tokens from the visible target, i.e. its D (mean over p) is at least
    `min_dependency` in every seed of every task. A CoMMA that has not learned to use the
    target still spreads its attention in a stable pattern, and R and T then describe that
    pattern, not how target tokens depend on each other."""
    claim = (
        f"Every raw CoMMA uses the target: D, mean over p, is at least {min_dependency:g} in "
        "every seed of every task (the premise of the R and T verdicts; beyond the paper)"
    )
    by_seed = target_use(runs)
    if by_seed is None:
        return Finding(claim, NOT_MEASURED, "the R(p) tables have no D column")
    means = by_seed.mean(axis=1)
    every_seed = bool((by_seed >= min_dependency).all().all())
    every_mean = bool((means >= min_dependency).all())
    verdict = graded_verdict(every_seed, every_mean)
    seeds = int(by_seed.notna().sum(axis=1).min())  # the fewest seeds of any task
    evidence = (
        "D of the raw runs, mean over p, per seed: "
        + "; ".join(
            f"{TASK_LABELS.get(t, t)} "
            + ", ".join(f"{d:+.3f}" for d in row.dropna())
            + f" (mean {means[t]:+.3f})"
            for t, row in by_seed.iterrows()
        )
        + f". Seeds below {min_dependency:g} (findings.min_dependency): "
        + (
            ", ".join(
                f"{TASK_LABELS.get(t, t)} seed {seed} ({d:+.3f})"
                for t, row in by_seed.iterrows()
                for seed, d in row.dropna().items()
                if d < min_dependency
            )
            or "none"
        )
        + ". Tasks with a seed below it, so that the R and T verdicts resting on their "
        "attention are inconclusive (the bar applies per seed, not to the seed mean): "
        + (", ".join(TASK_LABELS.get(t, t) for t in _weak(by_seed, min_dependency)) or "none")
        + ". "
        "Train CoMMA longer (training.comma.max_steps; results/ratio_convergence.png shows D "
        "against the step) until D stops rising."
    )
    if seeds < min_seeds and verdict == REPRODUCED:
        verdict = INCONCLUSIVE
    return Finding(claim, verdict, evidence + seed_note(seeds, min_seeds))


def _weak(by_seed: pd.DataFrame, min_dependency: float) -> list[str]:
    """The tasks with a seed whose raw CoMMA has D below `min_dependency`."""
    return [t for t, row in by_seed.iterrows() if bool((row.dropna() < min_dependency).any())]


def without_target_use(
    finding: Finding, by_seed: pd.DataFrame | None, min_dependency: float = MIN_DEPENDENCY
) -> Finding:
    """`finding`, inconclusive when it rests on the attention of a task whose raw CoMMA barely
    uses the target in any seed (D below `min_dependency`; `by_seed` is :func:`target_use` of
    the runs): whatever R or T say there, they do not measure target-token dependency, and a
    seed mean above the bar does not make the seeds below it measure it."""
    if by_seed is None or not finding.attention_tasks:
        return finding
    weak = [t for t in finding.attention_tasks if t in _weak(by_seed, min_dependency)]
    if not weak or finding.verdict not in (REPRODUCED, NOT_REPRODUCED):
        return finding
    return dataclasses.replace(
        finding,
        verdict=INCONCLUSIVE,
        evidence=finding.evidence
        + f" Inconclusive whatever these numbers say ({finding.verdict} as computed): the "
        + ", ".join(
            f"{TASK_LABELS.get(t, t)} (D per seed "
            + ", ".join(f"{d:+.3f}" for d in by_seed.loc[t].dropna())
            + ")"
            for t in weak
        )
        + f" CoMMA barely uses the target in some seed (D below findings.min_dependency "
        f"{min_dependency:g}), so its attention is not a measure of target-token dependency.",
    )
