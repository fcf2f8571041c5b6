"""The verdict vocabulary of the study's findings, shared by every check, and the rule that
turns numbers into a verdict (docs/verdicts.md says why this rule).

A check of one of the paper's claims returns a :class:`Finding`: the claim, one of the four
verdicts below, the numbers behind it and, where the claim is a statistical one, its
:class:`ClaimTest`: the effect in the claim's direction, its 95 % confidence interval, a one-sided
p-value over the training seeds (the unit of replication), the number of seeds (the minimum
over the tasks the claim reads) and the noise floor (:mod:`comma.analysis.noise_floor`).

:func:`judge`: reproduced only with at least `min_seeds` seeds per task, p <= alpha
after Holm's correction over the tested claims of one findings file (:func:`holm`) and an
effect above the floor; not reproduced when the estimate contradicts the claim; inconclusive
otherwise. The t-tests (:func:`one_sample_test`, :func:`welch_test`) are exact for normal
per-seed values and reach 0.05 with three seeds; a claim made of several comparisons that must
all hold is an intersection-union test (:func:`all_of`: the largest component p)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
NOT_REPRODUCED = "not reproduced"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_MEASURED)

# Family-wise error rate of one findings file (Holm over its tested claims).
ALPHA = 0.05


@dataclass(frozen=True)
class ClaimTest:
    """The statistical test of one claim. `effect`: the estimate in the claim's direction
    (positive supports it); `low`, `high`: its two-sided 95 % confidence interval; `p`: the
    one-sided p-value against "no effect or the other way"; `seeds`: the fewest seeds of any
    task the claim reads; `floor`: the noise floor the effect must exceed (None: no twin runs
    measure one for this kind of effect, judged by the test alone; NaN: it should be measured
    and is not, so the claim cannot be reproduced); `p_holm`: `p` after Holm's correction."""

    effect: float
    low: float
    high: float
    p: float
    seeds: int
    method: str
    floor: float | None = None
    p_holm: float = math.nan

    def with_floor(self, floor: float | None) -> ClaimTest:
        return dataclasses.replace(self, floor=floor)

    def above_floor(self) -> bool:
        return self.floor is None or (not math.isnan(self.floor) and self.effect > self.floor)

    def describe(self, digits: int = 4) -> str:
        floor = (
            "none applies (no twin runs of this kind)"
            if self.floor is None
            else "not measured (no raw/rawkept twin runs): cannot be reproduced"
            if math.isnan(self.floor)
            else f"{self.floor:.{digits}f}"
        )
        ci = (
            f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
            if np.isfinite([self.low, self.high]).all()
            else "n/a"
        )
        return (
            f"Test: {self.method}, {self.seeds} seed(s) (fewest of any task read): effect "
            f"{self.effect:+.{digits}f}, 95 % CI {ci}, one-sided p = {_p_text(self.p)}; noise "
            f"floor {floor}."
        )


def _p_text(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"


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
    # The statistical test behind the verdict (None: the claim is not a tested one).
    test: ClaimTest | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r} for {self.claim!r}")


# Fewer training seeds than this (in any task a claim reads) cannot reproduce it: the t-test
# over seeds needs 3 to reach 0.05 at all (config findings.min_seeds, whose floor is 3).
MIN_SEEDS = 3
# A raw CoMMA whose visible target removes less than this fraction of the masked tokens' loss
# (D, mean over p) in any seed barely uses the target; claims read from its attention are
# inconclusive (config findings.min_dependency).
MIN_DEPENDENCY = 0.05


def _clean(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[~np.isnan(array)]


def _t_result(
    effect: float, se: float, df: float, seeds: int, method: str, floor: float | None
) -> ClaimTest:
    """One-sided p and 95 % CI of `effect` with standard error `se` on `df` degrees of
    freedom. A zero standard error (identical seeds) gives p 0 or 1 by the sign of the
    effect and a CI of the point; too few seeds for a variance give NaN."""
    if not np.isfinite(df) or df < 1 or not np.isfinite(se):
        return ClaimTest(effect, math.nan, math.nan, math.nan, seeds, method, floor)
    if se <= 1e-12 * max(1.0, abs(effect)):
        p = 0.0 if effect > 0 else 1.0 if effect < 0 else 0.5
        return ClaimTest(effect, effect, effect, p, seeds, method, floor)
    t = effect / se
    half = float(stats.t.ppf(0.975, df)) * se
    return ClaimTest(
        effect, effect - half, effect + half, float(stats.t.sf(t, df)), seeds, method, floor
    )


def one_sample_test(
    values: Iterable[float], *, floor: float | None = None, what: str = "per-seed effects"
) -> ClaimTest:
    """One-sided one-sample t-test that the mean of `values` (one per seed: a paired
    difference, a slope, a gain; positive supports the claim) is above 0."""
    x = _clean(values)
    n = x.size
    if n == 0:
        return ClaimTest(math.nan, math.nan, math.nan, math.nan, 0, "no values", floor)
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return _t_result(float(x.mean()), se, n - 1, n, f"one-sample t-test over {what}", floor)


def welch_test(
    higher: Iterable[float],
    lower: Iterable[float],
    *,
    floor: float | None = None,
    what: str = "seeds",
) -> ClaimTest:
    """One-sided Welch t-test that `higher` has the larger mean (two independent sets of
    per-seed values, e.g. two tasks' CoMMA runs): the effect is the difference of means,
    the degrees of freedom Welch-Satterthwaite's."""
    a, b = _clean(higher), _clean(lower)
    seeds = min(a.size, b.size)
    method = f"Welch t-test over {what}"
    if seeds == 0:
        return ClaimTest(math.nan, math.nan, math.nan, math.nan, 0, method, floor)
    effect = float(a.mean() - b.mean())
    if seeds < 2:
        return _t_result(effect, math.nan, math.nan, seeds, method, floor)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se <= 1e-12 * max(1.0, abs(effect)):
        return _t_result(effect, se, a.size + b.size - 2, seeds, method, floor)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return _t_result(effect, se, df, seeds, method, floor)


def all_of(tests: Sequence[ClaimTest], what: str = "") -> ClaimTest:
    """The intersection-union test of a claim made of several comparisons that must all
    hold (a ranking at every p, a slope for every task): its p is the largest component p
    (no multiplicity correction needed), its effect and CI those of the deciding component
    (one that contradicts the claim, if any; else the one with the largest p), its seeds the
    fewest of any component."""
    if not tests:
        raise ValueError("all_of needs at least one test")
    contra = [t for t in tests if not t.effect > 0]
    decider = min(contra, key=lambda t: t.effect) if contra else max(tests, key=_p_key)
    p = max(_p_key(t) for t in tests)
    method = decider.method + (f"; all {len(tests)} {what} must hold, largest p" if what else "")
    return dataclasses.replace(decider, p=p, seeds=min(t.seeds for t in tests), method=method)


def _p_key(test: ClaimTest) -> float:
    return math.inf if math.isnan(test.p) else test.p


def judge(test: ClaimTest, min_seeds: int = MIN_SEEDS, alpha: float = ALPHA) -> str:
    """Inconclusive with fewer than `min_seeds` seeds in a task the claim reads; not
    reproduced if the effect estimate contradicts the claim (zero or the other way);
    reproduced if p (Holm-adjusted where :func:`holm` has set it) is at most `alpha` and the
    effect is above the noise floor; inconclusive otherwise."""
    if test.seeds < min_seeds:
        return INCONCLUSIVE
    if not test.effect > 0:
        return NOT_REPRODUCED
    p = test.p if math.isnan(test.p_holm) else test.p_holm
    return REPRODUCED if p <= alpha and test.above_floor() else INCONCLUSIVE


def gated(verdict: str, test: ClaimTest, min_seeds: int = MIN_SEEDS, alpha: float = ALPHA) -> str:
    """`verdict` (of a claim with conditions of its own), except that "reproduced" also needs
    `test` to reproduce the claim (:func:`judge`); else it is inconclusive."""
    if verdict == REPRODUCED and judge(test, min_seeds, alpha) != REPRODUCED:
        return INCONCLUSIVE
    return verdict


def tested(verdict: str, evidence: str, test: ClaimTest, min_seeds: int, **fields) -> dict:
    """Keyword arguments of a tested :class:`Finding`: `verdict` gated by `test`, the
    evidence closed by the test's numbers and the seed note."""
    return dict(
        verdict=gated(verdict, test, min_seeds),
        evidence=f"{evidence} {test.describe()}{seed_note(test.seeds, min_seeds)}",
        test=test,
        **fields,
    )


def holm(findings: Sequence[Finding], alpha: float = ALPHA) -> list[Finding]:
    """Holm's step-down correction over the findings of one file that carry a test with a
    p-value: each test gets its adjusted p, a reproduced verdict whose adjusted p is above
    `alpha` becomes inconclusive, and the evidence says so. Holm controls the chance of any
    false "reproduced" in the file at `alpha` whatever the dependence between the claims
    (R, T and D of one claim are strongly dependent)."""
    index = [i for i, f in enumerate(findings) if f.test is not None and not math.isnan(f.test.p)]
    m = len(index)
    adjusted, running = {}, 0.0
    for rank, i in enumerate(sorted(index, key=lambda i: findings[i].test.p)):
        running = max(running, min(1.0, (m - rank) * findings[i].test.p))
        adjusted[i] = running
    out = list(findings)
    for i, p_holm in adjusted.items():
        f = findings[i]
        test = dataclasses.replace(f.test, p_holm=p_holm)
        verdict = f.verdict
        note = f" Holm-adjusted over the {m} tested claims of this file: p = {_p_text(p_holm)}"
        if verdict == REPRODUCED and p_holm > alpha:
            verdict = INCONCLUSIVE
            note += f" > {alpha:g}: inconclusive ({REPRODUCED} before the correction)"
        out[i] = dataclasses.replace(
            f, verdict=verdict, test=test, evidence=f.evidence + note + "."
        )
    return out


def graded_verdict(holds: bool, holds_partly: bool) -> str:
    """The verdict of a claim checked directly: reproduced if it `holds`, inconclusive if it
    `holds_partly`, not reproduced otherwise (tested claims then pass :func:`gated`)."""
    return REPRODUCED if holds else INCONCLUSIVE if holds_partly else NOT_REPRODUCED


def seed_note(seeds: int, min_seeds: int) -> str:
    """The evidence's closing note when there are fewer than `min_seeds` seeds (else "")."""
    if seeds >= min_seeds:
        return ""
    return (
        f" Only {seeds} seed(s) in a task it reads, fewer than the {min_seeds} a reproduced "
        "claim needs (findings.min_seeds): inconclusive at best."
    )
