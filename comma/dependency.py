"""Masked-loss dependency D(p): how much the visible target helps predict the masked target.

A measure of target-token dependency that reads neither attention nor lengths (beyond the
paper, which uses the attention density ratio R(p) of :mod:`comma.ratio`). For one trained
CoMMA, one sentence and the positions masked at ratio p:

    L_ctx(p)  = mean loss of those positions with the rest of the target visible,
    L_none    = mean loss of the same positions with the whole target masked (p = 1),
    D_s(p)    = 1 - L_ctx(p) / L_none,

and the corpus's D(p) = 1 - sum L_ctx / sum L_none, the losses summed over every masked position
of every sentence (:func:`corpus_dependency`). Not the mean of the per-sentence D_s as R(p) in
eq. 3 takes it: a sentence whose few masked tokens the source alone predicts almost for free
(L_none near 0, e.g. one masked full stop at p = 0.1) has an unbounded D_s, and a handful of
them would decide the mean; as a ratio of sums every masked token weighs the same. The per-
sentence D_s (:func:`loss_dependency`) stays for length-matched comparisons. The
loss is the model's own: cross-entropy in nats for tokens, the L1 over bins of CMVN-normalized
log-mel frames. Dividing by L_none makes D a fraction, comparable across tasks and units: 0
when the visible target does not help at all (target tokens independent given the source), 1
when it determines the masked tokens exactly (e.g. tokens that copy each other); negative
when the visible target misleads the model.
"""

from __future__ import annotations

import torch

__all__ = ["loss_dependency", "corpus_dependency", "dependency_ci"]


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


def _summed_losses(context, no_target) -> tuple[torch.Tensor, torch.Tensor]:
    context, no_target = torch.as_tensor(context).double(), torch.as_tensor(no_target).double()
    if context.shape != no_target.shape or context.dim() != 1:
        raise ValueError(
            f"need two [S] tensors of one shape, got {tuple(context.shape)} and "
            f"{tuple(no_target.shape)}"
        )
    if bool((no_target < 0).any()) or bool((context < 0).any()):
        raise ValueError("loss sums must be >= 0")
    return context, no_target


def corpus_dependency(context: torch.Tensor, no_target: torch.Tensor) -> float:
    """D(p) of a corpus: ``1 - sum(context) / sum(no_target)`` over sentences ``[S]`` (each
    the summed loss of its masked positions, with the rest of the target visible and with the
    whole target masked). NaN when nothing is masked or the source alone predicts every masked
    position without loss."""
    context, no_target = _summed_losses(context, no_target)
    total = float(no_target.sum())
    return 1.0 - float(context.sum()) / total if total > 0 else float("nan")


def dependency_ci(
    context: torch.Tensor,
    no_target: torch.Tensor,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`corpus_dependency` over sentences: `n_boot`
    resamples of the sentences with replacement (a generator seeded with `seed`), each's
    ratio of sums, and the ``alpha/2`` and ``1 - alpha/2`` quantiles. Sentence-sampling noise
    only, as :func:`comma.ratio.bootstrap_ci`."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    context, no_target = _summed_losses(context, no_target)
    count = context.numel()
    if count == 0 or float(no_target.sum()) <= 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    block = max(1, (1 << 22) // count)  # index matrices of ~32 MB whatever the corpus size
    values = []
    for start in range(0, n_boot, block):
        picks = torch.randint(count, (min(block, n_boot - start), count), generator=generator)
        values.append(1.0 - context[picks].sum(dim=1) / no_target[picks].sum(dim=1))
    quantiles = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    low, high = torch.quantile(torch.cat(values), quantiles).tolist()
    return low, high
