"""Masked-loss dependency D(p): how much the visible target helps predict the masked target.

A measure of target-token dependency that reads neither attention nor lengths (beyond the
paper, which uses the attention density ratio R(p) of :mod:`comma.ratio`). For one trained
CoMMA, one sentence and the positions masked at ratio p:

    L_ctx(p)  = mean loss of those positions with the rest of the target visible,
    L_none    = mean loss of the same positions with the whole target masked (p = 1),
    D_s(p)    = 1 - L_ctx(p) / L_none,

and D(p) is the mean of D_s over the sentences with a masked position, as R(p) in eq. 3. The
loss is the model's own: cross-entropy in nats for tokens, the L1 over bins of CMVN-normalized
log-mel frames. Dividing by L_none makes D a fraction, comparable across tasks and units: 0
when the visible target does not help at all (target tokens independent given the source), 1
when it determines the masked tokens exactly (e.g. tokens that copy each other); negative
when the visible target misleads the model.
"""

from __future__ import annotations

import torch

__all__ = ["loss_dependency"]


def loss_dependency(
    context: torch.Tensor, no_target: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """Per-sentence D_s ``[B]`` from the summed losses of each sentence's masked positions,
    with the target visible (`context`, ``[B]``) and with the whole target masked
    (`no_target`, ``[B]``, summed over the same positions); `masked` ``[B]`` counts those
    positions. NaN where none is masked, as R's eq. 2 for a sentence without a predicted
    token. A sentence predicted without any loss from the source alone gets 0: the target
    cannot help it."""
    if not (context.shape == no_target.shape == masked.shape) or context.dim() != 1:
        raise ValueError(
            "need three [B] tensors of one shape, got "
            f"{tuple(context.shape)}, {tuple(no_target.shape)} and {tuple(masked.shape)}"
        )
    context, no_target = context.double(), no_target.double()
    if bool((no_target < 0).any()) or bool((context < 0).any()):
        raise ValueError("loss sums must be >= 0")
    dependency = 1.0 - context / no_target.clamp(min=torch.finfo(torch.float64).tiny)
    dependency = torch.where(no_target > 0, dependency, torch.zeros_like(dependency))
    return torch.where(masked > 0, dependency, torch.full_like(dependency, torch.nan))
