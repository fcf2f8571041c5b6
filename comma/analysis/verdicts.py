"""The verdict vocabulary of the study's findings, shared by every check.

A check of one of the paper's claims returns a :class:`Finding`: the claim, one of the four
verdicts below, and the numbers behind it."""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r} for {self.claim!r}")


def seed_verdict(differences: Iterable[float], *, expected_sign: int = 1) -> str:
    """Verdict from per-seed differences (the unit of replication) that the claim says have
    `expected_sign`: reproduced if every seed has that sign, inconclusive if only their mean
    has, not reproduced otherwise (the mean is zero or has the other sign)."""
    values = np.asarray(list(differences), dtype=float) * expected_sign
    values = values[~np.isnan(values)]
    if values.size == 0:
        return NOT_MEASURED
    if (values > 0).all():
        return REPRODUCED
    return INCONCLUSIVE if values.mean() > 0 else NOT_REPRODUCED
