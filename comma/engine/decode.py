"""Decoding the AR teachers: beam and greedy search over tokens, mel generation, and
teacher-forced runs that return the encoder-decoder attention.

Token search (NMT, ASR) works on any model with the incremental interface of
``comma.models.teacher_base.TokenTeacher`` (:class:`TokenStepModel`):

* ``encode(src, src_len)`` -> an encoder output with ``index_select(rows)`` and ``lengths``;
* ``new_cache()`` -> a cache with ``reorder_(rows)`` (``comma.nn.transformer.DecoderCache``:
  while no sentence leaves the batch, only its self-attention keys and values are reordered,
  since the beams of a sentence share their cross-attention keys);
* ``step(prev_tokens [R, 1], cache, encoded)`` -> float log-probabilities ``[R, V]`` of the next
  token, extending the cache in place.

:func:`beam_search` follows fairseq's ``SequenceGenerator``: every sentence keeps `beam`
hypotheses; each step takes the ``2 * beam`` best (hypothesis, token) candidates, finalizes
those ending in EOS that rank among the first `beam` (with the fairseq length normalization
``score / length ** lenpen``, length counting EOS), and continues with the best `beam` that do
not end in EOS. A sentence is done once it has `beam` finished hypotheses or reaches its maximum
length ``floor(max_len_a * src_len + max_len_b)`` (EOS is then forced); finished sentences
leave the batch. pad, bos and mask are never generated. ``beam == 1`` gives exactly
:func:`greedy_search`.

Mel generation (TTS, :func:`generate_mel`): one frame per step from a zero "go" frame, each
generated frame fed back, until the stop token's probability exceeds `stop_threshold` (that
frame is the last) or the maximum length is reached; then the post-net refines the frames.
The decoder runs in the model's units (CMVN-normalized with ``normalize_mel``); the frames
returned are log-mel.

:func:`teacher_forced_attention` runs a teacher on ground-truth targets and returns its
encoder-decoder attention ``[B, layers, heads, T, S]``, one row per target unit (token or
frame), which is what distillation of attention, FastSpeech durations and ASR windows need.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm import tqdm

from comma.data.batching import Batch, collate, make_batches
from comma.data.packed import Split
from comma.data.vocab import MASK, SPECIALS
from comma.models.teacher import TransformerTTS
from comma.models.teacher_base import BOS_ID, EOS_ID, PAD_ID, ARTeacher, TokenTeacher, shift_tokens
from comma.nn.transformer import DecoderCache, padding_mask

__all__ = [
    "NEVER_GENERATED",
    "Hypothesis",
    "TokenStepModel",
    "max_lengths",
    "beam_search",
    "greedy_search",
    "MelGeneration",
    "generate_mel",
    "TeacherForcedAttention",
    "teacher_forced_attention",
    "decode_split",
    "generate_split",
]

# Tokens a decoder must never output: padding, the start symbol and CoMMA's mask.
NEVER_GENERATED = (PAD_ID, BOS_ID, SPECIALS.index(MASK))


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # generated ids without BOS and EOS
    score: float  # log_prob / (len(tokens) + 1) ** lenpen (EOS counted), what beams rank by
    log_prob: float  # sum of the token log-probabilities, EOS included


class TokenStepModel(Protocol):
    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Any: ...

    def new_cache(self) -> Any: ...

    def step(self, prev_tokens: torch.Tensor, cache: Any, encoded: Any) -> torch.Tensor: ...


def max_lengths(src_len: torch.Tensor, max_len_a: float, max_len_b: int) -> torch.Tensor:
    """int64 ``[B]``: ``floor(a * src_len + b)``, at least 1 (outputs before EOS or frames)."""
    limits = torch.floor(src_len.double() * max_len_a + max_len_b).long()
    return limits.clamp(min=1)


def _model_device(model: Any, fallback: torch.device) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return fallback


def _ban(lprobs: torch.Tensor, force_eos: torch.Tensor) -> torch.Tensor:
    """Never-generated tokens to -inf; rows `force_eos` ``[R]`` may only end (EOS)."""
    lprobs[:, list(NEVER_GENERATED)] = -math.inf
    if bool(force_eos.any()):
        eos = lprobs[force_eos, EOS_ID].clone()  # [F]
        lprobs[force_eos] = -math.inf
        lprobs[force_eos, EOS_ID] = eos
    return lprobs


def _reorder_self_attention(cache: DecoderCache, rows: torch.Tensor) -> None:
    """Reorder only the decoded positions' keys and values: while no sentence leaves the
    batch, the beams of a sentence share one encoder output, so its cached cross-attention
    keys need no copy (fairseq skips them too)."""
    for layer in cache.layers:
        layer.self_key = layer.self_key.index_select(0, rows)
        layer.self_value = layer.self_value.index_select(0, rows)


@torch.no_grad()
def beam_search(
    model: TokenStepModel,
    src: torch.Tensor,
    src_len: torch.Tensor,
    *,
    beam: int,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search (see the module docstring) for a batch: src ``[B, S(, n_mels)]``, src_len
    ``[B]`` -> per sentence its `nbest` best finished hypotheses, best first."""
    if beam < 1 or not 1 <= nbest <= beam:
        raise ValueError(f"need beam >= 1 and 1 <= nbest <= beam, got beam {beam}, nbest {nbest}")
    device = _model_device(model, src.device)
    src, src_len = src.to(device), src_len.to(device)
    batch = src.shape[0]
    limits = max_lengths(src_len, max_len_a, max_len_b).tolist()
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # [B*K]
    encoded = model.encode(src, src_len).index_select(rows)
    cache = model.new_cache()
    active = list(range(batch))  # sentences still searching; row block a*K..a*K+K-1 is active[a]
    prefixes = torch.full((batch * beam, 1), BOS_ID, dtype=torch.long, device=device)  # [R, t+1]
    scores = torch.zeros(batch, beam, device=device)  # [A, K] cumulative log-probabilities
    scores[:, 1:] = -math.inf  # at the start all beams are equal: expand the first one only
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while active:
        lprobs = model.step(prefixes[:, -1:], cache, encoded).float()  # [A*K, V]
        vocab = lprobs.shape[-1]
        at_limit = torch.tensor([step >= limits[b] for b in active], device=device)  # [A]
        lprobs = _ban(lprobs, at_limit.repeat_interleave(beam))
        candidates = (scores.reshape(-1, 1) + lprobs).view(len(active), beam * vocab)
        top_scores, top_index = candidates.topk(min(2 * beam, beam * vocab), dim=1)  # [A, 2K]
        top_beam = torch.div(top_index, vocab, rounding_mode="floor")  # [A, 2K]
        top_token = top_index % vocab  # [A, 2K]
        ends = top_token == EOS_ID  # [A, 2K]

        # Finalize EOS candidates among the first K (fairseq), best first.
        final = ends[:, :beam] & torch.isfinite(top_scores[:, :beam])
        for a, k in final.nonzero().tolist():
            sentence = active[a]
            if len(finished[sentence]) >= beam:
                continue
            row = a * beam + int(top_beam[a, k])
            log_prob = float(top_scores[a, k])
            finished[sentence].append(
                Hypothesis(prefixes[row, 1:].tolist(), log_prob / (step + 1) ** lenpen, log_prob)
            )

        # Continue with the K best candidates that do not end (at most K of 2K end: one EOS
        # per beam), in score order.
        order = torch.arange(top_index.shape[1], device=device)
        rank = torch.where(ends, order + top_index.shape[1], order)  # non-EOS first
        chosen = rank.topk(beam, dim=1, largest=False).indices  # [A, K]
        next_beam = top_beam.gather(1, chosen)
        next_token = top_token.gather(1, chosen)
        next_score = top_scores.gather(1, chosen)

        keep = [
            a
            for a, sentence in enumerate(active)
            if len(finished[sentence]) < beam and step < limits[sentence]
        ]
        if not keep:
            break
        keep_t = torch.tensor(keep, device=device)
        rows = (keep_t[:, None] * beam + next_beam[keep_t]).reshape(-1)  # [A'*K] current rows
        if len(keep) < len(active):
            cache.reorder_(rows)
            encoded = encoded.index_select(rows)
        elif isinstance(cache, DecoderCache):
            _reorder_self_attention(cache, rows)
        else:
            cache.reorder_(rows)
        prefixes = torch.cat([prefixes[rows], next_token[keep_t].reshape(-1, 1)], dim=1)
        scores = next_score[keep_t]
        active = [active[a] for a in keep]
        step += 1

    results = []
    for sentence, hypotheses in enumerate(finished):
        if not hypotheses:  # cannot happen: the length limit forces EOS on every live beam
            raise RuntimeError(f"beam search finished sentence {sentence} without a hypothesis")
        ranked = sorted(hypotheses, key=lambda h: h.score, reverse=True)
        results.append(ranked[:nbest])
    return results


@torch.no_grad()
def greedy_search(
    model: TokenStepModel,
    src: torch.Tensor,
    src_len: torch.Tensor,
    *,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
) -> list[Hypothesis]:
    """The most probable next token at every step, until EOS or the maximum length (then EOS
    is forced). `lenpen` only sets how `score` is normalized."""
    device = _model_device(model, src.device)
    src, src_len = src.to(device), src_len.to(device)
    batch = src.shape[0]
    limits = max_lengths(src_len, max_len_a, max_len_b)  # [B]
    encoded = model.encode(src, src_len)
    cache = model.new_cache()
    prev = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    log_prob = torch.zeros(batch, dtype=torch.float64, device=device)
    length = torch.zeros(batch, dtype=torch.long, device=device)  # tokens so far, EOS included
    outputs = []
    for step in range(int(limits.max()) + 1):
        lprobs = _ban(model.step(prev, cache, encoded).float(), step >= limits)  # [B, V]
        best_lprob, token = lprobs.max(dim=-1)  # [B]
        log_prob += torch.where(done, 0.0, best_lprob.double())
        length += (~done).long()
        token = token.masked_fill(done, PAD_ID)
        outputs.append(token)
        done = done | (token == EOS_ID)
        if bool(done.all()):
            break
        prev = token[:, None]
    tokens = torch.stack(outputs, dim=1).tolist()  # [B, steps]
    results = []
    for b in range(batch):
        n = int(length[b]) - 1  # without EOS
        lp = float(log_prob[b])
        results.append(Hypothesis(tokens[b][:n], lp / (n + 1) ** lenpen, lp))
    return results


@dataclass
class MelGeneration:
    frames: list[torch.Tensor]  # per sentence [T_b, n_mels], after the post-net
    stopped: list[bool]  # True if the stop token ended it (False: cut at the maximum length)


@torch.no_grad()
def generate_mel(
    model: TransformerTTS,
    src: torch.Tensor,
    src_len: torch.Tensor,
    *,
    max_len_a: float,
    max_len_b: int,
    stop_threshold: float = 0.5,
) -> MelGeneration:
    """Autoregressive mel generation for a batch (see the module docstring); sentences leave
    the batch as they stop. Runs with the model's inference-time settings (eval mode: the
    decoder pre-net keeps its dropout if the config says so; seed torch for repeatability)."""
    device = _model_device(model, src.device)
    src, src_len = src.to(device), src_len.to(device)
    batch, n_mels = src.shape[0], model.config.n_mels
    limits = max_lengths(src_len, max_len_a, max_len_b)  # [B]
    encoded = model.encode(src, src_len)
    cache = model.new_cache()
    out = torch.zeros(batch, int(limits.max()), n_mels, device=device)  # [B, T_max, n]
    lengths = limits.clone()
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    active = torch.arange(batch, device=device)  # sentence of each row
    prev = torch.zeros(batch, 1, n_mels, device=device)
    step = 0
    while len(active):
        frame, stop_logit = model.step(prev, cache, encoded)  # [A, n], [A]
        out[active, step] = frame.float()
        stop = torch.sigmoid(stop_logit.float()) > stop_threshold  # [A]
        ends = stop | (step + 1 >= limits[active])
        lengths[active[ends]] = step + 1
        stopped[active[stop]] = True
        step += 1
        if bool(ends.any()):
            keep = (~ends).nonzero().squeeze(1)  # [A'] rows
            if not len(keep):
                break
            cache.reorder_(keep)
            encoded = encoded.index_select(keep)
            active, frame = active[keep], frame[keep]
        prev = frame[:, None]
    frames = out[:, : int(lengths.max())]
    frames = frames * padding_mask(lengths, frames.shape[1])[..., None]
    refined = model.denormalize_features(model.refine(frames, lengths), lengths)  # log-mel
    return MelGeneration(
        [refined[b, : int(lengths[b])].float().cpu() for b in range(batch)], stopped.cpu().tolist()
    )


@dataclass
class TeacherForcedAttention:
    attention: torch.Tensor  # [B, layers, heads, T_max, S_max], one row per target unit
    src_lengths: torch.Tensor  # [B] S_b, encoder positions (after the pre-net)
    tgt_lengths: torch.Tensor  # [B] T_b, target tokens (EOS excluded) or mel frames


@torch.no_grad()
def teacher_forced_attention(model: ARTeacher, batch: Batch) -> TeacherForcedAttention:
    """Encoder-decoder attention of every layer and head with the ground truth as decoder
    input. Row t is the attention while producing target unit t: for tokens the decoder
    position whose input is ``y_{t-1}`` (``<s>`` for t = 0; the row that predicts EOS is
    dropped), for mel frames the position whose input is frame t - 1 (the go frame for t = 0).
    Valid rows sum to 1 over the valid source columns."""
    batch = batch.to(_model_device(model, batch.src.device))
    tgt_len = batch.tgt_lengths
    if isinstance(model, TokenTeacher):
        prev, _, prev_len = shift_tokens(batch.tgt, tgt_len)
        out = model(batch.src, batch.src_lengths, prev, prev_len, need_weights=True)
        attention = torch.stack(out.cross_attention, dim=1)[:, :, :, :-1]  # drop the EOS row
    elif isinstance(model, TransformerTTS):
        prev = model.decoder_inputs(batch.tgt, tgt_len)
        out = model(batch.src, batch.src_lengths, prev, tgt_len, need_weights=True)
        attention = torch.stack(out.cross_attention, dim=1)
    else:
        raise TypeError(f"not an AR teacher: {type(model).__name__}")
    return TeacherForcedAttention(attention, out.src_lengths, tgt_len)


def map_split(
    split: Split,
    batch_sentences: int,
    per_batch: Callable[[Batch], Sequence[Any]],
    *,
    desc: str,
    progress: bool = True,
) -> tuple[list[Any], float]:
    """`per_batch` over batches of similar source length (less padding, shortest first), its
    per-sentence results put back in split order; and the seconds it took."""
    results: list[Any] = [None] * len(split)
    batches = make_batches(split.src.lengths.numpy(), max_sentences=batch_sentences, shuffle=False)
    started = time.perf_counter()
    for indices in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        outputs = per_batch(collate(split, indices))
        for k, output in zip(indices.tolist(), outputs, strict=True):
            results[k] = output
    return results, time.perf_counter() - started


def decode_split(
    model: TokenTeacher,
    split: Split,
    *,
    beam: int,
    lenpen: float,
    max_len_a: float,
    max_len_b: int,
    batch_sentences: int,
    progress: bool = True,
) -> tuple[list[Hypothesis], float]:
    """The best hypothesis for every sentence of `split` (in split order) and the seconds the
    search took; beam 1 runs :func:`greedy_search`."""
    limits = dict(max_len_a=max_len_a, max_len_b=max_len_b)

    def search(batch: Batch) -> list[Hypothesis]:
        if beam == 1:
            return greedy_search(model, batch.src, batch.src_lengths, lenpen=lenpen, **limits)
        found = beam_search(model, batch.src, batch.src_lengths, beam=beam, lenpen=lenpen, **limits)
        return [n[0] for n in found]

    return map_split(split, batch_sentences, search, desc="decode", progress=progress)


def generate_split(
    model: TransformerTTS,
    split: Split,
    *,
    max_len_a: float,
    max_len_b: int,
    stop_threshold: float,
    batch_sentences: int,
    progress: bool = True,
) -> tuple[MelGeneration, float]:
    """Generated mels for every sentence of `split` (in split order) and the seconds taken."""

    def generate(batch: Batch) -> list[tuple[torch.Tensor, bool]]:
        out = generate_mel(
            model,
            batch.src,
            batch.src_lengths,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            stop_threshold=stop_threshold,
        )
        return list(zip(out.frames, out.stopped, strict=True))

    pairs, seconds = map_split(split, batch_sentences, generate, desc="generate", progress=progress)
    return MelGeneration([f for f, _ in pairs], [stop for _, stop in pairs]), seconds
