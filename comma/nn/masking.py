"""Target masking for CoMMA (paper section 2.1) and the length masks shared by the study.

CoMMA replaces a fraction p of the target by the mask token and learns to predict it, with
p ~ U(0, 1) drawn per sentence during training so that one model covers identity copy (p = 0),
bidirectional and NAR generation (p = 1). Text targets are masked token by token; mel targets
are masked by chunks of 10 consecutive frames (paper footnote 1), because a single masked
frame is trivially interpolated from its neighbours.

Conventions
-----------
* Lengths are int tensors ``[B]``; position ``t`` of sentence ``b`` is valid iff
  ``t < lengths[b]``; everything beyond is padding and is never masked.
* Masks are bool, True = masked (the positions the model must predict, the set M_p of eq. 2).
* The number of masked units is ``round(p * units)`` with halves rounded up, and at least one
  unit when ``p > 0`` (see :func:`random_token_mask` for why).
* Randomness only comes from the ``torch.Generator`` passed in: the same generator state gives
  the same masks.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_lengths",
    "valid_positions",
    "sample_mask_ratio",
    "random_token_mask",
    "chunk_mask",
]


def check_lengths(
    lengths: torch.Tensor,
    name: str,
    batch_size: int | None = None,
    max_len: int | None = None,
    min_len: int = 1,
) -> torch.Tensor:
    """Validate a ``[B]`` integer length tensor and return it as int64.

    Raises ValueError naming `name` if it is not 1-D integer, has the wrong batch size, or has
    a length outside ``[min_len, max_len]``."""
    if not isinstance(lengths, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B], got {type(lengths)}")
    if lengths.dim() != 1:
        raise ValueError(f"{name} must have shape [B], got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {lengths.dtype}")
    if batch_size is not None and lengths.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have shape [{batch_size}] (the batch size), got {tuple(lengths.shape)}"
        )
    if lengths.numel() > 0:
        if int(lengths.min()) < min_len:
            raise ValueError(f"{name} must be >= {min_len}, got min {int(lengths.min())}")
        if max_len is not None and int(lengths.max()) > max_len:
            raise ValueError(
                f"{name} must be <= {max_len} (the padded size), got max {int(lengths.max())}"
            )
    return lengths.long()


def valid_positions(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Bool ``[B, max_len]``: True at ``t < lengths[b]`` (``max_len`` defaults to the longest)."""
    lengths = check_lengths(lengths, "lengths", min_len=0)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_len, device=lengths.device)  # [T]
    return positions[None, :] < lengths[:, None]  # [B, T]


def sample_mask_ratio(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Mask probabilities for a training batch: float32 ``[B]``, p ~ U(0, 1) per sentence.

    Drawn on the generator's device (paper section 2.1: p varies uniformly so one CoMMA
    covers every degree of target context)."""
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    return torch.rand(batch_size, generator=generator, device=generator.device)


def _as_ratio(p: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
    """p as a float64 ``[B]`` tensor in [0, 1] (a float is broadcast to every sentence)."""
    ratio = torch.as_tensor(p, dtype=torch.float64, device=device)
    if ratio.dim() == 0:
        ratio = ratio.expand(batch_size)
    if ratio.shape != (batch_size,):
        raise ValueError(
            f"p must be a float or have shape [{batch_size}], got {tuple(ratio.shape)}"
        )
    if bool(torch.isnan(ratio).any()) or bool(((ratio < 0) | (ratio > 1)).any()):
        raise ValueError(f"p must lie in [0, 1], got values {ratio.tolist()[:8]}")
    return ratio


def _mask_units(
    unit_sizes: torch.Tensor, target: torch.Tensor, at_least_one: torch.Tensor, generator
) -> torch.Tensor:
    """Choose units in a uniformly random order until their size is closest to `target`.

    unit_sizes: int64 ``[B, U]``, frames per unit (0 = padding unit, never chosen).
    target:     float64 ``[B]``, how many frames should be masked (p * length).
    at_least_one: bool ``[B]``, forbid choosing no unit.
    Returns bool ``[B, U]``, True for the chosen units. Taking the first k units of a random
    permutation gives a uniformly random k-subset; k minimizes |frames(k) - target|, ties going
    to the larger k (round half up)."""
    batch_size, num_units = unit_sizes.shape
    device = unit_sizes.device
    is_unit = unit_sizes > 0  # [B, U]
    scores = torch.rand(batch_size, num_units, generator=generator, device=generator.device)
    scores = scores.to(device).masked_fill(~is_unit, 2.0)  # padding units sort last
    order = scores.argsort(dim=1)  # [B, U] unit ids in random order
    sizes_in_order = unit_sizes.gather(1, order)  # [B, U]
    frames_if_k = torch.cat(
        [sizes_in_order.new_zeros(batch_size, 1), sizes_in_order.cumsum(1)], dim=1
    )  # [B, U + 1]: frames masked when the first k units are taken
    distance = (frames_if_k.double() - target[:, None]).abs()  # [B, U + 1]
    k_range = torch.arange(num_units + 1, device=device)  # [U + 1]
    num_valid_units = is_unit.sum(1)  # [B]
    forbidden = k_range[None, :] > num_valid_units[:, None]
    forbidden |= (k_range[None, :] == 0) & at_least_one[:, None]
    distance = distance.masked_fill(forbidden, float("inf"))
    # argmin returns the first minimum: search the reversed range so ties go to the larger k.
    k = num_units - distance.flip(1).argmin(dim=1)  # [B]
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_units, device=device).expand(batch_size, num_units)
    )  # [B, U]: position of each unit in the random order
    return (rank < k[:, None]) & is_unit


def random_token_mask(
    tgt_len: torch.Tensor,
    p: torch.Tensor | float,
    generator: torch.Generator,
    max_len: int | None = None,
) -> torch.Tensor:
    """Mask ``round(p_b * N_b)`` target tokens per sentence, at uniformly random positions.

    Args:
        tgt_len: int ``[B]``, N_b, the number of maskable tokens (exclude BOS/EOS yourself).
        p: float or float ``[B]`` in [0, 1], the mask ratio per sentence.
        generator: the only source of randomness.
        max_len: padded length N_max of the result (default ``tgt_len.max()``).

    Returns:
        bool ``[B, N_max]``, True = masked; exactly ``clamp(round(p_b N_b), 1, N_b)`` True
        entries in row b if ``p_b > 0`` and ``N_b > 0``, none if ``p_b = 0``; padding is False.

    Rounding: halves round up (p = 0.5, N = 3 masks 2). At least one token is masked whenever
    p > 0, as in fairseq's ``translation_lev._random_mask`` (which draws the count uniformly
    from 1..N): a sentence with nothing masked gives no training signal and no alpha_i for
    eq. 2. p = 0 masks nothing (identity copy, the paper's p = 0 end of R(p)).
    """
    tgt_len = check_lengths(tgt_len, "tgt_len", max_len=max_len, min_len=0)
    batch_size = tgt_len.shape[0]
    if max_len is None:
        max_len = int(tgt_len.max()) if batch_size else 0
    ratio = _as_ratio(p, batch_size, tgt_len.device)  # [B]
    unit_sizes = valid_positions(tgt_len, max_len).long()  # [B, N_max], one token per unit
    target = ratio * tgt_len.double()  # [B]
    return _mask_units(unit_sizes, target, (ratio > 0) & (tgt_len > 0), generator)


def chunk_mask(
    tgt_len: torch.Tensor,
    p: torch.Tensor | float,
    chunk: int = 10,
    generator: torch.Generator | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Mask whole chunks of `chunk` consecutive mel frames (paper footnote 1: chunk = 10).

    Frames ``[c * chunk, (c + 1) * chunk)`` form chunk c; the last chunk of a sentence is
    partial when ``T_b`` is not a multiple of `chunk` (it holds ``T_b - (C_b - 1) * chunk``
    frames, ``C_b = ceil(T_b / chunk)``). Chunks are taken in a uniformly random order, and the
    number taken is the one whose total frame count is closest to ``p_b * T_b`` (ties: more
    frames), so the masked frame count is within ``chunk / 2`` of ``p_b * T_b``. At least one
    chunk is masked when ``p_b > 0`` (the same rule as :func:`random_token_mask`), which may
    overshoot that bound for tiny p; p = 0 masks nothing. ``chunk = 1`` is token masking.

    Args:
        tgt_len: int ``[B]``, T_b, the number of mel frames.
        p: float or float ``[B]`` in [0, 1].
        chunk: frames per chunk (>= 1).
        generator: the only source of randomness (required).
        max_len: padded length T_max of the result (default ``tgt_len.max()``).

    Returns:
        bool ``[B, T_max]``, True = masked frame; padding is False.
    """
    if generator is None:
        raise ValueError("generator must be a torch.Generator (masks are drawn from it only)")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    tgt_len = check_lengths(tgt_len, "tgt_len", max_len=max_len, min_len=0)
    batch_size = tgt_len.shape[0]
    if max_len is None:
        max_len = int(tgt_len.max()) if batch_size else 0
    ratio = _as_ratio(p, batch_size, tgt_len.device)  # [B]
    num_chunks = -(-max_len // chunk)  # ceil
    chunk_start = torch.arange(num_chunks, device=tgt_len.device) * chunk  # [C]
    unit_sizes = (tgt_len[:, None] - chunk_start[None, :]).clamp(0, chunk)  # [B, C]
    target = ratio * tgt_len.double()  # [B]
    masked_chunks = _mask_units(unit_sizes, target, (ratio > 0) & (tgt_len > 0), generator)
    frames = masked_chunks.repeat_interleave(chunk, dim=1)[:, :max_len]  # [B, T_max]
    return frames & valid_positions(tgt_len, max_len)
