"""What the NAR students of the study (paper Table 1) share: their config and outputs, the
base classes, and the token decoder of NAT and NAR-ASR. One family per module:
:mod:`comma.models.nat`, :mod:`comma.models.nar_asr`, :mod:`comma.models.fastspeech`.
Each trains with and without its alignment constraint ("AC", paper section 5.1;
``NARConfig.constraint``) and predicts every target position in ONE parallel pass (NAR-ASR with
``NARConfig.mask_ctc``: CTC greedy, then a few parallel Mask-Predict passes).

Teacher alignments are DATA, not weights: they travel in the batch, as ESPnet2's FastSpeech
takes its durations. A model with ``constraint=True`` reads ``batch.teacher``
(:class:`comma.data.batching.TeacherTargets`: the maps, windows or durations its class lists in
``TEACHER_TARGETS``, which the trainer attaches from
:meth:`comma.alignment.store.TeacherAlignment.batch_targets`), after checking that the
teacher's lengths equal its own, so a student whose corpus or pre-net does not match the
teacher's gets a clear error.

API of all three: ``forward(...) -> NAROutput`` (teacher-forced lengths if given, else the
predicted ones); ``loss(batch) -> (loss, logs)`` for ``comma.engine.trainer``
(``logs["units"]`` = target
tokens or mel frames, plus ``nll``/``mel_l1``, ``length_loss``, ``ac_kl``, ``duration_loss``,
``ctc``);
``generate(src, src_len) -> NARGeneration`` (no grad; call ``model.eval()`` first).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from comma.data.batching import Batch, teacher_targets_of
from comma.data.vocab import BOS, EOS, MASK, PAD, SPECIALS
from comma.models.config_checks import common_problems
from comma.nn.attention import AC_MODES, softmax_safe_mask
from comma.nn.transformer import (
    Decoder,
    Encoder,
    SinusoidalPositions,
    padding_mask,
)
from comma.tasks import TASK_NAMES

PAD_ID, BOS_ID, EOS_ID, MASK_ID = (SPECIALS.index(s) for s in (PAD, BOS, EOS, MASK))  # 0 1 2 4
# Ids a token model never outputs: its targets carry no pad, BOS, EOS or mask.
FORBIDDEN_IDS = (PAD_ID, BOS_ID, EOS_ID, MASK_ID)
NAR_TASKS = TASK_NAMES
# The saved model file (comma.models.registry); v2: FastSpeech predicts CMVN-normalized log-mel.
MODEL_FORMAT = "comma-nar-v2"
# NARConfig's Mask-CTC fields (NAR-ASR only; see NARConfig.to_dict).
MASK_CTC_FIELDS = ("mask_ctc", "ctc_weight")
# Keys of saved model configs that are decoding settings now, not the model's: NAR-ASR's
# test_window, mask_iterations and mask_threshold (keywords of NARASR.generate, the workflow's
# evaluation.asr settings since 2026-12-04) are dropped when such a file is read; the weights
# do not depend on them.
DECODING_ONLY_FIELDS = ("test_window", "mask_iterations", "mask_threshold")


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
    # NAT: "head" pairs decoder layer l, head h with the teacher's (eq. 6 per head, Li et al.
    # 2019); "broadcast" gives the alignment's one chosen map to every layer and head.
    ac_mode: str = "head"
    # ASR encoder pre-net (must subsample as the teacher's for the AC windows)
    conv_channels: int = 256
    conv_strides: tuple[int, ...] = (2, 2, 1)
    # NAR-ASR as Mask-CTC (Higuchi et al. 2020; comma.models.nar_asr): a joint CTC head on the
    # encoder, A-CMLM training of the decoder, CTC greedy + Mask-Predict decoding. Off: the
    # paper's one-pass model.
    mask_ctc: bool = False
    ctc_weight: float = 0.3  # mask_ctc: (1 - w) * masked-token CE + w * CTC (the teacher's w)
    # FastSpeech
    duration_predictor_filter: int = 256
    duration_predictor_kernel: int = 3
    duration_predictor_dropout: float = 0.1
    duration_loss_weight: float = 1.0
    fft_kernel: int = 3
    normalize_mel: bool = False  # FastSpeech: learn CMVN-normalized log-mel (as the TTS teacher's)
    max_output_frames: int = 4096  # inference cap on generated mel frames per utterance

    def __post_init__(self):
        problems = common_problems(self, "model", min_vocab=len(SPECIALS) + 1)
        if min(self.ffn_dim, self.encoder_layers, self.decoder_layers) < 1:
            problems.append("ffn_dim and the layer counts must be >= 1")
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
        if self.ac_mode not in AC_MODES:
            problems.append(f"ac_mode must be one of {AC_MODES}, got {self.ac_mode!r}")
        if self.max_output_frames < 1:
            problems.append(f"max_output_frames must be >= 1, got {self.max_output_frames}")
        problems += self._mask_ctc_problems()
        if problems:
            raise ValueError("invalid NAR config: " + "; ".join(problems))

    def _mask_ctc_problems(self) -> list[str]:
        problems = []
        if not isinstance(self.mask_ctc, bool):
            problems.append(f"mask_ctc must be true or false, got {self.mask_ctc!r}")
        elif self.mask_ctc and self.task != "asr":
            problems.append(f"mask_ctc is NAR-ASR's decoding (task asr), got task {self.task!r}")
        if self.mask_ctc and not 0 < self.ctc_weight < 1:
            problems.append(f"ctc_weight must be in (0, 1) with mask_ctc, got {self.ctc_weight}")
        return problems

    def to_dict(self) -> dict:
        """The config as keyword arguments (saved model files, run fingerprints). Without
        mask_ctc, the Mask-CTC fields at their defaults are left out: the one-pass model's
        dict, hence its fingerprint and saved config, stay those from before Mask-CTC."""
        d = asdict(self)
        d["conv_strides"] = list(self.conv_strides)
        if not self.mask_ctc:
            for field in fields(self):
                if field.name in MASK_CTC_FIELDS and d[field.name] == field.default:
                    del d[field.name]
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


def mean_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B, L, d]`` -> ``[B, d]``: the mean over each sequence's valid positions."""
    valid = padding_mask(lengths, hidden.shape[1])[..., None].to(hidden.dtype)  # [B, L, 1]
    return (hidden * valid).sum(1) / lengths[:, None].clamp(min=1).to(hidden.dtype)


def token_loss(
    logits: torch.Tensor,
    tgt: torch.Tensor,
    tgt_len: torch.Tensor,
    label_smoothing: float,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the valid target tokens, or over `positions` (bool ``[B, N]``,
    some of them: Mask-CTC's masked tokens) -> (loss, nll, token count)."""
    valid = padding_mask(tgt_len, logits.shape[1]) if positions is None else positions  # [B, N]
    lprobs = F.log_softmax(logits[valid].float(), dim=-1)  # [U, V]
    gold = tgt[:, : logits.shape[1]][valid]  # [U]
    nll = -lprobs.gather(1, gold[:, None]).squeeze(1)  # [U]
    smooth = -lprobs.mean(dim=-1)  # [U]
    loss = ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mean()
    return loss, nll.mean(), valid.sum()


class NARModel(nn.Module):
    """What every NAR student shares: config, sinusoidal positions, input dropout, and the
    teacher alignment attribute."""

    def __init__(self, config: NARConfig, task: str):
        super().__init__()
        if config.task != task:
            raise ValueError(f"{type(self).__name__} is the {task} model, got task {config.task!r}")
        self.config = config
        self.positions = SinusoidalPositions(config.d_model)
        self.input_dropout = nn.Dropout(config.dropout)

    def _add_positions(self, x: torch.Tensor) -> torch.Tensor:
        positions = self.positions(torch.arange(x.shape[1], device=x.device))  # [L, d]
        return self.input_dropout(x + positions[None].to(x.dtype))  # [B, L, d]

    def _teacher(self, batch: Batch, src_len: torch.Tensor, tgt_len: torch.Tensor):
        """The batch's teacher targets, checked to be there and to match the student's lengths."""
        return teacher_targets_of(batch, type(self).__name__, src_len, tgt_len)


class TokenNAR(NARModel):
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
        decoder_input: torch.Tensor | None = None,
    ) -> NAROutput:
        """The decoder over the encoder output `memory` ``[B, M, d]``; `decoder_input`
        ``[B, N_max, d]`` (before positions) replaces :meth:`decoder_inputs` (Mask-CTC's
        partly masked tokens); the rest as :meth:`forward`."""
        length_logits = self.length_head(mean_pool(memory, src_len))  # [B, C]
        if tgt_len is None:
            tgt_len = self.predict_lengths(length_logits)
        if decoder_input is None:
            decoder_input = self.decoder_inputs(prenet_out, src_len, tgt_len)
        x = self._add_positions(decoder_input)  # [B, N, d]
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
        loss, nll, units = token_loss(
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
