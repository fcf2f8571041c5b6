"""Calibration of R, T and D against a known dependency (docs/experiments.md, issue 27).

On real data nobody knows how much the target tokens depend on each other; on the mini NMT
corpus the generator does. The corpus is drawn at several priors of its hidden register
(levels), everything else fixed; each level's true dependency is the register's entropy given
the German, H(register | German) in bits per sentence (:func:`comma.mini.nmt.register_dependency`,
written by the level's generation into ``register.json``). A raw CoMMA per level and training
seed is measured as the study measures its own (``ratio.csv``: R, T and D per p).

A measure that tracks dependency rises with the known one. Per measure, the claim "rises with
the known dependency" is judged by the findings' rule (:mod:`comma.analysis.verdicts`): each
seed's least-squares slope of the measure (its mean over the p grid, the findings' ``level``
statistic) against the true dependency, a one-sided one-sample t-test of those slopes, Holm over
the file's three claims, and an effect above a noise floor. Every seed trains on the same
corpus of a level, so what one corpus draw does to a measure is shared by all seeds' slopes
and the t-test cannot see it; the twin level (one prior drawn again from another corpus seed)
measures it: the floor is the largest per-seed |twin - level| difference, turned into the
largest change of a slope that level values moved by that much could make.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.aggregate import read_runs  # noqa: E402
from comma.analysis.calibration_plan import parse_draw  # noqa: E402
from comma.analysis.findings_ratio import MEASURE_NAMES, MEASURES  # noqa: E402
from comma.analysis.noise_floor import LEVEL, per_seed  # noqa: E402
from comma.analysis.plots import save_figure  # noqa: E402
from comma.analysis.verdicts import (  # noqa: E402
    ALPHA,
    MIN_SEEDS,
    Finding,
    holm,
    judge,
    one_sample_test,
    tested,
)
from comma.io import read_json, write_lines  # noqa: E402
from comma.mini.nmt import REGISTERS  # noqa: E402

TOPIC = "rises with the known dependency"


def read_levels(draws: Sequence[str], reports: Sequence[str | Path]) -> pd.DataFrame:
    """One row per draw from its generator's report (``register.json``): prior, the prior's
    entropy, the true dependency with its Monte Carlo sd, the plug-in estimates from the
    corpus's own train and test pairs, the corpus seed."""
    if len(draws) != len(reports):
        raise ValueError(f"{len(draws)} draws but {len(reports)} register reports")
    rows = []
    for name, path in zip(draws, reports, strict=True):
        kind, level = parse_draw(name)
        report = read_json(path)
        try:
            rows.append(
                {
                    "draw": name,
                    "level": level,
                    "twin": kind == "twin",
                    "prior": tuple(report["register_prior"]),
                    "prior_bits": report["prior_entropy_bits"],
                    "truth": report["true_dependency_bits"],
                    "truth_sd": report["sd_bits"],
                    "plugin_train": report["corpus"]["train"]["plugin_bits"],
                    "plugin_test": report["corpus"]["test"]["plugin_bits"],
                    "corpus_seed": report["seed"],
                }
            )
        except KeyError as error:
            raise ValueError(f"{path}: no {error} in this register report") from None
    return pd.DataFrame(rows).set_index("draw")


def seed_values(runs: pd.DataFrame, measure: str) -> pd.DataFrame:
    """`measure` per draw (the R(p) tables' variant column) and seed, mean over the p grid
    (the findings' level statistic): a draws x seeds table."""
    if measure not in runs.columns or runs[measure].isna().all():
        raise ValueError(f"the calibration's R(p) tables have no {measure} column")
    return pd.DataFrame(
        {draw: per_seed(rows, measure, LEVEL) for draw, rows in runs.groupby("variant")}
    ).T


def seed_slopes(values: pd.DataFrame, truth: pd.Series) -> pd.Series:
    """Per seed, the least-squares slope of the values of the level draws (rows of
    `values`) against their true dependency `truth` (bits), over the levels it has."""
    slopes = {}
    for seed in values.columns:
        y = values[seed].reindex(truth.index).dropna()
        x = truth.loc[y.index]
        sxx = float(((x - x.mean()) ** 2).sum())
        slopes[seed] = float(((x - x.mean()) * (y - y.mean())).sum() / sxx) if sxx > 0 else np.nan
    return pd.Series(slopes, dtype=float).rename_axis("seed")


def twin_floor(
    values: pd.DataFrame, truth: pd.Series, twin: str, level: str
) -> tuple[float, float]:
    """The slope floor, with the delta behind it: delta, the largest |twin - level| over the
    seeds of both, bounds what a corpus draw does to one level's value; level values each
    moved by at most delta move a least-squares slope by at most
    delta * sum|x - mean x| / sum (x - mean x)^2. (NaN, NaN) without the twin's runs."""
    if twin not in values.index or level not in values.index:
        return math.nan, math.nan
    delta = (values.loc[twin] - values.loc[level]).dropna().abs()
    if delta.empty:
        return math.nan, math.nan
    centred = truth - truth.mean()
    return float(delta.max()), float(delta.max() * centred.abs().sum() / (centred**2).sum())


def check_rises(
    values: pd.DataFrame,
    levels: pd.DataFrame,
    measure: str,
    min_seeds: int = MIN_SEEDS,
) -> Finding:
    """`measure` rises with the known dependency: a one-sided t-test of the per-seed slopes
    against the true dependency of the level draws, floored by the twin (see the module)."""
    found = functools.partial(
        Finding,
        f"{MEASURES[measure]} rises with the known dependency (calibration; beyond the paper)",
        measure=measure,
        topic=TOPIC,
    )
    plain = levels[~levels.twin]
    truth = plain.truth
    slopes = seed_slopes(values, truth)
    twins = levels[levels.twin]
    twin, level = (twins.index[0], f"level{twins.level.iloc[0]}") if len(twins) else ("", "")
    delta, floor = twin_floor(values, truth, twin, level)
    test = one_sample_test(
        slopes.dropna(), floor=floor, what="per-seed slopes against the true dependency"
    )
    means = values.reindex(plain.index).mean(axis=1)
    evidence = (
        f"slope of {measure} (mean over p) per bit of H(register | German), per seed: "
        + ", ".join(f"seed {s} {v:+.4f}" for s, v in slopes.items())
        + "; seed means by level: "
        + ", ".join(f"{d} ({truth[d]:.3f} bits) {means[d]:.4f}" for d in plain.index)
        + "."
    )
    if twin:
        evidence += (
            f" Floor from the twin corpus {twin} (level {level[5:]}'s prior, another corpus "
            f"seed): largest per-seed |{twin} - {level}| {delta:.4f}, as a slope "
            f"{floor:.4f} per bit."
        )
    return found(**tested(judge(test, min_seeds), evidence, test, min_seeds))


def calibration_findings(
    runs: pd.DataFrame, levels: pd.DataFrame, min_seeds: int = MIN_SEEDS
) -> list[Finding]:
    """The three claims (R, T and D rise with the known dependency), Holm-corrected over them."""
    return holm([check_rises(seed_values(runs, m), levels, m, min_seeds) for m in MEASURES], ALPHA)


def _number(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def calibration_lines(
    runs: pd.DataFrame, levels: pd.DataFrame, findings: Sequence[Finding], sources: Sequence[str]
) -> list[str]:
    """The Markdown report: the levels, a table per measure, the lengths, the claims."""
    seeds = sorted(set(runs.seed))
    grid = ", ".join(f"{p:g}" for p in sorted(set(runs.p)))
    lines = [
        "# Calibration of R, T and D against a known dependency",
        "",
        f"Generated from {' and '.join(sources)}. The mini NMT corpus drawn at "
        f"{int((~levels.twin).sum())} priors of its hidden register ({', '.join(REGISTERS)}), "
        "everything else as the study's corpus; a raw CoMMA per level and seed "
        f"({', '.join(map(str, seeds))}), measured on the level's own test set at p in "
        f"{grid}. True dependency: H(register | German), the bits per sentence of the register "
        "that only the other target tokens reveal (the generator's exact Bayes over its length "
        "filter, acceptance rates by Monte Carlo, sd its MC error); beside it the plug-in "
        "estimate of the same from the level's own generated pairs, labelled with their "
        "registers.",
        "",
        "## Levels",
        "",
        "| draw | prior | H(register) | true dependency H(register \\| German) | MC sd "
        "| plug-in, train | plug-in, test | corpus seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for draw, r in levels.iterrows():
        prior = " / ".join(f"{p:g}" for p in r.prior)
        lines.append(
            f"| {draw} | {prior} | {r.prior_bits:.4f} | {r.truth:.4f} | {_number(r.truth_sd)} "
            f"| {r.plugin_train:.4f} | {r.plugin_test:.4f} | {r.corpus_seed} |"
        )
    for measure in MEASURES:
        values = seed_values(runs, measure).reindex(levels.index)
        lines += [
            "",
            f"## {measure}: {MEASURE_NAMES[measure]}",
            "",
            "Mean over the p grid per run; mean and sd over seeds, then each seed.",
            "",
            "| draw | true dependency (bits) | mean | seed sd | "
            + " | ".join(f"seed {s}" for s in seeds)
            + " |",
            "|---|---:|---:|---:|" + "---:|" * len(seeds),
        ]
        for draw, row in values.iterrows():
            lines.append(
                f"| {draw} | {levels.truth[draw]:.4f} | {_number(row.mean())} "
                f"| {_number(row.std(ddof=1))} | "
                + " | ".join(_number(row.get(s, np.nan)) for s in seeds)
                + " |"
            )
    lengths = runs.groupby("variant")[["M", "N", "M_over_N"]].mean().reindex(levels.index)
    lines += [
        "",
        "## Lengths",
        "",
        "Mean source (M) and target (N) positions CoMMA attends over, and M/N, over seeds and "
        "p: each level learns its own BPE (as the study's corpus does), so fewer English word "
        "types at a low dependency change the segmentation; eq. 1 divides by these lengths.",
        "",
        "| draw | M | N | M/N |",
        "|---|---:|---:|---:|",
    ]
    for draw, r in lengths.iterrows():
        lines.append(f"| {draw} | {r.M:.2f} | {r.N:.2f} | {r.M_over_N:.3f} |")
    lines += [
        "",
        "## Claims",
        "",
        "Judged by the findings' rule (docs/verdicts.md): a one-sided t-test of the per-seed "
        "slopes against the true dependency, reproduced with at least `findings.min_seeds` "
        f"seeds, p <= {ALPHA:g} after Holm over the {len(findings)} claims of this file and a "
        "slope above the twin's floor; not reproduced if the mean slope is not positive; "
        "inconclusive otherwise. A linear trend, not monotonicity, is tested.",
        "",
        "| measure | claim | verdict | slope per bit [95 % CI]; p (Holm); floor |",
        "|---|---|---|---|",
    ]
    for f in findings:
        t = f.test
        ci = f"[{t.low:+.4f}, {t.high:+.4f}]" if np.isfinite([t.low, t.high]).all() else "n/a"
        p = "n/a" if math.isnan(t.p_holm) else f"{t.p_holm:.2g}"
        lines.append(
            f"| {f.measure} | {f.claim} | **{f.verdict}** | {t.effect:+.4f} {ci}; {p}; "
            f"{_number(t.floor)} |"
        )
    lines += ["", "## Evidence", ""]
    lines += [f"- **{f.claim}**: {f.verdict}. {f.evidence}" for f in findings]
    return lines


def plot_calibration(
    runs: pd.DataFrame, levels: pd.DataFrame, findings: Sequence[Finding], path: str | Path
) -> None:
    """R, T and D (mean over p) against the true dependency, one panel each: the mean over
    seeds, the seed min-max band, each seed's points; the twin's seeds as open markers."""
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(13.5, 3.8), squeeze=False)
    verdicts = {f.measure: f for f in findings}
    plain = levels[~levels.twin].sort_values("truth")
    for ax, measure in zip(axes[0], MEASURES, strict=True):
        values = seed_values(runs, measure)
        level_values = values.reindex(plain.index)
        x = plain.truth.to_numpy()
        ax.plot(x, level_values.mean(axis=1), "-o", color="C0", label="mean over seeds")
        ax.fill_between(
            x, level_values.min(axis=1), level_values.max(axis=1), color="C0", alpha=0.2, lw=0
        )
        for seed in values.columns:
            ax.plot(x, level_values[seed], ".", color="C0", alpha=0.6, ms=5)
        for draw, r in levels[levels.twin].iterrows():
            if draw in values.index:
                ax.plot(
                    [r.truth] * values.shape[1], values.loc[draw], "o", mfc="none",
                    color="C3", label=f"{draw} (seeds)",
                )  # fmt: skip
        finding = verdicts[measure]
        ax.set_title(
            f"{measure}: {finding.verdict} (slope {finding.test.effect:+.3f}/bit)", fontsize=9
        )
        ax.set_xlabel("true dependency H(register | German), bits per sentence")
        ax.set_ylabel(f"{measure} (mean over p)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Dependency measures against the known dependency (mini NMT, raw CoMMA)")
    fig.tight_layout()
    save_figure(fig, [path], tight=True)


def write_calibration(
    draws: Sequence[str],
    reports: Sequence[str | Path],
    ratio_csvs: Sequence[str | Path],
    figure: str | Path,
    table: str | Path,
    *,
    min_seeds: int = MIN_SEEDS,
) -> list[Finding]:
    """`figure` and `table` of the calibration from the generators' `reports` (one per draw,
    in the order of `draws`) and the CoMMA runs' R(p) tables `ratio_csvs` (their variant
    column names the draw). Returns the three findings."""
    levels = read_levels(draws, reports)
    runs = read_runs(ratio_csvs)
    unknown = sorted(set(runs.variant) - set(levels.index))
    if unknown:
        raise ValueError(f"R(p) tables of draws without a register report: {unknown}")
    findings = calibration_findings(runs, levels, min_seeds)
    sources = [
        f"{len(reports)} generator reports ({Path(reports[0]).name})",
        f"{len(ratio_csvs)} CoMMA R(p) tables ({Path(ratio_csvs[0]).name})",
    ]
    write_lines(table, calibration_lines(runs, levels, findings, sources))
    plot_calibration(runs, levels, findings, figure)
    return findings
