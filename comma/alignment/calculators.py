"""Alignments from a teacher's encoder-decoder attention: pure calculators on tensors.

Paper section 5.1: the NAR models get an alignment constraint from the AR teacher,
* TTS (FastSpeech): the most diagonal teacher head (by focus rate, ESPnet's duration
  calculator) gives each phoneme a duration = the number of mel frames whose attention argmax
  is that phoneme (:func:`select_diagonal_head`, :func:`durations_from_attention`);
* ASR: the teacher's expected source position E_i of each target token restricts the
  student's attention of token i to the source span E_{i-1}..E_{i+1}
  (:func:`expected_positions`, :func:`window_mask`);
* NMT: the student's attention is pulled to the teacher's by KL (eq. 6,
  :func:`comma.nn.attention.attention_kl_loss`).

Conventions: an attention tensor ends in ``[..., T, M]`` (T target positions: tokens or mel
frames; M source positions); lengths are int ``[B]`` (T_b = `tgt_len`, M_b = `src_len`) and
positions at or beyond a length are padding. Source positions are 0-based column indices,
except E_i and :func:`window_mask`, which use the paper's 1-based j = 1..M.
"""

from __future__ import annotations

import torch

from comma.nn.attention import check_attention, valid_rows_and_columns
from comma.nn.masking import check_lengths, valid_positions

__all__ = [
    "focus_rate",
    "select_diagonal_head",
    "durations_from_attention",
    "expected_positions",
    "window_mask",
]


def focus_rate(attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor) -> torch.Tensor:
    """Focus rate of each head (ESPnet's duration calculator; FastSpeech section 3.3).

    F_bh = 1/T_b sum_{t < T_b} max_{j < M_b} A_bhtj: the mean over valid target positions of
    the largest weight on a valid source position. It is 1 for a hard (one-hot) alignment and
    1/M_b for uniform attention, so the most diagonal head has the highest F.

    Args:
        attn: float ``[B, H, T_max, M_max]`` encoder-decoder attention (flatten layers into H,
            e.g. ``attn.flatten(1, 2)`` for ``[B, L, H, T, M]``). Raw weights; padding rows and
            columns are ignored.
        src_len: int ``[B]``, M_b >= 1.
        tgt_len: int ``[B]``, T_b >= 1.

    Returns:
        float ``[B, H]``.
    """
    check_attention(attn, "attn", "[B, H, T_max, M_max]", ndim=4)
    batch_size, _, t_max, m_max = attn.shape
    _, tgt_len, rows, cols = valid_rows_and_columns(batch_size, t_max, m_max, src_len, tgt_len)
    peak = attn.masked_fill(~cols[:, None, None, :], float("-inf")).amax(-1)  # [B, H, T]
    peak = peak.masked_fill(~rows[:, None, :], 0.0)  # [B, H, T]
    return peak.sum(-1) / tgt_len[:, None].to(peak.dtype)  # [B, H]


def select_diagonal_head(
    attn: torch.Tensor,
    src_len: torch.Tensor,
    tgt_len: torch.Tensor,
    per_sentence: bool = False,
) -> torch.Tensor:
    """Index of the most diagonal head: the argmax of :func:`focus_rate`.

    Default (``per_sentence=False``): one head for the whole batch, the argmax of the focus
    rate averaged over sentences, as ESPnet does; returns a long scalar, use
    ``attn[:, head]``. Durations from one consistent head are what FastSpeech trains on; for a
    corpus-wide choice, sum ``focus_rate(...).sum(0)`` over batches and take the argmax.
    ``per_sentence=True`` returns long ``[B]`` (each sentence's own best head), use
    ``attn[torch.arange(B), head]``; it tolerates a head that is diagonal only on some
    sentences. Ties go to the lowest index. Arguments as in :func:`focus_rate`."""
    rates = focus_rate(attn, src_len, tgt_len)  # [B, H]
    return rates.argmax(-1) if per_sentence else rates.mean(0).argmax()


def durations_from_attention(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> torch.Tensor:
    """Token durations from one teacher head (FastSpeech): argmax counts over valid frames.

    d_bj = #{t < T_b : argmax_{k < M_b} A_btk = j}, so ``d[b].sum() == T_b`` exactly and
    ``d[b, j] = 0`` for padding tokens ``j >= M_b``. Ties go to the lower source index; a
    token no frame peaks on gets duration 0 (the length regulator skips it).

    Args:
        attn: float ``[B, T_mel, M_max]``, the chosen head (see :func:`select_diagonal_head`).
        src_len: int ``[B]``, M_b >= 1 (phonemes).
        tgt_len: int ``[B]``, T_b >= 1 (mel frames).

    Returns:
        long ``[B, M_max]``.
    """
    check_attention(attn, "attn", "[B, T_mel, M_max]", ndim=3)
    batch_size, t_max, m_max = attn.shape
    _, _, rows, cols = valid_rows_and_columns(batch_size, t_max, m_max, src_len, tgt_len)
    valid = rows[:, :, None] & cols[:, None, :]  # [B, T, M]
    if not bool(torch.isfinite(attn[valid]).all()):
        raise ValueError("attn holds NaN or inf at valid (frame, token) positions")
    peak_token = attn.masked_fill(~cols[:, None, :], float("-inf")).argmax(-1)  # [B, T]
    durations = torch.zeros(batch_size, m_max, dtype=torch.long, device=attn.device)
    return durations.scatter_add_(1, peak_token, rows.long())  # [B, M]


def expected_positions(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> torch.Tensor:
    """Expected source position of each target token (section 5.1, ASR), 1-based.

    E_i = round(sum_{j=1}^{M} j * A'_ij), where A'_i is the teacher's row renormalized over
    the valid source positions (so weight on padding columns cannot shift it); halves round
    up, and the result is clamped to [1, M_b] (a row with no valid weight gives 1).

    Args:
        attn: float ``[B, N_max, M_max]`` teacher encoder-decoder attention (one head or an
            average of heads).
        src_len: int ``[B]``, M_b >= 1.
        tgt_len: int ``[B]``, N_b >= 1.

    Returns:
        long ``[B, N_max]``: E_i in 1..M_b on valid rows, 0 on padding rows ``i >= N_b``.
    """
    check_attention(attn, "attn", "[B, N_max, M_max]", ndim=3)
    batch_size, n_max, m_max = attn.shape
    src_len, _, rows, cols = valid_rows_and_columns(batch_size, n_max, m_max, src_len, tgt_len)
    dtype = torch.promote_types(attn.dtype, torch.float64)
    weights = torch.where(cols[:, None, :], attn.to(dtype), 0.0)  # [B, N, M]
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    one_based = torch.arange(1, m_max + 1, dtype=dtype, device=attn.device)  # [M]
    expectation = (weights * one_based).sum(-1)  # [B, N]
    rounded = torch.floor(expectation + 0.5).long()  # round half up
    clamped = torch.minimum(rounded.clamp_min(1), src_len[:, None])  # [B, N]
    return clamped.masked_fill(~rows, 0)


def window_mask(
    expected: torch.Tensor,
    src_len: torch.Tensor,
    tgt_len: torch.Tensor,
    max_src_len: int | None = None,
) -> torch.Tensor:
    """Where each target token may attend under the ASR alignment constraint (section 5.1).

    With 1-based source positions and E from :func:`expected_positions`, target i attends to
    ``lo_i..hi_i`` inclusive:
      * middle tokens: ``min(E_{i-1}, E_{i+1})..max(E_{i-1}, E_{i+1})`` (the paper's
        E_{i-1}..E_{i+1}; min/max keeps a non-monotone E from giving an empty window);
      * the first token: ``1..E_2``; the last token: ``E_{N-1}..M``;
      * a one-token target (N = 1): ``1..M``, everything.
    Every valid row therefore has at least one True; padding rows (i >= N_b) and padding
    columns (j > M_b) are False.

    Padded rows are all False, and a softmax over an all-masked row is NaN. Pass the window
    through :func:`softmax_safe_mask` before using it as an attention mask: it opens padding
    rows entirely (their outputs are padding and must be ignored by the loss anyway) and leaves
    valid rows untouched. The result follows the ``scaled_dot_product_attention`` convention
    (True = may attend); broadcast over heads with ``mask[:, None]``.

    Args:
        expected: long ``[B, N_max]``, E_i in 1..M_b on valid rows (padding rows ignored).
        src_len: int ``[B]``, M_b >= 1.
        tgt_len: int ``[B]``, N_b >= 1.
        max_src_len: M_max, the number of columns (default ``src_len.max()``).

    Returns:
        bool ``[B, N_max, M_max]``.
    """
    if not isinstance(expected, torch.Tensor) or expected.dim() != 2:
        shape = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected)
        raise ValueError(f"expected must have shape [B, N_max], got {shape}")
    if expected.dtype.is_floating_point or expected.dtype == torch.bool:
        raise ValueError(f"expected must be an integer tensor, got dtype {expected.dtype}")
    batch_size, n_max = expected.shape
    src_len = check_lengths(src_len, "src_len", batch_size, max_len=max_src_len)
    tgt_len = check_lengths(tgt_len, "tgt_len", batch_size, max_len=n_max)
    m_max = int(src_len.max()) if max_src_len is None else max_src_len
    rows = valid_positions(tgt_len, n_max)  # [B, N]
    expected = expected.long()
    out_of_range = rows & ((expected < 1) | (expected > src_len[:, None]))
    if bool(out_of_range.any()):
        b, i = (int(x) for x in out_of_range.nonzero()[0])
        raise ValueError(
            f"expected must lie in 1..src_len[b] on valid rows, got E[{b}, {i}] = "
            f"{int(expected[b, i])} with src_len[{b}] = {int(src_len[b])}"
        )
    # E_{i-1} and E_{i+1}, each clamped into the sentence (only used where they exist).
    idx = torch.arange(n_max, device=expected.device)  # [N]
    last = (tgt_len - 1)[:, None]  # [B, 1]
    prev_idx = (idx[None, :] - 1).clamp(min=0).expand(batch_size, n_max)  # [B, N]
    next_idx = torch.minimum(idx[None, :] + 1, last).clamp(min=0)  # [B, N]
    e_prev = expected.gather(1, prev_idx)  # [B, N]
    e_next = expected.gather(1, next_idx)  # [B, N]
    lo = torch.minimum(e_prev, e_next)
    hi = torch.maximum(e_prev, e_next)
    is_first = idx[None, :] == 0  # [1, N]
    is_last = idx[None, :] == last  # [B, N]
    lo = torch.where(is_first, torch.ones_like(lo), lo)
    hi = torch.where(is_first, e_next, hi)
    lo = torch.where(is_last & ~is_first, e_prev, lo)
    hi = torch.where(is_last, src_len[:, None].expand_as(hi), hi)  # also N = 1: 1..M
    position = torch.arange(1, m_max + 1, device=expected.device)  # [M], 1-based
    inside = (position >= lo[:, :, None]) & (position <= hi[:, :, None])  # [B, N, M]
    return inside & rows[:, :, None]
