"""A training run's settings, typed and checked once (the ``train`` block of a model's config):
:class:`TrainConfig`, what :func:`comma.engine.trainer.train` runs by. Its fields, except those
a run may change and still resume (``comma.engine.checkpoint.RESUMABLE_CHANGES``), are part of
the run's fingerprint (:func:`comma.engine.checkpoint.run_fingerprint`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from comma.data.batching import MEASURES

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (the `train` block of a model's config).

    max_tokens / max_sentences bound the GLOBAL batch (what one update sees, summed over
    processes); budget_length is how a sentence's size is measured ("max" or "sum" of its
    sides, see comma.data.batching). clip_norm 0 disables clipping. threads None keeps torch's
    default."""

    max_steps: int
    lr: float
    warmup_steps: int
    seed: int
    max_tokens: int | None = None
    max_sentences: int | None = None
    budget_length: str = "max"
    clip_norm: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    checkpoint_every: int = 1000
    threads: int | None = None
    deterministic: bool = True
    bf16: bool = True
    progress: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self):
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        problems = []
        if self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 1:
            problems.append(f"warmup_steps must be >= 1, got {self.warmup_steps}")
        if self.max_tokens is None and self.max_sentences is None:
            problems.append("give a batch budget: max_tokens and/or max_sentences")
        if self.budget_length not in MEASURES:
            problems.append(f"budget_length must be one of {MEASURES}, got {self.budget_length!r}")
        if self.clip_norm < 0:
            problems.append(f"clip_norm must be >= 0, got {self.clip_norm}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            problems.append(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        return cls(**values)
