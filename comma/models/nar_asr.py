"""NAR-ASR (Chen et al. 2019), the ASR student of the study, optionally as Mask-CTC:

**NAR-ASR** (Chen et al. 2019). Log-mel input normalized per bin with the training set's mean
and std (global CMVN buffers, :meth:`NARASR.set_feature_statistics`, as the AR teacher), the
2D conv pre-net (``conv_strides`` subsampling), an encoder, the length predictor of NAT. Decoder
input: the ``<mask>`` token embedding (id 4) at every target position plus positions; a
non-causal decoder; token cross-entropy. AC: WHILE TRAINING ONLY (the model in training mode),
the cross-attention of every decoder layer is restricted to the teacher's window
(``alignment.window``, bool ``[B, N, M]`` over subsampled source positions, section 5.1's
``E_{i-1} .. E_{i+1}``, passed through ``comma.nn.attention.softmax_safe_mask``); in eval mode
and in :meth:`generate` no window is applied (except Mask-CTC's optional test-time window,
below).

**Mask-CTC** (``NARConfig.mask_ctc``; Higuchi et al. 2020, "Mask CTC: Non-Autoregressive
End-to-End ASR with CTC and Mask Predict"), off by default. The same encoder, decoder and AC,
plus a CTC head on the encoder (``ctc_output``, over the target vocabulary with the pad id as
the blank, as the AR ASR teacher's joint CTC). Training: Chen et al.'s A-CMLM, per sentence
``k ~ Uniform{1..N}`` target tokens at random positions replaced by ``<mask>``, the decoder
reading the token embeddings of that partly masked target; label-smoothed cross-entropy over
the masked positions only, ``(1 - ctc_weight) * that + ctc_weight * CTC`` (CTC summed over the
batch and divided by its target tokens, as the teacher's), plus the length loss as above (the
length head is trained but not used for decoding). Decoding (:meth:`NARASR.generate`): CTC
greedy over the encoder output (per frame the most probable of the blank and the tokens other
than BOS, EOS and ``<mask>``; :func:`ctc_collapse`), whose length is the output's length (an
empty one: length 1, one ``<mask>``); its tokens less probable than ``mask_threshold`` (the
highest frame probability over a token's run) become ``<mask>``; then up to
``mask_iterations`` Mask-Predict passes, each feeding the current tokens to the decoder (no
window, unless the test-time window below) and revealing the ``ceil(masked / passes left)`` most
confident predictions among the still-masked positions, until none is masked. Both are
keywords of :meth:`NARASR.generate` (the workflow's ``evaluation.asr.nar_mask_iterations`` and
``nar_mask_threshold``): decoding settings, not the model's.

**Test-time window** (``generate(..., test_window="ctc")``, beyond the paper; the workflow's
``evaluation.asr.nar_test_window``, default ``none``): a decoding setting, not the model's. An
AC model's decoder learnt to attend only inside the teacher's window and does not find its
place without it. With ``ctc``, every Mask-Predict pass of an AC model (``constraint``)
restricts the cross-attention to section 5.1's window
(:func:`comma.alignment.calculators.window_mask`) built from the CTC greedy alignment: E_i is
the centre of the frame run that emitted token i (:func:`ctc_token_positions`, 1-based as the
teacher's E_i). An empty CTC output's one ``<mask>`` attends to every frame (a one-token
window). Models without AC are decoded as before: they never saw a window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from comma.alignment.calculators import window_mask
from comma.data.batching import Batch
from comma.models.nar_base import (
    BOS_ID,
    EOS_ID,
    FORBIDDEN_IDS,
    MASK_ID,
    PAD_ID,
    NARConfig,
    NARGeneration,
    TokenNAR,
    token_loss,
)
from comma.nn.prenets import Conv2dPrenet, GlobalCMVN, TokenEmbedding
from comma.nn.transformer import (
    padding_mask,
)

# generate's test_window: "none" (the paper: no window at test time) or "ctc" (Mask-CTC AC
# models: the window of the model's own CTC alignment, beyond the paper).
TEST_WINDOWS = ("none", "ctc")
# generate's Mask-CTC defaults: Mask-Predict passes after the CTC greedy output, and the
# probability below which a CTC token starts masked (Higuchi et al. 2020: 10 passes; 0.999).
MASK_ITERATIONS = 10
MASK_THRESHOLD = 0.999


def _ctc_runs(
    ids: torch.Tensor, lengths: torch.Tensor, blank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The CTC greedy tokens' frame runs of per-frame best ids ``[B, M]`` over ``lengths``
    ``[B]`` valid frames -> (kept ``[B, M]``: frames inside a token's run, column ``[B, M]``:
    each kept frame's token index, n elsewhere, counts ``[B]``: tokens per sentence, n: their
    maximum, at least 1)."""
    b, m = ids.shape
    valid = padding_mask(lengths, m)  # [B, M]
    previous = F.pad(ids[:, :-1], (1, 0), value=-1)  # [B, M], -1 before the first frame
    kept = valid & (ids != blank)  # frames inside a token's run
    starts = kept & (ids != previous)  # a run's first frame
    counts = starts.sum(1)  # [B]
    n = max(int(counts.max()) if b else 0, 1)
    # Token index of each kept frame; the others go to a spare column n, dropped by callers.
    column = (starts.cumsum(1) - 1).masked_fill(~kept, n)  # [B, M]
    return kept, column, counts, n


def ctc_collapse(
    ids: torch.Tensor, probs: torch.Tensor, lengths: torch.Tensor, blank: int = PAD_ID
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CTC greedy read-out of per-frame best ids ``[B, M]`` with their probabilities
    ``[B, M]`` over ``lengths`` ``[B]`` valid frames: runs of one id merged, blanks dropped.
    -> tokens ``[B, N]`` (``blank`` on padding), each token's confidence ``[B, N]`` (the
    highest probability over its run; 0 on padding) and the token counts ``[B]``, N their
    maximum (at least 1)."""
    b = ids.shape[0]
    kept, column, counts, n = _ctc_runs(ids, lengths, blank)  # [B, M], [B, M], [B]
    tokens = torch.full((b, n + 1), blank, dtype=ids.dtype, device=ids.device)
    tokens.scatter_(1, column, ids)
    confidence = torch.zeros((b, n + 1), dtype=probs.dtype, device=probs.device)
    confidence.scatter_reduce_(1, column, probs.masked_fill(~kept, 0), reduce="amax")
    return tokens[:, :n], confidence[:, :n], counts


def ctc_token_positions(
    ids: torch.Tensor, lengths: torch.Tensor, blank: int = PAD_ID
) -> torch.Tensor:
    """Where each CTC greedy token of :func:`ctc_collapse` (same arguments) lies on the frame
    grid, long ``[B, N]``: the centre of its run of frames, 1-based as the teacher's E_i of
    :func:`comma.alignment.calculators.expected_positions` (the mean of the run's frame
    numbers, halves rounded up as there); 0 on padding."""
    b, m = ids.shape
    kept, column, _, n = _ctc_runs(ids, lengths, blank)  # [B, M], [B, M]
    frame = torch.arange(1, m + 1, device=ids.device).expand(b, m)  # [B, M], 1-based
    first = torch.zeros((b, n + 1), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(1, column, frame, reduce="amin", include_self=False)
    last = torch.zeros((b, n + 1), dtype=torch.long, device=ids.device)
    last.scatter_reduce_(1, column, frame, reduce="amax", include_self=False)
    # A run is contiguous: its mean frame is (first + last) / 2, rounded half up; padding 0.
    return ((first + last + 1) // 2)[:, :n]


def random_token_mask(tgt_len: torch.Tensor, n_max: int) -> torch.Tensor:
    """A-CMLM's training mask, bool ``[B, n_max]``: per sentence k ~ Uniform{1..length} of its
    positions, chosen uniformly at random (torch's RNG), True; padding False."""
    valid = padding_mask(tgt_len, n_max)  # [B, N]
    k = (torch.rand(len(tgt_len), device=tgt_len.device) * tgt_len).long() + 1  # [B]
    score = torch.rand(valid.shape, device=tgt_len.device).masked_fill(~valid, 2.0)  # [B, N]
    rank = score.argsort(1).argsort(1)  # [B, N], padding ranked last
    return valid & (rank < k[:, None])


class NARASR(GlobalCMVN, TokenNAR):
    """NAR-ASR (Chen et al. 2019; see the module docstring): CMVN + 2D conv pre-net, an
    all-``<mask>`` decoder input, and the section 5.1 attention window while training; with
    ``mask_ctc``, Mask-CTC's CTC head, A-CMLM training and CTC + Mask-Predict decoding."""

    TEACHER_TARGETS = ("window",)  # what its AC reads from the batch

    def __init__(self, config: NARConfig):
        super().__init__(config, "asr")
        c = config
        self.src_prenet = Conv2dPrenet(c.n_mels, c.d_model, c.conv_channels, c.conv_strides)
        # One-pass: only <mask> is used; Mask-CTC: the partly masked target tokens.
        self.tgt_prenet = TokenEmbedding(c.tgt_vocab, c.d_model, PAD_ID)
        # Mask-CTC: CTC over the target vocabulary with the pad id as the blank.
        self.ctc_output = nn.Linear(c.d_model, c.tgt_vocab) if c.mask_ctc else None
        self.init_feature_statistics(c.n_mels)

    def encode(self, src, src_len):
        src = self.normalize_features(src, src_len)
        needed = self.src_prenet.min_input_length()
        if src.shape[1] < needed:  # very short clips: pad up to the conv's receptive field
            src = F.pad(src, (0, 0, 0, needed - src.shape[1]))
        x, src_len = self.src_prenet(src, src_len)  # [B, M, d] (subsampled)
        hidden = self.encoder(self._add_positions(x), src_len).hidden  # [B, M, d]
        return hidden, src_len, x

    def token_inputs(self, tokens: torch.Tensor, tgt_len: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``[B, N, d]`` (before positions) of token ids ``[B, N]``, pad beyond
        `tgt_len` ``[B]``."""
        tokens = tokens.masked_fill(~padding_mask(tgt_len, tokens.shape[1]), PAD_ID)
        return self.tgt_prenet(tokens, tgt_len)[0]

    def decoder_inputs(self, prenet_out, src_len, tgt_len):
        tgt_max = int(tgt_len.max())
        masks = torch.full((len(tgt_len), tgt_max), MASK_ID, device=tgt_len.device)  # [B, N]
        return self.token_inputs(masks, tgt_len)  # [B, N, d]

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
        if self.config.mask_ctc:
            return self._mask_ctc_loss(batch, memory, src_len, prenet_out, window)
        out = self.decode(memory, src_len, prenet_out, batch.tgt_lengths, window)
        return self._token_losses(out, batch)

    def _mask_ctc_loss(self, batch, memory, src_len, prenet_out, window):
        """A-CMLM's masked-token loss and the joint CTC (see the module docstring)."""
        c = self.config
        tgt_len = batch.tgt_lengths
        tgt = batch.tgt[:, : int(tgt_len.max())]  # [B, N]
        masked = random_token_mask(tgt_len, tgt.shape[1])  # [B, N]
        observed = self.token_inputs(tgt.masked_fill(masked, MASK_ID), tgt_len)  # [B, N, d]
        out = self.decode(memory, src_len, prenet_out, tgt_len, window, decoder_input=observed)
        token_ce, nll, units = token_loss(
            out.prediction, tgt, tgt_len, c.label_smoothing, positions=masked
        )
        ctc = self.ctc_loss(memory, src_len, tgt, tgt_len) / tgt_len.sum()  # per target token
        length_loss = self.length_loss(out.length_logits, tgt_len)
        loss = (1.0 - c.ctc_weight) * token_ce + c.ctc_weight * ctc
        logs = {
            "units": float(units),
            "nll": float(nll.detach()),
            "ctc": float(ctc.detach()),
            "length_loss": float(length_loss.detach()),
        }
        return loss + c.length_loss_weight * length_loss, logs

    def ctc_log_probs(self, memory: torch.Tensor) -> torch.Tensor:
        """The CTC head's log-probabilities ``[B, M, V]`` (float32) of the encoder output."""
        return F.log_softmax(self.ctc_output(memory).float(), dim=-1)

    def ctc_loss(self, memory, src_len, tgt, tgt_len) -> torch.Tensor:
        """CTC of the targets ``[B, N]`` given the encoder output, summed over sentences."""
        return F.ctc_loss(
            self.ctc_log_probs(memory).transpose(0, 1),  # [M, B, V]
            tgt,
            src_len,
            tgt_len,
            blank=PAD_ID,
            reduction="sum",
            zero_infinity=True,  # a clip too short for its transcript adds nothing, not inf
        )

    def ctc_window(
        self,
        frame_ids: torch.Tensor,
        src_len: torch.Tensor,
        tgt_len: torch.Tensor,
        src_max: int,
        test_window: str,
    ) -> torch.Tensor | None:
        """The test-time window bool ``[B, N, src_max]`` of Mask-CTC decoding from the CTC
        greedy frame ids ``[B, M]`` (``src_len`` ``[B]`` valid; ``tgt_len`` ``[B]`` the output
        lengths, an empty CTC output counted as 1), or None: `test_window` "none", or a model
        trained without the AC window (see the module docstring)."""
        if test_window != "ctc" or not self.config.constraint:
            return None
        expected = ctc_token_positions(frame_ids, src_len)  # [B, N], 1-based, 0 on padding
        # An empty CTC output's one <mask>: any E in range; a one-token window is every frame.
        expected[:, 0] = expected[:, 0].clamp(min=1)
        return window_mask(expected, src_len, tgt_len, max_src_len=src_max)  # [B, N, M]

    @torch.no_grad()
    def generate(
        self,
        src: torch.Tensor,
        src_len: torch.Tensor,
        test_window: str = "none",
        mask_iterations: int = MASK_ITERATIONS,
        mask_threshold: float = MASK_THRESHOLD,
    ) -> NARGeneration:
        """One-pass: as :meth:`TokenNAR.generate` (the Mask-CTC keywords unused). Mask-CTC: CTC
        greedy, its tokens less probable than `mask_threshold` masked, then up to
        `mask_iterations` Mask-Predict passes, with `test_window` "ctc" inside the CTC
        alignment's window (see the module docstring); pad, BOS, EOS and mask are never
        output."""
        if isinstance(mask_iterations, bool) or not isinstance(mask_iterations, int):
            raise ValueError(f"mask_iterations must be an integer >= 1, got {mask_iterations!r}")
        if mask_iterations < 1:
            raise ValueError(f"mask_iterations must be >= 1, got {mask_iterations}")
        if not 0 <= mask_threshold <= 1:
            raise ValueError(f"mask_threshold must be in [0, 1], got {mask_threshold}")
        if test_window not in TEST_WINDOWS:
            raise ValueError(f"test_window must be one of {TEST_WINDOWS}, got {test_window!r}")
        if test_window == "ctc" and not self.config.mask_ctc:
            raise ValueError(
                "test_window 'ctc' reads Mask-CTC's CTC alignment: this NAR-ASR model was "
                "trained without mask_ctc"
            )
        if not self.config.mask_ctc:
            return super().generate(src, src_len)
        memory, src_len, prenet_out = self.encode(src, src_len)
        probs = self.ctc_log_probs(memory).exp()  # [B, M, V]
        probs[..., [BOS_ID, EOS_ID, MASK_ID]] = 0.0  # never targets; pad is the blank
        frame_probs, frame_ids = probs.max(-1)  # [B, M]
        tokens, confidence, tgt_len = ctc_collapse(frame_ids, frame_probs, src_len)  # [B, N]
        empty = tgt_len == 0  # an empty CTC output: one <mask> to predict
        tokens[empty, 0] = MASK_ID
        tgt_len = tgt_len.clamp(min=1)
        valid = padding_mask(tgt_len, tokens.shape[1])  # [B, N]
        masked = valid & ((confidence < mask_threshold) | (tokens == MASK_ID))  # [B, N]
        tokens = tokens.masked_fill(masked, MASK_ID)
        window = self.ctc_window(frame_ids, src_len, tgt_len, memory.shape[1], test_window)
        for step in range(mask_iterations):
            if not bool(masked.any()):
                break
            decoder_input = self.token_inputs(tokens, tgt_len)
            out = self.decode(
                memory, src_len, prenet_out, tgt_len, window, decoder_input=decoder_input
            )
            logits = out.prediction.float()  # [B, N, V]
            logits[..., list(FORBIDDEN_IDS)] = float("-inf")
            best_probs, best = logits.softmax(-1).max(-1)  # [B, N]
            passes_left = mask_iterations - step
            reveal_count = (masked.sum(1) + passes_left - 1) // passes_left  # [B], ceil
            rank = best_probs.masked_fill(~masked, -1.0).argsort(1, descending=True).argsort(1)
            reveal = masked & (rank < reveal_count[:, None])  # [B, N]
            tokens = torch.where(reveal, best, tokens)
            masked = masked & ~reveal
        lengths = tgt_len.cpu().tolist()
        tokens = tokens.cpu()
        return NARGeneration(
            tokens=[tokens[b, :n].tolist() for b, n in enumerate(lengths)],
            frames=None,
            lengths=lengths,
        )
