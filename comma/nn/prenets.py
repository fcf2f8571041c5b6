"""Task pre-nets (paper section 2.1): what turns each modality into d_model vectors.

NMT: token embedding on both sides. ASR: a 3-layer 2D convolutional encoder pre-net over
log-mel (Karita et al. 2019) and a token embedding. TTS: a phoneme embedding and a decoder
pre-net of 2 dense ReLU layers over mel frames (Li et al. 2019, Shen et al. 2018). Shared by
the AR teachers, the NAR students and CoMMA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """Token ids [B, L] -> [B, L, d], scaled by sqrt(d) as in Vaswani et al."""

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        nn.init.normal_(self.embed.weight, mean=0.0, std=d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[padding_idx].zero_()
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        return self.embed(tokens) * self.scale, lengths


class Conv2dPrenet(nn.Module):
    """Log-mel [B, T, n_mels] -> [B, T', d] with 2D convolutions (kernel 3) and ReLU.

    Each layer with stride 2 halves time and frequency, so the default strides (2, 2, 1)
    turn 80 frames/s into 20 positions/s, ESPnet's usual 4x subsampling for Transformer ASR.
    Returns the subsampled lengths with the features."""

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        channels: int,
        strides: Sequence[int] = (2, 2, 1),
        kernel_size: int = 3,
    ):
        super().__init__()
        layers, freq, in_ch = [], n_mels, 1
        for stride in strides:
            layers += [nn.Conv2d(in_ch, channels, kernel_size, stride), nn.ReLU()]
            freq = (freq - kernel_size) // stride + 1
            in_ch = channels
        if freq < 1:
            raise ValueError(f"{len(strides)} conv layers leave no frequency bins of {n_mels}")
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * freq, d_model)
        self.strides = tuple(strides)
        self.kernel_size = kernel_size

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for stride in self.strides:
            lengths = torch.div(lengths - self.kernel_size, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=1)

    def min_input_length(self) -> int:
        n = 1
        for stride in reversed(self.strides):
            n = (n - 1) * stride + self.kernel_size
        return n

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor):
        # [B, T, F] -> [B, 1, T, F] -> [B, C, T', F'] -> [B, T', C * F']
        x = self.conv(mels.unsqueeze(1))
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, self.output_lengths(lengths).clamp(max=t)


class DensePrenet(nn.Module):
    """Mel frames [B, T, n_mels] -> [B, T, d]: 2 dense ReLU layers with dropout, then a
    projection to d_model (the Transformer TTS decoder pre-net)."""

    def __init__(self, n_mels: int, d_model: int, hidden: int, dropout: float = 0.5, layers=2):
        super().__init__()
        blocks, in_dim = [], n_mels
        for _ in range(layers):
            blocks += [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = hidden
        self.net = nn.Sequential(*blocks)
        self.out = nn.Linear(hidden, d_model)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor):
        return self.out(self.net(mels)), lengths


@torch.no_grad()
def feature_statistics(frames: torch.Tensor, n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std (floored at 1e-5) of training frames ``[N, n_mels]``, ESPnet's
    global CMVN; summed in float64 chunk by chunk, so a large corpus is not copied."""
    if frames.dim() != 2 or frames.shape[1] != n_mels or len(frames) < 2:
        raise ValueError(f"need frames [N >= 2, {n_mels}], got {tuple(frames.shape)}")
    total = torch.zeros(frames.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in frames.split(1 << 20):
        total += chunk.double().sum(dim=0)
        squares += chunk.double().square().sum(dim=0)
    count = len(frames)
    mean = total / count
    variance = (squares - count * mean.square()).clamp(min=0) / (count - 1)
    return mean, variance.sqrt().clamp(min=1e-5)


class GlobalCMVN:
    """Mixin for a model with a log-mel side (ASR input, TTS output): per-bin mean and std of
    its training frames (ESPnet's global CMVN) as the buffers ``feature_mean`` /
    ``feature_std``, so they travel with the weights. Call :meth:`init_feature_statistics` in
    ``__init__`` and :meth:`set_feature_statistics` before training (``comma.stages.training``
    does, with the frames of the split side named by ``feature_side``: "src" for ASR, "tgt"
    for TTS)."""

    feature_side: str | None = None  # the log-mel side of a batch, None: no log-mel side

    def init_feature_statistics(self, n_mels: int, side: str = "src", enabled: bool = True):
        """Buffers for the statistics of the log-mel `side`. With `enabled` False they stay
        the identity (mean 0, std 1, ``feature_side`` None: training sets none), so the model
        works in plain log-mel with the same code and file format."""
        if side not in ("src", "tgt"):
            raise ValueError(f"feature side must be 'src' or 'tgt', got {side!r}")
        self.feature_side = side if enabled else None
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))

    @torch.no_grad()
    def set_feature_statistics(self, frames: torch.Tensor) -> None:
        """Per-bin mean and std of training frames ``[N, n_mels]``."""
        mean, std = feature_statistics(frames, self.feature_mean.shape[0])
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def normalize_features(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, T, n_mels]`` normalized per bin; padding frames stay zero."""
        valid = _valid_frames(frames, lengths)
        return ((frames - self.feature_mean) / self.feature_std) * valid  # [B, T, n_mels]

    def denormalize_features(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize_features`: normalized ``[B, T, n_mels]`` back to
        log-mel (what a TTS model generates); padding frames stay zero."""
        valid = _valid_frames(frames, lengths)
        return (frames * self.feature_std + self.feature_mean) * valid  # [B, T, n_mels]


def _valid_frames(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, T, 1]``: frame t of sentence b is within its length. Unchecked, unlike
    :func:`comma.nn.masking.valid_positions`: it runs on every training step's frames."""
    positions = torch.arange(frames.shape[1], device=frames.device)  # [T]
    return positions[None, :, None] < lengths[:, None, None]
