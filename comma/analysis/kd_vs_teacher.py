"""KD against teacher quality (target ``kd_vs_teacher``, issue 27; docs/experiments.md):
does knowledge distillation lower target-token dependency whatever the teacher?

Each teacher point (:mod:`comma.analysis.kd_vs_teacher_plan`: the NMT teacher trained for fewer
steps, and the study's own) has its test BLEU, its KD corpus, kd and rawkept CoMMA runs per seed
(paired: same sentences, same batches, same order) and NATs trained on the KD corpus. This
module reads those artifacts (:func:`read_point`, failing with the file named when one is
missing or is not what the plan says it is), judges "KD lowers R / T / D" per point with the
findings' own check (:func:`comma.analysis.findings_ratio.check_kd`: a one-sample t-test of the
paired per-seed differences rawkept - kd, mean over p; Holm over the file; the noise floor of the
study's raw/rawkept twin runs; the instrument check of the study's raw runs), says per measure
whether KD lowers it at every teacher quality and where that stops (:func:`every_quality`), and
writes the figure and the table (:func:`write_kd_vs_teacher`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.findings_instrument import target_use, without_target_use  # noqa: E402
from comma.analysis.findings_ratio import MEASURES, check_kd  # noqa: E402
from comma.analysis.kd_vs_teacher_plan import plan_files  # noqa: E402
from comma.analysis.noise_floor import NoiseFloors, noise_floors  # noqa: E402
from comma.analysis.plots import save_figure  # noqa: E402
from comma.analysis.verdicts import (  # noqa: E402
    ALPHA,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    all_of,
    holm,
)
from comma.errors import InputError  # noqa: E402
from comma.io import read_json, write_lines  # noqa: E402
from comma.tasks import TASK_LABELS  # noqa: E402

__all__ = [
    "PointResult",
    "read_point",
    "read_twins",
    "seed_differences",
    "judge_points",
    "where_it_stops",
    "every_quality",
    "plot_kd_vs_teacher",
    "write_kd_vs_teacher",
]

RATIO_COLUMNS = ("task", "variant", "seed", "p", *MEASURES)
BUILD = "build it with `snakemake kd_vs_teacher`"


@dataclass
class PointResult:
    """What one teacher point's artifacts say. `runs`: the kd and rawkept R(p) tables (one row
    per variant, seed and p); `nat_bleu`: NAT test BLEU by seed; `distill`: the KD report."""

    steps: int
    final: bool
    teacher_bleu: float
    distill: dict
    runs: pd.DataFrame
    nat_bleu: dict[int, float]

    @property
    def label(self) -> str:
        which = "study's teacher" if self.final else "teacher"
        return f"{which} of {self.steps} steps (BLEU {self.teacher_bleu:.1f})"


# --- reading the artifacts --------------------------------------------------------------


def _json(path: str | Path, what: str, keys: Sequence[str] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"missing: {what}; {BUILD}")
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not JSON ({error}): {what}") from error
    lacking = [k for k in keys if not isinstance(data, dict) or k not in data]
    if lacking:
        raise InputError(path, f"has no {', '.join(lacking)}: not {what}")
    return data


def _expect(path: str | Path, found, expected, what: str) -> None:
    if found != expected:
        raise InputError(path, f"{what} is {found!r}, the plan expects {expected!r}; {BUILD}")


def _trained_steps(path: str | Path) -> int:
    """The last update of a training run's metrics.jsonl (one JSON line per update)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"missing: the teacher's training log; {BUILD}")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(path, "empty: the teacher's training log has no update")
    try:
        return int(json.loads(lines[-1])["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(path, f"last line has no step ({error})", line=len(lines)) from error


def _ratio_table(path: str | Path, task: str, variant: str, seed: int) -> pd.DataFrame:
    """One CoMMA run's R(p) table (measure_ratio's ratio.csv), checked to be that run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"missing: the R(p) table of the {variant} CoMMA, seed {seed}")
    table = pd.read_csv(path)
    lacking = [c for c in RATIO_COLUMNS if c not in table.columns]
    if lacking:
        raise InputError(path, f"has no column {', '.join(lacking)} (an older measure_ratio?)")
    if table.empty:
        raise InputError(path, "has no rows")
    for column, expected in (("task", task), ("variant", variant), ("seed", seed)):
        found = sorted(set(table[column]))
        _expect(path, found, [expected], f"its {column}")
    return table[list(RATIO_COLUMNS)]


def _read_runs(files: Mapping[str, Mapping[int, str]], task: str) -> pd.DataFrame:
    return pd.concat(
        [
            _ratio_table(path, task, variant, int(seed))
            for variant, by_seed in files.items()
            for seed, path in by_seed.items()
        ],
        ignore_index=True,
    )


def read_point(point: Mapping, task: str) -> PointResult:
    """One teacher point of the plan (rules/kd_vs_teacher_inputs.smk: steps, final, the
    teacher's model path, training log and test metrics, the KD report, the kd and rawkept
    R(p) tables by seed, the NAT metrics by seed), each file checked to be what the plan names:
    the teacher trained for `steps` updates, its metrics and KD corpus made from that teacher."""
    steps, model = int(point["steps"]), str(point["teacher_model"])
    _expect(point["teacher_log"], _trained_steps(point["teacher_log"]), steps, "its last step")
    teacher = _json(point["teacher_metrics"], f"the {task} teacher's test metrics", ("bleu",))
    _expect(point["teacher_metrics"], teacher.get("task"), task, "its task")
    _expect(point["teacher_metrics"], str(teacher.get("model")), model, "its teacher")
    distill = _json(
        point["distill"],
        "a KD report (merge_distilled)",
        ("task", "teacher", "sentences", "kept", "dropped", "dropped_total"),
    )
    _expect(point["distill"], distill["task"], task, "its task")
    _expect(point["distill"], str(distill["teacher"]), model, "its teacher")
    nat_bleu = {}
    for seed, path in point["nat"].items():
        metrics = _json(path, f"a NAT's test metrics (seed {seed})", ("task", "bleu"))
        _expect(path, metrics["task"], task, "its task")
        nat_bleu[int(seed)] = float(metrics["bleu"])
    return PointResult(
        steps=steps,
        final=bool(point["final"]),
        teacher_bleu=float(teacher["bleu"]),
        distill=distill,
        runs=_read_runs(point["ratio"], task),
        nat_bleu=nat_bleu,
    )


def read_twins(twins: Mapping[str, Mapping[int, str]], task: str) -> pd.DataFrame:
    """The study's raw and rawkept R(p) tables of `task` (the noise floor's twins)."""
    return _read_runs(twins, task)


# --- the numbers and the claims ---------------------------------------------------------


def seed_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """measure(kd) - measure(rawkept) per seed (rows) and measure (columns R, T, D), each the
    mean over p of the paired differences (below zero: KD lowers the measure)."""
    paired = runs.pivot_table(index=["seed", "p"], columns="variant", values=list(MEASURES))
    return pd.DataFrame(
        {
            m: (paired[(m, "kd")] - paired[(m, "rawkept")]).groupby(level="seed").mean()
            for m in MEASURES
        }
    )


def _point_finding(point: PointResult, task: str, measure: str, **settings) -> Finding:
    """The findings' KD check on one point's runs, its claim naming the teacher."""
    found = check_kd(point.runs, task, point.distill, measure=measure, **settings)
    return dataclasses.replace(
        found,
        claim=f"KD from the {point.label} lowers {MEASURES[measure]} for {TASK_LABELS[task]}",
        topic=f"KD from the {point.label} lowers target-token dependency",
    )


def by_quality(points: Sequence[PointResult]) -> list[PointResult]:
    """The points from the strongest teacher to the weakest (BLEU, then steps)."""
    return sorted(points, key=lambda p: (p.teacher_bleu, p.steps), reverse=True)


def where_it_stops(measure: str, judged: Sequence[tuple[PointResult, Finding]]) -> str:
    """From the strongest teacher down: the last point where KD lowers `measure` (reproduced),
    the first where it stops, and every point where the sign turns (KD raises it)."""
    ordered = sorted(judged, key=lambda pf: (pf[0].teacher_bleu, pf[0].steps), reverse=True)
    held = 0
    while held < len(ordered) and ordered[held][1].verdict == REPRODUCED:
        held += 1
    if held == len(ordered):
        where = "It holds at every teacher point."
    else:
        stop, stop_finding = ordered[held]
        where = (
            f"It holds down to the {ordered[held - 1][0].label}"
            if held
            else "It does not hold even for the strongest teacher"
        ) + f"; it stops at the {stop.label} ({stop_finding.verdict})."
    raised = [p for p, f in ordered if f.test is not None and f.test.effect < 0]
    if raised:
        where += (
            f" The sign changes: KD raises {measure} (kd above rawkept, mean over seeds) with "
            + ", ".join(f"the {p.label}" for p in raised)
            + "."
        )
    return where


def every_quality(measure: str, judged: Sequence[tuple[PointResult, Finding]]) -> Finding:
    """The claim "KD lowers `measure` at every teacher quality": an "and" over the points
    (each already Holm-corrected with the file): reproduced if every point's is, not reproduced
    if any point's estimate contradicts it, inconclusive otherwise. The evidence walks from the
    strongest teacher down and says where the claim stops holding (:func:`where_it_stops`)."""
    ordered = sorted(judged, key=lambda pf: (pf[0].teacher_bleu, pf[0].steps), reverse=True)
    verdicts = [f.verdict for _, f in ordered]
    verdict = (
        REPRODUCED
        if all(v == REPRODUCED for v in verdicts)
        else NOT_REPRODUCED
        if NOT_REPRODUCED in verdicts
        else INCONCLUSIVE
    )
    walk = "; ".join(
        f"{p.label}: {f.verdict} (rawkept - kd {f.test.effect:+.4f})" for p, f in ordered
    )
    test = all_of([f.test for _, f in ordered], "teacher points")
    return Finding(
        f"KD lowers {MEASURES[measure]} for NMT at every teacher quality",
        verdict,
        f"From the strongest teacher down: {walk}. {where_it_stops(measure, ordered)} Each "
        f"point's verdict is the findings' rule after Holm over the {len(ordered) * len(MEASURES)} "
        "point claims of this file; this claim needs every point's (an intersection-union "
        f"test: no further correction). Deciding point: {test.describe()}",
        measure=measure,
        topic="KD lowers target-token dependency for NMT at every teacher quality",
        attention_tasks=ordered[0][1].attention_tasks,
        test=test,
    )


def judge_points(
    points: Sequence[PointResult],
    twins: pd.DataFrame,
    task: str,
    *,
    min_seeds: int,
    min_dependency: float,
) -> tuple[dict[tuple[int, str], Finding], dict[str, Finding], NoiseFloors]:
    """Every point's finding by (steps, measure), Holm-corrected over them all and made
    inconclusive for R and T where the study's raw CoMMA barely uses the target; the claim
    over every teacher quality by measure; the noise floors of the study's twins."""
    floors = noise_floors(twins)
    keys = [(p.steps, m) for p in points for m in MEASURES]
    raw = [
        _point_finding(p, task, m, min_seeds=min_seeds, floors=floors)
        for p in points
        for m in MEASURES
    ]
    by_seed = target_use(twins)
    corrected = [without_target_use(f, by_seed, min_dependency) for f in holm(raw, ALPHA)]
    per_point = dict(zip(keys, corrected, strict=True))
    overall = {
        m: every_quality(m, [(p, per_point[(p.steps, m)]) for p in points]) for m in MEASURES
    }
    return per_point, overall, floors


# --- the figure and the table ------------------------------------------------------------

PANEL_TITLES = {
    "R": "R(kd) - R(rawkept)",
    "T": "T(kd) - T(rawkept)",
    "D": "D(kd) - D(rawkept)",
}


def plot_kd_vs_teacher(
    points: Sequence[PointResult], floors: NoiseFloors, task: str, path: str | Path
) -> None:
    """Four panels against the teacher's test BLEU: the paired differences kd - rawkept of R,
    T and D (mean over p; each seed a dot, the mean a line, the seed range a band, the noise
    floor of the study's twins shaded around zero) and NAT BLEU (seeds, mean, range; the
    teachers' own BLEU as the line y = x)."""
    ordered = sorted(points, key=lambda p: (p.teacher_bleu, p.steps))
    x = [p.teacher_bleu for p in ordered]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, measure in zip(axes[:3], MEASURES, strict=True):
        diffs = [seed_differences(p.runs)[measure] for p in ordered]
        for xi, d in zip(x, diffs, strict=True):
            ax.plot([xi] * len(d), d.to_numpy(), "o", color="grey", ms=3, alpha=0.7)
        mean = [d.mean() for d in diffs]
        low, high = [d.min() for d in diffs], [d.max() for d in diffs]
        ax.fill_between(x, low, high, alpha=0.2, lw=0, label="seed range")
        ax.plot(x, mean, "k-o", ms=4, lw=1.5, label="mean over seeds")
        floor = floors.get([task], measure)
        if not math.isnan(floor):
            ax.axhspan(-floor, floor, color="tab:orange", alpha=0.15, lw=0, label="noise floor")
        ax.axhline(0.0, color="grey", lw=0.8)
        for p, xi, yi in zip(ordered, x, mean, strict=True):
            ax.annotate(
                f"{p.steps}", (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=7
            )
        ax.set_title(f"{PANEL_TITLES[measure]}, mean over p", fontsize=10)
        ax.set_xlabel("teacher test BLEU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[3]
    nat = [list(p.nat_bleu.values()) for p in ordered]
    for xi, values in zip(x, nat, strict=True):
        ax.plot([xi] * len(values), values, "o", color="grey", ms=3, alpha=0.7)
    ax.fill_between(
        x, [min(v) for v in nat], [max(v) for v in nat], alpha=0.2, lw=0, label="seed range"
    )
    ax.plot(x, [sum(v) / len(v) for v in nat], "k-o", ms=4, lw=1.5, label="NAT (KD), mean")
    ax.plot(x, x, "--", color="tab:blue", lw=1, label="the teacher (y = x)")
    ax.set_title("NAT test BLEU", fontsize=10)
    ax.set_xlabel("teacher test BLEU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"Knowledge distillation against teacher quality ({TASK_LABELS[task]}; points labelled "
        "by the teacher's training steps; below zero: KD lowers the measure)",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, [path], tight=True)


def _cell(values: pd.Series | dict, digits: int, sign: str = "+") -> tuple[str, str]:
    """(per-seed values, their mean) as table cells; `sign` "+" shows it on differences."""
    series = pd.Series(values, dtype=float)
    seeds = ", ".join(f"{seed}: {v:{sign}.{digits}f}" for seed, v in series.items())
    return seeds, f"{series.mean():{sign}.{digits}f}"


def _numbers(finding: Finding) -> str:
    test = finding.test
    if test is None or math.isnan(test.effect):
        return ""
    p = test.p if math.isnan(test.p_holm) else test.p_holm
    return f"{test.effect:+.4f}, p {p:.2g}"


def table_lines(
    points: Sequence[PointResult],
    per_point: Mapping[tuple[int, str], Finding],
    overall: Mapping[str, Finding],
    floors: NoiseFloors,
    task: str,
    *,
    min_seeds: int,
    sources: Sequence[str],
) -> list[str]:
    """The Markdown report: the numbers per teacher point, the claims, their evidence."""
    ordered = by_quality(points)
    lines = [
        "# Knowledge distillation against teacher quality",
        "",
        f"{TASK_LABELS[task]}, {len(points)} teacher points: the teacher trained for fewer "
        "steps, same seed and settings (its state after that many updates), and the study's own "
        "teacher. Per point: the teacher's test BLEU, its KD corpus, kd and rawkept CoMMA per "
        "seed (rawkept: the raw targets of the sentences the KD corpus keeps; same sentences, "
        "batches and order), their paired difference kd - rawkept of R, T and D (mean over p; "
        "below zero: KD lowers the measure), and NATs trained on the KD corpus (no alignment "
        f"constraint). Read from {len(sources)} files of this run.",
        "",
        "| teacher steps | teacher BLEU | KD keeps | R(kd) - R(rawkept) per seed | mean | "
        "T(kd) - T(rawkept) per seed | mean | D(kd) - D(rawkept) per seed | mean | "
        "NAT BLEU per seed | mean |",
        "|---:|---:|---:|---|---:|---|---:|---|---:|---|---:|",
    ]
    for p in sorted(points, key=lambda p: p.steps):
        diffs = seed_differences(p.runs)
        cells = [c for m in MEASURES for c in _cell(diffs[m], 4)]
        nat_seeds, nat_mean = _cell(p.nat_bleu, 2, sign="")
        mark = " (study)" if p.final else ""
        lines.append(
            f"| {p.steps}{mark} | {p.teacher_bleu:.2f} | {p.distill['kept']} of "
            f"{p.distill['sentences']} | " + " | ".join(cells) + f" | {nat_seeds} | "
            f"{nat_mean} |"
        )
    lines += [
        "",
        "## Claims",
        "",
        "Each point's claim is the findings' KD check (`comma.analysis.findings_ratio.check_kd`, "
        "docs/verdicts.md): a one-sided one-sample t-test of the paired per-seed differences "
        f"rawkept - kd (mean over p); reproduced with at least {min_seeds} seeds "
        f"(findings.min_seeds), p <= {ALPHA:g} after Holm's correction over the "
        f"{len(per_point)} point claims of this file, and an effect above the noise floor of "
        "the study's raw/rawkept twin runs; R and T are inconclusive where a seed of the "
        "study's raw CoMMA has D below findings.min_dependency. Noise floor: "
        f"{floors.text(MEASURES, [task])}. The claim over every teacher quality needs every "
        "point's.",
        "",
        "| claim | by R | by T | by D | effect, p (Holm) by R |",
        "|---|---|---|---|---|",
    ]
    rows = [(overall["R"].topic, overall)] + [
        (per_point[(p.steps, "R")].topic, {m: per_point[(p.steps, m)] for m in MEASURES})
        for p in ordered
    ]
    for topic, by_measure in rows:
        lines.append(
            f"| {topic} | **{by_measure['R'].verdict}** | {by_measure['T'].verdict} | "
            f"{by_measure['D'].verdict} | {_numbers(by_measure['R'])} |"
        )
    lines += ["", "Where it stops, by measure:", ""]
    for m in MEASURES:
        judged = [(p, per_point[(p.steps, m)]) for p in points]
        lines.append(f"- {m}: {overall[m].verdict}. {where_it_stops(m, judged)}")
    lines += ["", "## Evidence", ""]
    findings = [overall[m] for m in MEASURES] + [
        per_point[(p.steps, m)] for p in ordered for m in MEASURES
    ]
    for number, f in enumerate(findings, 1):
        lines.append(f"{number}. **{f.claim}**: {f.verdict}. {f.evidence}")
    lines += ["", "Files read: " + ", ".join(f"`{s}`" for s in sources) + "."]
    return lines


def write_kd_vs_teacher(
    plan: Mapping,
    figure_png: str | Path,
    table_md: str | Path,
    *,
    min_seeds: int,
    min_dependency: float,
) -> tuple[dict[tuple[int, str], Finding], dict[str, Finding]]:
    """Read every file of `plan` (rules/kd_vs_teacher_inputs.smk: task, points, twins), judge
    the claims, write the figure and the Markdown table; return the findings."""
    task = plan["task"]
    points = [read_point(point, task) for point in plan["points"]]
    if len(points) < 2:
        raise ValueError(
            f"kd_vs_teacher needs at least two teacher points, the plan has {len(points)}"
        )
    twins = read_twins(plan["twins"], task)
    per_point, overall, floors = judge_points(
        points, twins, task, min_seeds=min_seeds, min_dependency=min_dependency
    )
    plot_kd_vs_teacher(points, floors, task, figure_png)
    lines = table_lines(
        points, per_point, overall, floors, task, min_seeds=min_seeds, sources=plan_files(plan)
    )
    write_lines(table_md, lines)
    return per_point, overall
