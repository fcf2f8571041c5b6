"""CoMMA: conditional masked prediction with mix-attention (paper section 2.1, Figure 1).

One Transformer stack, shared by source and target (He et al. 2018's layer-wise
coordination), runs over the concatenation ``[source; target]`` with a block mask:

* a source position attends to the (valid) source positions only;
* a target position attends to the source AND the target positions of the same layer, in one
  softmax. That softmax is what the attention density ratio R(p) reads (``comma.ratio``).

Inputs: a task pre-net per side (``comma.nn.prenets``: NMT embeddings on both sides; ASR a
3-layer 2D conv over log-mel and a token embedding; TTS a phoneme embedding and a 2-layer
dense ReLU pre-net over mel frames), plus a source/target type embedding and sinusoidal
positions that start from zero on each side. Training: per sentence p ~ U(0, 1); a fraction p
of the target is masked (tokens replaced by ``<mask>``, mel frames by a learned mask vector
after the pre-net, in chunks of `mel_chunk` frames), and the loss is taken on the masked
positions only: cross-entropy for tokens, L1 for mel frames.

Log-mel sides (the ASR source, the TTS target) are normalized per bin with the training set's
mean and std (global CMVN, as the ASR teacher and NAR-ASR), so CoMMA predicts normalized TTS
frames and its L1 is in units of each bin's std: the same for every bin and corpus.

Attention constraint (the ``ac`` variant, paper section 5.2): with ``ac_weight > 0`` and
the teacher's attention maps in the batch (``batch.teacher``, see
:class:`comma.data.batching.TeacherTargets`), the loss adds ``ac_weight`` times eq. 8: each
head's target-to-source attention renormalized over the source (eq. 7), its KL from the AR
teacher's encoder-decoder attention, averaged over target rows, heads and layers. With
``ac_mode: head`` (default, the paper's per-head wording) layer l, head h matches the teacher's
decoder layer l, head h (:func:`comma.nn.attention.head_to_head_targets`; soft maps for every
task, TTS included); ``broadcast`` gives the alignment's one chosen map (TTS: the hard
alignment from durations) to every layer and head.

Attention is fused (``scaled_dot_product_attention``) unless weights are asked for
(``need_weights=True``), as when measuring R(p). The AC loss asks only for the target rows'
source block (``source_attention=True``), computed beside the fused attention as the softmax of
the source scores, which is eq. 7's renormalization without the whole map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from comma.data.batching import Batch, teacher_targets_of
from comma.data.vocab import MASK, SPECIALS
from comma.models.config_checks import common_problems
from comma.nn.attention import (
    AC_MODES,
    AC_TEACHER_TARGETS,
    attention_kl_loss,
    constraint_targets,
    renormalize_source,
)
from comma.nn.masking import chunk_mask, random_token_mask, sample_mask_ratio
from comma.nn.prenets import Conv2dPrenet, DensePrenet, GlobalCMVN, TokenEmbedding
from comma.nn.transformer import Encoder, SinusoidalPositions, padding_mask
from comma.tasks import TASKS

# The saved model file (comma.models.registry); v2: CMVN buffers of the log-mel side.
MODEL_FORMAT = "comma-model-v2"
MASK_ID = SPECIALS.index(MASK)
SOURCE, TARGET = 0, 1
# Which side of each task is a sequence of mel frames (the other sides are tokens).
MEL_SIDES = {name: task.mel_sides for name, task in TASKS.items()}


@dataclass(frozen=True)
class CoMMAConfig:
    """Architecture of one CoMMA (Table 6 for the paper; small in the mini preset)."""

    task: str
    d_model: int
    layers: int
    heads: int
    ffn_dim: int
    dropout: float
    # Dropout on the attention weights: off by default, as it forces the unfused attention
    # path (a Bernoulli draw over [B, H, L, L]), which dominated a CPU training step.
    attention_dropout: float = 0.0
    src_vocab: int | None = None  # token sources (NMT, TTS)
    tgt_vocab: int | None = None  # token targets (NMT, ASR)
    n_mels: int = 80
    pre_norm: bool = True
    conv_channels: int = 32  # ASR encoder pre-net
    conv_strides: tuple[int, ...] = (2, 2, 1)
    prenet_hidden: int = 256  # TTS decoder pre-net
    prenet_dropout: float = 0.5
    mel_chunk: int = 10  # mel frames are masked in chunks of this many (paper footnote 1)
    ac_weight: float = 0.0  # weight of the eq. 8 attention constraint; 0 = off (raw, kd)
    # "head": each layer's head h matches the teacher's head h (eq. 8 per head, the paper's);
    # "broadcast": the alignment's one chosen map for every layer and head.
    ac_mode: str = "head"

    def __post_init__(self):
        problems = common_problems(self, "CoMMA")
        if self.layers < 1:
            problems.append(f"layers must be >= 1, got {self.layers}")
        if self.ac_weight < 0:
            problems.append(f"ac_weight must be >= 0, got {self.ac_weight}")
        if self.ac_mode not in AC_MODES:
            problems.append(f"ac_mode must be one of {AC_MODES}, got {self.ac_mode!r}")
        if problems:
            raise ValueError("invalid CoMMA config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CoMMAOutput:
    prediction: torch.Tensor  # [B, N, V] logits or [B, N, n_mels] frames, every target position
    src_lengths: torch.Tensor  # [B] source positions M_b after the pre-net
    src_max: int  # M_max: the target block starts at this column of the mix-attention
    attention: list[torch.Tensor] | None  # per layer [B, H, M_max + N_max, M_max + N_max]
    hidden: torch.Tensor  # [B, M_max + N_max, d], the stack's output over [source; target]
    # per layer [B, H, N_max, M_max]: the target rows' attention on the source, renormalized
    # over the valid source (eq. 7), if asked for with `source_attention`
    source_attention: list[torch.Tensor] | None = None


def mix_attention_mask(src_len: torch.Tensor, src_max: int, tgt_len: torch.Tensor, tgt_max: int):
    """Bool ``[B, 1, L, L]`` (L = M_max + N_max; True = may attend) over ``[source; target]``:
    every query sees the valid source keys; target queries also see the valid target keys.
    Padded queries keep the source keys, so no softmax row is empty."""
    src_keys = padding_mask(src_len, src_max)  # [B, M]
    tgt_keys = padding_mask(tgt_len, tgt_max)  # [B, N]
    keys_for_source = torch.cat([src_keys, torch.zeros_like(tgt_keys)], dim=1)  # [B, L]
    keys_for_target = torch.cat([src_keys, tgt_keys], dim=1)  # [B, L]
    is_target_query = torch.arange(src_max + tgt_max, device=src_len.device) >= src_max  # [L]
    mask = torch.where(
        is_target_query[None, :, None], keys_for_target[:, None, :], keys_for_source[:, None, :]
    )  # [B, L, L]
    return mask[:, None]


def target_rows_paper_order(attention: torch.Tensor, src_max: int) -> torch.Tensor:
    """Mix-attention ``[..., M_max + N_max, M_max + N_max]`` (our ``[source; target]`` order) ->
    the target rows with the paper's column order, target columns first:
    ``[..., N_max, N_max + M_max]``, the layout ``comma.ratio`` expects."""
    rows = attention[..., src_max:, :]  # [..., N, M + N]
    return torch.cat([rows[..., src_max:], rows[..., :src_max]], dim=-1)  # [..., N, N + M]


class CoMMA(GlobalCMVN, nn.Module):
    def __init__(self, config: CoMMAConfig):
        super().__init__()
        self.config = c = config
        # What its AC loss (eq. 8) reads from the batch.
        self.TEACHER_TARGETS = (AC_TEACHER_TARGETS[c.ac_mode],)
        self.src_is_mel = "src" in MEL_SIDES[c.task]
        self.tgt_is_mel = "tgt" in MEL_SIDES[c.task]
        if self.src_is_mel or self.tgt_is_mel:
            self.init_feature_statistics(c.n_mels, side="src" if self.src_is_mel else "tgt")
        if self.src_is_mel:
            self.src_prenet = Conv2dPrenet(c.n_mels, c.d_model, c.conv_channels, c.conv_strides)
        else:
            self.src_prenet = TokenEmbedding(c.src_vocab, c.d_model)
        if self.tgt_is_mel:
            self.tgt_prenet = DensePrenet(c.n_mels, c.d_model, c.prenet_hidden, c.prenet_dropout)
            self.mel_mask = nn.Parameter(torch.randn(c.d_model) * c.d_model**-0.5)
            self.output = nn.Linear(c.d_model, c.n_mels)
        else:
            self.tgt_prenet = TokenEmbedding(c.tgt_vocab, c.d_model)
            self.output = nn.Linear(c.d_model, c.tgt_vocab)
        self.side_embedding = nn.Embedding(2, c.d_model)
        nn.init.normal_(self.side_embedding.weight, std=c.d_model**-0.5)
        self.positions = SinusoidalPositions(c.d_model)
        self.input_dropout = nn.Dropout(c.dropout)
        self.stack = Encoder(
            c.layers,
            c.d_model,
            c.heads,
            c.ffn_dim,
            c.dropout,
            pre_norm=c.pre_norm,
            attention_dropout=c.attention_dropout,
        )

    def _embed(self, x: torch.Tensor, side: int) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)  # from zero on each side
        return x + self.positions(positions)[None] + self.side_embedding.weight[side]

    def forward(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        tgt: torch.Tensor,
        tgt_len: torch.Tensor,
        predicted: torch.Tensor,
        need_weights: bool = False,
        source_attention: bool = False,
    ) -> CoMMAOutput:
        """src ``[B, M, *]``, tgt ``[B, N, *]`` (ids or frames), `predicted` bool ``[B, N]``: the
        masked target positions, whose input is replaced by the mask token/vector.
        `need_weights`: every layer's whole mix-attention (R(p) reads it); `source_attention`:
        only eq. 7's renormalized source block of the target rows (the AC loss reads it), which
        keeps the fused attention and costs a fraction of the whole map."""
        if predicted.shape != tgt.shape[:2]:
            raise ValueError(f"predicted {tuple(predicted.shape)} != target {tuple(tgt.shape[:2])}")
        if self.src_is_mel:
            src = self.normalize_features(src, src_len)
        source, src_len = self.src_prenet(src, src_len)  # [B, M', d]
        if self.tgt_is_mel:
            target, _ = self.tgt_prenet(self.normalize_features(tgt, tgt_len), tgt_len)
            target = torch.where(predicted[..., None], self.mel_mask.to(target.dtype), target)
        else:
            target, _ = self.tgt_prenet(tgt.masked_fill(predicted, MASK_ID), tgt_len)
        src_max, tgt_max = source.shape[1], target.shape[1]
        x = torch.cat([self._embed(source, SOURCE), self._embed(target, TARGET)], dim=1)
        mask = mix_attention_mask(src_len, src_max, tgt_len, tgt_max)
        # Source keys are columns :src_max, target queries rows src_max: of [source; target].
        block = (src_max, src_max) if source_attention and not need_weights else None
        out = self.stack(self.input_dropout(x), mask=mask, need_weights=need_weights, block=block)
        prediction = self.output(out.hidden[:, src_max:])  # [B, N, V or n_mels]
        if block is not None:
            return CoMMAOutput(prediction, src_len, src_max, None, out.hidden, out.self_attention)
        return CoMMAOutput(prediction, src_len, src_max, out.self_attention, out.hidden)

    def mask_targets(
        self, tgt_len: torch.Tensor, p: torch.Tensor | float, generator: torch.Generator
    ) -> torch.Tensor:
        """Bool ``[B, N_max]``: the positions to predict at mask ratio p (chunks for mel)."""
        if self.tgt_is_mel:
            return chunk_mask(tgt_len, p, self.config.mel_chunk, generator)
        return random_token_mask(tgt_len, p, generator)

    def masked_losses(self, out: CoMMAOutput, tgt: torch.Tensor, predicted: torch.Tensor):
        """``[P]`` the loss of each predicted position, in ``predicted.nonzero()`` order:
        cross-entropy in nats (tokens) or the L1 over bins, averaged, of the CMVN-normalized
        frame (mel)."""
        pred = out.prediction[predicted].float()  # [P, V] or [P, n_mels]
        if self.tgt_is_mel:
            target = (tgt[predicted].float() - self.feature_mean) / self.feature_std  # [P, n_mels]
            return (pred - target).abs().mean(dim=-1)
        return F.cross_entropy(pred, tgt[predicted], reduction="none")

    def prediction_loss(self, out: CoMMAOutput, tgt: torch.Tensor, predicted: torch.Tensor):
        """Mean loss over the predicted positions: cross-entropy (tokens) or L1 (frames, against
        the CMVN-normalized target)."""
        return self.masked_losses(out, tgt, predicted).mean()

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The trainer's entry point: mask ratios and masks come from torch's global CPU
        generator, which the trainer seeds and checkpoints (so training resumes bit for bit)."""
        lengths = batch.tgt_lengths.cpu()
        p = sample_mask_ratio(len(lengths), torch.default_generator)
        predicted = self.mask_targets(lengths, p, torch.default_generator).to(batch.tgt.device)
        constrained = self.config.ac_weight > 0
        out = self(
            batch.src,
            batch.src_lengths,
            batch.tgt,
            batch.tgt_lengths,
            predicted,
            source_attention=constrained,
        )
        loss = self.prediction_loss(out, batch.tgt, predicted)
        logs = {"units": float(predicted.sum()), "mask_ratio": float(p.mean())}
        if constrained:
            constraint = self.attention_constraint(out, batch)
            loss = loss + self.config.ac_weight * constraint
            logs["ac_kl"] = float(constraint.detach())
        return loss, logs

    def attention_constraint(self, out: CoMMAOutput, batch: Batch) -> torch.Tensor:
        """Eq. 7-8 on a forward run with ``source_attention=True`` (or ``need_weights=True``):
        the mean over layers, heads and target rows of KL(teacher row || CoMMA's
        source-renormalized row)."""
        src_len, tgt_len = out.src_lengths, batch.tgt_lengths
        targets = teacher_targets_of(batch, "CoMMA with ac_weight > 0", src_len, tgt_len)
        if out.source_attention is not None:
            student = torch.stack(out.source_attention, dim=1)  # [B, layers, H, N, M]
        elif out.attention is not None:
            # Our mix-attention is [source; target] ordered: the target rows' source columns.
            source = torch.stack(
                [layer[..., out.src_max :, : out.src_max] for layer in out.attention], dim=1
            )  # [B, layers, H, N, M]
            student = renormalize_source(source, src_len, tgt_len)  # [B, layers, H, N, M]
        else:
            raise ValueError("the attention constraint needs a forward run with its attention")
        teacher = constraint_targets(
            targets.constraint_maps(
                AC_TEACHER_TARGETS[self.config.ac_mode], student.shape[-2], out.src_max
            ),
            self.config.layers,
            self.config.heads,
        )  # [B, layers, H, N, M] per head, or [B, N, M] broadcast
        return attention_kl_loss(teacher.to(student.device), student, src_len, tgt_len)
