"""The paper's claims, checked against this run: reproduced or not, and why.

Generated from the run's own tables, never written by hand. This module assembles the report
(``results/findings.md``); the claims are checked by kind:

* :mod:`comma.analysis.findings_instrument`: claim 1, does each raw CoMMA use the target at all
  (the premise of every verdict read from attention);
* :mod:`comma.analysis.findings_ratio`: the dependency claims of sections 3.2 (Figure 2), 4.2
  (Figure 3, KD) and 5.2 (Figure 4, AC), from ``results/ratio.csv``, each judged by R, T and D;
* :mod:`comma.analysis.length_control`: does the task ranking survive at matched M/N
  (``results/length_control.csv`` and ``results/length_control_slopes.csv``);
* :mod:`comma.analysis.findings_accuracy`: the accuracy claims of sections 3.1, 4.1 and 5.1,
  from ``results/table2.csv``, ``table3.csv`` and ``table4.csv``.

Verdicts (:mod:`comma.analysis.verdicts` holds the rules, ``docs/verdicts.md`` says why). Seeds
are the unit of replication: each claim is a one-sided t-test over them (paired per-seed
differences for KD, AC and the ablations of Tables 3 and 4; Welch between tasks for rankings),
"reproduced" only with at least ``findings.min_seeds`` seeds in every task it reads, p <= 0.05
after Holm's correction over the tested claims of the file and an effect above the noise floor
of the raw/rawkept twin runs (:mod:`comma.analysis.noise_floor`); "not reproduced" when the
estimate contradicts the claim; "inconclusive" otherwise. Any claim whose runs or tables this
run lacks (a task it names included) is "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from comma.analysis.findings_accuracy import (
    check_ablation,
    check_ac_helps_low_ratio_most,
    check_gap_asr_above_nmt,
    check_gap_matches_ratio,
    check_gap_smallest_for_tts,
    read_table,
)
from comma.analysis.findings_instrument import check_uses_target, target_use, without_target_use
from comma.analysis.findings_ratio import (
    MEASURE_NAMES,
    MEASURES,
    RANKING_TOPICS,
    check_falls_with_p,
    check_kd,
    check_length_effect,
    check_ranking,
    check_variant,
    twin_floors,
)
from comma.analysis.length_control import check_length_control
from comma.analysis.verdicts import (
    ALPHA,
    INCONCLUSIVE,
    MIN_DEPENDENCY,
    MIN_SEEDS,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Finding,
    holm,
)
from comma.io import read_json, write_lines
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
    floors = twin_floors(runs)
    sections = {
        ranking: [
            *(check_ranking(runs, min_seeds, m, floors) for m in MEASURES),
            *(f for m in MEASURES for f in check_falls_with_p(runs, min_seeds, m, floors)),
        ],
        length: [
            check_length_effect(runs, min_seeds, floors),
            check_length_control(
                length_bins,
                length_slopes,
                min_seeds,
                floors.get(PAPER_RANKING, "R"),
            ),
        ],
        kd: [
            *(
                check_kd(runs, task, (distill or {}).get(task), min_seeds, m, floors)
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
                check_variant(
                    runs, "ac", task, min_seeds=min_seeds, measure=m, note=ac_note, floors=floors
                )
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
            check_gap_matches_ratio(table2, runs, min_seeds, floors),
        ],
    }
    sections[ranking].insert(0, check_uses_target(runs, min_dependency, min_seeds))
    # Holm over every tested claim of the file, then the instrument check per seed.
    corrected = iter(holm([f for findings in sections.values() for f in findings], ALPHA))
    by_seed = target_use(runs)
    return {
        section: [without_target_use(next(corrected), by_seed, min_dependency) for _ in findings]
        for section, findings in sections.items()
    }


def check_claims(runs: pd.DataFrame, **tables: pd.DataFrame | None) -> list[Finding]:
    """Every finding, in report order (keyword tables as :func:`check_claims_by_section`)."""
    return [f for section in check_claims_by_section(runs, **tables).values() for f in section]


def _numbers(finding: Finding) -> str:
    """The table cell of a tested finding: effect, its CI, the Holm-adjusted p, the floor."""
    test = finding.test
    if test is None or math.isnan(test.effect):
        return ""
    ci = f" [{test.low:+.3f}, {test.high:+.3f}]" if not math.isnan(test.low) else ""
    p = "n/a" if math.isnan(test.p_holm) else f"{test.p_holm:.2g}"
    floor = "-" if test.floor is None else "n/a" if math.isnan(test.floor) else f"{test.floor:.3f}"
    return f"{test.effect:+.3f}{ci}; {p}; {floor}"


def _disagreements(findings: Sequence[Finding]) -> str:
    """The headline's opening: each ranking of the tasks on which R, T and D disagree, in
    words (empty if they agree on every one)."""
    parts = []
    for topic in RANKING_TOPICS:
        by = {f.measure: f.verdict for f in findings if f.topic == topic}
        if len(set(by.values())) > 1:
            parts.append(f'"{topic}" is ' + ", ".join(f"{v} by {m}" for m, v in by.items()))
    if not parts:
        return ""
    return (
        "R, T and D disagree on a ranking of the tasks: "
        + "; ".join(parts)
        + ". There the verdict by R rests on how eq. 1 divides the attention by the lengths "
        "(M/N differs by an order of magnitude between the tasks), not on the dependency "
        "that D measures without attention or lengths. "
    )


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
    tested_count = sum(f.test is not None and not math.isnan(f.test.p) for f in findings)
    floors = twin_floors(runs)
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
        f"Each claim is a one-sided test over the training seeds, the unit of replication: "
        "a one-sample t-test of the paired per-seed differences for KD and AC (to the raw, or "
        "for KD the rawkept, run of the same seed) and for the ablations of Tables 3 and 4 "
        "(the relative gain of the primary metric; inconclusive if the secondary metric's mean "
        "gain contradicts it), Welch t-tests between tasks for the rankings, a t-test of the "
        "per-seed slopes for R falling with p; a claim made of several comparisons (every p, "
        "every adjacent pair) needs each (the largest p decides). Reproduced: at least "
        f"{min_seeds} seeds in every task the claim reads (findings.min_seeds), p <= {ALPHA:g} "
        f"after Holm's correction over the {tested_count} tested claims of this file, and an "
        "effect above the noise floor; not reproduced: the estimate contradicts the claim; "
        "inconclusive otherwise. The gap claims (Table 2) set the NAR models' seeds against "
        "the teachers' single run. Not measured: the run lacks what the claim needs, a task it "
        "names included. docs/verdicts.md says why this rule.",
        "",
        "Noise floor: the largest |raw - rawkept| difference over the seeds of one task (the "
        "twin runs share initialization, their corpora differ only in the sentences the "
        "teacher dropped), per measure; * borrowed from the other tasks where the twins are "
        f"the same run. {floors.text(MEASURES, PAPER_RANKING)}. An effect at or below it is "
        "inconclusive. Accuracy claims have no twin NAR runs, hence no floor.",
        "",
        "Each claim about target-token dependency is judged three times, by the same rule: by "
        + "; by ".join(f"{m}: {name}" for m, name in MEASURE_NAMES.items())
        + ". Where they disagree, the verdict by R rests on how eq. 1 weighs the lengths. "
        f"R and T are read from CoMMA's attention, which measures dependency only if CoMMA "
        f"uses the target: where any seed of a task's raw CoMMA has D below {min_dependency:g} "
        "(findings.min_dependency; claim 1), the R and T verdicts resting on that task are "
        "inconclusive.",
        "",
        _disagreements(findings)
        + "Summary, by R and the accuracy tables: "
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
        "| # | claim | verdict (by R) | by T | by D | effect [95 % CI]; p (Holm); floor |",
        "|---:|---|---|---|---|---|",
    ]
    number = 0
    for section, items in sections.items():
        lines.append(f"| | *{section}* | | | | |")
        for f in items:
            number += 1
            if f.measure == "":
                lines.append(f"| {number} | {f.claim} | **{f.verdict}** | | | {_numbers(f)} |")
            elif f.measure == "R":
                others = {g.measure: g.verdict for g in items if g.topic == f.topic}
                lines.append(
                    f"| {number} | {f.topic} | **{f.verdict}** | {others.get('T', '')} "
                    f"| {others.get('D', '')} | {_numbers(f)} |"
                )
    lines += ["", "## Evidence", ""]
    number = 0
    for section, items in sections.items():
        lines += [f"### {section}", ""]
        for f in items:
            number += 1
            lines.append(f"{number}. **{f.claim}**: {f.verdict}. {f.evidence}")
        lines.append("")
    write_lines(out_md, lines[:-1])  # the blank line closing the last section ends the file
    return findings
