"""The corpora of the calibration experiment (target ``calibration``, issue 27;
docs/experiments.md): one mini NMT corpus per level of its hidden register's prior, and a twin
of one level drawn from another corpus seed. ``experiments.calibration`` in the config holds
``levels`` (the priors) and ``twin`` (a level and a generator seed).

Light on purpose (no pandas, no torch), as :mod:`comma.analysis.kd_vs_teacher_plan`:
rules/calibration_inputs.smk reads it while Snakemake builds the DAG, which every `snakemake`
call does (a dry run, each job of a cluster run). The analysis is
:mod:`comma.analysis.calibration`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from comma.mini.nmt import check_register_prior

_DRAW = re.compile(r"(level|twin)(\d+)")
# the {draw} wildcard of rules/calibration.smk
DRAW_WILDCARD = r"(?:level|twin)\d+"


@dataclass(frozen=True)
class Draw:
    """One corpus of the calibration: `name` level<i> (the level's corpus, the study's seed)
    or twin<i> (level i's prior again, from the twin's corpus seed)."""

    name: str
    level: int
    prior: tuple[float, ...]
    corpus_seed: int

    @property
    def twin(self) -> bool:
        return self.name.startswith("twin")


def parse_draw(name: str) -> tuple[str, int]:
    """('level' or 'twin', level index) of a draw's name."""
    match = _DRAW.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} names no calibration draw (level<i> or twin<i>)")
    return match[1], int(match[2])


def calibration_draws(settings: Mapping, seed: int) -> list[Draw]:
    """The corpora of config `experiments.calibration` (`settings`): one per level, drawn with
    the study's `seed`, then the twin. A ValueError names the key of a bad prior or twin."""
    key = "config key experiments.calibration"
    levels = settings.get("levels") or []
    draws = [
        Draw(f"level{i}", i, check_register_prior(prior, f"{key}.levels[{i}]"), seed)
        for i, prior in enumerate(levels)
    ]
    if len(draws) < 2:
        raise ValueError(f"{key}.levels: needs at least 2 levels for a slope, got {len(draws)}")
    twin = settings.get("twin")
    if not isinstance(twin, Mapping) or not {"level", "seed"} <= set(twin):
        raise ValueError(f"{key}.twin: {twin!r} is no mapping with a level and a seed")
    if not 0 <= twin["level"] < len(draws):
        raise ValueError(
            f"{key}.twin.level: {twin['level']} names no level (levels has {len(draws)}: "
            f"0..{len(draws) - 1})"
        )
    if twin["seed"] == seed:
        raise ValueError(
            f"{key}.twin.seed: {seed} is the study's seed, so the twin would be level "
            f"{twin['level']}'s very corpus; give another generator seed"
        )
    level = draws[twin["level"]]
    return [*draws, Draw(f"twin{level.level}", level.level, level.prior, twin["seed"])]
