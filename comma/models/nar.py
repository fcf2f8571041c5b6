"""The NAR students of the study (paper Table 1): NAT, NAR-ASR and FastSpeech, each with and
without its alignment constraint ("AC", paper section 5.1; ``NARConfig.constraint``).

All three predict every target position in ONE parallel pass, from shared blocks
(``comma.models.transformer``) and the task pre-nets (``comma.models.prenets``):

* **NAT** (Gu et al. 2017, without fertility; fairseq's ``nat/`` for the reference behaviour).
  Token encoder. A length predictor classifies the target length ``0 .. max_target_positions-1``
  from the mean-pooled encoder output (fairseq's NAT with ``pred_length_offset=False``), trained
  with cross-entropy times ``length_loss_weight`` (targets beyond the last class are clamped to
  it). Decoder input: the source embeddings (scaled token embeddings, without positions) copied
  uniformly, target position ``i`` taking source position ``round(i * M / N)`` (halves up,
  clamped to ``M - 1``; Gu et al.'s "uniform copy", :func:`uniform_copy_indices`), plus
  sinusoidal positions; a non-causal decoder with cross-attention over the encoder; token
  cross-entropy (label smoothing ``label_smoothing``, default 0) over the N target positions.
  AC (Li et al. 2019, paper eq. 6): ``ac_weight`` times the KL from the teacher's attention map
  (``alignment.attention``) to the student's cross-attention of every decoder layer and head,
  ``comma.align.attention_kl_loss`` on ``[B, layers, heads, N, M]`` (:func:`nat_attention_kl`).
* **NAR-ASR** (Chen et al. 2019). Log-mel input normalized per bin with the training set's mean
  and std (global CMVN buffers, :meth:`NARASR.set_feature_statistics`, as the AR teacher), the
  2D conv pre-net (``conv_strides`` subsampling), an encoder, the length predictor of NAT. Decoder
  input: the ``<mask>`` token embedding (id 4) at every target position plus positions; a
  non-causal decoder; token cross-entropy. AC: WHILE TRAINING ONLY (the model in training mode),
  the cross-attention of every decoder layer is restricted to the teacher's window
  (``alignment.window``, bool ``[B, N, M]`` over subsampled source positions, section 5.1's
  ``E_{i-1} .. E_{i+1}``, passed through ``comma.align.softmax_safe_mask``); in eval mode and in
  :meth:`generate` no window is applied.
* **FastSpeech** (Ren et al. 2019). Phoneme embedding + positions, ``encoder_layers`` FFT blocks
  (self-attention and a 2-layer 1D-conv feed-forward with kernel ``fft_kernel``, each with a
  residual and LayerNorm; padding is kept at zero so a sentence's output does not depend on the
  batch). With AC (FastSpeech proper): a duration predictor (2 conv1d + ReLU + LayerNorm +
  dropout, a linear to ``log(d + 1)``, trained with MSE against the teacher's durations
  ``alignment.durations`` times ``duration_loss_weight``), the :func:`length_regulator` (each
  phoneme's hidden state repeated d_j times: the teacher's durations in training, which sum to
  the mel length exactly; ``round(exp(pred) - 1)`` clamped at 0 at inference, at least one
  frame per utterance), positions added again, ``decoder_layers`` FFT blocks over the frames, a
  mel linear. Without AC ("FastSpeech w/o AC", Table 4): no durations; the number of frames is
  regressed from the mean-pooled encoder output (MSE on ``log T`` times ``length_loss_weight``)
  and a non-causal :class:`Decoder` whose inputs are only the sinusoidal positions of the T
  frames (ground-truth T in training, predicted T at inference) attends over the phoneme
  encoding by cross-attention: it must learn its source alignment by itself. Both: L1 between
  the predicted and target mel over valid frames (no post-net).

Teacher alignments are DATA, not weights: a model with ``constraint=True`` reads them from the
plain attribute ``model.alignment`` (None by default; not a module or buffer, so not in the
state dict), set by the caller to an object with ``attention(indices, tgt_max, src_max)``,
``window(indices, tgt_max, src_max)`` and ``durations(indices, src_max)`` (see
``comma.align.TeacherAlignment``), looked up with ``batch.indices``. If it also has
``check_lengths(indices, src_len, tgt_len)``, that is called first, so a student whose corpus or
pre-net does not match the teacher's gets a clear error.

API of all three: ``forward(...) -> NAROutput`` (teacher-forced lengths if given, else the
predicted ones); ``loss(batch) -> (loss, logs)`` for ``comma.train`` (``logs["units"]`` = target
tokens or mel frames, plus ``nll``/``mel_l1``, ``length_loss``, ``ac_kl``, ``duration_loss``);
``generate(src, src_len) -> NARGeneration`` (no grad; call ``model.eval()`` first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from comma.align import attention_kl_loss, softmax_safe_mask
from comma.data.batching import Batch
from comma.data.vocab import BOS, EOS, MASK, PAD, SPECIALS
from comma.models.prenets import Conv2dPrenet, TokenEmbedding, feature_statistics
from comma.models.transformer import (
    Decoder,
    Encoder,
    MultiHeadAttention,
    SinusoidalPositions,
    padding_mask,
)

__all__ = [
    "NAR_TASKS",
    "MASK_ID",
    "FORBIDDEN_IDS",
    "NARConfig",
    "NAROutput",
    "NARGeneration",
    "uniform_copy_indices",
    "mean_pool",
    "length_regulator",
    "durations_from_log",
    "nat_attention_kl",
    "ConvFeedForward",
    "FFTBlock",
    "FFTStack",
    "DurationPredictor",
    "NAT",
    "NARASR",
    "FastSpeech",
    "NAR_MODELS",
    "build_nar",
]

PAD_ID, BOS_ID, EOS_ID, MASK_ID = (SPECIALS.index(s) for s in (PAD, BOS, EOS, MASK))  # 0 1 2 4
# Ids a token model never outputs: its targets carry no pad, BOS, EOS or mask.
FORBIDDEN_IDS = (PAD_ID, BOS_ID, EOS_ID, MASK_ID)
NAR_TASKS = ("nmt", "asr", "tts")


@dataclass(frozen=True)
class NARConfig:
    """Architecture and loss settings of one NAR student (``models.nar.{task}`` without the
    optimization keys, plus the data's sizes and the constraint switch)."""

    task: str  # nmt (NAT) | asr (NAR-ASR) | tts (FastSpeech)
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn_dim: int
    dropout: float
    constraint: bool = False  # the alignment constraint "AC" (section 5.1)
    src_vocab: int | None = None  # NMT, TTS (phonemes)
    tgt_vocab: int | None = None  # NMT, ASR
    n_mels: int = 80
    pre_norm: bool = True
    attention_dropout: float = 0.0
    label_smoothing: float = 0.0  # token cross-entropy
    # Token targets: length classes 0 .. max_target_positions - 1 (fairseq's 256).
    max_target_positions: int = 256
    length_loss_weight: float = 0.1  # NAT/NAR-ASR length CE; FastSpeech w/o AC log-length MSE
    ac_weight: float = 1.0  # NAT: weight of the eq. 6 KL
    # ASR encoder pre-net (must subsample as the teacher's for the AC windows)
    conv_channels: int = 256
    conv_strides: tuple[int, ...] = (2, 2, 1)
    # FastSpeech
    duration_predictor_filter: int = 256
    duration_predictor_kernel: int = 3
    duration_predictor_dropout: float = 0.1
    duration_loss_weight: float = 1.0
    fft_kernel: int = 3
    max_output_frames: int = 4096  # inference cap on generated mel frames per utterance

    def __post_init__(self):
        if self.task not in NAR_TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {NAR_TASKS}")
        object.__setattr__(self, "conv_strides", tuple(int(s) for s in self.conv_strides))
        problems = []
        if self.task in ("nmt", "tts") and not self.src_vocab:
            problems.append(f"a {self.task} model needs src_vocab")
        if self.task in ("nmt", "asr") and (not self.tgt_vocab or self.tgt_vocab <= len(SPECIALS)):
            problems.append(f"a {self.task} model needs tgt_vocab > {len(SPECIALS)} (specials)")
        if (
            min(self.d_model, self.heads, self.ffn_dim, self.encoder_layers, self.decoder_layers)
            < 1
        ):
            problems.append("d_model, heads, ffn_dim and the layer counts must be >= 1")
        elif self.d_model % self.heads or self.d_model % 2:
            problems.append(f"d_model {self.d_model} must be even and divisible by heads")
        for name in ("dropout", "attention_dropout", "duration_predictor_dropout"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_target_positions < 2:
            problems.append(f"max_target_positions must be >= 2, got {self.max_target_positions}")
        for name in ("length_loss_weight", "ac_weight", "duration_loss_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("fft_kernel", "duration_predictor_kernel"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                problems.append(f"{name} must be odd (same padding), got {getattr(self, name)}")
        if self.duration_predictor_filter < 1 or self.conv_channels < 1:
            problems.append("duration_predictor_filter and conv_channels must be >= 1")
        if not self.conv_strides or min(self.conv_strides) < 1:
            problems.append(f"conv_strides must be positive, got {list(self.conv_strides)}")
        if self.max_output_frames < 1:
            problems.append(f"max_output_frames must be >= 1, got {self.max_output_frames}")
        if problems:
            raise ValueError("invalid NAR config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_strides"] = list(self.conv_strides)
        return d


@dataclass
class NAROutput:
    prediction: torch.Tensor  # [B, T, V] token logits or [B, T, n_mels] frames (0 on padding)
    src_lengths: torch.Tensor  # [B] encoder positions (after the pre-net)
    tgt_lengths: torch.Tensor  # [B] target positions run: the given lengths or predicted ones
    length_logits: torch.Tensor | None = None  # [B, max_target_positions] (NAT, NAR-ASR)
    log_durations: torch.Tensor | None = None  # [B, M] predicted log(d + 1) (FastSpeech)
    log_length: torch.Tensor | None = None  # [B] predicted log T (FastSpeech w/o AC)
    cross_attention: list[torch.Tensor] | None = None  # per decoder layer [B, H, T, M]


@dataclass
class NARGeneration:
    tokens: list[list[int]] | None  # per sentence: argmax ids, no pad/bos/eos/mask (token tasks)
    frames: list[torch.Tensor] | None  # per utterance [T_b, n_mels] float32 on the CPU (TTS)
    lengths: list[int]  # per sentence: predicted target length (tokens or frames)


# --------------------------------------------------------------------------------------------
# Functions


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


def mean_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B, L, d]`` -> ``[B, d]``: the mean over each sequence's valid positions."""
    valid = padding_mask(lengths, hidden.shape[1])[..., None].to(hidden.dtype)  # [B, L, 1]
    return (hidden * valid).sum(1) / lengths[:, None].clamp(min=1).to(hidden.dtype)


def length_regulator(
    hidden: torch.Tensor, durations: torch.Tensor, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """FastSpeech's length regulator: repeat ``hidden[b, j]`` ``durations[b, j]`` times, in order.

    hidden ``[B, M, d]``, durations int ``[B, M]`` >= 0 (zero on padding; a zero-duration token
    is skipped) -> expanded ``[B, T_max, d]`` (zero beyond each length) and lengths
    ``[B] = durations.sum(1)``. ``T_max`` = `max_len` if given (longer outputs are cut and their
    lengths clamped to it), else the longest length."""
    if durations.shape != hidden.shape[:2]:
        raise ValueError(
            f"durations {tuple(durations.shape)} must match hidden {tuple(hidden.shape[:2])}"
        )
    if durations.dtype.is_floating_point or durations.dtype == torch.bool:
        raise ValueError(f"durations must be an integer tensor, got {durations.dtype}")
    if hidden.shape[1] == 0:
        raise ValueError("cannot regulate an empty source (M = 0)")
    durations = durations.long()
    if bool((durations < 0).any()):
        raise ValueError("durations must be >= 0")
    batch, m_max, d = hidden.shape
    lengths = durations.sum(1)  # [B]
    t_max = (int(lengths.max()) if batch else 0) if max_len is None else int(max_len)
    ends = durations.cumsum(1)  # [B, M]: the first frame after token j
    frames = torch.arange(t_max, device=hidden.device).expand(batch, t_max).contiguous()  # [B, T]
    owner = torch.searchsorted(ends, frames, right=True).clamp(max=m_max - 1)  # [B, T]: token
    expanded = hidden.gather(1, owner[..., None].expand(batch, t_max, d))  # [B, T, d]
    lengths = lengths.clamp(max=t_max)
    valid = padding_mask(lengths, t_max)[..., None].to(hidden.dtype)  # [B, T, 1]
    return expanded * valid, lengths


def durations_from_log(
    log_durations: torch.Tensor, lengths: torch.Tensor, max_duration: int | None = None
) -> torch.Tensor:
    """Predicted ``log(d + 1)`` ``[B, M]`` -> long durations ``round(exp(x) - 1)`` clamped to
    ``[0, max_duration]``, 0 on padding; an utterance whose durations are all 0 gets one frame
    on its phoneme of highest prediction (so every utterance has at least one frame)."""
    valid = padding_mask(lengths, log_durations.shape[1])  # [B, M]
    x = log_durations.float()
    if max_duration is not None:
        x = x.clamp(max=math.log(max_duration + 1))
    durations = torch.round(torch.exp(x) - 1).clamp(min=0).long() * valid  # [B, M]
    empty = durations.sum(1) == 0  # [B]
    if bool(empty.any()):
        best = x.masked_fill(~valid, float("-inf")).argmax(1)  # [B]
        durations[empty, best[empty]] = 1
    return durations


def nat_attention_kl(
    cross_attention: Sequence[torch.Tensor],
    teacher: torch.Tensor,
    src_len: torch.Tensor,
    tgt_len: torch.Tensor,
) -> torch.Tensor:
    """NAT's AC term (eq. 6): the student's cross-attention of every layer ``[B, H, N, M]``
    stacked to ``[B, L, H, N, M]`` against the teacher map ``[B, N, M]``, averaged over
    sentences, layers and heads (``comma.align.attention_kl_loss``)."""
    student = torch.stack(list(cross_attention), dim=1)  # [B, L, H, N, M]
    return attention_kl_loss(teacher.to(student.device), student, src_len, tgt_len)


def _token_loss(
    logits: torch.Tensor, tgt: torch.Tensor, tgt_len: torch.Tensor, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over valid target tokens -> (loss, nll, token count)."""
    valid = padding_mask(tgt_len, logits.shape[1])  # [B, N]
    lprobs = F.log_softmax(logits[valid].float(), dim=-1)  # [U, V]
    gold = tgt[:, : logits.shape[1]][valid]  # [U]
    nll = -lprobs.gather(1, gold[:, None]).squeeze(1)  # [U]
    smooth = -lprobs.mean(dim=-1)  # [U]
    loss = ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mean()
    return loss, nll.mean(), valid.sum()


# --------------------------------------------------------------------------------------------
# FastSpeech's blocks


class ConvFeedForward(nn.Module):
    """FastSpeech's FFT feed-forward: ``Conv1d(d, ffn, k) -> ReLU -> dropout -> Conv1d(ffn, d,
    k)`` over time with same padding; padding positions are zeroed before each convolution, so
    they never leak into valid ones."""

    def __init__(self, d_model: int, ffn_dim: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, ffn_dim, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(ffn_dim, d_model, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # x [B, L, d], valid [B, 1, L] float
        h = self.conv1(x.transpose(1, 2) * valid)  # [B, ffn, L]
        h = self.conv2(self.dropout(F.relu(h)) * valid)  # [B, d, L]
        return h.transpose(1, 2)  # [B, L, d]


class FFTBlock(nn.Module):
    """Feed-forward Transformer block: self-attention and a conv feed-forward, each with
    dropout, a residual and LayerNorm (before the sub-layer if `pre_norm`, else after);
    the output is zero at padding positions."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        ffn_dim: int,
        kernel: int,
        dropout: float,
        attention_dropout: float,
        pre_norm: bool,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.self_attn = MultiHeadAttention(d_model, heads, attention_dropout)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.ffn = ConvFeedForward(d_model, ffn_dim, kernel)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x ``[B, L, d]`` -> ``[B, L, d]`` and the self-attention ``[B, H, L, L]`` if asked."""
        keys = padding_mask(lengths, x.shape[1])  # [B, L]
        valid = keys[:, None, :].to(x.dtype)  # [B, 1, L]
        h = self.self_attn_norm(x) if self.pre_norm else x
        out, weights = self.self_attn(h, h, keys[:, None, None, :], need_weights)
        x = x + self.dropout(out)
        x = x if self.pre_norm else self.self_attn_norm(x)
        h = self.ffn_norm(x) if self.pre_norm else x
        x = x + self.dropout(self.ffn(h, valid))
        x = x if self.pre_norm else self.ffn_norm(x)
        return x * valid.transpose(1, 2), weights  # [B, L, d], padding zero


class FFTStack(nn.Module):
    """N FFT blocks (and a final LayerNorm if pre-norm); padding positions stay zero."""

    def __init__(self, layers: int, config: NARConfig):
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            FFTBlock(
                c.d_model,
                c.heads,
                c.ffn_dim,
                c.fft_kernel,
                c.dropout,
                c.attention_dropout,
                c.pre_norm,
            )
            for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model) if c.pre_norm else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x, _ = layer(x, lengths)
        valid = padding_mask(lengths, x.shape[1])[..., None].to(x.dtype)  # [B, L, 1]
        return self.final_norm(x) * valid  # [B, L, d]


class DurationPredictor(nn.Module):
    """FastSpeech's duration predictor: 2 x (Conv1d(k) -> ReLU -> LayerNorm -> dropout), then a
    linear to one scalar per phoneme, the predicted ``log(d + 1)``; 0 on padding."""

    def __init__(self, d_model: int, filter_size: int, kernel: int, dropout: float, layers=2):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(d_model if k == 0 else filter_size, filter_size, kernel, padding=kernel // 2)
            for k in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(filter_size) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(filter_size, 1)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = padding_mask(lengths, hidden.shape[1])[..., None].to(hidden.dtype)  # [B, M, 1]
        x = hidden
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = conv((x * valid).transpose(1, 2)).transpose(1, 2)  # [B, M, filter]
            x = self.dropout(norm(F.relu(x)))
        return self.out(x).squeeze(-1) * valid.squeeze(-1)  # [B, M]


# --------------------------------------------------------------------------------------------
# Models


class _NARModel(nn.Module):
    """What every NAR student shares: config, sinusoidal positions, input dropout, and the
    teacher alignment attribute."""

    def __init__(self, config: NARConfig, task: str):
        super().__init__()
        if config.task != task:
            raise ValueError(f"{type(self).__name__} is the {task} model, got task {config.task!r}")
        self.config = config
        self.positions = SinusoidalPositions(config.d_model)
        self.input_dropout = nn.Dropout(config.dropout)
        # The teacher alignment for the AC variant: data, not weights (not in the state dict).
        self.alignment = None

    def _add_positions(self, x: torch.Tensor) -> torch.Tensor:
        positions = self.positions(torch.arange(x.shape[1], device=x.device))  # [L, d]
        return self.input_dropout(x + positions[None].to(x.dtype))  # [B, L, d]

    def _teacher(self, batch: Batch, src_len: torch.Tensor, tgt_len: torch.Tensor):
        """The alignment provider, after checking it is set (and its lengths, if it can)."""
        if self.alignment is None:
            raise RuntimeError(
                f"{type(self).__name__} with constraint=True needs the teacher alignment of the "
                "training corpus: set model.alignment = comma.align.TeacherAlignment.load(...)"
            )
        check = getattr(self.alignment, "check_lengths", None)
        if check is not None:
            check(batch.indices, src_len, tgt_len)
        return self.alignment


class _TokenNAR(_NARModel):
    """Encoder, length classifier, non-causal decoder and vocabulary projection (NAT and
    NAR-ASR); subclasses give the source pre-net (:meth:`encode`) and the decoder inputs."""

    def __init__(self, config: NARConfig, task: str):
        super().__init__(config, task)
        c = config
        stack = dict(pre_norm=c.pre_norm, attention_dropout=c.attention_dropout)
        self.encoder = Encoder(c.encoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout, **stack)
        self.length_head = nn.Linear(c.d_model, c.max_target_positions)
        self.decoder = Decoder(
            c.decoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout, causal=False, **stack
        )
        self.output = nn.Linear(c.d_model, c.tgt_vocab, bias=False)
        nn.init.normal_(self.output.weight, std=c.d_model**-0.5)

    def encode(self, src, src_len) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> encoder output ``[B, M, d]``, lengths ``[B]``, pre-net output ``[B, M, d]``."""
        raise NotImplementedError

    def decoder_inputs(
        self, prenet_out: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor
    ) -> torch.Tensor:
        """-> decoder inputs ``[B, N_max, d]`` before positions."""
        raise NotImplementedError

    def predict_lengths(self, length_logits: torch.Tensor) -> torch.Tensor:
        """Length classes ``[B, C]`` -> ``[B]`` argmax, at least 1."""
        return length_logits.argmax(-1).clamp(min=1)

    def forward(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        tgt_len: torch.Tensor | None = None,
        window: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> NAROutput:
        """src ``[B, S]`` ids or ``[B, S, n_mels]`` frames; `tgt_len` ``[B]`` the target lengths
        to decode (None: the length classifier's argmax); `window` an optional bool cross-
        attention mask ``[B, N_max, M_max]`` (True = may attend; NAR-ASR's AC window) -> logits
        ``[B, N_max, V]`` and, if `need_weights`, the cross-attention of every decoder layer."""
        memory, src_len, prenet_out = self.encode(src, src_len)
        return self.decode(memory, src_len, prenet_out, tgt_len, window, need_weights)

    def decode(
        self,
        memory: torch.Tensor,
        src_len: torch.Tensor,
        prenet_out: torch.Tensor,
        tgt_len: torch.Tensor | None = None,
        window: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> NAROutput:
        length_logits = self.length_head(mean_pool(memory, src_len))  # [B, C]
        if tgt_len is None:
            tgt_len = self.predict_lengths(length_logits)
        x = self._add_positions(self.decoder_inputs(prenet_out, src_len, tgt_len))  # [B, N, d]
        cross_mask = None if window is None else softmax_safe_mask(window)[:, None]  # [B,1,N,M]
        out = self.decoder(
            x, memory, tgt_len, src_len, cross_mask=cross_mask, need_weights=need_weights
        )
        logits = self.output(out.hidden)  # [B, N, V]
        return NAROutput(
            logits,
            src_len,
            tgt_len,
            length_logits=length_logits,
            cross_attention=out.cross_attention,
        )

    def length_loss(self, length_logits: torch.Tensor, tgt_len: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the true length class (clamped to the last class), mean over B."""
        target = tgt_len.clamp(max=self.config.max_target_positions - 1)
        return F.cross_entropy(length_logits.float(), target)

    def _token_losses(self, out: NAROutput, batch: Batch) -> tuple[torch.Tensor, dict]:
        c = self.config
        loss, nll, units = _token_loss(
            out.prediction, batch.tgt, batch.tgt_lengths, c.label_smoothing
        )
        length_loss = self.length_loss(out.length_logits, batch.tgt_lengths)
        logs = {
            "units": float(units),
            "nll": float(nll.detach()),
            "length_loss": float(length_loss.detach()),
        }
        return loss + c.length_loss_weight * length_loss, logs

    @torch.no_grad()
    def generate(self, src: torch.Tensor, src_len: torch.Tensor) -> NARGeneration:
        """Predicted lengths, then the argmax token at every position in one pass (pad, BOS,
        EOS and mask are never chosen)."""
        out = self(src, src_len)
        logits = out.prediction.float()
        logits[..., list(FORBIDDEN_IDS)] = float("-inf")
        best = logits.argmax(-1).cpu()  # [B, N]
        lengths = out.tgt_lengths.cpu().tolist()
        tokens = [best[b, :n].tolist() for b, n in enumerate(lengths)]
        return NARGeneration(tokens=tokens, frames=None, lengths=lengths)


class NAT(_TokenNAR):
    """Non-autoregressive Transformer NMT (Gu et al. 2017 without fertility; see the module
    docstring): uniform copy of the source embeddings, one parallel pass, optional eq. 6 AC."""

    def __init__(self, config: NARConfig):
        super().__init__(config, "nmt")
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
            teacher = self._teacher(batch, out.src_lengths, out.tgt_lengths).attention(
                batch.indices, out.prediction.shape[1], batch.src.shape[1]
            )  # [B, N, M]
            kl = nat_attention_kl(out.cross_attention, teacher, out.src_lengths, out.tgt_lengths)
            loss = loss + c.ac_weight * kl
            logs["ac_kl"] = float(kl.detach())
        return loss, logs


class NARASR(_TokenNAR):
    """NAR-ASR (Chen et al. 2019; see the module docstring): CMVN + 2D conv pre-net, an
    all-``<mask>`` decoder input, and the section 5.1 attention window while training."""

    def __init__(self, config: NARConfig):
        super().__init__(config, "asr")
        c = config
        self.src_prenet = Conv2dPrenet(c.n_mels, c.d_model, c.conv_channels, c.conv_strides)
        self.tgt_prenet = TokenEmbedding(c.tgt_vocab, c.d_model, PAD_ID)  # only <mask> is used
        self.register_buffer("feature_mean", torch.zeros(c.n_mels))
        self.register_buffer("feature_std", torch.ones(c.n_mels))

    @torch.no_grad()
    def set_feature_statistics(self, frames: torch.Tensor) -> None:
        """Per-bin mean and std of training frames ``[N, n_mels]`` (global CMVN)."""
        mean, std = feature_statistics(frames, self.config.n_mels)
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def encode(self, src, src_len):
        valid = padding_mask(src_len, src.shape[1])[..., None]  # [B, T, 1]
        src = ((src - self.feature_mean) / self.feature_std) * valid  # padding stays zero
        needed = self.src_prenet.min_input_length()
        if src.shape[1] < needed:  # very short clips: pad up to the conv's receptive field
            src = F.pad(src, (0, 0, 0, needed - src.shape[1]))
        x, src_len = self.src_prenet(src, src_len)  # [B, M, d] (subsampled)
        hidden = self.encoder(self._add_positions(x), src_len).hidden  # [B, M, d]
        return hidden, src_len, x

    def decoder_inputs(self, prenet_out, src_len, tgt_len):
        tgt_max = int(tgt_len.max())
        masks = torch.full((len(tgt_len), tgt_max), MASK_ID, device=tgt_len.device)  # [B, N]
        masks = masks.masked_fill(~padding_mask(tgt_len, tgt_max), PAD_ID)
        return self.tgt_prenet(masks, tgt_len)[0]  # [B, N, d]

    def training_window(
        self, batch: Batch, src_len: torch.Tensor, src_max: int
    ) -> torch.Tensor | None:
        """The AC window bool ``[B, N_max, M_max]`` for this batch, or None (no constraint, or
        eval mode: the window is a training-time constraint only). `src_len` ``[B]`` and
        `src_max` are the model's subsampled source lengths and padded size."""
        if not (self.config.constraint and self.training):
            return None
        tgt_len = batch.tgt_lengths
        tgt_max = int(tgt_len.max())
        window = self._teacher(batch, src_len, tgt_len).window(batch.indices, tgt_max, src_max)
        window = window.to(src_len.device)
        strides = list(self.config.conv_strides)
        if window.dim() != 3 or window.shape[0] != len(tgt_len) or window.shape[1] != tgt_max:
            raise ValueError(
                f"the alignment's window has shape {tuple(window.shape)}, expected "
                f"[{len(tgt_len)}, {tgt_max}, {src_max}] (batch, target tokens, source positions)"
            )
        if window.shape[2] != src_max:
            raise ValueError(
                f"the alignment's window covers {window.shape[2]} source positions but the "
                f"NAR-ASR pre-net (conv_strides={strides}) gives {src_max}: the pre-net strides "
                "must match the teacher's"
            )
        beyond = window & ~padding_mask(src_len, src_max)[:, None, :]
        if bool(beyond.any()):
            b = int(beyond.nonzero()[0, 0])
            raise ValueError(
                f"the alignment's window of sentence {int(batch.indices[b])} reaches beyond its "
                f"{int(src_len[b])} subsampled source positions (conv_strides={strides}): the "
                "pre-net strides must match the teacher's"
            )
        return window.bool()

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        memory, src_len, prenet_out = self.encode(batch.src, batch.src_lengths)
        window = self.training_window(batch, src_len, memory.shape[1])
        out = self.decode(memory, src_len, prenet_out, batch.tgt_lengths, window)
        return self._token_losses(out, batch)


class FastSpeech(_NARModel):
    """FastSpeech (Ren et al. 2019) and FastSpeech w/o AC (see the module docstring)."""

    def __init__(self, config: NARConfig):
        super().__init__(config, "tts")
        c = config
        self.src_prenet = TokenEmbedding(c.src_vocab, c.d_model, PAD_ID)
        self.encoder = FFTStack(c.encoder_layers, c)
        if c.constraint:
            self.duration_predictor = DurationPredictor(
                c.d_model,
                c.duration_predictor_filter,
                c.duration_predictor_kernel,
                c.duration_predictor_dropout,
            )
            self.decoder = FFTStack(c.decoder_layers, c)
            self.length_head = None
        else:
            self.duration_predictor = None
            self.decoder = Decoder(
                c.decoder_layers,
                c.d_model,
                c.heads,
                c.ffn_dim,
                c.dropout,
                causal=False,
                pre_norm=c.pre_norm,
                attention_dropout=c.attention_dropout,
            )
            self.length_head = nn.Linear(c.d_model, 1)  # -> log T
        self.mel_linear = nn.Linear(c.d_model, c.n_mels)

    def forward(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        tgt_len: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> NAROutput:
        """Phonemes ``[B, M]`` -> mel frames ``[B, T_max, n_mels]`` (zero on padding).

        With AC: `durations` long ``[B, M]`` (training: the teacher's) drive the length
        regulator, and `tgt_len`, if given, must equal their sums; without them the predicted
        durations are used (then `tgt_len` must be None). Without AC: `tgt_len` ``[B]`` frames
        (training: the target's) or None for the predicted number; `durations` must be None.
        `need_weights` returns the decoder's cross-attention (w/o AC only; AC has none)."""
        c = self.config
        embedded, src_len = self.src_prenet(src, src_len)  # [B, M, d]
        hidden = self.encoder(self._add_positions(embedded), src_len)  # [B, M, d]
        if c.constraint:
            return self._regulate_and_decode(hidden, src_len, tgt_len, durations)
        if durations is not None:
            raise ValueError("FastSpeech w/o AC takes no durations")
        log_length = self.length_head(mean_pool(hidden, src_len)).squeeze(-1)  # [B]
        if tgt_len is None:
            cap = math.log(c.max_output_frames)
            tgt_len = torch.round(torch.exp(log_length.detach().float().clamp(max=cap))).long()
            tgt_len = tgt_len.clamp(min=1, max=c.max_output_frames)
        t_max = int(tgt_len.max())
        positions = self.positions(torch.arange(t_max, device=src.device))  # [T, d]
        x = self.input_dropout(positions[None].expand(len(tgt_len), -1, -1).to(hidden.dtype))
        out = self.decoder(x, hidden, tgt_len, src_len, need_weights=need_weights)
        mel = self._mel(out.hidden, tgt_len)
        return NAROutput(
            mel, src_len, tgt_len, log_length=log_length, cross_attention=out.cross_attention
        )

    def _regulate_and_decode(self, hidden, src_len, tgt_len, durations) -> NAROutput:
        c = self.config
        log_durations = self.duration_predictor(hidden, src_len)  # [B, M]
        valid = padding_mask(src_len, hidden.shape[1])  # [B, M]
        if durations is None:
            if tgt_len is not None:
                raise ValueError("FastSpeech with AC: give durations with tgt_len, or neither")
            durations = durations_from_log(log_durations.detach(), src_len, c.max_output_frames)
            max_len = min(int(durations.sum(1).max()), c.max_output_frames)
        else:
            durations = durations.to(hidden.device).long() * valid
            if tgt_len is not None and not torch.equal(durations.sum(1), tgt_len.long()):
                raise ValueError(
                    f"durations sum to {durations.sum(1).tolist()} frames but the targets have "
                    f"{tgt_len.tolist()}: the teacher's durations must sum to the mel lengths"
                )
            max_len = None
        frames, frame_len = length_regulator(hidden, durations, max_len)  # [B, T, d], [B]
        frames = self.decoder(self._add_positions(frames), frame_len)  # [B, T, d]
        mel = self._mel(frames, frame_len)
        return NAROutput(mel, src_len, frame_len, log_durations=log_durations)

    def _mel(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = padding_mask(lengths, hidden.shape[1])[..., None].to(hidden.dtype)
        return self.mel_linear(hidden) * valid  # [B, T, n_mels]

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        tgt, tgt_len = batch.tgt, batch.tgt_lengths
        src_len = batch.src_lengths
        if c.constraint:
            durations = self._teacher(batch, src_len, tgt_len).durations(
                batch.indices, batch.src.shape[1]
            )
            out = self(batch.src, src_len, tgt_len, durations=durations)
        else:
            out = self(batch.src, src_len, tgt_len)
        valid = padding_mask(tgt_len, out.prediction.shape[1])  # [B, T]
        mel_l1 = F.l1_loss(out.prediction[valid].float(), tgt[:, : valid.shape[1]][valid].float())
        logs = {"units": float(valid.sum()), "mel_l1": float(mel_l1.detach())}
        if c.constraint:
            phonemes = padding_mask(src_len, out.log_durations.shape[1])  # [B, M]
            target = torch.log(durations.to(tgt.device).float() + 1.0)[phonemes]
            duration_loss = F.mse_loss(out.log_durations[phonemes].float(), target)
            loss = mel_l1 + c.duration_loss_weight * duration_loss
            logs["duration_loss"] = float(duration_loss.detach())
        else:
            length_loss = F.mse_loss(out.log_length.float(), torch.log(tgt_len.float()))
            loss = mel_l1 + c.length_loss_weight * length_loss
            logs["length_loss"] = float(length_loss.detach())
        return loss, logs

    @torch.no_grad()
    def generate(self, src: torch.Tensor, src_len: torch.Tensor) -> NARGeneration:
        """Predicted durations (AC) or number of frames (w/o AC), then all frames in one pass."""
        out = self(src, src_len)
        lengths = out.tgt_lengths.cpu().tolist()
        mel = out.prediction.float().cpu()
        frames = [mel[b, :n].clone() for b, n in enumerate(lengths)]
        return NARGeneration(tokens=None, frames=frames, lengths=lengths)


NAR_MODELS = {"nmt": NAT, "asr": NARASR, "tts": FastSpeech}


def build_nar(config: NARConfig) -> nn.Module:
    """The NAR student of ``config.task``: NAT, NARASR or FastSpeech."""
    return NAR_MODELS[config.task](config)
