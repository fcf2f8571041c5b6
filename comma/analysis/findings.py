"""The paper's claims, checked against this run: reproduced or not, and why.

Generated from the run's own tables, never written by hand:

* ``results/ratio.csv`` (one row per task, variant, seed and p): the R(p) claims of sections
  3.2 (Figure 2), 4.2 (Figure 3, KD) and 5.2 (Figure 4, AC);
* ``results/length_control.csv`` and ``results/length_control_slopes.csv``
  (:mod:`comma.analysis.length_control`): does the task ranking survive at matched M/N;
* ``results/table2.csv``, ``table3.csv``, ``table4.csv`` (columns task, model, kind AR|NAR,
  corpus raw|kd, constraint ac|noac, bleu, wer, mcd, mel_l1): the accuracy claims of
  sections 3.1, 4.1 and 5.1.

Verdicts. R(p) claims: seeds are the unit of replication. A claim is "reproduced" only when
it holds in every seed, "inconclusive" when it holds for the seed means but not in every seed,
"not reproduced" when the means contradict it. KD and AC are judged on paired per-seed
differences: the raw, kd and ac runs of one seed share initialization and data order.
Accuracy claims: every NAR model is trained once per seed (the tables' ``seed`` column; the AR
teachers once). An ablation (Tables 3 and 4: KD, AC) is judged like the R claims, on the paired
per-seed relative gain of the primary metric (NMT BLEU, ASR WER, TTS MCD), and a reproduced
ablation whose secondary metric (NMT WER, ASR BLEU, TTS mel L1) falls on average is only
inconclusive. The gap claims (Table 2) compare the NAR models' seed means with the teacher's
one run, the ASR-NMT comparison per seed. Any claim whose runs or tables this run lacks is "not
measured".
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from comma.analysis.length_control import check_length_control
from comma.analysis.verdicts import (
    INCONCLUSIVE,
    MIN_DEPENDENCY,
    MIN_SEEDS,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    seed_verdict,
    sign_test_p,
    too_few_seeds,
)
from comma.io import atomic_path, read_json
from comma.tasks import PAPER_RANKING, TASK_LABELS, TASK_NAMES

__all__ = [
    "INCONCLUSIVE",
    "NOT_MEASURED",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "Finding",
    "check_claims",
    "write_findings",
]

VERDICT_ORDER = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_MEASURED)

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


def _raw(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs.variant == "raw"]


def _ratio_text(mean: float, spread: float) -> str:
    # a spread at rounding-error level (identical seeds) gives no ratio worth printing
    return f"{mean / spread:+.2f}" if spread > 1e-9 * max(1.0, abs(mean)) else "n/a"


def _attention(measure: str, tasks) -> tuple[str, ...]:
    """The tasks whose CoMMA attention a verdict by `measure` reads (none for D)."""
    return tuple(tasks) if measure in ("R", "T") else ()


def _seed_note(seeds: int, min_seeds: int) -> str:
    if seeds >= min_seeds:
        return ""
    return (
        f" Only {seeds} seed(s), fewer than the {min_seeds} a reproduced claim needs "
        "(findings.min_seeds): inconclusive at best."
    )


def check_ranking(runs: pd.DataFrame, min_seeds: int = MIN_SEEDS, measure: str = "R") -> Finding:
    """ASR > NMT > TTS at every p: every seed of the higher task above every seed of the lower
    (by `measure`, a column of the R(p) tables: R, T or D)."""
    topic = "Target tokens depend on each other most in ASR, then NMT, then TTS (Figure 2)"
    claim = f"{MEASURES[measure]} ranks ASR > NMT > TTS at every p (Figure 2)"
    raw = _raw(runs)
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
    verdict = REPRODUCED if separated else INCONCLUSIVE if means_ordered else NOT_REPRODUCED
    seeds = raw.seed.nunique()
    evidence = (
        f"{measure}, mean [min, max] over seeds; " + "; ".join(lines) + _seed_note(seeds, min_seeds)
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
    raw = _raw(runs)
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
    evidence += _seed_note(seeds, min_seeds)
    every_seed = bool((slopes.slope < 0).all()) and seeds >= min_seeds
    every_mean = bool((summary["mean"] < 0).all())
    falls = falls_found(
        REPRODUCED if every_seed else INCONCLUSIVE if every_mean else NOT_REPRODUCED, evidence
    )
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
            REPRODUCED
            if nmt_steepest_each_seed
            else INCONCLUSIVE
            if nmt_steepest_mean
            else NOT_REPRODUCED,
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
    raw = _raw(runs)
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
        f" over {n} seed(s) (mean / std {_ratio_text(per_seed.mean(), spread)}); positive at "
        f"{positive} of {len(diff)} (seed, p) pairs; exact sign test over seeds, one-sided: "
        f"p = {sign_test_p(per_seed):.3g}." + _seed_note(n, min_seeds) + note
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


# --- accuracy of AR and NAR models (Tables 2-4): NAR models per seed, teachers once ---------

# task -> (metric, +1 if higher is better else -1): primary and secondary metrics
PRIMARY = {"nmt": ("bleu", 1), "asr": ("wer", -1), "tts": ("mcd", -1)}
SECONDARY = {"nmt": ("wer", -1), "asr": ("bleu", 1), "tts": ("mel_l1", -1)}
TABLE_COLUMNS = ("task", "model", "kind", "corpus", "constraint")
TEACHER_ONE_RUN = (
    "The AR teachers are trained once: their seed-to-seed spread is not in these gaps."
)


def read_table(path: str | Path | None) -> pd.DataFrame | None:
    """A results table (2, 3 or 4), or None if `path` is None; bad tables are named."""
    if path is None:
        return None
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    for column in ("bleu", "wer", "mcd", "mel_l1"):  # absent or empty: not applicable
        values = table[column] if column in table else pd.Series(np.nan, index=table.index)
        table[column] = pd.to_numeric(values, errors="coerce")
    bad_kind = set(table.kind) - {"AR", "NAR"}
    if bad_kind:
        raise ValueError(f"{path}: kind must be AR or NAR, found {sorted(bad_kind)}")
    table = _with_seeds(table)
    table.attrs["source"] = str(path)
    return table


def _with_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a numeric ``seed`` column: one row per NAR model and seed; a table without
    seeds holds one run per model (seed 0 for every NAR row). Read tables and tables built in
    code alike."""
    seeds = table["seed"] if "seed" in table else pd.Series(np.nan, index=table.index)
    seeds = pd.to_numeric(seeds, errors="coerce")
    nar = table.kind == "NAR"
    if seeds[nar].isna().all():
        seeds = seeds.mask(nar, 0)
    return table.assign(seed=seeds)


def _metric(row: pd.Series, metric: str) -> float:
    value = row.get(metric, np.nan)
    return float(value) if pd.notna(value) else np.nan


def _relative_change(before: float, after: float, sign: int) -> float:
    """How much better `after` is than `before` relative to `before` (negative: worse)."""
    return sign * (after - before) / before if before else np.nan


def table2_gaps(table2: pd.DataFrame, per_seed: bool = False) -> pd.DataFrame:
    """Per task: the AR and NAR models and the relative accuracy gap (AR better by this
    fraction; primary: NMT (AR-NAR)/AR BLEU, ASR (NAR-AR)/AR WER, TTS (NAR-AR)/AR MCD), of the
    NAR model's mean over seeds; with `per_seed`, one row per task and NAR seed instead. Column
    ``seeds``: how many seeds the NAR side has."""
    rows = []
    table2 = _with_seeds(table2)
    source = table2.attrs.get("source", "table 2")
    for task, group in table2.groupby("task", sort=False):
        if task not in PRIMARY:
            continue
        ar, nar = group[group.kind == "AR"], group[group.kind == "NAR"]
        if len(ar) != 1 or nar.model.nunique() != 1 or nar.seed.duplicated().any():
            raise ValueError(
                f"{source}: task {task} needs one AR and one NAR row (per seed), has "
                f"{len(ar)} and {len(nar)}"
            )
        ar = ar.iloc[0]
        metrics = ["bleu", "wer", "mcd", "mel_l1"]
        sides = (
            [nar.iloc[k] for k in range(len(nar))]
            if per_seed
            else [pd.Series({**nar.iloc[0].to_dict(), **nar[metrics].mean().to_dict()})]
        )
        for side in sides:
            row = {"task": task, "ar_model": ar.model, "nar_model": side.model}
            row["seed"] = side.seed if per_seed else np.nan
            row["seeds"] = len(nar)
            for name, (metric, sign) in (
                ("primary", PRIMARY[task]),
                ("secondary", SECONDARY[task]),
            ):
                a, b = _metric(ar, metric), _metric(side, metric)
                row[f"{name}_metric"], row[f"{name}_ar"], row[f"{name}_nar"] = metric, a, b
                row[f"{name}_gap"] = -_relative_change(a, b, sign)
            rows.append(row)
    return pd.DataFrame(rows)


def _gap_text(gaps: pd.DataFrame) -> str:
    parts = []
    for r in gaps.itertuples(index=False):
        mean = f" (mean of {r.seeds} seeds)" if r.seeds > 1 else ""
        text = (
            f"{TASK_LABELS[r.task]} {r.ar_model} vs {r.nar_model}{mean}: "
            f"{r.primary_metric.upper()} {r.primary_ar:.4g} vs {r.primary_nar:.4g}, gap "
            f"{r.primary_gap:+.1%}"
        )
        if not np.isnan(r.secondary_gap):
            text += (
                f" ({r.secondary_metric.upper()} {r.secondary_ar:.4g} vs "
                f"{r.secondary_nar:.4g}, gap {r.secondary_gap:+.1%})"
            )
        parts.append(text)
    return "; ".join(parts)


def check_gap_smallest_for_tts(table2: pd.DataFrame | None) -> Finding:
    claim = "The AR-NAR accuracy gap is smallest for TTS (Table 2)"
    if table2 is None:
        return Finding(claim, NOT_MEASURED, "no Table 2 (AR and NAR accuracy) in this run")
    gaps = table2_gaps(table2).set_index("task")
    gaps = gaps[gaps.primary_gap.notna()]
    if "tts" not in gaps.index or len(gaps) < 2:
        return Finding(claim, NOT_MEASURED, "needs TTS and another task with a primary metric")
    others = gaps.drop(index="tts")
    smallest = bool(gaps.loc["tts", "primary_gap"] < others.primary_gap.min())
    # TTS's gap is a relative MCD (or mel L1) change, the others' relative BLEU and WER
    # changes: numbers on no common scale, so whichever is smaller says nothing about which
    # task is easier. The claim is not comparable here: inconclusive, with the numbers.
    return Finding(
        claim,
        INCONCLUSIVE,
        "not comparable: TTS's gap is in MCD, the other tasks' in BLEU and WER, and relative "
        "changes of different metrics share no scale (the paper compares MOS with BLEU and "
        f"WER). Relative gaps, AR better by: {_gap_text(gaps.reset_index())} (TTS's is "
        f"{'the smallest' if smallest else 'not the smallest'} number). " + TEACHER_ONE_RUN,
    )


def _metric_gaps(gaps: pd.DataFrame, metric: str) -> pd.Series:
    """The relative gap in `metric` of each row of :func:`table2_gaps` (NaN where the task
    does not report it)."""
    values = pd.Series(np.nan, index=gaps.index)
    for side in ("primary", "secondary"):
        chosen = gaps[f"{side}_metric"] == metric
        values[chosen] = gaps.loc[chosen, f"{side}_gap"]
    return values


def check_gap_asr_above_nmt(table2: pd.DataFrame | None, min_seeds: int = MIN_SEEDS) -> Finding:
    claim = "ASR has a larger AR-NAR accuracy gap than NMT (Table 2)"
    if table2 is None:
        return Finding(claim, NOT_MEASURED, "no Table 2 (AR and NAR accuracy) in this run")
    gaps = table2_gaps(table2).set_index("task")
    if not {"asr", "nmt"} <= set(gaps.index):
        return Finding(claim, NOT_MEASURED, "needs ASR and NMT rows in Table 2")
    # The paper compares both on BLEU and on WER; each metric is judged on the paired per-seed
    # difference ASR gap - NMT gap (the NAR models of one seed; the teachers trained once).
    per_seed = table2_gaps(table2, per_seed=True)
    per_seed = per_seed[per_seed.task.isin(["asr", "nmt"])]
    by_metric, texts = {}, []
    for metric in ("bleu", "wer"):
        values = per_seed.assign(gap=_metric_gaps(per_seed, metric)).pivot_table(
            index="seed", columns="task", values="gap"
        )
        if not {"asr", "nmt"} <= set(values.columns):
            continue
        differences = (values["asr"] - values["nmt"]).dropna()
        if differences.empty:
            continue
        by_metric[metric] = seed_verdict(differences, min_seeds=min_seeds)
        texts.append(
            f"{metric.upper()}: ASR gap - NMT gap per seed "
            + ", ".join(f"{d:+.1%}" for d in differences)
            + f" (sign test p = {sign_test_p(differences):.3g}; {by_metric[metric]})"
        )
    if not by_metric:
        return Finding(claim, NOT_MEASURED, "no metric shared by the ASR and NMT rows")
    verdicts = set(by_metric.values())
    verdict = verdicts.pop() if len(verdicts) == 1 else INCONCLUSIVE
    seeds = int(per_seed.groupby("task").size().min())
    return Finding(
        claim,
        verdict,
        "relative gap, AR better by: "
        + _gap_text(gaps.loc[["asr", "nmt"]].reset_index())
        + ". "
        + "; ".join(texts)
        + ". Every metric must agree."
        + _seed_note(seeds, min_seeds)
        + " "
        + TEACHER_ONE_RUN,
    )


def check_gap_matches_ratio(table2: pd.DataFrame | None, runs: pd.DataFrame) -> Finding:
    """Section 3.2's argument: tasks rank the same by R(p) (raw) as by the accuracy gap."""
    claim = "The tasks rank the same by the AR-NAR gap as by R(p) (section 3.2)"
    if table2 is None:
        return Finding(claim, NOT_MEASURED, "no Table 2 (AR and NAR accuracy) in this run")
    # Gaps are compared only in one metric at a time: BLEU and WER, which NMT and ASR both
    # have; TTS's MCD shares no scale with them, so TTS is left out of this ranking.
    gaps = table2_gaps(table2).set_index("task")
    ratio = _raw(runs).groupby("task").R.mean()
    by_metric = {}
    for metric in ("bleu", "wer"):
        values = {}
        for task, row in gaps.iterrows():
            for side in ("primary", "secondary"):
                if row[f"{side}_metric"] == metric and not np.isnan(row[f"{side}_gap"]):
                    values[task] = row[f"{side}_gap"]
        by_metric[metric] = values
    tasks = sorted(set(by_metric["bleu"]) & set(by_metric["wer"]) & set(ratio.index))
    if len(tasks) < 2:
        return Finding(
            claim,
            NOT_MEASURED,
            "needs two tasks with R(p) and both BLEU and WER in Table 2 (the accuracy gaps of "
            "different metrics share no scale)",
        )
    by_ratio = sorted(tasks, key=lambda t: -ratio[t])
    agree = {m: sorted(tasks, key=lambda t: -v[t]) == by_ratio for m, v in by_metric.items()}
    verdict = (
        REPRODUCED
        if all(agree.values())
        else INCONCLUSIVE
        if any(agree.values())
        else NOT_REPRODUCED
    )
    return Finding(
        claim,
        verdict,
        f"by R (raw, mean over seeds and p): {' > '.join(TASK_LABELS[t] for t in by_ratio)} "
        f"({', '.join(f'{TASK_LABELS[t]} {ratio[t]:.3f}' for t in by_ratio)}); relative gap, "
        "AR better by: "
        + "; ".join(
            f"{m.upper()} "
            + ", ".join(f"{TASK_LABELS[t]} {by_metric[m][t]:+.1%}" for t in tasks)
            + f" (same order as R: {'yes' if agree[m] else 'no'})"
            for m in ("bleu", "wer")
        )
        + ". Compared in one metric at a time, so among the token tasks only: TTS's MCD has no "
        "common scale with BLEU and WER. " + TEACHER_ONE_RUN,
        attention_tasks=tuple(tasks),
    )


def ablation_pairs(table: pd.DataFrame, factor: str, better: str, worse: str) -> pd.DataFrame:
    """NAR rows of each task and seed that differ only in `factor` (corpus or constraint): the
    row with `better` (kd, ac) against the one with `worse` (raw, noac) of the same seed, and
    the relative improvement of the primary and secondary metrics (positive: `better` is more
    accurate). One row per task, fixed level of the other factor, and seed."""
    held = "constraint" if factor == "corpus" else "corpus"
    table = _with_seeds(table)
    nar = table[table.kind == "NAR"]
    rows = []
    for (task, fixed, seed), group in nar.groupby(["task", held, "seed"], sort=False):
        with_, without = group[group[factor] == better], group[group[factor] == worse]
        if len(with_) != 1 or len(without) != 1 or task not in PRIMARY:
            continue
        a, b = with_.iloc[0], without.iloc[0]
        row = {
            "task": task,
            held: fixed,
            "seed": seed,
            "with_model": a.model,
            "without_model": b.model,
        }
        for name, (metric, sign) in (("primary", PRIMARY[task]), ("secondary", SECONDARY[task])):
            before, after = _metric(b, metric), _metric(a, metric)
            row[f"{name}_metric"], row[f"{name}_without"], row[f"{name}_with"] = (
                metric,
                before,
                after,
            )
            row[f"{name}_gain"] = _relative_change(before, after, sign)
        rows.append(row)
    return pd.DataFrame(rows)


def check_ablation(
    table: pd.DataFrame | None,
    task: str,
    factor: str,
    claim: str,
    table_name: str,
    min_seeds: int = MIN_SEEDS,
) -> Finding:
    """One NAR technique (KD: factor corpus kd vs raw; AC: constraint ac vs noac) improves the
    NAR model of `task`: judged like the R claims on the paired per-seed relative gain of the
    primary metric (:func:`seed_verdict`); reproduced only if the secondary metric's mean gain
    does not contradict it."""
    if table is None:
        return Finding(claim, NOT_MEASURED, f"no {table_name} in this run")
    better, worse = ("kd", "raw") if factor == "corpus" else ("ac", "noac")
    pairs = ablation_pairs(table, factor, better, worse)
    pairs = pairs[pairs.task == task].dropna(subset=["primary_gain"]) if not pairs.empty else pairs
    if pairs.empty:
        return Finding(
            claim, NOT_MEASURED, f"{table_name} has no {task.upper()} pair {better} vs {worse}"
        )
    first, gains = pairs.iloc[0], pairs.set_index("seed").primary_gain
    n = len(gains)
    verdict = seed_verdict(gains, min_seeds=min_seeds)
    secondary = pairs.secondary_gain.dropna()
    spread = gains.std(ddof=1) if n > 1 else float("nan")
    evidence = (
        f"{first.with_model} vs {first.without_model}, relative {first.primary_metric.upper()} "
        "improvement per seed: "
        + ", ".join(
            f"seed {int(seed) if seed else '-'} {g:+.1%} ({r.primary_with:.4g} vs "
            f"{r.primary_without:.4g})"
            for (seed, g), r in zip(gains.items(), pairs.itertuples(), strict=True)
        )
        + f"; mean {gains.mean():+.1%}, std {spread:.1%} over {n} seed(s) (mean / std "
        f"{_ratio_text(gains.mean(), spread)}); exact sign test over seeds, one-sided: "
        f"p = {sign_test_p(gains):.3g}."
    )
    if not secondary.empty:
        evidence += (
            f" {first.secondary_metric.upper()}: mean relative improvement {secondary.mean():+.1%}."
        )
        if verdict == REPRODUCED and secondary.mean() <= 0:
            verdict = INCONCLUSIVE
    return Finding(claim, verdict, evidence + _seed_note(n, min_seeds))


def check_ac_helps_low_ratio_most(table4: pd.DataFrame | None, runs: pd.DataFrame) -> Finding:
    """Section 5.2: TTS gains the most accuracy from AC and has the lowest R(p) with AC."""
    claim = (
        "TTS, the task with the lowest R(p) under AC, gains the most accuracy from AC "
        "(Table 4 and Figure 4, section 5.2)"
    )
    if table4 is None:
        return Finding(claim, NOT_MEASURED, "no Table 4 in this run")
    pairs = ablation_pairs(table4, "constraint", "ac", "noac")
    gains = (  # mean over seeds
        pairs.groupby("task", sort=False).primary_gain.mean().dropna()
        if not pairs.empty
        else pd.Series()
    )
    ac = runs[runs.variant == "ac"].groupby("task").R.mean()
    if "tts" not in gains.index or len(gains) < 2 or "tts" not in ac.index or len(ac) < 2:
        return Finding(
            claim, NOT_MEASURED, "needs Table 4 AC pairs and ac CoMMA runs for TTS and another task"
        )
    most_gain = bool(gains["tts"] > gains.drop(index="tts").max())
    by_seed = runs[runs.variant == "ac"].groupby(["task", "seed"]).R.mean().unstack("task")
    lowest_every_seed = bool((by_seed["tts"] < by_seed.drop(columns="tts").min(axis=1)).all())
    lowest_r = bool(ac["tts"] < ac.drop(index="tts").min())
    # The R half can fail and is judged like every R claim; the accuracy half compares a
    # relative MCD gain with relative BLEU and WER gains, which share no scale: it cannot
    # reproduce the claim, only leave it inconclusive.
    verdict = NOT_REPRODUCED if not lowest_r else INCONCLUSIVE
    return Finding(
        claim,
        verdict,
        "R with AC (mean over seeds and p): "
        + ", ".join(f"{TASK_LABELS[t]} {r:.3f}" for t, r in ac.items())
        + f"; TTS lowest on the means: {'yes' if lowest_r else 'no'}, in every seed: "
        f"{'yes' if lowest_every_seed else 'no'}. Relative accuracy gain from AC (primary "
        "metric): "
        + ", ".join(f"{TASK_LABELS[t]} {g:+.1%}" for t, g in gains.items())
        + f" (mean over seeds; TTS's the largest number: {'yes' if most_gain else 'no'}); not "
        "comparable: TTS's gain is in MCD, the others' in BLEU and WER, on no common scale, so "
        "this half cannot reproduce the claim.",
        attention_tasks=tuple(ac.index),
    )


# --- the instrument: does CoMMA use the target at all? ----------------------------------------


def target_use(runs: pd.DataFrame) -> pd.DataFrame | None:
    """D of each raw run (task, seed), the mean over p; None when the runs have no D."""
    raw = _raw(runs)
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
    verdict = REPRODUCED if every_seed else INCONCLUSIVE if every_mean else NOT_REPRODUCED
    seeds = by_seed.shape[1]
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
        + ". Tasks whose mean over seeds is below it, so that the R and T verdicts resting on "
        "their attention are inconclusive: "
        + (", ".join(TASK_LABELS.get(t, t) for t in means.index[means < min_dependency]) or "none")
        + ". "
        "Train CoMMA longer (training.comma.max_steps; results/ratio_convergence.png shows D "
        "against the step) until D stops rising."
    )
    return Finding(
        claim, too_few_seeds(verdict, seeds, min_seeds), evidence + _seed_note(seeds, min_seeds)
    )


def without_target_use(
    finding: Finding, by_seed: pd.DataFrame | None, min_dependency: float = MIN_DEPENDENCY
) -> Finding:
    """`finding`, inconclusive when it rests on the attention of a task whose raw CoMMA barely
    uses the target (seed-mean D below `min_dependency`; `by_seed` is :func:`target_use` of the
    runs): whatever R or T say there, they do not measure target-token dependency."""
    if by_seed is None or not finding.attention_tasks:
        return finding
    means = by_seed.mean(axis=1)
    weak = [t for t in finding.attention_tasks if t in means.index and means[t] < min_dependency]
    if not weak or finding.verdict not in (REPRODUCED, NOT_REPRODUCED):
        return finding
    return dataclasses.replace(
        finding,
        verdict=INCONCLUSIVE,
        evidence=finding.evidence
        + f" Inconclusive whatever these numbers say ({finding.verdict} as computed): the "
        + ", ".join(f"{TASK_LABELS.get(t, t)} (D {means[t]:+.3f})" for t in weak)
        + f" CoMMA barely uses the target (D below findings.min_dependency {min_dependency:g}),"
        " so its attention is not a measure of target-token dependency.",
    )


# --- everything -----------------------------------------------------------------------------

SECTIONS = (
    "Token dependency on raw data (section 3.2, Figure 2)",
    "Length control (beyond the paper)",
    "Knowledge distillation (section 4, Figure 3, Table 3)",
    "Alignment constraint (section 5, Figure 4, Table 4)",
    "Accuracy gap (section 3.1, Table 2)",
)


def check_claims_by_section(
    runs: pd.DataFrame,
    *,
    length_bins: pd.DataFrame | None = None,
    length_slopes: pd.DataFrame | None = None,
    table2: pd.DataFrame | None = None,
    table3: pd.DataFrame | None = None,
    table4: pd.DataFrame | None = None,
    distill: dict[str, dict] | None = None,
    min_seeds: int = MIN_SEEDS,
    ac_mode: str | None = None,
    min_dependency: float = MIN_DEPENDENCY,
) -> dict[str, list[Finding]]:
    """Every finding by report section. `ac_mode`: the attention constraint that made the ac
    runs (models.comma.ac_mode), said in their evidence. A verdict that rests on the attention
    of a task whose raw CoMMA barely uses the target (D below `min_dependency`) is
    inconclusive (:func:`without_target_use`)."""
    ac_note = {
        "head": " AC: each CoMMA layer and head against the teacher's (soft maps, ac_mode head).",
        "broadcast": " AC: one teacher map for every CoMMA layer and head (ac_mode broadcast).",
        None: "",
    }[ac_mode]
    ranking, kd, ac, gap, length = SECTIONS[0], SECTIONS[2], SECTIONS[3], SECTIONS[4], SECTIONS[1]
    sections = {
        ranking: [
            *(check_ranking(runs, min_seeds, m) for m in MEASURES),
            *(f for m in MEASURES for f in check_falls_with_p(runs, min_seeds, m)),
        ],
        length: [check_length_effect(runs), check_length_control(length_bins, length_slopes)],
        kd: [
            *(
                check_kd(runs, task, (distill or {}).get(task), min_seeds, m)
                for task in ("nmt", "tts", "asr")
                for m in MEASURES
            ),
            *(
                check_ablation(
                    table3,
                    task,
                    "corpus",
                    f"Knowledge distillation improves the NAR model for {TASK_LABELS[task]} "
                    "(Table 3)",
                    "Table 3",
                    min_seeds,
                )
                for task in ("nmt", "tts")
            ),
        ],
        ac: [
            *(
                check_variant(runs, "ac", task, min_seeds=min_seeds, measure=m, note=ac_note)
                for task in TASK_NAMES
                for m in MEASURES
            ),
            *(
                check_ablation(
                    table4,
                    task,
                    "constraint",
                    f"The alignment constraint improves the NAR model for {TASK_LABELS[task]} "
                    "(Table 4)",
                    "Table 4",
                    min_seeds,
                )
                for task in TASK_NAMES
            ),
            check_ac_helps_low_ratio_most(table4, runs),
        ],
        gap: [
            check_gap_smallest_for_tts(table2),
            check_gap_asr_above_nmt(table2, min_seeds),
            check_gap_matches_ratio(table2, runs),
        ],
    }
    sections[ranking].insert(0, check_uses_target(runs, min_dependency, min_seeds))
    by_seed = target_use(runs)
    return {
        section: [without_target_use(f, by_seed, min_dependency) for f in findings]
        for section, findings in sections.items()
    }


def check_claims(runs: pd.DataFrame, **tables: pd.DataFrame | None) -> list[Finding]:
    """Every finding, in report order (keyword tables as :func:`check_claims_by_section`)."""
    return [f for section in check_claims_by_section(runs, **tables).values() for f in section]


def _read_optional(path: str | Path | None) -> pd.DataFrame | None:
    return None if path is None else pd.read_csv(path)


def write_findings(
    runs_csv: str | Path,
    out_md: str | Path,
    *,
    length_bins_csv: str | Path | None = None,
    length_slopes_csv: str | Path | None = None,
    table_csvs: Sequence[str | Path | None] = (None, None, None),
    distill_jsons: Sequence[str | Path] = (),
    min_seeds: int = MIN_SEEDS,
    ac_mode: str | None = None,
    min_dependency: float = MIN_DEPENDENCY,
) -> list[Finding]:
    """Check every claim and write the Markdown report. `table_csvs`: Tables 2, 3 and 4
    (None: not in this run, its claims are "not measured"); `distill_jsons`: the KD reports
    (results/distill/{task}.json), whose drop rates the KD findings quote."""
    runs = pd.read_csv(runs_csv)
    distill = {}
    for path in distill_jsons:
        report = read_json(path)
        distill[report["task"]] = report
    table2, table3, table4 = (read_table(path) for path in table_csvs)
    sections = check_claims_by_section(
        runs,
        length_bins=_read_optional(length_bins_csv),
        length_slopes=_read_optional(length_slopes_csv),
        table2=table2,
        table3=table3,
        table4=table4,
        distill=distill,
        min_seeds=min_seeds,
        ac_mode=ac_mode,
        min_dependency=min_dependency,
    )
    findings = [f for section in sections.values() for f in section]
    headline = [f for f in findings if f.measure in ("", "R")]
    counts = {v: sum(f.verdict == v for f in headline) for v in VERDICT_ORDER}
    sources = [Path(runs_csv).name] + [
        Path(p).name for p in (length_bins_csv, length_slopes_csv, *table_csvs) if p is not None
    ]
    lines = [
        "# The paper's claims, checked against this run",
        "",
        f"Generated from {', '.join(f'`{s}`' for s in sources)}. R(p): "
        f"{runs.task.nunique()} task(s), variants {', '.join(sorted(set(runs.variant)))}, "
        f"seeds {sorted(set(runs.seed))}, p in {', '.join(f'{p:g}' for p in sorted(set(runs.p)))}.",
        "",
        f"R(p) claims are reproduced only if they hold in every training seed, and there are "
        f"at least {min_seeds} seeds (KD and AC: the paired per-seed difference to the raw run "
        "of the same seed, with an exact sign test), inconclusive if only the seed means "
        "support them or there are fewer seeds. The NAR models are trained once per seed as "
        "well: an ablation (Tables 3 and 4) is judged the same way on the paired per-seed gain "
        "of the primary metric, and is inconclusive if the secondary metric's mean gain "
        "contradicts it; the gap claims (Table 2) set the NAR models' seed means against the "
        "teachers' single run. Not measured: the run lacks what the claim needs.",
        "",
        "Each claim about target-token dependency is judged three times, by the same rule: by "
        + "; by ".join(f"{m}: {name}" for m, name in MEASURE_NAMES.items())
        + ". Where they disagree, the verdict by R rests on how eq. 1 weighs the lengths. "
        f"R and T are read from CoMMA's attention, which measures dependency only if CoMMA "
        f"uses the target: where a task's raw CoMMA has D below {min_dependency:g} "
        "(findings.min_dependency; claim 1), the R and T verdicts resting on that task are "
        "inconclusive.",
        "",
        "Summary, by R and the accuracy tables: "
        + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + "."
        + "".join(
            f" By {m}: "
            + ", ".join(
                f"{n} {v}"
                for v in VERDICT_ORDER
                if (n := sum(f.verdict == v and f.measure == m for f in findings))
            )
            + "."
            for m in MEASURES
            if m != "R"
        ),
        "",
        "| # | claim | verdict (by R) | by T | by D |",
        "|---:|---|---|---|---|",
    ]
    number = 0
    for section, items in sections.items():
        lines.append(f"| | *{section}* | | | |")
        for f in items:
            number += 1
            if f.measure == "":
                lines.append(f"| {number} | {f.claim} | **{f.verdict}** | | |")
            elif f.measure == "R":
                others = {g.measure: g.verdict for g in items if g.topic == f.topic}
                lines.append(
                    f"| {number} | {f.topic} | **{f.verdict}** | {others.get('T', '')} "
                    f"| {others.get('D', '')} |"
                )
    lines += ["", "## Evidence", ""]
    number = 0
    for section, items in sections.items():
        lines += [f"### {section}", ""]
        for f in items:
            number += 1
            lines.append(f"{number}. **{f.claim}**: {f.verdict}. {f.evidence}")
        lines.append("")
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return findings
