"""Alignments from a teacher's encoder-decoder attention, and the attention constraints (AC).

Paper section 5.1: the NAR models get an alignment constraint from the AR teacher,
* TTS (FastSpeech): the most diagonal teacher head (by focus rate, ESPnet's duration
  calculator) gives each phoneme a duration = the number of mel frames whose attention argmax
  is that phoneme (:func:`select_diagonal_head`, :func:`durations_from_attention`);
* ASR: the teacher's expected source position E_i of each target token restricts the
  student's attention of token i to the source span E_{i-1}..E_{i+1}
  (:func:`expected_positions`, :func:`window_mask`, :func:`softmax_safe_mask`);
* NMT: the student's attention is pulled to the teacher's by KL (eq. 6,
  :func:`attention_kl_loss`).
Section 5.2 puts the eq. 6 loss on CoMMA too, after renormalizing the source part of its
mix-attention (eq. 7, :func:`normalize_source_attention`) and averaging eq. 8 over heads and
layers.

The alignment stage (rule ``extract_alignment``, :func:`extract_alignment`) runs each teacher
teacher-forced over a training corpus and stores one :class:`TeacherAlignment` per corpus: per
sentence the teacher's attention map (NMT, ASR), durations (TTS) and expected positions (ASR),
which the NAR models and CoMMA's AC variant look up by the batch's sentence indices.

Conventions: an attention tensor ends in ``[..., T, M]`` (T target positions: tokens or mel
frames; M source positions); lengths are int ``[B]`` (T_b = `tgt_len`, M_b = `src_len`) and
positions at or beyond a length are padding. Source positions are 0-based column indices,
except E_i and :func:`window_mask`, which use the paper's 1-based j = 1..M.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from comma.data.packed import PackedSequences
from comma.errors import InputError
from comma.io import torch_load, torch_save, write_json
from comma.masking import check_lengths, valid_positions

log = logging.getLogger(__name__)

__all__ = [
    "focus_rate",
    "select_diagonal_head",
    "durations_from_attention",
    "expected_positions",
    "window_mask",
    "softmax_safe_mask",
    "attention_kl_loss",
    "normalize_source_attention",
    "TeacherAlignment",
    "extract_alignment",
]


def _check_attention(
    attn: torch.Tensor, name: str, layout: str, ndim: int | None, min_ndim: int = 3
) -> None:
    if not isinstance(attn, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {layout}, got {type(attn)}")
    if (ndim is not None and attn.dim() != ndim) or attn.dim() < min_ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(attn.shape)}")
    if not attn.dtype.is_floating_point:
        raise ValueError(f"{name} must be a float tensor, got dtype {attn.dtype}")


def _row_col_masks(
    batch_size: int, t_max: int, m_max: int, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated lengths and valid rows ``[B, T_max]`` and columns ``[B, M_max]``."""
    src_len = check_lengths(src_len, "src_len", batch_size, max_len=m_max)
    tgt_len = check_lengths(tgt_len, "tgt_len", batch_size, max_len=t_max)
    return src_len, tgt_len, valid_positions(tgt_len, t_max), valid_positions(src_len, m_max)


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
    _check_attention(attn, "attn", "[B, H, T_max, M_max]", ndim=4)
    batch_size, _, t_max, m_max = attn.shape
    _, tgt_len, rows, cols = _row_col_masks(batch_size, t_max, m_max, src_len, tgt_len)
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
    _check_attention(attn, "attn", "[B, T_mel, M_max]", ndim=3)
    batch_size, t_max, m_max = attn.shape
    _, _, rows, cols = _row_col_masks(batch_size, t_max, m_max, src_len, tgt_len)
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
    _check_attention(attn, "attn", "[B, N_max, M_max]", ndim=3)
    batch_size, n_max, m_max = attn.shape
    src_len, _, rows, cols = _row_col_masks(batch_size, n_max, m_max, src_len, tgt_len)
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


def softmax_safe_mask(mask: torch.Tensor) -> torch.Tensor:
    """Open every all-False row of a bool attention mask ``[..., T, M]`` (True = may attend).

    A softmax over a row with every score at -inf is NaN, and NaN poisons the gradients of
    the whole batch; padded query rows of :func:`window_mask` are such rows. Opened rows
    attend everywhere and produce finite garbage, which the caller must ignore (padding).
    Rows with at least one True are returned unchanged."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() < 2:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask)
        raise ValueError(f"mask must be a bool tensor of shape [..., T, M], got {shape}")
    return mask | ~mask.any(-1, keepdim=True)


def attention_kl_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    src_len: torch.Tensor,
    tgt_len: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Attention-constraint loss, eq. 6 (NAT) and eq. 8 (CoMMA): a scalar tensor.

    L = mean over sentences b and head/layer dims of
    1/N_b sum_{i<N_b} KL(A'_i || A_i), KL(A'_i || A_i) = sum_{j<M_b} A'_ij log(A'_ij / A_ij),
    with A' the teacher's and A the student's encoder-decoder attention. Each sentence counts
    equally (the 1/N_b of eq. 6), as does each head and layer (eq. 8: "average over all heads
    and layers").

    Numerics: terms with A'_ij = 0 are 0 (x log x -> 0); the student is floored at `eps`
    (default 1e-8) inside the log, so a student weight of exactly 0 where the teacher has mass
    costs at most A'_ij log(A'_ij / eps) instead of inf (no gradient below eps). Padding rows
    and columns are excluded, whatever they hold. Neither side is renormalized here: pass rows
    that sum to 1 over the valid source (eq. 7's :func:`normalize_source_attention` for
    CoMMA; the teacher's source attention already does with a key padding mask).

    Args:
        teacher: float ``[B, *D_t, N_max, M_max]``; the teacher carries no gradient
            (detached here).
        student: float ``[B, *D, N_max, M_max]``, D = head (and layer) dims, e.g. ``[B, H, N,
            M]`` or ``[B, L, H, N, M]``. The teacher must broadcast to it after singleton dims
            are inserted after B: ``[B, N, M]`` (one teacher map for every student head) or
            the same shape as the student (head-to-head, as eq. 8's per-head KL).
        src_len: int ``[B]``, M_b >= 1.
        tgt_len: int ``[B]``, N_b >= 1.
        eps: floor of the student weights inside the log.
    """
    _check_attention(student, "student", "[B, *heads, N_max, M_max]", ndim=None)
    _check_attention(teacher, "teacher", "[B, *heads, N_max, M_max]", ndim=None)
    if teacher.dim() > student.dim():
        raise ValueError(
            f"teacher {tuple(teacher.shape)} has more dims than student {tuple(student.shape)}"
        )
    teacher = teacher.detach()
    teacher = teacher.reshape(
        teacher.shape[:1] + (1,) * (student.dim() - teacher.dim()) + teacher.shape[1:]
    )
    try:
        shape = torch.broadcast_shapes(teacher.shape, student.shape)
    except RuntimeError as error:
        raise ValueError(
            f"teacher {tuple(teacher.shape)} does not broadcast to student "
            f"{tuple(student.shape)}: {error}"
        ) from None
    if shape != student.shape:
        raise ValueError(
            f"teacher {tuple(teacher.shape)} must broadcast to student {tuple(student.shape)}, "
            f"not widen it to {tuple(shape)}"
        )
    batch_size, *_, n_max, m_max = student.shape
    _, tgt_len, rows, cols = _row_col_masks(batch_size, n_max, m_max, src_len, tgt_len)
    middle = (1,) * (student.dim() - 3)
    valid = (rows[:, :, None] & cols[:, None, :]).view(batch_size, *middle, n_max, m_max)
    zero = student.new_zeros(())
    teacher = torch.where(valid, teacher.to(student.dtype), zero)  # [B, *D, N, M]
    # Padding is replaced before the log, so NaN there cannot reach the gradient either.
    student = torch.where(valid, student, student.new_ones(()))
    student_log = torch.log(student.clamp_min(eps))
    pointwise = torch.xlogy(teacher, teacher) - teacher * student_log  # [B, *D, N, M]
    row_kl = torch.where(valid, pointwise, zero).sum(-1)  # [B, *D, N]
    sentence_kl = row_kl.sum(-1) / tgt_len.view(batch_size, *middle).to(student.dtype)
    return sentence_kl.mean()


def normalize_source_attention(
    mix_attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> torch.Tensor:
    """Eq. 7: the source part of CoMMA's mix-attention, renormalized per target row.

    Â_ij = A_{i, N_max + j} / sum_{k < M_b} A_{i, N_max + k} for valid i < N_b, j < M_b; the
    columns are in the mix-attention order of :mod:`comma.ratio` (N_max target columns, then
    M_max source columns). Valid rows sum to 1 over the valid source; padding rows and
    columns are 0. A valid row with no source weight stays all 0 (the denominator is floored
    at the dtype's smallest normal number), which :func:`attention_kl_loss` then penalizes
    heavily but finitely. Differentiable.

    Args:
        mix_attn: float ``[B, *D, N_max, N_max + M_max]``, D = head (and layer) dims, as
            ``[B, H, N_max, N_max + M_max]``; the target rows of the mix-attention only.
        src_len: int ``[B]``, M_b >= 1.
        tgt_len: int ``[B]``, N_b >= 1.

    Returns:
        ``[B, *D, N_max, M_max]``, same dtype.
    """
    _check_attention(mix_attn, "mix_attn", "[B, H, N_max, N_max + M_max]", ndim=None)
    batch_size, *_, n_max, n_columns = mix_attn.shape
    m_max = n_columns - n_max
    if m_max < 1:
        raise ValueError(
            f"mix_attn must have shape [B, H, N_max, N_max + M_max] with M_max >= 1, got "
            f"{tuple(mix_attn.shape)}"
        )
    _, _, rows, cols = _row_col_masks(batch_size, n_max, m_max, src_len, tgt_len)
    middle = (1,) * (mix_attn.dim() - 3)
    valid = (rows[:, :, None] & cols[:, None, :]).view(batch_size, *middle, n_max, m_max)
    source = torch.where(valid, mix_attn[..., n_max:], mix_attn.new_zeros(()))  # [B,*D,N,M]
    total = source.sum(-1, keepdim=True).clamp_min(torch.finfo(mix_attn.dtype).tiny)
    return source / total


ALIGNMENT_FORMAT = "comma-alignment-v1"
ATTENTION_CHOICES = ("diagonal_head", "last_layer")


def _gather_padded(packed: PackedSequences, indices: torch.Tensor, max_len: int) -> torch.Tensor:
    """Sequences `indices` of `packed` zero-padded to ``[B, max_len]`` (same dtype)."""
    out = packed.values.new_zeros(len(indices), max_len)
    for row, k in enumerate(indices.tolist()):
        seq = packed[k]
        out[row, : len(seq)] = seq
    return out


@dataclass(frozen=True)
class TeacherAlignment:
    """One training corpus's alignments from its AR teacher, sentence k = the corpus's k-th.

    Lengths are the teacher's: `tgt_lengths` target tokens (EOS excluded) or mel frames,
    `src_lengths` encoder positions after its pre-net (ASR: subsampled frames). A student
    looks its batch up with the methods below (the provider NAR models and CoMMA's AC variant
    read as ``model.alignment``); its own lengths must match, or they raise.

    Storage: `maps` holds each sentence's AC target ``[T_b, M_b]`` flattened, in float16
    (NMT, ASR: 2 bytes a cell; the soft maps are what eq. 6 and 8 pull towards). TTS stores
    no map: its AC target is the hard alignment FastSpeech trains on, rebuilt from the
    durations (frame t -> the phoneme it belongs to), since LJSpeech's soft maps would take
    about 2 GB. Durations are int32 per phoneme, expected positions int32 per target token
    (1-based, section 5.1)."""

    task: str
    src_lengths: torch.Tensor  # [n] int64
    tgt_lengths: torch.Tensor  # [n] int64
    focus_rate: torch.Tensor  # [n] float32, of the map the durations/expectations come from
    source: str  # which teacher attention: "layer L head H" or "last layer mean"
    maps: PackedSequences | None = None  # float16 [T_b * M_b] per sentence (nmt, asr)
    token_durations: PackedSequences | None = None  # int32 [M_b] (tts)
    expected: PackedSequences | None = None  # int32 [T_b] (asr)

    def __len__(self) -> int:
        return len(self.src_lengths)

    def _rows(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise IndexError(f"sentence indices outside 0..{len(self) - 1} of the alignment")
        too_long = (self.tgt_lengths[indices] > tgt_max) | (self.src_lengths[indices] > src_max)
        if bool(too_long.any()):
            k = int(indices[too_long.nonzero()[0, 0]])
            raise ValueError(
                f"alignment of sentence {k} is {int(self.tgt_lengths[k])} x "
                f"{int(self.src_lengths[k])} (target x source), beyond the student's batch "
                f"{tgt_max} x {src_max}: the student's corpus or pre-net does not match the "
                "teacher's"
            )
        return indices

    def check_lengths(
        self, indices: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
    ) -> None:
        """Raise unless the student's lengths ``[B]`` equal the teacher's for these sentences."""
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        for name, mine, theirs in (
            ("source", self.src_lengths[indices], src_len.cpu()),
            ("target", self.tgt_lengths[indices], tgt_len.cpu()),
        ):
            if not torch.equal(mine, theirs.to(mine.dtype)):
                row = int((mine != theirs).nonzero()[0, 0])
                raise ValueError(
                    f"sentence {int(indices[row])}: the teacher's alignment has {name} length "
                    f"{int(mine[row])} but the student has {int(theirs[row])}; align the same "
                    "corpus, with the same pre-net subsampling, as the student trains on"
                )

    def attention(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        """float32 ``[B, tgt_max, src_max]``: each sentence's teacher map, rows summing to 1
        over its valid source, zero padding."""
        indices = self._rows(indices, tgt_max, src_max)
        out = torch.zeros(len(indices), tgt_max, src_max)
        for row, k in enumerate(indices.tolist()):
            t, m = int(self.tgt_lengths[k]), int(self.src_lengths[k])
            if self.maps is not None:
                cell = self.maps[k].float().view(t, m)
                out[row, :t, :m] = cell / cell.sum(-1, keepdim=True).clamp_min(1e-12)
            else:  # hard alignment from durations: frame t -> its phoneme
                owner = torch.repeat_interleave(torch.arange(m), self.token_durations[k].long())
                out[row, torch.arange(t), owner] = 1.0
        return out

    def window(self, indices: torch.Tensor, tgt_max: int, src_max: int) -> torch.Tensor:
        """bool ``[B, tgt_max, src_max]``: the ASR attention window of section 5.1
        (:func:`window_mask`) from the stored expected positions."""
        if self.expected is None:
            raise ValueError(f"the {self.task} alignment has no expected positions (ASR only)")
        indices = self._rows(indices, tgt_max, src_max)
        expected = _gather_padded(self.expected, indices, tgt_max).long()
        return window_mask(
            expected, self.src_lengths[indices], self.tgt_lengths[indices], max_src_len=src_max
        )

    def durations(self, indices: torch.Tensor, src_max: int) -> torch.Tensor:
        """long ``[B, src_max]``: phoneme durations in frames, zero padding (TTS)."""
        if self.token_durations is None:
            raise ValueError(f"the {self.task} alignment has no durations (TTS only)")
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if len(indices) and int(self.src_lengths[indices].max()) > src_max:
            raise ValueError(f"durations longer than the student's {src_max} source positions")
        return _gather_padded(self.token_durations, indices, src_max).long()

    def select(self, indices) -> TeacherAlignment:
        """The alignments of sentences `indices`, in that order (e.g. a filtered corpus)."""
        indices = [int(k) for k in indices]
        pick = torch.tensor(indices, dtype=torch.long)
        return TeacherAlignment(
            self.task,
            self.src_lengths[pick],
            self.tgt_lengths[pick],
            self.focus_rate[pick],
            self.source,
            *(
                None if packed is None else packed.select(indices)
                for packed in (self.maps, self.token_durations, self.expected)
            ),
        )

    def save(self, path: str | Path) -> None:
        packed = {
            name: None if value is None else value.to_dict()
            for name, value in (
                ("maps", self.maps),
                ("token_durations", self.token_durations),
                ("expected", self.expected),
            )
        }
        torch_save(
            {
                "format": ALIGNMENT_FORMAT,
                "task": self.task,
                "source": self.source,
                "src_lengths": self.src_lengths,
                "tgt_lengths": self.tgt_lengths,
                "focus_rate": self.focus_rate,
                **packed,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> TeacherAlignment:
        saved = torch_load(path)
        if not isinstance(saved, dict) or saved.get("format") != ALIGNMENT_FORMAT:
            raise InputError(path, f"not a teacher alignment file (expected {ALIGNMENT_FORMAT})")
        packed = {
            name: None if saved.get(name) is None else PackedSequences.from_dict(saved[name], path)
            for name in ("maps", "token_durations", "expected")
        }
        return cls(
            saved["task"],
            saved["src_lengths"],
            saved["tgt_lengths"],
            saved["focus_rate"],
            saved["source"],
            **packed,
        )


@torch.no_grad()
def _teacher_attention_passes(model, split, batch_sentences: int, seed: int, progress: bool):
    """Yield (batch, TeacherForcedAttention) over the corpus in a fixed order; the same
    (seed, order) gives the same attention, also for the TTS teacher's inference dropout."""
    from comma.data.batching import collate, make_batches
    from comma.decode import teacher_forced_attention

    torch.manual_seed(seed)
    batches = make_batches(split.src.lengths.numpy(), max_sentences=batch_sentences, shuffle=False)
    for indices in tqdm(batches, desc="teacher attention", unit="batch", disable=not progress):
        batch = collate(split, indices)
        yield batch, teacher_forced_attention(model, batch)


def extract_alignment(
    teacher_path: str | Path,
    train_path: str | Path,
    out_path: str | Path,
    summary_path: str | Path,
    *,
    attention: str,
    min_focus_rate: float = 0.0,
    batch_sentences: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Teacher-forced attention of the AR teacher over a training corpus -> its alignments.

    `attention` picks each sentence's map: ``diagonal_head``, the (layer, head) of highest
    focus rate over the whole corpus (a first pass; ESPnet's duration calculator), or
    ``last_layer``, the mean over the last decoder layer's heads. From that map: TTS durations
    (:func:`durations_from_attention`; always from the diagonal head), ASR expected positions
    (:func:`expected_positions`), and for NMT and ASR the map itself. TTS utterances whose
    focus rate is below `min_focus_rate` are counted in the summary; the rule training
    FastSpeech drops them (their indices are in the summary's ``low_focus``).
    Writes the :class:`TeacherAlignment` to `out_path` and a JSON summary to `summary_path`."""
    from comma.data.packed import load_split
    from comma.models.teachers import load_teacher

    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got {attention!r}")
    model = load_teacher(teacher_path)
    task = model.config.task
    if task == "tts":
        attention = "diagonal_head"  # durations are argmax counts of one consistent head
    split = load_split(train_path)
    layers, heads = model.config.decoder_layers, model.config.heads

    # Pass 1: focus rate of every (layer, head), summed over sentences.
    rate_sum = torch.zeros(layers * heads, dtype=torch.float64)
    for _, forced in _teacher_attention_passes(model, split, batch_sentences, seed, progress):
        flat = forced.attention.flatten(1, 2)  # [B, L*H, T, S]
        rate_sum += focus_rate(flat, forced.src_lengths, forced.tgt_lengths).double().sum(0)
    head_rates = (rate_sum / len(split)).view(layers, heads)
    if attention == "diagonal_head":
        best = int(head_rates.flatten().argmax())
        layer, head = divmod(best, heads)
        source = f"layer {layer} head {head}"
    else:
        layer, head = layers - 1, None
        source = f"layer {layer} mean over heads"
    log.info("focus rate per decoder layer x head:\n%s; AC target: %s", head_rates, source)

    # Pass 2: the chosen map of every sentence.
    n = len(split)
    src_lengths = torch.zeros(n, dtype=torch.long)
    tgt_lengths = torch.zeros(n, dtype=torch.long)
    rates = torch.zeros(n)
    maps: list[torch.Tensor | None] = [None] * n
    durations: list[torch.Tensor | None] = [None] * n
    expected: list[torch.Tensor | None] = [None] * n
    for batch, forced in _teacher_attention_passes(model, split, batch_sentences, seed, progress):
        chosen = forced.attention[:, layer]  # [B, H, T, S]
        chosen = chosen.mean(1) if head is None else chosen[:, head]  # [B, T, S]
        s_len, t_len = forced.src_lengths.cpu(), forced.tgt_lengths.cpu()
        chosen = chosen.float().cpu()
        batch_rates = focus_rate(chosen[:, None], s_len, t_len)[:, 0]
        batch_durations = durations_from_attention(chosen, s_len, t_len) if task == "tts" else None
        batch_expected = expected_positions(chosen, s_len, t_len) if task == "asr" else None
        for row, k in enumerate(batch.indices.tolist()):
            t, m = int(t_len[row]), int(s_len[row])
            src_lengths[k], tgt_lengths[k], rates[k] = m, t, batch_rates[row]
            if task == "tts":
                durations[k] = batch_durations[row, :m].int()
            else:
                maps[k] = chosen[row, :t, :m].reshape(-1).half()
            if task == "asr":
                expected[k] = batch_expected[row, :t].int()

    alignment = TeacherAlignment(
        task,
        src_lengths,
        tgt_lengths,
        rates,
        source,
        maps=PackedSequences.from_list(maps) if task != "tts" else None,
        token_durations=PackedSequences.from_list(durations) if task == "tts" else None,
        expected=PackedSequences.from_list(expected) if task == "asr" else None,
    )
    low_focus = (rates < min_focus_rate).nonzero().squeeze(1).tolist() if task == "tts" else []
    summary = {
        "task": task,
        "sentences": n,
        "attention": source,
        "focus_rate_per_head": head_rates.tolist(),
        "focus_rate": {
            "mean": float(rates.mean()),
            "p10": float(rates.quantile(0.1)),
            "min": float(rates.min()),
        },
        "min_focus_rate": min_focus_rate,
        "low_focus": low_focus,
    }
    if task == "tts":
        zero = sum(int((d == 0).sum()) for d in durations)
        phonemes = int(src_lengths.sum())
        summary["zero_duration_phonemes"] = {"count": zero, "share": zero / phonemes}
        log.info("%d of %d phonemes get no frame", zero, phonemes)
        if low_focus:
            log.warning(
                "%d of %d utterances have focus rate < %g: left out of FastSpeech's training",
                len(low_focus),
                n,
                min_focus_rate,
            )
    alignment.save(out_path)
    write_json(summary_path, summary)
    return summary
