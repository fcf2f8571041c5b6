"""NAR-ASR (Chen et al. 2019), the ASR student of the study:

**NAR-ASR** (Chen et al. 2019). Log-mel input normalized per bin with the training set's mean
and std (global CMVN buffers, :meth:`NARASR.set_feature_statistics`, as the AR teacher), the
2D conv pre-net (``conv_strides`` subsampling), an encoder, the length predictor of NAT. Decoder
input: the ``<mask>`` token embedding (id 4) at every target position plus positions; a
non-causal decoder; token cross-entropy. AC: WHILE TRAINING ONLY (the model in training mode),
the cross-attention of every decoder layer is restricted to the teacher's window
(``alignment.window``, bool ``[B, N, M]`` over subsampled source positions, section 5.1's
``E_{i-1} .. E_{i+1}``, passed through ``comma.nn.attention.softmax_safe_mask``); in eval mode
and in
:meth:`generate` no window is applied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from comma.data.batching import Batch
from comma.models.nar_base import (
    MASK_ID,
    PAD_ID,
    NARConfig,
    TokenNAR,
)
from comma.nn.prenets import Conv2dPrenet, GlobalCMVN, TokenEmbedding
from comma.nn.transformer import (
    padding_mask,
)


class NARASR(GlobalCMVN, TokenNAR):
    """NAR-ASR (Chen et al. 2019; see the module docstring): CMVN + 2D conv pre-net, an
    all-``<mask>`` decoder input, and the section 5.1 attention window while training."""

    TEACHER_TARGETS = ("window",)  # what its AC reads from the batch

    def __init__(self, config: NARConfig):
        super().__init__(config, "asr")
        c = config
        self.src_prenet = Conv2dPrenet(c.n_mels, c.d_model, c.conv_channels, c.conv_strides)
        self.tgt_prenet = TokenEmbedding(c.tgt_vocab, c.d_model, PAD_ID)  # only <mask> is used
        self.init_feature_statistics(c.n_mels)

    def encode(self, src, src_len):
        src = self.normalize_features(src, src_len)
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
        window = self._teacher(batch, src_len, tgt_len).window(tgt_max, src_max)
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
