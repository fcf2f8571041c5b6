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

This module is the family: the three teachers, their post-net and :data:`TEACHERS`. What they
share (config, outputs, the teacher-forcing shifts, guided attention, the base
:class:`~comma.models.teacher_base.ARTeacher` and the token teacher
:class:`~comma.models.teacher_base.TokenTeacher` of NMT and ASR) is
:mod:`comma.models.teacher_base`'s. Training and evaluation are stages
(:mod:`comma.stages.teacher`); the registry (:mod:`comma.models.registry`) builds and loads a
teacher.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from comma.data.batching import Batch
from comma.models.teacher_base import (
    PAD_ID,
    ARTeacher,
    EncoderOutput,
    MelOutput,
    TeacherConfig,
    TokenTeacher,
    shift_frames,
)
from comma.nn.prenets import (
    Conv2dPrenet,
    DensePrenet,
    GlobalCMVN,
    TokenEmbedding,
)
from comma.nn.transformer import DecoderCache, padding_mask
from comma.tasks import TASK_NAMES

__all__ = [
    "TEACHER_TASKS",
    "MODEL_FORMAT",
    "TeacherConfig",  # the family's config class, defined with the shared base
    "TEACHERS",
    "TransformerNMT",
    "TransformerASR",
    "TransformerTTS",
    "ConvPostnet",
    "build_teacher",
]

TEACHER_TASKS = TASK_NAMES
# v2: the TTS teacher carries target statistics (buffers; CMVN with normalize_mel)
MODEL_FORMAT = "comma-teacher-v2"


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
