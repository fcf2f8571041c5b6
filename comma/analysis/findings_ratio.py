"""The dependency claims, read from the R(p) tables (``results/ratio.csv``, one row per task,
variant, seed and p): sections 3.2 (Figure 2: the task ranking, R falling with p), 4.2 (Figure 3,
KD) and 5.2 (Figure 4, AC), each judged by R, T and D; and the robustness check that T ranks the
tasks as R does.

Seeds are the unit of replication: a ranking or slope claim is reproduced only when it holds in
every seed (:func:`~comma.analysis.verdicts.graded_verdict`); KD and AC are judged on the paired
per-seed differences to the raw runs of the same seed
(:func:`~comma.analysis.verdicts.seed_verdict`).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from comma.analysis.verdicts import (
    MIN_SEEDS,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    graded_verdict,
    mean_over_std,
    seed_note,
    seed_verdict,
    sign_test_p,
    too_few_seeds,
)
from comma.tasks import PAPER_RANKING, TASK_LABELS, TASK_NAMES

# The dependency claims are judged by three measures side by side, each a column of the R(p)
# tables: the paper's attention density ratio R (eq. 1-3), the raw target share T of the same
# attention (no division by the lengths), and the masked-loss dependency D
# (comma.dependency: reads neither attention nor lengths).
MEASURES = {"R": "R(p)", "T": "T(p)", "D": "D(p)"}
MEASURE_NAMES = {
    "R": "the attention density ratio R(p) (the paper's measure)",
    "T": "the raw target share T(p) of the same attention",
    "D": "the masked-loss dependency D(p), which reads neither attention nor lengths",
}


def _missing_measure(runs: pd.DataFrame, measure: str) -> str | None:
    if measure not in runs.columns or runs[measure].isna().all():
        return f"this run's R(p) tables have no {measure} column (measured by an older version)"
    return None


def raw_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of the raw CoMMA runs (variant raw) of an R(p) table."""
    return runs[runs.variant == "raw"]


def _attention(measure: str, tasks) -> tuple[str, ...]:
    """The tasks whose CoMMA attention a verdict by `measure` reads (none for D)."""
    return tuple(tasks) if measure in ("R", "T") else ()


def check_ranking(runs: pd.DataFrame, min_seeds: int = MIN_SEEDS, measure: str = "R") -> Finding:
    """ASR > NMT > TTS at every p: every seed of the higher task above every seed of the lower
    (by `measure`, a column of the R(p) tables: R, T or D)."""
    topic = "Target tokens depend on each other most in ASR, then NMT, then TTS (Figure 2)"
    claim = f"{MEASURES[measure]} ranks ASR > NMT > TTS at every p (Figure 2)"
    raw = raw_runs(runs)
    tasks = [t for t in PAPER_RANKING if t in set(raw.task)]
    found = functools.partial(
        Finding, claim, measure=measure, topic=topic, attention_tasks=_attention(measure, tasks)
    )
    if len(tasks) < 2:
        return found(NOT_MEASURED, "fewer than two tasks in this run")
    if missing := _missing_measure(raw, measure):
        return found(NOT_MEASURED, missing)
    by = raw.groupby(["p", "task"])[measure].agg(["mean", "min", "max"])
    means_ordered, separated, lines = True, True, []
    for p in sorted(set(raw.p)):
        row = by.loc[p]
        for higher, lower in zip(tasks, tasks[1:], strict=False):
            means_ordered &= bool(row.loc[higher, "mean"] > row.loc[lower, "mean"])
            separated &= bool(row.loc[higher, "min"] > row.loc[lower, "max"])
        lines.append(
            f"p={p:.2f}: "
            + ", ".join(
                f"{t.upper()} {row.loc[t, 'mean']:.3f} [{row.loc[t, 'min']:.3f}, "
                f"{row.loc[t, 'max']:.3f}]"
                for t in tasks
            )
        )
    verdict = graded_verdict(separated, means_ordered)
    seeds = raw.seed.nunique()
    evidence = (
        f"{measure}, mean [min, max] over seeds; " + "; ".join(lines) + seed_note(seeds, min_seeds)
    )
    return found(too_few_seeds(verdict, seeds, min_seeds), evidence)


def _slopes(raw: pd.DataFrame, measure: str = "R") -> pd.DataFrame:
    """Least-squares slope of `measure` against p per task and seed."""
    rows = []
    for (task, seed), group in raw.groupby(["task", "seed"]):
        slope = np.polyfit(group.p.to_numpy(), group[measure].to_numpy(), 1)[0]
        rows.append({"task": task, "seed": seed, "slope": slope})
    return pd.DataFrame(rows)


def check_falls_with_p(
    runs: pd.DataFrame, min_seeds: int = MIN_SEEDS, measure: str = "R"
) -> list[Finding]:
    """`measure` (R, T or D) falls as p grows, for every task; fastest for NMT."""
    label = MEASURES[measure]
    raw = raw_runs(runs)
    tasks = _attention(measure, [t for t in TASK_NAMES if t in set(raw.task)])
    falls_found = functools.partial(
        Finding,
        f"{label} falls as p grows, for every task (section 3.2)",
        measure=measure,
        topic="Dependency falls as more of the target is masked, for every task (section 3.2)",
        attention_tasks=tasks,
    )
    fastest_found = functools.partial(
        Finding,
        f"{label} falls fastest for NMT (section 3.2)",
        measure=measure,
        topic="Dependency falls fastest with p for NMT (section 3.2)",
        attention_tasks=tasks,
    )
    reason = "a single p in the grid" if raw.p.nunique() < 2 else _missing_measure(raw, measure)
    if reason:
        return [falls_found(NOT_MEASURED, reason), fastest_found(NOT_MEASURED, reason)]
    slopes = _slopes(raw, measure)
    summary = slopes.groupby("task").slope.agg(["mean", "min", "max"])
    evidence = f"slope of {measure} against p, mean [min, max] over seeds: " + ", ".join(
        f"{t.upper()} {r['mean']:+.3f} [{r['min']:+.3f}, {r['max']:+.3f}]"
        for t, r in summary.iterrows()
    )
    seeds = slopes.seed.nunique()
    evidence += seed_note(seeds, min_seeds)
    every_seed = bool((slopes.slope < 0).all()) and seeds >= min_seeds
    every_mean = bool((summary["mean"] < 0).all())
    falls = falls_found(graded_verdict(every_seed, every_mean), evidence)
    if "nmt" not in summary.index or len(summary) < 2:
        fastest = fastest_found(NOT_MEASURED, "needs NMT and another task")
    else:
        others = summary.drop(index="nmt")
        by_seed = slopes.pivot(index="seed", columns="task", values="slope")
        nmt_steepest_each_seed = (
            bool((by_seed["nmt"] < by_seed.drop(columns="nmt").min(axis=1)).all())
            and seeds >= min_seeds
        )
        nmt_steepest_mean = bool(summary.loc["nmt", "mean"] < others["mean"].min())
        fastest = fastest_found(
            graded_verdict(nmt_steepest_each_seed, nmt_steepest_mean),
            evidence + f" (steepest in every seed: {'yes' if nmt_steepest_each_seed else 'no'})",
        )
    return [falls, fastest]


def check_length_effect(runs: pd.DataFrame) -> Finding:
    """Does the raw target share T rank the tasks as R does? Eq. 1 divides the target and
    source attention by N and M, so with concentrated attention M/N alone moves R; T has no
    such division (but a length effect of its own: more source positions draw more weight)."""
    claim = (
        "The tasks rank the same by the raw target share T as by R (no length normalization; "
        "robustness check, not in the paper)"
    )
    raw = raw_runs(runs)
    if raw.task.nunique() < 2:
        return Finding(claim, NOT_MEASURED, "fewer than two tasks in this run")
    means = raw.groupby("task")[["R", "T", "M_over_N"]].mean()
    by_r = list(means.R.sort_values(ascending=False).index)
    by_t = list(means["T"].sort_values(ascending=False).index)
    evidence = (
        f"ranking by R: {' > '.join(t.upper() for t in by_r)}; by T: "
        f"{' > '.join(t.upper() for t in by_t)}; "
        + ", ".join(
            f"{t.upper()} R {r['R']:.3f}, T {r['T']:.3f}, M/N {r['M_over_N']:.2f}"
            for t, r in means.iterrows()
        )
        + " (means over seeds and p)"
    )
    verdict = REPRODUCED if by_r == by_t else NOT_REPRODUCED
    if verdict == NOT_REPRODUCED:
        evidence += (
            ". The rankings differ, so the ranking by R depends on eq. 1 dividing by the "
            "lengths. T is not length-free either (more source positions draw more of the "
            "weight): see the length-matched control for which measure moves with M/N."
        )
    return Finding(claim, verdict, evidence)


# --- KD and AC against raw: paired per-seed differences (Figures 3 and 4) -------------------

# variant -> (what it does, figure, tasks the paper's figure shows)
VARIANT_CLAIMS = {
    "kd": ("Knowledge distillation lowers", "Figure 3", ("nmt", "tts")),
    "ac": ("An alignment constraint lowers", "Figure 4", TASK_NAMES),
}


def _variant_claim(variant: str, task: str, what: str = "R(p)") -> str:
    lowers, figure, paper_tasks = VARIANT_CLAIMS[variant]
    where = (
        figure if task in paper_tasks else f"beyond the paper: its {figure} has no {task.upper()}"
    )
    return f"{lowers} {what} for {TASK_LABELS[task]} ({where})"


def check_variant(
    runs: pd.DataFrame,
    variant: str,
    task: str,
    claim: str | None = None,
    min_seeds: int = MIN_SEEDS,
    measure: str = "R",
    baseline: str = "raw",
    note: str = "",
) -> Finding:
    """`variant` (kd or ac) lowers `measure` (R, T or D) of `task`: judged on the paired
    per-seed difference baseline - variant, averaged over the p grid (seeds are the unit of
    replication). `baseline`: the runs it is compared with (raw; for kd, rawkept: raw targets
    of the same sentences); `note` ends the evidence."""
    found = functools.partial(
        Finding,
        claim or _variant_claim(variant, task, MEASURES[measure]),
        measure=measure,
        topic=_variant_claim(variant, task, "target-token dependency"),
        attention_tasks=_attention(measure, [task]),
    )
    sel = runs[(runs.task == task) & runs.variant.isin([baseline, variant])]
    if variant not in set(sel.variant):
        return found(NOT_MEASURED, f"this run has no '{variant}' CoMMA runs for {task}")
    if missing := _missing_measure(sel, measure):
        return found(NOT_MEASURED, missing)
    paired = sel.pivot_table(index=["seed", "p"], columns="variant", values=measure)
    if baseline not in paired:
        return found(NOT_MEASURED, f"this run has no '{baseline}' CoMMA runs for {task}")
    diff = (paired[baseline] - paired[variant]).dropna()
    if diff.empty:
        return found(NOT_MEASURED, f"no seed has both a {baseline} and a {variant} run")
    per_seed = diff.groupby(level="seed").mean()
    n = len(per_seed)
    positive = int((diff > 0).sum())
    spread = per_seed.std(ddof=1) if n > 1 else float("nan")
    evidence = (
        f"{measure}({baseline}) - {measure}({variant}) per seed, mean over p: "
        + ", ".join(f"seed {seed} {d:+.3f}" for seed, d in per_seed.items())
        + f"; mean {per_seed.mean():+.3f}, std {spread:.3f}"
        f" over {n} seed(s) (mean / std {mean_over_std(per_seed.mean(), spread)}); positive at "
        f"{positive} of {len(diff)} (seed, p) pairs; exact sign test over seeds, one-sided: "
        f"p = {sign_test_p(per_seed):.3g}." + seed_note(n, min_seeds) + note
    )
    return found(seed_verdict(per_seed, min_seeds=min_seeds), evidence)


def check_kd(
    runs: pd.DataFrame,
    task: str,
    distill: dict | None = None,
    min_seeds: int = MIN_SEEDS,
    measure: str = "R",
) -> Finding:
    """Knowledge distillation lowers `measure` of `task`, judged against rawkept (the raw
    targets of exactly the sentences the KD corpus keeps), or against raw when this run has no
    rawkept runs (then unpaired in sentences, and said so). `distill`: the task's KD report
    (merge_distilled), whose drop rate the evidence quotes."""
    paired = bool(((runs.task == task) & (runs.variant == "rawkept")).any())
    note = ""
    if distill is not None:
        dropped = distill["dropped_total"]
        causes = ", ".join(f"{n} {cause}" for cause, n in distill["dropped"].items() if n)
        note = (
            f" The KD corpus keeps {distill['kept']} of {distill['sentences']} training "
            f"sentences ({dropped / distill['sentences']:.1%} dropped"
            + (f": {causes}" if causes else "")
            + ")."
        )
    if not paired:
        note += (
            " Unpaired: raw was trained on every sentence, KD only on those the teacher's "
            "output kept (no rawkept runs in this run)."
        )
    return check_variant(
        runs,
        "kd",
        task,
        min_seeds=min_seeds,
        measure=measure,
        baseline="rawkept" if paired else "raw",
        note=note,
    )
