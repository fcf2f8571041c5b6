"""The accuracy claims of sections 3.1, 4.1 and 5.1, read from Tables 2-4 (``results/table2.csv``,
``table3.csv``, ``table4.csv``; columns task, model, kind AR|NAR, corpus raw|kd, constraint
ac|noac, seed, bleu, wer, mcd, mel_l1).

Every NAR model is trained once per seed (the tables' ``seed`` column; the AR teachers once). An
ablation (Tables 3 and 4: KD, AC) is judged like the R claims, by a one-sample t-test of the
paired per-seed relative gain of the primary metric (NMT BLEU, ASR WER, TTS MCD), and a
reproduced ablation whose secondary metric (NMT WER, ASR BLEU, TTS mel L1) falls on average is
only inconclusive. The gap claims (Table 2) compare the NAR models' seed means with the
teacher's one run, the ASR-NMT comparison by Welch t-tests over the NAR seeds. No pair of NAR
runs differs only in what cannot matter, so these claims have no noise floor (said so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from comma.analysis.findings_ratio import raw_runs, twin_floors
from comma.analysis.noise_floor import NoiseFloors, per_seed
from comma.analysis.verdicts import (
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    all_of,
    graded_verdict,
    judge,
    one_sample_test,
    tested,
    welch_test,
)
from comma.tasks import METRICS, TASK_LABELS, TASKS

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
    for column in METRICS:  # absent or empty: not applicable
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
        if task not in TASKS:
            continue
        ar, nar = group[group.kind == "AR"], group[group.kind == "NAR"]
        if len(ar) != 1 or nar.model.nunique() != 1 or nar.seed.duplicated().any():
            raise ValueError(
                f"{source}: task {task} needs one AR and one NAR row (per seed), has "
                f"{len(ar)} and {len(nar)}"
            )
        ar = ar.iloc[0]
        metrics = list(METRICS)
        sides = (
            [nar.iloc[k] for k in range(len(nar))]
            if per_seed
            else [pd.Series({**nar.iloc[0].to_dict(), **nar[metrics].mean().to_dict()})]
        )
        for side in sides:
            row = {"task": task, "ar_model": ar.model, "nar_model": side.model}
            row["seed"] = side.seed if per_seed else np.nan
            row["seeds"] = len(nar)
            ranked = TASKS[task].ranked_metrics()
            for name, (metric, sign) in zip(("primary", "secondary"), ranked, strict=True):
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
    by_metric, texts, tests = {}, [], []
    for metric in ("bleu", "wer"):
        values = per_seed.assign(gap=_metric_gaps(per_seed, metric))
        values = {t: values[values.task == t].gap.dropna() for t in ("asr", "nmt")}
        if values["asr"].empty or values["nmt"].empty:
            continue
        test = welch_test(values["asr"], values["nmt"], what=f"NAR seeds ({metric.upper()} gap)")
        by_metric[metric] = judge(test, min_seeds)
        tests.append(test)
        texts.append(
            f"{metric.upper()}: relative gap per seed ASR "
            + ", ".join(f"{d:+.1%}" for d in values["asr"])
            + ", NMT "
            + ", ".join(f"{d:+.1%}" for d in values["nmt"])
            + f" (Welch p = {test.p:.3g}; {by_metric[metric]})"
        )
    if not by_metric:
        return Finding(claim, NOT_MEASURED, "no metric shared by the ASR and NMT rows")
    verdicts = set(by_metric.values())
    verdict = verdicts.pop() if len(verdicts) == 1 else INCONCLUSIVE
    test = all_of(tests, "metrics")
    evidence = (
        "relative gap, AR better by: "
        + _gap_text(gaps.loc[["asr", "nmt"]].reset_index())
        + ". "
        + "; ".join(texts)
        + ". Every metric must agree. "
        + TEACHER_ONE_RUN
    )
    return Finding(claim, **tested(verdict, evidence, test, min_seeds))


def check_gap_matches_ratio(
    table2: pd.DataFrame | None,
    runs: pd.DataFrame,
    min_seeds: int = MIN_SEEDS,
    floors: NoiseFloors | None = None,
) -> Finding:
    """Section 3.2's argument: tasks rank the same by R(p) (raw) as by the accuracy gap. Tested
    as one intersection-union test: each adjacent pair of the ranking by R, by Welch t-tests
    of the per-seed R (mean over p) and of the per-seed gap in each metric."""
    claim = "The tasks rank the same by the AR-NAR gap as by R(p) (section 3.2)"
    if table2 is None:
        return Finding(claim, NOT_MEASURED, "no Table 2 (AR and NAR accuracy) in this run")
    # Gaps are compared only in one metric at a time: BLEU and WER, which NMT and ASR both
    # have; TTS's MCD shares no scale with them, so TTS is left out of this ranking.
    gaps = table2_gaps(table2).set_index("task")
    ratio = raw_runs(runs).groupby("task").R.mean()
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
    verdict = graded_verdict(all(agree.values()), any(agree.values()))
    raw = raw_runs(runs)
    seed_gaps = table2_gaps(table2, per_seed=True)
    floor = twin_floors(runs, floors).get(tasks, "R")
    tests = []
    for higher, lower in zip(by_ratio, by_ratio[1:], strict=False):
        tests.append(
            welch_test(
                per_seed(raw[raw.task == higher], "R"),
                per_seed(raw[raw.task == lower], "R"),
                floor=floor,
                what=f"seeds (R of {higher.upper()} - {lower.upper()})",
            )
        )
        for metric in ("bleu", "wer"):
            gap = seed_gaps.assign(gap=_metric_gaps(seed_gaps, metric))
            tests.append(
                welch_test(
                    gap[gap.task == higher].gap,
                    gap[gap.task == lower].gap,
                    what=f"NAR seeds ({metric.upper()} gap of {higher.upper()} - {lower.upper()})",
                )
            )
    test = all_of(tests, "comparisons (R and each metric's gap)")
    evidence = (
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
        "common scale with BLEU and WER. " + TEACHER_ONE_RUN
    )
    return Finding(
        claim, **tested(verdict, evidence, test, min_seeds, attention_tasks=tuple(tasks))
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
        if len(with_) != 1 or len(without) != 1 or task not in TASKS:
            continue
        a, b = with_.iloc[0], without.iloc[0]
        row = {
            "task": task,
            held: fixed,
            "seed": seed,
            "with_model": a.model,
            "without_model": b.model,
        }
        ranked = TASKS[task].ranked_metrics()
        for name, (metric, sign) in zip(("primary", "secondary"), ranked, strict=True):
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
    NAR model of `task`: judged like the R claims, by a one-sample t-test of the paired
    per-seed relative gain of the primary metric (:func:`judge`); reproduced only if the
    secondary metric's mean gain does not contradict it."""
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
    test = one_sample_test(gains, what="paired per-seed relative gains")
    verdict = judge(test, min_seeds)
    secondary = pairs.secondary_gain.dropna()
    evidence = (
        f"{first.with_model} vs {first.without_model}, relative {first.primary_metric.upper()} "
        "improvement per seed: "
        + ", ".join(
            f"seed {int(seed) if seed else '-'} {g:+.1%} ({r.primary_with:.4g} vs "
            f"{r.primary_without:.4g})"
            for (seed, g), r in zip(gains.items(), pairs.itertuples(), strict=True)
        )
        + "."
    )
    if not secondary.empty:
        evidence += (
            f" {first.secondary_metric.upper()}: mean relative improvement {secondary.mean():+.1%}."
        )
        if verdict == REPRODUCED and secondary.mean() <= 0:
            verdict = INCONCLUSIVE
    return Finding(claim, **tested(verdict, evidence, test, min_seeds))


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
