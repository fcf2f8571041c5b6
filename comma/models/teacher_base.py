"""What the AR teachers of the study share (their family, the three teachers and their
registry, is :mod:`comma.models.teacher`, whose docstring describes the models, their losses and
their API): the config :class:`TeacherConfig`, the outputs of the encoder and of a
teacher-forced run, the teacher-forcing shifts of tokens and frames, the guided-attention
penalty, the encoder-decoder base :class:`ARTeacher`, and :class:`TokenTeacher`, the token
decoder and label-smoothed (optionally joint CTC) loss of NMT and ASR. A change here that
changes what a checkpoint means bumps ``comma.models.teacher.MODEL_FORMAT``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comma.data.batching import Batch
from comma.data.vocab import BOS, EOS, PAD, SPECIALS
from comma.models.config_checks import common_problems
from comma.nn.prenets import TokenEmbedding
from comma.nn.transformer import (
    Decoder,
    DecoderCache,
    Encoder,
    SinusoidalPositions,
    padding_mask,
)

__all__ = [
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "TeacherConfig",
    "EncoderOutput",
    "TokenOutput",
    "MelOutput",
    "ARTeacher",
    "TokenTeacher",
    "shift_tokens",
    "shift_frames",
    "guided_attention_weights",
]

PAD_ID, BOS_ID, EOS_ID = (SPECIALS.index(s) for s in (PAD, BOS, EOS))  # 0, 1, 2


@dataclass(frozen=True)
class TeacherConfig:
    """Architecture and loss settings of one AR teacher (``models.teacher.{task}`` without the
    optimization keys, plus the data's sizes). Defaults are the published models' settings."""

    task: str
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn_dim: int
    dropout: float
    attention_dropout: float = 0.0  # fairseq's transformer_iwslt_de_en default
    pre_norm: bool = False  # fairseq post-norm for NMT; ESPnet uses pre-norm for ASR/TTS
    src_vocab: int | None = None  # NMT, TTS (phonemes)
    tgt_vocab: int | None = None  # NMT, ASR
    n_mels: int = 80
    # Token targets
    label_smoothing: float = 0.1
    tie_embeddings: bool = True
    # Joint CTC on the encoder (Watanabe et al. 2017; Karita et al. 2019; ESPnet's mtlalpha):
    # the weight w in (1 - w) * attention + w * CTC; 0 = off. A monotonic alignment objective
    # that speeds up and regularizes the encoder's training.
    ctc_weight: float = 0.0
    # SpecAugment (Park et al. 2019) on the normalized log-mel input while training: this many
    # frequency / time masks of up to this many bins / frames each; 0 masks = off.
    freq_masks: int = 0
    freq_mask_width: int = 27
    time_masks: int = 0
    time_mask_width: int = 40
    # ASR encoder pre-net
    conv_channels: int = 256
    conv_strides: tuple[int, ...] = (2, 2, 1)
    # TTS decoder pre-net, post-net, stop token
    prenet_hidden: int = 256
    prenet_dropout: float = 0.5
    # Tacotron 2 and ESPnet keep the pre-net's dropout on at inference: it is what stops the
    # AR decoder from copying its previous frame instead of reading the encoder.
    prenet_dropout_at_inference: bool = True
    postnet_layers: int = 5
    postnet_channels: int = 512
    postnet_kernel: int = 5
    postnet_dropout: float = 0.5
    stop_pos_weight: float = 5.0
    # Learn global-CMVN-normalized log-mel (ESPnet's global_mvn) instead of log-mel (Tacotron 2,
    # FastSpeech); generation returns log-mel either way.
    normalize_mel: bool = False
    # Guided attention (any task)
    guided_attention_weight: float = 0.0  # 0 = off
    guided_attention_sigma: float = 0.4
    guided_attention_layers: int = 2  # the last k decoder layers ...
    guided_attention_heads: int = 2  # ... and their first k heads (ESPnet's choice)

    def __post_init__(self):
        problems = common_problems(self, "teacher")
        if not 0 <= self.ctc_weight < 1:
            problems.append(f"ctc_weight must be in [0, 1), got {self.ctc_weight}")
        if self.ctc_weight > 0 and self.task != "asr":
            problems.append("ctc_weight is for ASR (a speech source) only")
        if min(self.freq_masks, self.freq_mask_width, self.time_masks, self.time_mask_width) < 0:
            problems.append("SpecAugment mask counts and widths must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.postnet_layers < 2:
            problems.append(f"postnet_layers must be >= 2, got {self.postnet_layers}")
        if self.postnet_kernel % 2 == 0:
            problems.append(f"postnet_kernel must be odd (same padding), got {self.postnet_kernel}")
        if self.guided_attention_weight < 0 or self.guided_attention_sigma <= 0:
            problems.append("guided attention needs weight >= 0 and sigma > 0")
        guided = self.guided_attention_weight > 0
        if guided and not 1 <= self.guided_attention_layers <= self.decoder_layers:
            problems.append(
                f"guided_attention_layers must be in 1..{self.decoder_layers}, "
                f"got {self.guided_attention_layers}"
            )
        if guided and not 1 <= self.guided_attention_heads <= self.heads:
            problems.append(
                f"guided_attention_heads must be in 1..{self.heads}, "
                f"got {self.guided_attention_heads}"
            )
        if problems:
            raise ValueError("invalid teacher config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conv_strides"] = list(self.conv_strides)
        return d


@dataclass(frozen=True)
class EncoderOutput:
    hidden: torch.Tensor  # [B, S, d], the encoder's output (S after the pre-net)
    lengths: torch.Tensor  # [B] int64, valid encoder positions per sentence

    def index_select(self, index: torch.Tensor) -> EncoderOutput:
        """Rows `index` ``[B']`` (e.g. each sentence repeated beam-size times)."""
        return EncoderOutput(
            self.hidden.index_select(0, index), self.lengths.index_select(0, index)
        )


@dataclass
class TokenOutput:
    logits: torch.Tensor  # [B, T, V]
    src_lengths: torch.Tensor  # [B] encoder positions (after the pre-net)
    encoder_hidden: torch.Tensor  # [B, S, d]
    cross_attention: list[torch.Tensor] | None = None  # per decoder layer [B, H, T, S]
    self_attention: list[torch.Tensor] | None = None  # per decoder layer [B, H, T, T]


@dataclass
class MelOutput:
    mel: torch.Tensor  # [B, T, n_mels], the mel linear's frames (before the post-net)
    mel_postnet: torch.Tensor  # [B, T, n_mels], after the post-net's residual
    stop_logits: torch.Tensor  # [B, T], logit of "this is the last frame"
    src_lengths: torch.Tensor  # [B]
    cross_attention: list[torch.Tensor] | None = None  # per decoder layer [B, H, T, S]
    self_attention: list[torch.Tensor] | None = None  # per decoder layer [B, H, T, T]


def shift_tokens(
    tgt: torch.Tensor, tgt_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets ``[B, N]`` (pad 0, no BOS/EOS) -> decoder input ``<s> y_1..y_N`` ``[B, N+1]``,
    target ``y_1..y_N </s>`` ``[B, N+1]`` (both padded with 0) and their lengths ``N_b + 1``."""
    batch, _ = tgt.shape
    lengths = tgt_len + 1
    positions = torch.arange(tgt.shape[1] + 1, device=tgt.device)  # [N+1]
    bos = torch.full((batch, 1), BOS_ID, dtype=tgt.dtype, device=tgt.device)
    prev = torch.cat([bos, tgt], dim=1)  # [B, N+1]
    prev = prev.masked_fill(positions[None, :] >= lengths[:, None], PAD_ID)
    target = torch.cat([tgt, torch.full_like(bos, PAD_ID)], dim=1)  # [B, N+1]
    target = target.masked_fill(positions[None, :] >= lengths[:, None], PAD_ID)
    target = target.masked_fill(positions[None, :] == tgt_len[:, None], EOS_ID)
    return prev, target, lengths


def shift_frames(tgt: torch.Tensor, tgt_len: torch.Tensor) -> torch.Tensor:
    """Mel targets ``[B, T, n]`` -> decoder input ``[B, T, n]``: a zero "go" frame, then frames
    ``x_1 .. x_{T-1}`` (padding stays zero)."""
    prev = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)
    valid = padding_mask(tgt_len, tgt.shape[1])  # [B, T]
    return prev * valid[..., None].to(prev.dtype)


def guided_attention_weights(
    src_len: torch.Tensor, tgt_len: torch.Tensor, src_max: int, tgt_max: int, sigma: float
) -> torch.Tensor:
    """Penalty ``W [B, T_max, S_max]`` of Tachibana et al. (2018): ``1 - exp(-(s/S - t/T)^2 /
    (2 sigma^2))`` on valid cells, 0 on padding; attention far from the diagonal costs most."""
    t = torch.arange(tgt_max, device=tgt_len.device, dtype=torch.float32)  # [T]
    s = torch.arange(src_max, device=src_len.device, dtype=torch.float32)  # [S]
    rel_t = t[None, :, None] / tgt_len[:, None, None].float()  # [B, T, 1]
    rel_s = s[None, None, :] / src_len[:, None, None].float()  # [B, 1, S]
    weights = 1.0 - torch.exp(-((rel_s - rel_t) ** 2) / (2 * sigma**2))  # [B, T, S]
    valid = padding_mask(tgt_len, tgt_max)[:, :, None] & padding_mask(src_len, src_max)[:, None]
    return weights * valid


class ARTeacher(nn.Module):
    """Encoder-decoder Transformer shared by the three teachers: a source pre-net, sinusoidal
    positions, an encoder, and a causal decoder over the embedded previous outputs. Subclasses
    give the target pre-net, the output heads and the loss."""

    def __init__(self, config: TeacherConfig, src_prenet: nn.Module, scaled_positions: bool):
        super().__init__()
        self.config = c = config
        self.src_prenet = src_prenet
        self.positions = SinusoidalPositions(c.d_model)
        # Li et al. (2019): a trainable scale on the positions of each side, since the pre-nets'
        # outputs over mel frames and phonemes have a scale of their own.
        if scaled_positions:
            self.src_position_scale = nn.Parameter(torch.ones(()))
            self.tgt_position_scale = nn.Parameter(torch.ones(()))
        else:
            self.src_position_scale = self.tgt_position_scale = None
        self.input_dropout = nn.Dropout(c.dropout)
        stack = dict(pre_norm=c.pre_norm, attention_dropout=c.attention_dropout)
        self.encoder = Encoder(c.encoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout, **stack)
        self.decoder = Decoder(
            c.decoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout, causal=True, **stack
        )

    def _add_positions(self, x: torch.Tensor, start: int, scale: nn.Parameter | None):
        positions = self.positions(torch.arange(start, start + x.shape[1], device=x.device))
        if scale is not None:
            positions = positions * scale
        return self.input_dropout(x + positions[None].to(x.dtype))  # [B, L, d]

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> EncoderOutput:
        """src ``[B, S]`` ids or ``[B, S, n_mels]`` frames -> encoder states ``[B, S', d]``."""
        x, lengths = self.src_prenet(src, src_len)  # [B, S', d], [B]
        x = self._add_positions(x, 0, self.src_position_scale)
        return EncoderOutput(self.encoder(x, lengths).hidden, lengths)

    def new_cache(self) -> DecoderCache:
        return self.decoder.new_cache()

    def _guided_attention_loss(
        self, cross_attention: list[torch.Tensor], src_len: torch.Tensor, tgt_len: torch.Tensor
    ) -> torch.Tensor:
        """Tachibana et al.'s penalty on the first `guided_attention_heads` heads of the last
        `guided_attention_layers` decoder layers: per decoder position, the attention-weighted
        distance from the diagonal (:func:`guided_attention_weights`), averaged over positions,
        heads and layers. (ESPnet averages over (position, source) cells instead, i.e. also
        divides by the source length.)"""
        c = self.config
        attention = torch.stack(
            [
                a[:, : c.guided_attention_heads]
                for a in cross_attention[-c.guided_attention_layers :]
            ],
            dim=1,
        )  # [B, layers, heads, T, S]
        penalty = guided_attention_weights(
            src_len, tgt_len, attention.shape[-1], attention.shape[-2], c.guided_attention_sigma
        )  # [B, T, S]
        rows = tgt_len.sum() * c.guided_attention_layers * c.guided_attention_heads
        return (attention.float() * penalty[:, None, None]).sum() / rows

    def _decode(
        self,
        embedded: torch.Tensor,
        tgt_len: torch.Tensor,
        encoded: EncoderOutput,
        need_weights: bool,
    ):
        x = self._add_positions(embedded, 0, self.tgt_position_scale)
        return self.decoder(x, encoded.hidden, tgt_len, encoded.lengths, need_weights=need_weights)

    def _decode_step(self, embedded: torch.Tensor, cache: DecoderCache, encoded: EncoderOutput):
        x = self._add_positions(embedded, len(cache), self.tgt_position_scale)
        first = len(cache) == 0
        return self.decoder.step(
            x, cache, encoded.hidden if first else None, memory_lengths=encoded.lengths
        ).hidden  # [B, T_new, d]


class TokenTeacher(ARTeacher):
    """A teacher with a token target (NMT, ASR): embedding pre-net, vocabulary projection."""

    def __init__(self, config: TeacherConfig, src_prenet: nn.Module):
        super().__init__(config, src_prenet, scaled_positions=False)
        c = config
        self.tgt_prenet = TokenEmbedding(c.tgt_vocab, c.d_model, padding_idx=PAD_ID)
        self.output = nn.Linear(c.d_model, c.tgt_vocab, bias=False)
        if c.tie_embeddings:
            self.output.weight = self.tgt_prenet.embed.weight
        else:
            nn.init.normal_(self.output.weight, std=c.d_model**-0.5)
        # CTC over the target vocabulary with the pad id as the blank (never a target token).
        self.ctc_output = nn.Linear(c.d_model, c.tgt_vocab) if c.ctc_weight > 0 else None

    def forward(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        prev_tokens: torch.Tensor,
        prev_len: torch.Tensor,
        need_weights: bool = False,
    ) -> TokenOutput:
        """Teacher-forced run: decoder input `prev_tokens` ``[B, T]`` (``<s> y_1 ..``, see
        :func:`shift_tokens`) -> next-token logits ``[B, T, V]`` and, if `need_weights`, the
        attention of every decoder layer (cross ``[B, H, T, S]``, self ``[B, H, T, T]``)."""
        encoded = self.encode(src, src_len)
        embedded, _ = self.tgt_prenet(prev_tokens, prev_len)  # [B, T, d]
        out = self._decode(embedded, prev_len, encoded, need_weights)
        return TokenOutput(
            self.output(out.hidden),
            encoded.lengths,
            encoded.hidden,
            out.cross_attention,
            out.self_attention,
        )

    def step(
        self, prev_tokens: torch.Tensor, cache: DecoderCache, encoded: EncoderOutput
    ) -> torch.Tensor:
        """Incremental decoding: the last tokens ``[B, 1]`` -> log-probabilities ``[B, V]`` of
        the next one (float32). Extends `cache` in place."""
        embedded, _ = self.tgt_prenet(prev_tokens, None)
        hidden = self._decode_step(embedded, cache, encoded)  # [B, 1, d]
        return F.log_softmax(self.output(hidden[:, -1]).float(), dim=-1)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        prev, target, lengths = shift_tokens(batch.tgt, batch.tgt_lengths)
        guided = self.config.guided_attention_weight > 0
        out = self(batch.src, batch.src_lengths, prev, lengths, need_weights=guided)
        valid = target != PAD_ID  # [B, T]
        lprobs = F.log_softmax(out.logits[valid].float(), dim=-1)  # [U, V]
        gold = target[valid]  # [U]
        nll = -lprobs.gather(1, gold[:, None]).squeeze(1)  # [U]
        smooth = -lprobs.mean(dim=-1)  # [U], the uniform share of the smoothing
        eps = self.config.label_smoothing
        loss = ((1.0 - eps) * nll + eps * smooth).mean()
        logs = {"units": float(valid.sum()), "nll": float(nll.mean().detach())}
        if self.ctc_output is not None:
            ctc = self._ctc_loss(out, batch) / valid.sum()  # per target token, like the rest
            w = self.config.ctc_weight
            loss = (1.0 - w) * loss + w * ctc
            logs["ctc"] = float(ctc.detach())
        if guided:
            guided_loss = self._guided_attention_loss(out.cross_attention, out.src_lengths, lengths)
            loss = loss + self.config.guided_attention_weight * guided_loss
            logs["guided_attention"] = float(guided_loss.detach())
        return loss, logs

    def _ctc_loss(self, out: TokenOutput, batch: Batch) -> torch.Tensor:
        """CTC of the targets (no BOS/EOS) given the encoder states, summed over sentences."""
        lprobs = F.log_softmax(self.ctc_output(out.encoder_hidden).float(), dim=-1)  # [B, S, V]
        return F.ctc_loss(
            lprobs.transpose(0, 1),  # [S, B, V]
            batch.tgt,
            out.src_lengths,
            batch.tgt_lengths,
            blank=PAD_ID,
            reduction="sum",
            zero_infinity=True,  # a clip too short for its transcript adds nothing, not inf
        )
