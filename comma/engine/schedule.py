"""The learning-rate schedule of every training run: fairseq's inverse square root with linear
warm-up (:func:`inverse_sqrt_lr`), set on the optimizer before each update by
:class:`InverseSqrtSchedule`, whose state the trainer (:mod:`comma.engine.trainer`) checkpoints."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["inverse_sqrt_lr", "InverseSqrtSchedule"]


def inverse_sqrt_lr(step: int, peak_lr: float, warmup_steps: int) -> float:
    """Learning rate of update `step` (1-based): ``peak * step / warmup`` during warm-up, then
    ``peak * sqrt(warmup / step)``.

    fairseq's inverse_sqrt with ``warmup_init_lr = 0``, except that fairseq gives update k the
    rate of k - 1 (its first update has lr 0); here the first update already learns."""
    if step < 1:
        raise ValueError(f"updates are numbered from 1, got {step}")
    if step <= warmup_steps:
        return peak_lr * step / warmup_steps
    return peak_lr * math.sqrt(warmup_steps / step)


class InverseSqrtSchedule:
    """Sets the optimizer's learning rate for each update (see :func:`inverse_sqrt_lr`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, warmup_steps: int):
        self.optimizer = optimizer
        self.peak_lr = peak_lr
        self.warmup_steps = warmup_steps
        self.last_step = 0

    def step(self, step: int) -> float:
        lr = inverse_sqrt_lr(step, self.peak_lr, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_step = step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": "inverse_sqrt",
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peak_lr = float(state["peak_lr"])
        self.warmup_steps = int(state["warmup_steps"])
        self.last_step = int(state["last_step"])
