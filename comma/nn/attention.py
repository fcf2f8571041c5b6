"""Attention losses of the paper's alignment constraints and the helpers they share.

* :func:`attention_kl_loss`: the KL of eq. 6 (NAT) and eq. 8 (CoMMA + AC), student attention
  pulled towards the teacher's;
* :func:`normalize_source_attention`: eq. 7, the source part of CoMMA's mix-attention
  renormalized per target row;
* :func:`softmax_safe_mask`: opens all-False rows of an attention mask (NAR-ASR's window);
* :func:`head_to_head_targets`: the teacher's per-head maps paired with a student's layers and
  heads (``ac_mode: head``; ``broadcast`` gives one teacher map to every student head).

Conventions: an attention tensor ends in ``[..., T, M]`` (T target positions: tokens or mel
frames; M source positions); lengths are int ``[B]``; positions at or beyond a length are
padding.
"""

from __future__ import annotations

import torch

from comma.nn.masking import check_lengths, valid_positions

__all__ = [
    "AC_MODES",
    "AC_TEACHER_TARGETS",
    "attention_kl_loss",
    "constraint_targets",
    "head_to_head_targets",
    "normalize_source_attention",
    "renormalize_source",
    "softmax_safe_mask",
    "teacher_layers_for",
]


def check_attention(
    attn: torch.Tensor, name: str, layout: str, ndim: int | None, min_ndim: int = 3
) -> None:
    if not isinstance(attn, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {layout}, got {type(attn)}")
    if (ndim is not None and attn.dim() != ndim) or attn.dim() < min_ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(attn.shape)}")
    if not attn.dtype.is_floating_point:
        raise ValueError(f"{name} must be a float tensor, got dtype {attn.dtype}")


def valid_rows_and_columns(
    batch_size: int, t_max: int, m_max: int, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated lengths and valid rows ``[B, T_max]`` and columns ``[B, M_max]``."""
    src_len = check_lengths(src_len, "src_len", batch_size, max_len=m_max)
    tgt_len = check_lengths(tgt_len, "tgt_len", batch_size, max_len=t_max)
    return src_len, tgt_len, valid_positions(tgt_len, t_max), valid_positions(src_len, m_max)


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
    check_attention(student, "student", "[B, *heads, N_max, M_max]", ndim=None)
    check_attention(teacher, "teacher", "[B, *heads, N_max, M_max]", ndim=None)
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
    _, tgt_len, rows, cols = valid_rows_and_columns(batch_size, n_max, m_max, src_len, tgt_len)
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
    check_attention(mix_attn, "mix_attn", "[B, H, N_max, N_max + M_max]", ndim=None)
    batch_size, *_, n_max, n_columns = mix_attn.shape
    m_max = n_columns - n_max
    if m_max < 1:
        raise ValueError(
            f"mix_attn must have shape [B, H, N_max, N_max + M_max] with M_max >= 1, got "
            f"{tuple(mix_attn.shape)}"
        )
    return renormalize_source(mix_attn[..., n_max:], src_len, tgt_len)


def renormalize_source(
    source: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
) -> torch.Tensor:
    """Eq. 7 on the source block alone: `source` ``[B, *D, N_max, M_max]``, the target rows'
    weights on the source columns of the mix-attention, renormalized per valid row over the
    valid source, padding 0 (as :func:`normalize_source_attention`, which calls it). Taking
    the block straight from the attention saves building the ``[N, N + M]`` rows: for TTS,
    where N is several times M, that reordering was most of the constraint's cost."""
    batch_size, *_, n_max, m_max = source.shape
    _, _, rows, cols = valid_rows_and_columns(batch_size, n_max, m_max, src_len, tgt_len)
    middle = (1,) * (source.dim() - 3)
    valid = (rows[:, :, None] & cols[:, None, :]).view(batch_size, *middle, n_max, m_max)
    source = torch.where(valid, source, source.new_zeros(()))  # [B, *D, N, M]
    total = source.sum(-1, keepdim=True).clamp_min(torch.finfo(source.dtype).tiny)
    return source / total


# The attention constraint's modes and the teacher target each reads from the batch
# (comma.data.batching.TeacherTargets): every layer's and head's map, or one chosen map.
AC_TEACHER_TARGETS = {"head": "head_attention", "broadcast": "attention"}
AC_MODES = tuple(AC_TEACHER_TARGETS)


def teacher_layers_for(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher decoder layer whose heads each student layer matches in the per-head
    constraint: the identity for equal depths (the paper preset's), otherwise spread evenly
    from the first to the last teacher layer (``l * (L_t - 1) / (L_s - 1)`` rounded, halves up;
    one student layer takes the last teacher layer)."""
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError(f"need >= 1 layer, got {student_layers} and {teacher_layers}")
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [int(k * step + 0.5) for k in range(student_layers)]  # halves round up


def head_to_head_targets(teacher: torch.Tensor, student_layers: int, student_heads: int):
    """Teacher maps ``[B, L_t, H, N, M]`` -> the per-head targets ``[B, L_s, H, N, M]`` of a
    student with `student_layers` layers of `student_heads` heads: student layer l, head h
    matches teacher layer :func:`teacher_layers_for`\\ (l), head h (eq. 6 and 8 per head). The
    head counts must be equal (there is no faithful way to pair heads otherwise)."""
    check_attention(teacher, "teacher", "[B, L, H, N_max, M_max]", ndim=5)
    teacher_layers, teacher_heads = teacher.shape[1], teacher.shape[2]
    if teacher_heads != student_heads:
        raise ValueError(
            f"the per-head attention constraint pairs head h with head h, but the teacher has "
            f"{teacher_heads} heads and the student {student_heads}: give the student the "
            "teacher's head count, or set ac_mode: broadcast"
        )
    index = torch.tensor(teacher_layers_for(student_layers, teacher_layers), device=teacher.device)
    return teacher.index_select(1, index)  # [B, L_s, H, N, M]


def constraint_targets(teacher: torch.Tensor, student_layers: int, student_heads: int):
    """The teacher side of eq. 6 / 8 for a student of `student_layers` x `student_heads`:
    per-head maps ``[B, L_t, H, N, M]`` paired head to head (:func:`head_to_head_targets`),
    or one map ``[B, N, M]`` as it is (broadcast to every head by
    :func:`attention_kl_loss`)."""
    if teacher.dim() == 5:
        return head_to_head_targets(teacher, student_layers, student_heads)
    return teacher
