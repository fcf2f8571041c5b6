"""NAT (Gu et al. 2017), the NMT student of the study:

**NAT** (Gu et al. 2017, without fertility; fairseq's ``nat/`` for the reference behaviour).
Token encoder. A length predictor classifies the target length ``0 .. max_target_positions-1``
from the mean-pooled encoder output (fairseq's NAT with ``pred_length_offset=False``), trained
with cross-entropy times ``length_loss_weight`` (targets beyond the last class are clamped to
it). Decoder input: the source embeddings (scaled token embeddings, without positions) copied
uniformly, target position ``i`` taking source position ``round(i * M / N)`` (halves up,
clamped to ``M - 1``; Gu et al.'s "uniform copy", :func:`uniform_copy_indices`), plus
sinusoidal positions; a non-causal decoder with cross-attention over the encoder; token
cross-entropy (label smoothing ``label_smoothing``, default 0) over the N target positions.
AC (Li et al. 2019, paper eq. 6): ``ac_weight`` times the KL from the teacher's attention to
the student's cross-attention of every decoder layer and head, ``attention_kl_loss`` on
``[B, layers, heads, N, M]`` (:func:`nat_attention_kl`): head to head with the teacher's
decoder layers and heads (``ac_mode: head``, default) or one chosen map for all
(``broadcast``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from comma.data.batching import Batch
from comma.models.nar_base import (
    PAD_ID,
    NARConfig,
    TokenNAR,
)
from comma.nn.attention import AC_TEACHER_TARGETS, attention_kl_loss, constraint_targets
from comma.nn.prenets import TokenEmbedding
from comma.nn.transformer import (
    padding_mask,
)


def uniform_copy_indices(
    src_len: torch.Tensor, tgt_len: torch.Tensor, tgt_max: int | None = None
) -> torch.Tensor:
    """Gu et al.'s uniform copy: long ``[B, N_max]``, target position i (0-based) reads source
    position ``round(i * M_b / N_b)`` (halves round up), clamped to ``M_b - 1``; 0 on padding."""
    tgt_max = int(tgt_len.max()) if tgt_max is None else tgt_max
    i = torch.arange(tgt_max, device=tgt_len.device)[None, :]  # [1, N]
    m, n = src_len[:, None].long(), tgt_len[:, None].long().clamp(min=1)  # [B, 1]
    index = torch.div(2 * i * m + n, 2 * n, rounding_mode="floor")  # round(i M / N), exact
    index = torch.minimum(index, (m - 1).clamp(min=0))
    return index.masked_fill(i >= tgt_len[:, None], 0)  # [B, N]


def nat_attention_kl(
    cross_attention: Sequence[torch.Tensor],
    teacher: torch.Tensor,
    src_len: torch.Tensor,
    tgt_len: torch.Tensor,
) -> torch.Tensor:
    """NAT's AC term (eq. 6): the student's cross-attention of every layer ``[B, H, N, M]``
    stacked to ``[B, L, H, N, M]`` against the teacher's: per head ``[B, L_t, H, N, M]``
    (layer l, head h with the teacher's, :func:`comma.nn.attention.head_to_head_targets`) or
    one map ``[B, N, M]`` for every head; averaged over sentences, layers and heads
    (``comma.nn.attention.attention_kl_loss``)."""
    student = torch.stack(list(cross_attention), dim=1)  # [B, L, H, N, M]
    teacher = constraint_targets(teacher, student.shape[1], student.shape[2])
    return attention_kl_loss(teacher.to(student.device), student, src_len, tgt_len)


class NAT(TokenNAR):
    """Non-autoregressive Transformer NMT (Gu et al. 2017 without fertility; see the module
    docstring): uniform copy of the source embeddings, one parallel pass, optional eq. 6 AC."""

    def __init__(self, config: NARConfig):
        super().__init__(config, "nmt")
        # What its AC loss reads from the batch.
        self.TEACHER_TARGETS = (AC_TEACHER_TARGETS[config.ac_mode],)
        self.src_prenet = TokenEmbedding(config.src_vocab, config.d_model, PAD_ID)

    def encode(self, src, src_len):
        embedded, src_len = self.src_prenet(src, src_len)  # [B, M, d]
        hidden = self.encoder(self._add_positions(embedded), src_len).hidden  # [B, M, d]
        return hidden, src_len, embedded

    def decoder_inputs(self, prenet_out, src_len, tgt_len):
        index = uniform_copy_indices(src_len, tgt_len)  # [B, N]
        copied = prenet_out.gather(1, index[..., None].expand(-1, -1, prenet_out.shape[-1]))
        valid = padding_mask(tgt_len, index.shape[1])[..., None].to(copied.dtype)
        return copied * valid  # [B, N, d]

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        constrained = c.constraint
        out = self(batch.src, batch.src_lengths, batch.tgt_lengths, need_weights=constrained)
        loss, logs = self._token_losses(out, batch)
        if constrained:
            teacher = self._teacher(batch, out.src_lengths, out.tgt_lengths).constraint_maps(
                AC_TEACHER_TARGETS[c.ac_mode], out.prediction.shape[1], batch.src.shape[1]
            )  # [B, L_t, H, N, M] per head, or [B, N, M] broadcast
            kl = nat_attention_kl(out.cross_attention, teacher, out.src_lengths, out.tgt_lengths)
            loss = loss + c.ac_weight * kl
            logs["ac_kl"] = float(kl.detach())
        return loss, logs
