"""The attention density ratio R(p) of CoMMA (paper section 2.2, eq. 1-3).

For a target position i of a sentence with N target and M source tokens, CoMMA's
mix-attention row A_i spreads one softmax over the N target and the M source positions, in
that column order. The density ratio of token i (eq. 1) compares the mean weight per target
position with the mean weight per source position::

    alpha_i = (1/N sum_{j<=N} A_ij) / (1/N sum_{j<=N} A_ij + 1/M sum_{N<j<=N+M} A_ij)

A sentence's value (eq. 2) is the mean of alpha_i over its predicted (masked) positions M_p,
and R(p) (eq. 3) the mean of that over the test sentences.

Caution: alpha_i divides by the lengths, so the same attention gives a higher R when M > N
(source weight is spread over more positions) and a lower one when N > M. Compare tasks at
their length ratio, and report the raw target share T (:func:`target_attention_share`) and
M/N beside R.

Conventions shared by every function here:

* ``attn`` is ``[B, N_max, N_max + M_max]``: row i is target position i; columns ``0..N_max-1``
  are the target positions (valid ``j < N_b``), columns ``N_max..N_max+M_max-1`` the source
  positions (valid ``N_max + j`` for ``j < M_b``). Average heads/layers before calling,
  and keep only the target rows of a full ``[N_max + M_max, N_max + M_max]`` map.
* Padding columns are ignored, whatever they hold (even NaN): the target and source sums use
  the valid columns only. eq. 1 assumes a row sums to 1 over its valid columns; alpha_i is a
  ratio of the two sums, so it does not depend on that normalization at all.
* ``predicted`` is bool ``[B, N_max]``, True at the predicted positions; it must be False on
  padding rows ``i >= N_b``.

Example, on your own model's attention (here two hand-made sentences)::

    >>> import torch
    >>> from comma.ratio import attention_density_ratio, ratio_over_corpus
    >>> # sentence 0: N=2, M=2; sentence 1: N=1, M=2 (its row 1 and column 1 are padding)
    >>> attn = torch.tensor([[[0.1, 0.3, 0.4, 0.2], [0.2, 0.2, 0.3, 0.3]],
    ...                      [[0.5, 9.9, 0.25, 0.25], [0.0, 0.0, 0.0, 0.0]]])
    >>> src_len, tgt_len = torch.tensor([2, 2]), torch.tensor([2, 1])
    >>> predicted = torch.tensor([[True, False], [True, False]])
    >>> per_sentence = attention_density_ratio(attn, src_len, tgt_len, predicted)
    >>> per_sentence  # (0.4/2) / (0.4/2 + 0.6/2) and (0.5/1) / (0.5/1 + 0.5/2)
    tensor([0.4000, 0.6667])
    >>> round(ratio_over_corpus(per_sentence), 4)  # R(p), eq. 3
    0.5333
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from comma.nn.masking import check_lengths, valid_positions

__all__ = [
    "token_density_ratio",
    "attention_density_ratio",
    "target_attention_share",
    "ratio_over_corpus",
    "bootstrap_ci",
]


def _target_and_source_mass(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the inputs; return (target mass, source mass, valid rows, N, M).

    target mass ``[B, N_max]`` = sum of A_ij over the valid target columns, source mass
    ``[B, N_max]`` = sum over the valid source columns, valid rows bool ``[B, N_max]``, and the
    lengths as float ``[B]``; sums are in float32 at least (float64 stays float64)."""
    if not isinstance(attn, torch.Tensor) or attn.dim() != 3:
        shape = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn)
        raise ValueError(f"attn must have shape [B, N_max, N_max + M_max], got {shape}")
    batch_size, n_max, n_columns = attn.shape
    m_max = n_columns - n_max
    if m_max < 1:
        raise ValueError(
            f"attn must have shape [B, N_max, N_max + M_max] with M_max >= 1, got "
            f"{tuple(attn.shape)} (N_max = {n_max} rows leaves {m_max} source columns)"
        )
    src_len = check_lengths(src_len, "src_len", batch_size, max_len=m_max)
    tgt_len = check_lengths(tgt_len, "tgt_len", batch_size, max_len=n_max)
    dtype = torch.promote_types(attn.dtype, torch.float32)
    attn = attn.to(dtype)
    target_cols = valid_positions(tgt_len, n_max)  # [B, N_max]
    source_cols = valid_positions(src_len, m_max)  # [B, M_max]
    zero = attn.new_zeros(())
    # torch.where, not a product, so NaN/inf garbage in padding columns cannot leak in.
    target_mass = torch.where(target_cols[:, None, :], attn[:, :, :n_max], zero).sum(-1)
    source_mass = torch.where(source_cols[:, None, :], attn[:, :, n_max:], zero).sum(-1)
    return target_mass, source_mass, target_cols, tgt_len.to(dtype), src_len.to(dtype)


def _alpha(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_i of eq. 1 ``[B, N_max]`` (garbage on padding rows) and the valid rows."""
    target_mass, source_mass, valid_rows, n, m = _target_and_source_mass(attn, src_len, tgt_len)
    target_density = target_mass / n[:, None]  # [B, N_max]
    source_density = source_mass / m[:, None]  # [B, N_max]
    return target_density / (target_density + source_density), valid_rows


def token_density_ratio(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> torch.Tensor:
    """alpha_i of eq. 1 for every target position: float ``[B, N_max]``, NaN on padding rows.

    Same arguments as :func:`attention_density_ratio`. A valid row with no weight on any
    valid column (0/0) is NaN too."""
    alpha, valid_rows = _alpha(attn, src_len, tgt_len)
    return alpha.masked_fill(~valid_rows, float("nan"))


def _check_predicted(predicted: torch.Tensor, valid_rows: torch.Tensor) -> torch.Tensor:
    if not isinstance(predicted, torch.Tensor) or predicted.shape != valid_rows.shape:
        shape = tuple(predicted.shape) if isinstance(predicted, torch.Tensor) else type(predicted)
        raise ValueError(f"predicted must have shape {tuple(valid_rows.shape)}, got {shape}")
    if predicted.dtype != torch.bool:
        raise ValueError(f"predicted must be a bool tensor, got dtype {predicted.dtype}")
    if bool((predicted & ~valid_rows).any()):
        raise ValueError("predicted marks padding positions (i >= tgt_len[b])")
    return predicted


def _mean_over_predicted(values: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B, N_max]`` over the predicted positions: ``[B]``, NaN if none."""
    zero = values.new_zeros(())
    total = torch.where(predicted, values, zero).sum(-1)  # [B]
    count = predicted.sum(-1)  # [B]
    mean = total / count.clamp_min(1).to(values.dtype)
    return mean.masked_fill(count == 0, float("nan"))


def attention_density_ratio(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor, predicted: torch.Tensor
) -> torch.Tensor:
    """Per-sentence attention density ratio (eq. 2): mean of alpha_i (eq. 1) over M_p.

    Args:
        attn: float ``[B, N_max, N_max + M_max]`` mix-attention, target columns first, then
            source columns (see the module docstring; padding columns are ignored).
        src_len: int ``[B]``, M_b >= 1.
        tgt_len: int ``[B]``, N_b >= 1.
        predicted: bool ``[B, N_max]``, the masked (predicted) target positions M_p.

    Returns:
        float ``[B]`` (float32, or float64 for float64 input): the mean of alpha_i over the
        predicted positions of each sentence; NaN for a sentence with no predicted token.
    """
    alpha, valid_rows = _alpha(attn, src_len, tgt_len)  # [B, N_max], [B, N_max]
    predicted = _check_predicted(predicted, valid_rows)
    return _mean_over_predicted(alpha, predicted)


def target_attention_share(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor, predicted: torch.Tensor
) -> torch.Tensor:
    """Raw target share T per sentence: mean over M_p of sum_{j<=N} A_ij, no length division.

    Reported beside R because it does not depend on M/N. Computed as
    ``target mass / (target mass + source mass)`` over the valid columns, which equals
    sum_{j<=N} A_ij when rows sum to 1 over their valid columns (the eq. 1 assumption) and
    stays in [0, 1] when padding columns hold weight. Same arguments and NaN rule as
    :func:`attention_density_ratio`; returns float ``[B]``."""
    target_mass, source_mass, valid_rows, _, _ = _target_and_source_mass(attn, src_len, tgt_len)
    predicted = _check_predicted(predicted, valid_rows)
    share = target_mass / (target_mass + source_mass)  # [B, N_max]
    return _mean_over_predicted(share, predicted)


def _as_float64_vector(per_sentence: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    values = torch.as_tensor(
        per_sentence.detach().cpu() if isinstance(per_sentence, torch.Tensor) else per_sentence,
        dtype=torch.float64,
    )
    if values.dim() != 1:
        raise ValueError(f"per_sentence must have shape [B], got {tuple(values.shape)}")
    return values


def ratio_over_corpus(per_sentence: torch.Tensor | np.ndarray | Sequence[float]) -> float:
    """R(p) of eq. 3: mean of the per-sentence ratios over sentences with a predicted token.

    `per_sentence` is ``[B]`` from :func:`attention_density_ratio` (NaN = no predicted
    token, skipped). Returns NaN if no sentence has a predicted token (e.g. p = 0)."""
    values = _as_float64_vector(per_sentence)
    defined = values[~torch.isnan(values)]
    return float(defined.mean()) if defined.numel() else float("nan")


def bootstrap_ci(
    per_sentence: torch.Tensor | np.ndarray | Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of R(p) over sentences.

    Resamples the sentences with a predicted token (NaN entries dropped, as in eq. 3) with
    replacement `n_boot` times, takes each resample's mean, and returns the ``alpha/2`` and
    ``1 - alpha/2`` quantiles (linear interpolation) of those means. Deterministic: draws come
    from a ``torch.Generator`` seeded with `seed`. It measures sentence-sampling noise only;
    seed-to-seed training noise is usually far larger (DESIGN.md), so compare seeds too.
    Returns ``(nan, nan)`` if no sentence is defined."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    values = _as_float64_vector(per_sentence)
    values = values[~torch.isnan(values)]  # [S]
    num_sentences = values.numel()
    if num_sentences == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    # Resample in blocks so the index matrix stays ~32 MB whatever the corpus size.
    block = max(1, (1 << 22) // num_sentences)
    means = []
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        picks = torch.randint(num_sentences, (rows, num_sentences), generator=generator)
        means.append(values[picks].mean(dim=1))  # [rows]
    boot_means = torch.cat(means)  # [n_boot]
    quantiles = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    lo, hi = torch.quantile(boot_means, quantiles).tolist()
    return lo, hi
