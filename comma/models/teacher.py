"""The AR teachers of the study (paper Table 1): Transformer NMT, Transformer ASR, Transformer TTS.

All three are an encoder-decoder Transformer built from the shared blocks
(``comma.nn.transformer``: :class:`Encoder`, a causal :class:`Decoder`, sinusoidal positions)
and the task pre-nets of ``comma.nn.prenets``:

* **NMT** (Vaswani et al. 2017; fairseq's ``transformer_iwslt_de_en`` at the paper's scale):
  token embeddings on both sides, post-norm layers, the decoder's output projection tied to its
  input embedding (fairseq's ``--share-decoder-input-output-embed``).
* **ASR** (Karita et al. 2019, ESPnet): log-mel input normalized with the training set's
  per-bin mean and std (global CMVN), optional SpecAugment, a 3-layer 2D conv pre-net (about 4x
  subsampling in time), pre-norm layers, a token decoder, and an optional joint CTC loss on the
  encoder.
* **TTS** (Li et al. 2019): a phoneme embedding, sinusoidal positions scaled by a trainable
  weight on each side, a decoder pre-net of 2 dense ReLU layers over the previous mel frame,
  a mel linear and a stop-token linear on the decoder output, and a 5-layer convolutional
  post-net (Shen et al. 2018) that adds a residual to the predicted frames. It learns log-mel
  as Tacotron 2 does, or with ``normalize_mel`` log-mel normalized with the training set's
  global CMVN (ESPnet's ``normalize: global_mvn``, as CoMMA's TTS target). Its decoder runs in
  the model's units (the identity without ``normalize_mel``);
  :func:`comma.engine.decode.generate_mel` returns log-mel. Measured on the mini preset at the
  same seed and 1,500 steps, the normalized teacher was worse: MCD 3.94 against 3.35 dB
  (baseline 4.74), outputs 9 % short against 6 % long; so the presets keep log-mel.

Training (``loss(batch) -> (loss, logs)``, what ``comma.engine.trainer.train`` calls),
teacher forcing:

* tokens: decoder input ``<s> y_1 .. y_N``, target ``y_1 .. y_N </s>``; label-smoothed
  cross-entropy (fairseq 0.10's ``label_smoothed_cross_entropy``, the same as torch's
  ``cross_entropy(label_smoothing=eps)``: ``(1 - eps) nll + eps * mean_v(-log p_v)``), the
  mean over target tokens (EOS included); ``logs["units"]`` is that token count, ``logs["nll"]``
  the unsmoothed negative log-likelihood. ASR may add CTC: ``(1 - w) * that + w * CTC`` with
  the CTC loss per target token.
* mel: x the ground truth in the model's units, decoder input ``0, x_1 .. x_{T-1}`` (an all-zero
  "go" frame, then x; :meth:`TransformerTTS.decoder_inputs`); L1 of the mel linear's frames
  and of the post-net's frames against ``x_1 .. x_T`` (mean over valid frames and bins), plus
  the stop token's binary cross-entropy (1 on the last frame, weighted by ``stop_pos_weight``
  since it is one positive per utterance, Li et al.); ``logs["units"]`` = mel frames.
* any teacher may add a guided-attention loss (Tachibana et al. 2018, as ESPnet's Transformer
  TTS) that pushes chosen heads of the encoder-decoder attention towards the diagonal.

``forward(..., need_weights=True)`` returns the encoder-decoder attention of every layer and
head, ``[B, H, T, S]`` per layer (rows: decoder positions; columns: encoder positions after the
pre-net, i.e. subsampled frames for ASR), which distillation, FastSpeech durations and the ASR
attention windows are computed from. Incremental decoding (``comma.engine.decode``) uses
:meth:`encode`, :meth:`new_cache` and :meth:`step`.

Training and evaluation are stages (:mod:`comma.stages.teacher`); the registry
(:mod:`comma.models.registry`) builds and loads a teacher.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comma.data.batching import Batch
from comma.data.vocab import BOS, EOS, PAD, SPECIALS
from comma.models.config_checks import common_problems
from comma.nn.prenets import (
    Conv2dPrenet,
    DensePrenet,
    GlobalCMVN,
    TokenEmbedding,
)
from comma.nn.transformer import (
    Decoder,
    DecoderCache,
    Encoder,
    SinusoidalPositions,
    padding_mask,
)
from comma.tasks import TASK_NAMES

__all__ = [
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "TEACHER_TASKS",
    "MODEL_FORMAT",
    "TeacherConfig",
    "EncoderOutput",
    "TokenOutput",
    "MelOutput",
    "ARTeacher",
    "TokenTeacher",
    "TransformerNMT",
    "TransformerASR",
    "TransformerTTS",
    "ConvPostnet",
    "shift_tokens",
    "shift_frames",
    "guided_attention_weights",
    "build_teacher",
]

log = logging.getLogger(__name__)

PAD_ID, BOS_ID, EOS_ID = (SPECIALS.index(s) for s in (PAD, BOS, EOS))  # 0, 1, 2
TEACHER_TASKS = TASK_NAMES
# v2: the TTS teacher carries target statistics (buffers; CMVN with normalize_mel)
MODEL_FORMAT = "comma-teacher-v2"


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


class ConvPostnet(nn.Module):
    """Shen et al. (2018)'s post-net: `layers` 1D convolutions over time (kernel k, same
    padding), batch norm, tanh on all but the last, dropout; frames ``[B, T, n]`` -> residual
    ``[B, T, n]`` to add to them."""

    def __init__(self, n_mels: int, channels: int, layers: int, kernel: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList()
        for k in range(layers):
            in_ch = n_mels if k == 0 else channels
            out_ch = n_mels if k == layers - 1 else channels
            block = [
                nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                nn.BatchNorm1d(out_ch),
            ]
            if k < layers - 1:
                block.append(nn.Tanh())
            block.append(nn.Dropout(dropout))
            self.blocks.append(nn.Sequential(*block))

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = padding_mask(lengths, frames.shape[1])[:, None, :].to(frames.dtype)  # [B, 1, T]
        x = frames.transpose(1, 2) * valid  # [B, n, T]
        for block in self.blocks:
            # Re-zero the padding after every layer: the convolutions would otherwise carry
            # values from beyond a sequence's end back into it (batch-dependent outputs).
            x = block(x) * valid  # [B, C, T]
        return x.transpose(1, 2)  # [B, T, n]


@contextlib.contextmanager
def _train_mode(module: nn.Module, enabled: bool):
    """Run `module` in training mode (its dropout on) inside the block if `enabled`."""
    was_training = module.training
    if enabled:
        module.train(True)
    try:
        yield
    finally:
        module.train(was_training)


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


class TransformerNMT(TokenTeacher):
    """Transformer NMT (Vaswani et al. 2017), fairseq's transformer_iwslt_de_en shape."""

    def __init__(self, config: TeacherConfig):
        super().__init__(config, TokenEmbedding(config.src_vocab, config.d_model, PAD_ID))


class TransformerASR(GlobalCMVN, TokenTeacher):
    """Transformer ASR (Karita et al. 2019): 2D conv pre-net over log-mel, token decoder.

    The log-mel input is normalized per bin with the training set's mean and standard
    deviation (ESPnet's global CMVN), kept as buffers so they travel with the weights: set them
    with :meth:`set_feature_statistics` before training."""

    def __init__(self, config: TeacherConfig):
        c = config
        super().__init__(c, Conv2dPrenet(c.n_mels, c.d_model, c.conv_channels, c.conv_strides))
        self.init_feature_statistics(c.n_mels)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> EncoderOutput:
        src = self.normalize_features(src, src_len)
        if self.training:
            src = self._spec_augment(src, src_len)
        needed = self.src_prenet.min_input_length()
        if src.shape[1] < needed:  # very short clips: pad up to the conv's receptive field
            src = F.pad(src, (0, 0, 0, needed - src.shape[1]))
        return super().encode(src, src_len)

    def _spec_augment(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero (the mean, after normalization) random frequency bands and time spans of each
        utterance ``[B, T, F]``. Drawn on the CPU from torch's global generator, which the
        trainer seeds and checkpoints."""
        c = self.config
        batch, frames_max, bins = frames.shape
        lengths = lengths.cpu()
        bin_index, frame_index = torch.arange(bins), torch.arange(frames_max)  # [F], [T]
        masked = torch.zeros(batch, frames_max, bins, dtype=torch.bool)  # [B, T, F]
        for _ in range(c.freq_masks):
            width = torch.randint(0, c.freq_mask_width + 1, (batch,)).clamp(max=bins)  # [B]
            start = (torch.rand(batch) * (bins - width + 1)).long()  # [B]
            band = (bin_index >= start[:, None]) & (bin_index < (start + width)[:, None])
            masked |= band[:, None, :]
        for _ in range(c.time_masks):
            width = torch.randint(0, c.time_mask_width + 1, (batch,))
            width = torch.minimum(width, lengths // 5)  # at most a fifth of the utterance
            start = (torch.rand(batch) * (lengths - width + 1)).long()  # [B]
            span = (frame_index >= start[:, None]) & (frame_index < (start + width)[:, None])
            masked |= span[:, :, None]
        return frames.masked_fill(masked.to(frames.device), 0.0)


class TransformerTTS(GlobalCMVN, ARTeacher):
    """Transformer TTS (Li et al. 2019): phonemes -> log-mel frames with a stop token.

    Frames in and out of :meth:`forward`, :meth:`step` and :meth:`refine` are in the model's
    units: CMVN-normalized with ``normalize_mel`` (the training targets' statistics, set with
    :meth:`set_feature_statistics`), else log-mel;
    :meth:`decoder_inputs` builds the teacher-forced input from log-mel."""

    def __init__(self, config: TeacherConfig):
        c = config
        super().__init__(c, TokenEmbedding(c.src_vocab, c.d_model, PAD_ID), scaled_positions=True)
        self.init_feature_statistics(c.n_mels, side="tgt", enabled=c.normalize_mel)
        self.tgt_prenet = DensePrenet(c.n_mels, c.d_model, c.prenet_hidden, c.prenet_dropout)
        self.mel_linear = nn.Linear(c.d_model, c.n_mels)
        self.stop_linear = nn.Linear(c.d_model, 1)
        self.postnet = ConvPostnet(
            c.n_mels, c.postnet_channels, c.postnet_layers, c.postnet_kernel, c.postnet_dropout
        )

    def _prenet(self, frames: torch.Tensor) -> torch.Tensor:
        with _train_mode(self.tgt_prenet, self.config.prenet_dropout_at_inference):
            return self.tgt_prenet(frames, None)[0]  # [B, T, d]

    def forward(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        prev_frames: torch.Tensor,
        tgt_len: torch.Tensor,
        need_weights: bool = False,
    ) -> MelOutput:
        """Teacher-forced run: decoder input `prev_frames` ``[B, T, n]`` (go frame, then the
        ground truth in model units shifted: :meth:`decoder_inputs`) -> frames, post-net
        frames and stop logits for positions ``1..T``, and the attention if `need_weights`."""
        encoded = self.encode(src, src_len)
        out = self._decode(self._prenet(prev_frames), tgt_len, encoded, need_weights)
        mel = self.mel_linear(out.hidden)  # [B, T, n]
        mel_postnet = mel + self.postnet(mel, tgt_len)
        stop = self.stop_linear(out.hidden).squeeze(-1)  # [B, T]
        return MelOutput(
            mel, mel_postnet, stop, encoded.lengths, out.cross_attention, out.self_attention
        )

    def decoder_inputs(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, T, n]`` -> the teacher-forced decoder input: the go frame, then the
        frames in the model's units shifted by one."""
        return shift_frames(self.normalize_features(frames, lengths), lengths)

    def step(
        self, prev_frames: torch.Tensor, cache: DecoderCache, encoded: EncoderOutput
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Incremental generation: the last frames ``[B, 1, n]`` -> the next frame ``[B, n]``
        (before the post-net) and its stop logit ``[B]``. Extends `cache` in place."""
        hidden = self._decode_step(self._prenet(prev_frames), cache, encoded)[:, -1]  # [B, d]
        return self.mel_linear(hidden), self.stop_linear(hidden).squeeze(-1)

    def refine(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Post-net over generated frames ``[B, T, n]`` -> ``[B, T, n]``."""
        return frames + self.postnet(frames, lengths)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        tgt, tgt_len = batch.tgt, batch.tgt_lengths
        guided = c.guided_attention_weight > 0
        out = self(batch.src, batch.src_lengths, self.decoder_inputs(tgt, tgt_len), tgt_len, guided)
        valid = padding_mask(tgt_len, tgt.shape[1])  # [B, T]
        target = self.normalize_features(tgt, tgt_len)[valid].float()  # [U, n]
        mel_l1 = F.l1_loss(out.mel[valid].float(), target)
        postnet_l1 = F.l1_loss(out.mel_postnet[valid].float(), target)
        positions = torch.arange(tgt.shape[1], device=tgt.device)
        is_last = (positions[None, :] == (tgt_len - 1)[:, None]).float()  # [B, T]
        stop_bce = F.binary_cross_entropy_with_logits(
            out.stop_logits[valid].float(),
            is_last[valid],
            pos_weight=torch.tensor(c.stop_pos_weight, device=tgt.device),
        )
        loss = mel_l1 + postnet_l1 + stop_bce
        logs = {
            "units": float(valid.sum()),
            "mel_l1": float(mel_l1.detach()),
            "postnet_l1": float(postnet_l1.detach()),
            "stop_bce": float(stop_bce.detach()),
        }
        if guided:
            guided_loss = self._guided_attention_loss(out.cross_attention, out.src_lengths, tgt_len)
            loss = loss + c.guided_attention_weight * guided_loss
            logs["guided_attention"] = float(guided_loss.detach())
        return loss, logs


TEACHERS = {"nmt": TransformerNMT, "asr": TransformerASR, "tts": TransformerTTS}


def build_teacher(config: TeacherConfig) -> ARTeacher:
    return TEACHERS[config.task](config)
