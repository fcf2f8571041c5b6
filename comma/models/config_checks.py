"""Checks every model family's config shares: a known task, a vocabulary for each token side,
and attention shapes that can work (heads dividing d_model). Each config's ``__post_init__``
collects the problems and raises them together, naming the family."""

from __future__ import annotations

from typing import Any

from comma.tasks import TASKS, check_task

__all__ = ["common_problems"]


def common_problems(config: Any, who: str, min_vocab: int = 1) -> list[str]:
    """The task, vocabulary and attention-shape problems of `config` (a dataclass with task,
    src_vocab, tgt_vocab, d_model, heads, and optionally conv_strides, normalized to a tuple
    here); `who` names the family in messages ("teacher", "model", "CoMMA"). Raises ValueError
    at once for an unknown task."""
    check_task(config.task)
    if hasattr(config, "conv_strides"):
        object.__setattr__(config, "conv_strides", tuple(int(s) for s in config.conv_strides))
    problems = []
    for side in ("src", "tgt"):
        if side in TASKS[config.task].mel_sides:
            continue
        vocab = getattr(config, f"{side}_vocab")
        if not vocab or vocab < min_vocab:
            needs = f" > {min_vocab - 1} (specials)" if min_vocab > 1 else ""
            problems.append(f"a {config.task} {who} needs {side}_vocab{needs}")
    if config.d_model < 1 or config.heads < 1:
        problems.append(f"d_model and heads must be >= 1, got {config.d_model}, {config.heads}")
    elif config.d_model % config.heads or config.d_model % 2:
        problems.append(
            f"d_model {config.d_model} must be even and divisible by heads {config.heads}"
        )
    return problems
