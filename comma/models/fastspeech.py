"""FastSpeech (Ren et al. 2019), the TTS student of the study:

**FastSpeech** (Ren et al. 2019). Phoneme embedding + positions, ``encoder_layers`` FFT blocks
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
the predicted and target mel over valid frames (no post-net), in log-mel or, with
``normalize_mel``, in the training set's global CMVN units (as the TTS teacher's option);
:meth:`FastSpeech.generate` returns log-mel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from comma.data.batching import Batch
from comma.models.nar_base import (
    PAD_ID,
    NARConfig,
    NARGeneration,
    NARModel,
    NAROutput,
    mean_pool,
)
from comma.nn.prenets import GlobalCMVN, TokenEmbedding
from comma.nn.transformer import (
    Decoder,
    MultiHeadAttention,
    padding_mask,
)


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


class FastSpeech(GlobalCMVN, NARModel):
    """FastSpeech (Ren et al. 2019) and FastSpeech w/o AC (see the module docstring).
    :meth:`forward` predicts frames in the model's units (CMVN-normalized with
    ``normalize_mel``, else log-mel)."""

    TEACHER_TARGETS = ("durations",)  # what its AC reads from the batch

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
        self.init_feature_statistics(c.n_mels, side="tgt", enabled=c.normalize_mel)

    def forward(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        tgt_len: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> NAROutput:
        """Phonemes ``[B, M]`` -> frames in model units ``[B, T_max, n_mels]`` (zero on padding).

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
            durations = self._teacher(batch, src_len, tgt_len).durations(batch.src.shape[1])
            out = self(batch.src, src_len, tgt_len, durations=durations)
        else:
            out = self(batch.src, src_len, tgt_len)
        valid = padding_mask(tgt_len, out.prediction.shape[1])  # [B, T]
        target = self.normalize_features(tgt[:, : valid.shape[1]], tgt_len)[valid].float()
        mel_l1 = F.l1_loss(out.prediction[valid].float(), target)
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
        mel = self.denormalize_features(out.prediction, out.tgt_lengths).float().cpu()
        frames = [mel[b, :n].clone() for b, n in enumerate(lengths)]
        return NARGeneration(tokens=None, frames=frames, lengths=lengths)
