"""The verdict vocabulary of the study's findings, shared by every check.

A check of one of the paper's claims returns a :class:`Finding`: the claim, one of the four
verdicts below, and the numbers behind it. The rules that turn numbers into a verdict live here:
:func:`seed_verdict` (per-seed differences, with the sign test :func:`sign_test_p`),
:func:`graded_verdict` (a claim checked in every seed and on the means) and
:func:`too_few_seeds`; the checks (:mod:`comma.analysis.findings_ratio`,
:mod:`~comma.analysis.findings_accuracy`, :mod:`~comma.analysis.findings_instrument`) apply
them, and :func:`comma.analysis.findings_instrument.without_target_use` overrides a verdict that
rests on a CoMMA that barely uses the target."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
NOT_REPRODUCED = "not reproduced"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_MEASURED)


@dataclass
class Finding:
    claim: str
    verdict: str
    evidence: str
    # For a claim about target-token dependency, judged once per measure: which measure
    # ("R", "T" or "D") and the claim in words that name none, shared by the three findings.
    measure: str = ""
    topic: str = ""
    # The tasks whose CoMMA attention (R or T) the verdict rests on: it says nothing about
    # target-token dependency where those models barely use the target (the instrument check).
    attention_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r} for {self.claim!r}")


# Fewer training seeds than this cannot reproduce a claim: with one seed a sign is a coin flip,
# with three all agree by chance one time in eight (config findings.min_seeds).
MIN_SEEDS = 3
# A raw CoMMA whose visible target removes less than this fraction of the masked tokens' loss
# (D, mean over p) barely uses the target; claims read from its attention are inconclusive
# (config findings.min_dependency).
MIN_DEPENDENCY = 0.05


def sign_test_p(differences: Iterable[float], *, expected_sign: int = 1) -> float:
    """One-sided exact sign test: the probability that at least as many seeds as here have
    the expected sign if each sign were a fair coin (ties count against the claim)."""
    values = np.asarray(list(differences), dtype=float) * expected_sign
    values = values[~np.isnan(values)]
    n, k = values.size, int((values > 0).sum())
    return float(sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n) if n else float("nan")


def seed_verdict(
    differences: Iterable[float], *, expected_sign: int = 1, min_seeds: int = MIN_SEEDS
) -> str:
    """Verdict from per-seed differences (the unit of replication) that the claim says have
    `expected_sign`: inconclusive with fewer than `min_seeds` seeds; else reproduced if every
    seed has that sign, inconclusive if only their mean has, not reproduced otherwise (the
    mean is zero or has the other sign)."""
    values = np.asarray(list(differences), dtype=float) * expected_sign
    values = values[~np.isnan(values)]
    if values.size == 0:
        return NOT_MEASURED
    if values.size < min_seeds:
        return INCONCLUSIVE
    if (values > 0).all():
        return REPRODUCED
    return INCONCLUSIVE if values.mean() > 0 else NOT_REPRODUCED


def too_few_seeds(verdict: str, seeds: int, min_seeds: int = MIN_SEEDS) -> str:
    """`verdict`, except that a claim reproduced in fewer than `min_seeds` seeds is only
    inconclusive."""
    return INCONCLUSIVE if verdict == REPRODUCED and seeds < min_seeds else verdict


def graded_verdict(holds: bool, holds_partly: bool) -> str:
    """The verdict of a claim checked directly rather than on per-seed differences: reproduced
    if it `holds` (in every seed; for several metrics, in each), inconclusive if it
    `holds_partly` (only for the seed means; in some metric), not reproduced otherwise."""
    return REPRODUCED if holds else INCONCLUSIVE if holds_partly else NOT_REPRODUCED


def seed_note(seeds: int, min_seeds: int) -> str:
    """The evidence's closing note when there are fewer than `min_seeds` seeds (else "")."""
    if seeds >= min_seeds:
        return ""
    return (
        f" Only {seeds} seed(s), fewer than the {min_seeds} a reproduced claim needs "
        "(findings.min_seeds): inconclusive at best."
    )


def mean_over_std(mean: float, spread: float) -> str:
    """mean / std of per-seed differences as evidence text; "n/a" for a spread at rounding-error
    level (identical seeds), which gives no ratio worth printing."""
    return f"{mean / spread:+.2f}" if spread > 1e-9 * max(1.0, abs(mean)) else "n/a"
