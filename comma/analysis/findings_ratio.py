"""The dependency claims, read from the R(p) tables (``results/ratio.csv``, one row per task,
variant, seed and p): sections 3.2 (Figure 2: the task ranking, R falling with p), 4.2 (Figure 3,
KD) and 5.2 (Figure 4, AC), each judged by R, T and D; and the robustness check that T ranks the
tasks as R does.

Seeds are the unit of replication, and every claim is a t-test over them
(:mod:`comma.analysis.verdicts`): a ranking compares the tasks' per-seed values (Welch) at every
p, a slope claim tests the per-seed slopes, KD and AC the paired per-seed differences to the
raw (rawkept) runs of the same seed. A claim needs every task it names, each with
``min_seeds`` seeds, and an effect above the noise floor of the raw/rawkept twins
(:mod:`comma.analysis.noise_floor`).
"""

from __future__ import annotations

import functools
import itertools

import pandas as pd

from comma.analysis.noise_floor import LEVEL, SLOPE, NoiseFloors, noise_floors, per_seed
from comma.analysis.verdicts import (
    MIN_SEEDS,
    NOT_MEASURED,
    Finding,
    all_of,
    judge,
    one_sample_test,
    tested,
    welch_test,
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


# The dependency claims that rank the tasks: where R, T and D disagree on one of them, the
# findings' summary says so first (the ranking by R then rests on how eq. 1 weighs lengths).
RANKING_TOPICS = (
    "Target tokens depend on each other most in ASR, then NMT, then TTS (Figure 2)",
    "Dependency falls fastest with p for NMT (section 3.2)",
)


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


def missing_tasks(present, needed=PAPER_RANKING) -> str | None:
    """Why a claim about the tasks `needed` cannot be judged on the tasks `present` (None if
    every one is there)."""
    lacking = [t.upper() for t in needed if t not in set(present)]
    if not lacking:
        return None
    return (
        f"needs every task it names ({', '.join(t.upper() for t in needed)}); this run lacks "
        + ", ".join(lacking)
    )


def _seed_values(raw: pd.DataFrame, task: str, measure: str, kind: str = LEVEL) -> pd.Series:
    return per_seed(raw[raw.task == task], measure, kind).dropna()


def check_ranking(
    runs: pd.DataFrame,
    min_seeds: int = MIN_SEEDS,
    measure: str = "R",
    floors: NoiseFloors | None = None,
) -> Finding:
    """ASR > NMT > TTS at every p (by `measure`, a column of the R(p) tables: R, T or D): at
    each p, each adjacent pair of the ranking by a one-sided Welch t-test over the two tasks'
    seeds; the ranking holds only if every comparison does (intersection-union)."""
    topic = RANKING_TOPICS[0]
    claim = f"{MEASURES[measure]} ranks ASR > NMT > TTS at every p (Figure 2)"
    raw = raw_runs(runs)
    tasks = list(PAPER_RANKING)
    found = functools.partial(
        Finding, claim, measure=measure, topic=topic, attention_tasks=_attention(measure, tasks)
    )
    if lacking := missing_tasks(raw.task):
        return found(NOT_MEASURED, lacking)
    if missing := _missing_measure(raw, measure):
        return found(NOT_MEASURED, missing)
    by = raw.groupby(["p", "task"])[measure].agg(["mean", "min", "max"])
    floor = twin_floors(runs, floors).get(tasks, measure)
    tests, lines = [], []
    for p in sorted(set(raw.p)):
        row, at_p = by.loc[p], raw[raw.p == p]
        for higher, lower in itertools.pairwise(tasks):
            tests.append(
                welch_test(
                    _seed_values(at_p, higher, measure),
                    _seed_values(at_p, lower, measure),
                    what=f"seeds ({higher.upper()} - {lower.upper()} at p={p:.2f})",
                )
            )
        lines.append(
            f"p={p:.2f}: "
            + ", ".join(
                f"{t.upper()} {row.loc[t, 'mean']:.3f} [{row.loc[t, 'min']:.3f}, "
                f"{row.loc[t, 'max']:.3f}]"
                for t in tasks
            )
        )
    test = all_of(tests, "comparisons (adjacent tasks x p)").with_floor(floor)
    evidence = f"{measure}, mean [min, max] over seeds; " + "; ".join(lines) + "."
    return found(**tested(judge(test, min_seeds), evidence, test, min_seeds))


def twin_floors(runs: pd.DataFrame, floors: NoiseFloors | None = None) -> NoiseFloors:
    """`floors`, or when None the noise floors measured on the raw and rawkept rows of the
    R(p) table `runs` (:func:`comma.analysis.noise_floor.noise_floors`)."""
    return (
        floors if floors is not None else noise_floors(runs[runs.variant.isin(["raw", "rawkept"])])
    )


def check_falls_with_p(
    runs: pd.DataFrame,
    min_seeds: int = MIN_SEEDS,
    measure: str = "R",
    floors: NoiseFloors | None = None,
) -> list[Finding]:
    """`measure` (R, T or D) falls as p grows, for every task (a one-sample t-test of each
    task's per-seed slopes, all must hold); fastest for NMT (Welch t-tests of NMT's slopes
    against each other task's, all must hold)."""
    label = MEASURES[measure]
    raw = raw_runs(runs)
    tasks = list(PAPER_RANKING)
    falls_found = functools.partial(
        Finding,
        f"{label} falls as p grows, for every task (section 3.2)",
        measure=measure,
        topic="Dependency falls as more of the target is masked, for every task (section 3.2)",
        attention_tasks=_attention(measure, tasks),
    )
    fastest_found = functools.partial(
        Finding,
        f"{label} falls fastest for NMT (section 3.2)",
        measure=measure,
        topic=RANKING_TOPICS[1],
        attention_tasks=_attention(measure, tasks),
    )
    reason = (
        missing_tasks(raw.task)
        or ("a single p in the grid" if raw.p.nunique() < 2 else None)
        or _missing_measure(raw, measure)
    )
    if reason:
        return [falls_found(NOT_MEASURED, reason), fastest_found(NOT_MEASURED, reason)]
    floors = twin_floors(runs, floors)
    slopes = {t: _seed_values(raw, t, measure, SLOPE) for t in tasks}
    summary = pd.DataFrame(
        {t: {"mean": v.mean(), "min": v.min(), "max": v.max()} for t, v in slopes.items()}
    ).T
    evidence = f"slope of {measure} against p, mean [min, max] over seeds: " + ", ".join(
        f"{t.upper()} {r['mean']:+.3f} [{r['min']:+.3f}, {r['max']:+.3f}]"
        for t, r in summary.iterrows()
    )
    falls_test = all_of(
        [
            one_sample_test(
                -slopes[t],
                floor=floors.get([t], measure, SLOPE),
                what=f"{t.upper()}'s per-seed slopes (sign flipped)",
            )
            for t in tasks
        ],
        "tasks",
    )
    falls = falls_found(
        **tested(judge(falls_test, min_seeds), evidence + ".", falls_test, min_seeds)
    )
    fastest_test = all_of(
        [
            welch_test(
                slopes[other],
                slopes["nmt"],
                floor=floors.get([other, "nmt"], measure, SLOPE),
                what=f"seeds ({other.upper()} slope - NMT slope)",
            )
            for other in tasks
            if other != "nmt"
        ],
        "other tasks",
    )
    fastest = fastest_found(
        **tested(judge(fastest_test, min_seeds), evidence + ".", fastest_test, min_seeds)
    )
    return [falls, fastest]


def check_length_effect(
    runs: pd.DataFrame, min_seeds: int = MIN_SEEDS, floors: NoiseFloors | None = None
) -> Finding:
    """Does the raw target share T rank the tasks as R does? Eq. 1 divides the target and
    source attention by N and M, so with concentrated attention M/N alone moves R; T has no
    such division (but a length effect of its own: more source positions draw more weight).
    Tested as T's order in R's: each adjacent pair of the ranking by R, a Welch t-test of
    the two tasks' per-seed T (mean over p); all must hold."""
    claim = (
        "The tasks rank the same by the raw target share T as by R (no length normalization; "
        "robustness check, not in the paper)"
    )
    raw = raw_runs(runs)
    if lacking := missing_tasks(raw.task):
        return Finding(claim, NOT_MEASURED, lacking)
    means = raw.groupby("task")[["R", "T", "M_over_N"]].mean().loc[list(PAPER_RANKING)]
    by_r = list(means.R.sort_values(ascending=False).index)
    by_t = list(means["T"].sort_values(ascending=False).index)
    floor = twin_floors(runs, floors).get(by_r, "T")
    test = all_of(
        [
            welch_test(
                _seed_values(raw, higher, "T"),
                _seed_values(raw, lower, "T"),
                what=f"seeds (T of {higher.upper()} - {lower.upper()}, mean over p)",
            )
            for higher, lower in itertools.pairwise(by_r)
        ],
        "adjacent pairs of the ranking by R",
    ).with_floor(floor)
    evidence = (
        f"ranking by R: {' > '.join(t.upper() for t in by_r)}; by T: "
        f"{' > '.join(t.upper() for t in by_t)}; "
        + ", ".join(
            f"{t.upper()} R {r['R']:.3f}, T {r['T']:.3f}, M/N {r['M_over_N']:.2f}"
            for t, r in means.iterrows()
        )
        + " (means over seeds and p)."
    )
    verdict = judge(test, min_seeds)
    if by_r != by_t:
        evidence += (
            " The rankings differ, so the ranking by R depends on eq. 1 dividing by the "
            "lengths. T is not length-free either (more source positions draw more of the "
            "weight): see the length-matched control for which measure moves with M/N."
        )
    return Finding(claim, **tested(verdict, evidence, test, min_seeds))


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
    floors: NoiseFloors | None = None,
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
    seeds = diff.groupby(level="seed").mean()
    positive = int((diff > 0).sum())
    test = one_sample_test(
        seeds,
        floor=twin_floors(runs, floors).get([task], measure),
        what=f"paired per-seed differences {baseline} - {variant}",
    )
    evidence = (
        f"{measure}({baseline}) - {measure}({variant}) per seed, mean over p: "
        + ", ".join(f"seed {seed} {d:+.3f}" for seed, d in seeds.items())
        + f"; positive at {positive} of {len(diff)} (seed, p) pairs.{note}"
    )
    return found(**tested(judge(test, min_seeds), evidence, test, min_seeds))


def check_kd(
    runs: pd.DataFrame,
    task: str,
    distill: dict | None = None,
    min_seeds: int = MIN_SEEDS,
    measure: str = "R",
    floors: NoiseFloors | None = None,
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
        floors=floors,
    )
