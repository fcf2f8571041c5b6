"""Length-matched control of the task ranking by R(p) (not in the paper; a reviewer's first
question).

Eq. 1 divides a target position's attention to the target side by N and to the source side by
M, so the same attention pattern yields a higher R when M/N is large and a lower one when it is
small. The tasks differ in M/N by more than an order of magnitude (ASR ~3, NMT ~1, TTS ~0.1 on
the mini corpus), so the ranking ASR > NMT > TTS of Figure 2 could come from the lengths alone.
Two pieces of evidence, both from the per-sentence tables `measure_ratio` writes (one row per
run, p and test sentence: M, N, the sentence's R of eq. 2 and its raw target share T):

1. **Within bins of log2(M/N)**: each sentence's R and T, averaged over the p grid, are
   averaged per task, seed and bin. Tasks are compared only inside bins that both hold at least
   `min_sentences` sentences; if no bin does, the control is inconclusive (no overlap in M/N).
2. **Within-task slopes**: the least-squares slope of a sentence's R (and T) against
   log2(M/N) across the sentences of one task and seed. A positive slope of R with a flat T is
   the signature of eq. 1's length normalization inside a task.

Seeds are the unit of replication, as everywhere in the study: the per-seed values are kept
and a comparison counts only if it holds for every seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.plots import save_figure  # noqa: E402
from comma.analysis.verdicts import (  # noqa: E402
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    all_of,
    tested,
    welch_test,
)
from comma.io import write_csv, write_lines  # noqa: E402
from comma.tasks import PAPER_RANKING, TASK_COLORS  # noqa: E402

SENTENCE_COLUMNS = ("task", "variant", "seed", "p", "sentence", "M", "N", "R", "T")
CLAIM = (
    "The ranking ASR > NMT > TTS survives at matched source/target length ratio "
    "(length-matched control, not in the paper)"
)


def read_sentence_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-sentence tables of `measure_ratio`; a table lacking a column is named."""
    if not paths:
        raise ValueError("no per-sentence R tables given")
    tables = []
    for path in paths:
        table = pd.read_csv(path)
        missing = [c for c in SENTENCE_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(
                f"{path}: not a per-sentence R table of measure_ratio (missing columns "
                f"{', '.join(missing)})"
            )
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def sentence_means(sentences: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, seed, sentence): R and T averaged over the p grid, M, N and
    log2(M/N). The lengths do not depend on p, only the masks do."""
    means = (
        sentences.groupby(["task", "seed", "sentence"], sort=True)
        .agg(M=("M", "first"), N=("N", "first"), R=("R", "mean"), T=("T", "mean"))
        .reset_index()
    )
    means["log2_M_over_N"] = np.log2(means.M / means.N)
    return means


def bin_sentences(means: pd.DataFrame, width: float, min_sentences: int) -> pd.DataFrame:
    """Mean R and T per task, seed and bin [k·width, (k+1)·width) of log2(M/N).

    Columns: task, seed, bin_low, bin_high, sentences, M_over_N (mean), R, T, comparable
    (the bin holds at least `min_sentences` sentences of this task), min_sentences."""
    if width <= 0:
        raise ValueError(f"bin width must be > 0, got {width}")
    means = means.assign(bin=np.floor(means.log2_M_over_N / width).astype(int))
    means["ratio"] = means.M / means.N
    bins = (
        means.groupby(["task", "seed", "bin"], sort=True)
        .agg(
            sentences=("R", "size"),
            M_over_N=("ratio", "mean"),
            R=("R", "mean"),
            T=("T", "mean"),
        )
        .reset_index()
    )
    bins.insert(2, "bin_low", bins.pop("bin") * width)
    bins.insert(3, "bin_high", bins.bin_low + width)
    bins["comparable"] = bins.sentences >= min_sentences
    bins["min_sentences"] = min_sentences
    return bins


def within_task_slopes(means: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of a sentence's R and T against log2(M/N) (per doubling of M/N),
    per task and seed; NaN where the task's sentences share one M/N."""
    rows = []
    for (task, seed), group in means.groupby(["task", "seed"], sort=True):
        x = group.log2_M_over_N.to_numpy()
        varied = len(group) >= 3 and float(np.ptp(x)) > 0
        rows.append(
            {
                "task": task,
                "seed": seed,
                "sentences": len(group),
                "log2_M_over_N_mean": float(x.mean()),
                "log2_M_over_N_sd": float(x.std()),
                "R_mean": float(group.R.mean()),
                "T_mean": float(group["T"].mean()),
                "R_slope": float(np.polyfit(x, group.R, 1)[0]) if varied else np.nan,
                "T_slope": float(np.polyfit(x, group["T"], 1)[0]) if varied else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _pair_values(bins: pd.DataFrame, higher: str, lower: str) -> pd.DataFrame | None:
    """Per seed, each task's R and T averaged over the bins where both tasks are comparable,
    bins weighted by the smaller of the two sentence counts; None if they share no bin."""
    ok = bins[bins.comparable]
    shared = sorted(
        set(ok[ok.task == higher].bin_low.round(9)) & set(ok[ok.task == lower].bin_low.round(9))
    )
    if not shared:
        return None
    sel = ok[ok.task.isin([higher, lower]) & ok.bin_low.round(9).isin(shared)]
    counts = sel.groupby(["task", sel.bin_low.round(9)]).sentences.first().unstack("task")
    weights = counts.min(axis=1)  # per bin
    rows = []
    for (task, seed), group in sel.groupby(["task", "seed"]):
        w = weights.loc[group.bin_low.round(9)].to_numpy()
        rows.append(
            {
                "task": task,
                "seed": seed,
                "R": float(np.average(group.R, weights=w)),
                "T": float(np.average(group["T"], weights=w)),
            }
        )
    values = pd.DataFrame(rows)
    values.attrs["bins"] = shared
    values.attrs["sentences"] = {t: int(counts[t].sum()) for t in (higher, lower)}
    return values


def compare_tasks_in_bins(bins: pd.DataFrame) -> list[dict]:
    """Every pair of tasks in the paper's order that shares a comparable bin: the per-seed R
    of each (pooled over the shared bins), T, and the pair's verdict (reproduced: every seed
    of the higher task above every seed of the lower; inconclusive: only the seed means;
    not reproduced: the means are in the other order)."""
    tasks = [t for t in PAPER_RANKING if t in set(bins.task)]
    results = []
    for higher, lower in itertools.combinations(tasks, 2):
        values = _pair_values(bins, higher, lower)
        if values is None:
            continue
        r = {t: values[values.task == t].R for t in (higher, lower)}
        t_mean = {t: float(values[values.task == t]["T"].mean()) for t in (higher, lower)}
        if r[higher].min() > r[lower].max():
            verdict = REPRODUCED
        elif r[higher].mean() > r[lower].mean():
            verdict = INCONCLUSIVE
        else:
            verdict = NOT_REPRODUCED
        results.append(
            {
                "higher": higher,
                "lower": lower,
                "bins": values.attrs["bins"],
                "sentences": values.attrs["sentences"],
                "R": {t: (float(v.mean()), float(v.min()), float(v.max())) for t, v in r.items()},
                "T": t_mean,
                "verdict": verdict,
                "test": welch_test(
                    r[higher], r[lower], what=f"seeds (R of {higher.upper()} - {lower.upper()})"
                ),
            }
        )
    return results


def _range_text(bins: pd.DataFrame) -> str:
    """Each task's span of log2(M/N) bins (all bins, and those with enough sentences)."""
    parts = []
    for task in [t for t in PAPER_RANKING if t in set(bins.task)]:
        sel = bins[(bins.task == task)].drop_duplicates("bin_low")
        ok = sel[sel.comparable]
        span = f"[{sel.bin_low.min():+.1f}, {sel.bin_high.max():+.1f})"
        ok_span = f"[{ok.bin_low.min():+.1f}, {ok.bin_high.max():+.1f})" if len(ok) else "no bin"
        parts.append(f"{task.upper()} {span} ({ok_span} with enough sentences)")
    return "log2(M/N) bins spanned: " + "; ".join(parts)


def slope_summary(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per task, over seeds: mean log2(M/N), R and T, and the mean, min and max slopes."""
    return slopes.groupby("task").agg(
        sentences=("sentences", "first"),
        x=("log2_M_over_N_mean", "mean"),
        sd=("log2_M_over_N_sd", "mean"),
        R=("R_mean", "mean"),
        T=("T_mean", "mean"),
        Rs=("R_slope", "mean"),
        Rs_min=("R_slope", "min"),
        Rs_max=("R_slope", "max"),
        Ts=("T_slope", "mean"),
        Ts_min=("T_slope", "min"),
        Ts_max=("T_slope", "max"),
    )


def length_only_predictions(slopes: pd.DataFrame) -> list[tuple[str, str, float, float]]:
    """(higher, lower, observed R difference, the difference the within-task slopes predict
    from the tasks' M/N alone) for adjacent tasks in the paper's order: the mean of the two
    slopes times the difference of mean log2(M/N). An extrapolation: a rough scale only."""
    agg = slope_summary(slopes)
    tasks = [t for t in PAPER_RANKING if t in agg.index]
    out = []
    for higher, lower in zip(tasks, tasks[1:], strict=False):
        if np.isnan(agg.loc[higher, "Rs"]) or np.isnan(agg.loc[lower, "Rs"]):
            continue
        observed = agg.loc[higher, "R"] - agg.loc[lower, "R"]
        slope = (agg.loc[higher, "Rs"] + agg.loc[lower, "Rs"]) / 2
        out.append((higher, lower, observed, slope * (agg.loc[higher, "x"] - agg.loc[lower, "x"])))
    return out


def _slope_text(slopes: pd.DataFrame | None) -> str:
    if slopes is None or slopes.empty:
        return ""
    agg = slope_summary(slopes)
    parts = []
    for task in [t for t in PAPER_RANKING if t in agg.index]:
        a = agg.loc[task]
        if np.isnan(a.Rs):
            parts.append(f"{task.upper()} n/a (one M/N)")
            continue
        parts.append(
            f"{task.upper()} R {a.Rs:+.3f} [{a.Rs_min:+.3f}, {a.Rs_max:+.3f}], "
            f"T {a.Ts:+.3f} [{a.Ts_min:+.3f}, {a.Ts_max:+.3f}]"
        )
    text = (
        " Within-task slope per doubling of M/N across sentences, mean [min, max] over seeds: "
        + "; ".join(parts)
        + "."
    )
    measured = slopes.dropna(subset=["R_slope", "T_slope"])
    by_task = measured.groupby("task")
    if len(measured) and bool((measured.R_slope > 0).all()):
        text += (
            " R rises with M/N inside every task and seed, the direction of the between-task "
            "ranking: part of that ranking may be eq. 1's length normalization."
        )
    elif (
        len(measured)
        and bool((by_task.R_slope.min() < 0).all() and (by_task.R_slope.max() > 0).all())
        and bool((measured.T_slope < 0).all())
    ):
        text += (
            " Inside every task R does not move with M/N (its seed slopes straddle 0) while T "
            "falls in every seed: across the sentences of a task the attention per position, "
            "not the raw share, stays constant, so eq. 1 removes the length effect T carries "
            "rather than creating one."
        )
    predictions = length_only_predictions(slopes)
    if predictions:
        text += " Length-only prediction of the gap between adjacent tasks from these slopes " + (
            "(extrapolated): "
            + ", ".join(
                f"{h.upper()} − {low.upper()} {pred:+.3f} vs observed {obs:+.3f}"
                for h, low, obs, pred in predictions
            )
            + "."
        )
    return text


def check_length_control(
    bins: pd.DataFrame | None,
    slopes: pd.DataFrame | None,
    min_seeds: int = MIN_SEEDS,
    floor: float | None = None,
) -> Finding:
    """The length-matched verdict from the binned table (and the slopes as extra evidence).

    Not measured without a table or without every task of the ranking; inconclusive if no two
    tasks share a bin with enough sentences (no overlap in M/N) or an adjacent pair of the
    ranking is untested; not reproduced if any comparable pair is in the other order by its
    seed means; reproduced only if every adjacent pair of the ranking is tested and holds by a
    Welch t-test over seeds (all must hold; at least `min_seeds` seeds per task, Holm-adjusted
    with the other claims of the findings, effect above the R noise `floor`)."""
    if bins is None or bins.empty:
        return Finding(CLAIM, NOT_MEASURED, "no per-sentence R tables of the raw variant")
    tasks = list(PAPER_RANKING)
    lacking = [t.upper() for t in tasks if t not in set(bins.task)]
    if lacking:
        return Finding(
            CLAIM,
            NOT_MEASURED,
            f"needs every task it ranks; the per-sentence tables lack {', '.join(lacking)}",
        )
    width = float((bins.bin_high - bins.bin_low).iloc[0])
    min_sentences = int(bins.min_sentences.iloc[0])
    pairs = compare_tasks_in_bins(bins)
    slope_text = _slope_text(slopes)
    if not pairs:
        return Finding(
            CLAIM,
            INCONCLUSIVE,
            f"inconclusive: no overlap in M/N. No bin of log2(M/N) (width {width:g}) holds "
            f"{min_sentences} sentences of two tasks. {_range_text(bins)}.{slope_text}",
        )
    lines = []
    for pair in pairs:
        h, low = pair["higher"], pair["lower"]
        rh, rl = pair["R"][h], pair["R"][low]
        lines.append(
            f"{h.upper()} vs {low.upper()} in {len(pair['bins'])} shared bin(s) "
            f"({pair['sentences'][h]} and {pair['sentences'][low]} sentences): R {rh[0]:.3f} "
            f"[{rh[1]:.3f}, {rh[2]:.3f}] vs {rl[0]:.3f} [{rl[1]:.3f}, {rl[2]:.3f}], T "
            f"{pair['T'][h]:.3f} vs {pair['T'][low]:.3f}: {pair['verdict']}"
        )
    verdicts = [p["verdict"] for p in pairs]
    # A ranking holds only if each adjacent pair of it (ASR > NMT, NMT > TTS) is tested and
    # holds: pairs that merely connect the tasks (ASR > TTS, NMT > TTS) leave ASR vs NMT open.
    by_pair = {(p["higher"], p["lower"]): p["verdict"] for p in pairs}
    adjacent = list(zip(tasks, tasks[1:], strict=False))
    untested_pairs = [
        f"{h.upper()} > {low.upper()}" for h, low in adjacent if (h, low) not in by_pair
    ]
    if NOT_REPRODUCED in verdicts:
        verdict = NOT_REPRODUCED
    elif not untested_pairs and all(by_pair[pair] == REPRODUCED for pair in adjacent):
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    untested = (
        f" Untested adjacent pair(s) of the ranking: {', '.join(untested_pairs)} (no shared bin "
        "with enough sentences), so the ranking is not established."
        if untested_pairs
        else ""
    )
    evidence = (
        f"R and T pooled over shared log2(M/N) bins of width {width:g} (at least "
        f"{min_sentences} sentences per task and bin), mean [min, max] over seeds: "
        + "; ".join(lines)
        + "."
        + untested
        + slope_text
    )
    test = all_of(
        [p["test"] for p in pairs if (p["higher"], p["lower"]) in adjacent]
        or [p["test"] for p in pairs],
        "adjacent pairs",
    ).with_floor(floor)
    return Finding(CLAIM, **tested(verdict, evidence, test, min_seeds))


def _write_markdown(
    path: str | Path,
    bins: pd.DataFrame,
    slopes: pd.DataFrame,
    finding: Finding,
    *,
    width: float,
    min_sentences: int,
    p_values: list[float],
) -> None:
    lines = [
        "# Length-matched control of the task ranking by R(p)",
        "",
        "Eq. 1 normalizes the attention to the target side by N and to the source side by M, "
        "so R rises with M/N for the same attention pattern. Here each test sentence's R "
        f"(eq. 2) and raw target share T are averaged over p in {p_values} and then per task, "
        f"seed and bin of log2(M/N) (width {width:g}); tasks are compared only inside bins "
        f"that hold at least {min_sentences} sentences of each. Raw-data CoMMA runs only.",
        "",
        f"**Verdict: {finding.verdict}.** {finding.evidence}",
        "",
        "## R and T per bin of log2(M/N)",
        "",
        "Mean over seeds [min, max]; sentences per seed; * = enough sentences to compare.",
        "",
        "| task | log2(M/N) bin | mean M/N | sentences | R | T |",
        "|---|---|---:|---:|---:|---:|",
    ]
    summary = (
        bins.groupby(["task", "bin_low", "bin_high"], sort=True)
        .agg(
            sentences=("sentences", "first"),
            comparable=("comparable", "first"),
            M_over_N=("M_over_N", "mean"),
            R=("R", "mean"),
            R_min=("R", "min"),
            R_max=("R", "max"),
            T=("T", "mean"),
        )
        .reset_index()
    )
    for task in [t for t in PAPER_RANKING if t in set(summary.task)]:
        for r in summary[summary.task == task].itertuples(index=False):
            mark = "*" if r.comparable else ""
            lines.append(
                f"| {task.upper()} | [{r.bin_low:+.1f}, {r.bin_high:+.1f}) | {r.M_over_N:.2f} "
                f"| {r.sentences}{mark} | {r.R:.3f} [{r.R_min:.3f}, {r.R_max:.3f}] | {r.T:.3f} |"
            )
    lines += [
        "",
        "## Within-task slopes against log2(M/N)",
        "",
        "Least-squares slope across the sentences of one run (per doubling of M/N), mean "
        "[min, max] over seeds. If R rises with M/N while T stays flat, eq. 1's normalization "
        "creates a length effect; if R stays flat while T falls, the attention per position is "
        "what stays constant and eq. 1 removes the length effect T carries.",
        "",
        "| task | sentences | log2(M/N) mean ± sd | R | dR per doubling | T | dT per doubling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    agg = slope_summary(slopes)
    for task in [t for t in PAPER_RANKING if t in agg.index]:
        a = agg.loc[task]
        lines.append(
            f"| {task.upper()} | {int(a.sentences)} | {a.x:+.2f} ± {a.sd:.2f} | {a.R:.3f} | "
            f"{a.Rs:+.3f} [{a.Rs_min:+.3f}, {a.Rs_max:+.3f}] | {a['T']:.3f} | "
            f"{a.Ts:+.3f} [{a.Ts_min:+.3f}, {a.Ts_max:+.3f}] |"
        )
    predictions = length_only_predictions(slopes)
    if predictions:
        lines += [
            "",
            "What the within-task slopes would predict for the gap between adjacent tasks from "
            "their M/N alone (mean of the two tasks' slopes × difference of mean log2(M/N); an "
            "extrapolation beyond each task's own range, so a rough scale only):",
            "",
            "| pair | observed R difference | length-only prediction |",
            "|---|---:|---:|",
            *(
                f"| {h.upper()} − {low.upper()} | {obs:+.3f} | {pred:+.3f} |"
                for h, low, obs, pred in predictions
            ),
        ]
    write_lines(path, lines)


def plot_length_control(
    means: pd.DataFrame, bins: pd.DataFrame, path: str | Path, *, title: str | None = None
) -> None:
    """R and T against log2(M/N): sentences (seed means, faint), bin means over seeds with the
    seed range (filled markers: bins with enough sentences to compare)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    per_sentence = means.groupby(["task", "sentence"]).agg(
        x=("log2_M_over_N", "first"), R=("R", "mean"), T=("T", "mean")
    )
    summary = (
        bins.assign(center=(bins.bin_low + bins.bin_high) / 2)
        .groupby(["task", "center"])
        .agg(
            comparable=("comparable", "first"),
            R=("R", "mean"),
            R_min=("R", "min"),
            R_max=("R", "max"),
            T=("T", "mean"),
            T_min=("T", "min"),
            T_max=("T", "max"),
        )
        .reset_index()
    )
    for ax, value in zip(axes, ("R", "T"), strict=True):
        for task in [t for t in PAPER_RANKING if t in set(summary.task)]:
            color = TASK_COLORS.get(task)
            dots = per_sentence.loc[task]
            ax.scatter(dots.x, dots[value], s=4, color=color, alpha=0.15, lw=0)
            sel = summary[summary.task == task]
            ax.plot(sel.center, sel[value], "-", color=color, lw=1, label=task.upper())
            ax.errorbar(
                sel.center,
                sel[value],
                yerr=[sel[value] - sel[f"{value}_min"], sel[f"{value}_max"] - sel[value]],
                fmt="none",
                ecolor=color,
                lw=1,
            )
            for comparable, face in ((True, color), (False, "white")):
                part = sel[sel.comparable == comparable]
                ax.scatter(part.center, part[value], s=28, color=face, edgecolors=color, zorder=3)
        ax.set_xlabel("log2(M/N) of the sentence")
        ax.set_ylabel(
            "density ratio R (eq. 2)" if value == "R" else "raw target share T (no length norm.)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, [path], dpi=150)


def length_control(
    sentence_csvs: Sequence[str | Path],
    bins_csv: str | Path,
    slopes_csv: str | Path,
    out_md: str | Path,
    out_png: str | Path | None = None,
    *,
    bin_width: float,
    min_sentences: int,
    variant: str = "raw",
) -> Finding:
    """Bin the per-sentence R tables of `variant` by log2(M/N); write the per-(task, seed,
    bin) table `bins_csv`, the within-task slopes `slopes_csv`, a Markdown summary with the
    verdict, and optionally a plot. Returns the verdict."""
    sentences = read_sentence_tables(sentence_csvs)
    sentences = sentences[sentences.variant == variant]
    if sentences.empty:
        raise ValueError(f"the per-sentence tables hold no '{variant}' runs")
    means = sentence_means(sentences)
    bins = bin_sentences(means, bin_width, min_sentences)
    slopes = within_task_slopes(means)
    finding = check_length_control(bins, slopes)
    for table, path in ((bins, bins_csv), (slopes, slopes_csv)):
        write_csv(table, path, digits=5)
    _write_markdown(
        out_md,
        bins,
        slopes,
        finding,
        width=bin_width,
        min_sentences=min_sentences,
        p_values=sorted(float(p) for p in set(sentences.p)),
    )
    if out_png is not None:
        plot_length_control(
            means, bins, out_png, title="R and T against the length ratio M/N (raw data, CoMMA)"
        )
    return finding
