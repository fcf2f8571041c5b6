"""Transformer building blocks shared by every model of the study.

AR teachers (NMT/ASR/TTS), NAT, NAR-ASR, FastSpeech and CoMMA's mix-attention all build on
these pieces: multi-head attention, the position-wise feed-forward net, one layer usable as an
encoder layer (self-attention) or a decoder layer (self-attention + cross-attention), sinusoidal
and learned positions, and encoder/decoder stacks.

Conventions
-----------
* Hidden states are ``[B, L, d]`` (batch first).
* Attention masks are bool and broadcastable to ``[B, H, Lq, Lk]``: True = the query may attend
  to the key, as in ``torch.nn.functional.scaled_dot_product_attention``. Masks combine by AND.
  :func:`padding_mask` gives ``[B, L]`` (True at real positions; as a key mask use
  ``mask[:, None, None, :]``) and :func:`causal_mask` gives ``[L, L]``.
* A query row with no allowed key attends to nothing: its attention output is exactly zero
  (so the layer passes the residual through plus the output projection's bias), its returned
  weights are all zero, and neither the forward nor the backward pass produces NaN.
* Attention uses the fused ``scaled_dot_product_attention`` unless weights are asked for
  (``need_weights=True``); then the softmax is computed explicitly in float32 and the
  weights ``[B, H, Lq, Lk]`` (before attention dropout) are returned. Both paths agree to float
  tolerance in eval mode. A `block` ``(r, k)`` asks instead for the attention of the queries
  from r on over the first k keys, renormalized over those keys: the fused path still runs, and
  only the ``[Lq - r, k]`` block is computed explicitly (CoMMA's attention constraint reads
  the target rows' source block, eq. 7).
* The stacks hold no embeddings or positions: each model has its own pre-net (see
  ``comma.nn.prenets``) and adds positions itself, which lets CoMMA number source and
  target positions from zero each and run one stack over ``[source; target]`` with a block mask.
* ``pre_norm=False`` is the original post-norm Transformer (fairseq's default);
  ``pre_norm=True`` normalizes before each sub-layer and adds a final LayerNorm to the stack
  (ESPnet's Transformer ASR/TTS default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "padding_mask",
    "causal_mask",
    "MultiHeadAttention",
    "FeedForward",
    "TransformerLayer",
    "LayerOutput",
    "LayerCache",
    "DecoderCache",
    "SinusoidalPositions",
    "LearnedPositions",
    "StackOutput",
    "Encoder",
    "Decoder",
]

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Bool ``[B, max_len]``: True at positions ``t < lengths[b]`` (real tokens), False on padding.

    ``max_len`` defaults to ``lengths.max()``. As an attention key mask use
    ``padding_mask(lengths, Lk)[:, None, None, :]`` (broadcasts to ``[B, H, Lq, Lk]``)."""
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be a 1-D integer tensor, got {lengths.dtype} {tuple(lengths.shape)}"
        )
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    elif lengths.numel() and int(lengths.max()) > max_len:
        raise ValueError(f"a length {int(lengths.max())} exceeds the padded size {max_len}")
    positions = torch.arange(max_len, device=lengths.device)  # [L]
    return positions[None, :] < lengths[:, None]  # [B, L]


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool ``[L, L]``: True where key ``j <= `` query ``i`` (no attention to the future)."""
    positions = torch.arange(length, device=device)  # [L]
    return positions[None, :] <= positions[:, None]  # [Lq, Lk]


def _and_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """AND of the given bool masks (broadcasting); None if none is given."""
    combined = None
    for mask in masks:
        if mask is None:
            continue
        if mask.dtype != torch.bool:
            raise TypeError(f"attention masks must be bool (True = may attend), got {mask.dtype}")
        combined = mask if combined is None else combined & mask
    return combined


def _key_mask(lengths: torch.Tensor | None, num_keys: int) -> torch.Tensor | None:
    """``[B, 1, 1, Lk]`` key-padding mask from lengths, or None."""
    if lengths is None:
        return None
    return padding_mask(lengths, num_keys)[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with `heads` heads of size ``d_model // heads``.

    ``forward(query, key_value, mask, need_weights)``: query ``[B, Lq, d]`` attends over
    key_value ``[B, Lk, d]`` (the same tensor for self-attention). ``attend`` takes keys and
    values already projected (``project_key_value``), which is how cached decoding reuses them.
    `bias` applies to the query, value and output projections (the key has none, see below).
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % heads != 0:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.d_model = d_model
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        # No key bias: it adds the same score to every key of a query, which the softmax
        # cancels, so its gradient is pure rounding noise that Adam would turn into lr-sized
        # steps (a random walk that changes nothing but makes runs irreproducible).
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # [B, L, d] -> [B, H, L, dh]
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def project_key_value(self, key_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, Lk, d]`` -> keys and values ``[B, H, Lk, dh]`` each."""
        return self._split_heads(self.k_proj(key_value)), self._split_heads(self.v_proj(key_value))

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        block: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query ``[B, Lq, d]``, key/value ``[B, H, Lk, dh]``, mask bool broadcastable to
        ``[B, H, Lq, Lk]`` -> output ``[B, Lq, d]`` and weights ``[B, H, Lq, Lk]`` (float32,
        before dropout) if `need_weights`; with ``block=(r, k)`` instead, the weights of
        queries r: over keys :k renormalized over those keys, ``[B, H, Lq - r, k]``
        (:meth:`block_weights`); else None."""
        if need_weights and block is not None:
            raise ValueError("ask for the whole attention (need_weights) or a block, not both")
        batch, num_queries, _ = query.shape
        q = self._split_heads(self.q_proj(query))  # [B, H, Lq, dh]
        mask = allowed = _and_masks(mask)
        has_key = None
        if mask is not None:
            # Rows without any allowed key: let them see every key (no NaN from an all -inf
            # softmax), then zero their output so they still attend to nothing.
            has_key = mask.any(dim=-1, keepdim=True)  # [..., Lq, 1]
            mask = mask | ~has_key
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            # Scale the queries, not the [B, H, Lq, Lk] scores: one pass over Lq x dh instead of
            # Lq x Lk, forward and backward (TTS's mix-attention has Lk of ~200 frames).
            scaled = q / math.sqrt(self.head_dim)
            scores = (scaled @ key.transpose(-2, -1)).float()  # [B, H, Lq, Lk]
            if mask is not None:  # in place: the matmul's backward does not read its output
                scores.masked_fill_(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            if has_key is not None and not bool(has_key.all()):  # a copy of [B, H, Lq, Lk]
                weights = weights.masked_fill(~has_key, 0.0)
            probs = F.dropout(weights, dropout_p, self.training)
            out = probs.to(value.dtype) @ value  # [B, H, Lq, dh]
        else:
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, dropout_p=dropout_p)
            if has_key is not None:
                out = out.masked_fill(~has_key, 0.0)
            if block is not None:
                weights = self.block_weights(q, key, allowed, *block)
        out = out.transpose(1, 2).reshape(batch, num_queries, self.d_model)  # [B, Lq, d]
        return self.out_proj(out), weights

    def block_weights(
        self,
        q: torch.Tensor,
        key: torch.Tensor,
        mask: torch.Tensor | None,
        rows_from: int,
        keys_to: int,
    ) -> torch.Tensor:
        """The attention of queries ``rows_from:`` over keys ``:keys_to``, renormalized over
        those keys: float32 ``[B, H, Lq - rows_from, keys_to]``. Renormalizing a softmax over a
        subset of its keys is the softmax of that subset's scores, so this equals the block of
        the whole map divided by its row sums, without the ``[Lq, Lk]`` map: for TTS's
        mix-attention (~200 frames over ~20 phonemes) a tenth of its size. Rows with no
        allowed key in the block are zero. q ``[B, H, Lq, dh]``, key ``[B, H, Lk, dh]``."""
        q = q[:, :, rows_from:] / math.sqrt(self.head_dim)
        scores = (q @ key[:, :, :keys_to].transpose(-2, -1)).float()  # [B, H, Lq - r, k]
        if mask is None:
            return scores.softmax(dim=-1)
        allowed = mask[..., rows_from:, :keys_to]
        has_key = allowed.any(dim=-1, keepdim=True)
        scores = scores.masked_fill(has_key & ~allowed, float("-inf"))
        # Unconditionally: the block is small, and checking first would sync a GPU per layer.
        return scores.softmax(dim=-1).masked_fill(~has_key, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key, value = self.project_key_value(key_value)
        return self.attend(query, key, value, mask, need_weights)


class FeedForward(nn.Module):
    """Position-wise ``Linear(d, ffn) -> activation -> dropout -> Linear(ffn, d)``."""

    def __init__(
        self, d_model: int, ffn_dim: int, activation_dropout: float = 0.0, activation: str = "relu"
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}, choose from {sorted(ACTIVATIONS)}"
            )
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.activation = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(activation_dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))  # [B, L, d]


@dataclass
class LayerCache:
    """Keys and values a decoder layer keeps between incremental steps."""

    self_key: torch.Tensor | None = None  # [B, H, t, dh], the positions decoded so far
    self_value: torch.Tensor | None = None  # [B, H, t, dh]
    cross_key: torch.Tensor | None = None  # [B, H, S, dh], the projected memory (computed once)
    cross_value: torch.Tensor | None = None  # [B, H, S, dh]

    def reorder_(self, index: torch.Tensor) -> None:
        for name in ("self_key", "self_value", "cross_key", "cross_value"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, index))


@dataclass
class DecoderCache:
    """Per-layer caches of an incrementally run :class:`Decoder`, see ``Decoder.step``."""

    layers: list[LayerCache] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of positions decoded so far."""
        first = self.layers[0].self_key if self.layers else None
        return 0 if first is None else first.shape[2]

    def reorder_(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` ``[B']`` in this order (beam search: the surviving beams)."""
        for layer in self.layers:
            layer.reorder_(index)


@dataclass
class LayerOutput:
    hidden: torch.Tensor  # [B, Lq, d]
    self_attention: torch.Tensor | None = None  # [B, H, Lq, Lq(+cached)] or a block, if asked
    cross_attention: torch.Tensor | None = None  # [B, H, Lq, S] if asked for


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention over a memory, feed-forward; each sub-layer
    with dropout, a residual connection and LayerNorm (before it if `pre_norm`, else after).

    `attention_dropout` defaults to `dropout`; `activation_dropout` (inside the FFN) to 0.
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        *,
        cross_attention: bool = False,
        pre_norm: bool = False,
        attention_dropout: float | None = None,
        activation_dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.pre_norm = pre_norm
        self.self_attn = MultiHeadAttention(d_model, heads, attention_dropout)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = None
        self.cross_attn_norm = None
        if cross_attention:
            self.cross_attn = MultiHeadAttention(d_model, heads, attention_dropout)
            self.cross_attn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, activation_dropout, activation)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, sublayer) -> tuple:
        """x + dropout(sublayer(x)) with LayerNorm before (pre-norm) or after (post-norm)."""
        out, weights = sublayer(norm(x) if self.pre_norm else x)
        x = x + self.dropout(out)
        return (x if self.pre_norm else norm(x)), weights

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: LayerCache | None = None,
        block: tuple[int, int] | None = None,
    ) -> LayerOutput:
        """x ``[B, L, d]``; memory ``[B, S, d]`` for cross-attention; masks broadcastable to
        ``[B, H, L, L]`` / ``[B, H, L, S]``.

        ``block=(r, k)``: the self-attention weights returned are those of queries r: over
        keys :k, renormalized over them (:meth:`MultiHeadAttention.block_weights`).

        With `cache`, x holds only the new positions: their keys/values are appended to the
        cache and they attend over every cached position (`self_mask` then covers
        ``[L_new, t + L_new]``); the memory is projected once and kept in the cache.
        """

        def self_attention(h):
            key, value = self.self_attn.project_key_value(h)  # [B, H, L, dh]
            if cache is not None:
                if cache.self_key is not None:
                    key = torch.cat([cache.self_key, key], dim=2)
                    value = torch.cat([cache.self_value, value], dim=2)
                cache.self_key, cache.self_value = key, value
            return self.self_attn.attend(h, key, value, self_mask, need_weights, block)

        def cross_attention(h):
            if cache is not None and cache.cross_key is not None:
                key, value = cache.cross_key, cache.cross_value
            else:
                key, value = self.cross_attn.project_key_value(memory)  # [B, H, S, dh]
                if cache is not None:
                    cache.cross_key, cache.cross_value = key, value
            return self.cross_attn.attend(h, key, value, cross_mask, need_weights)

        x, self_weights = self._residual(x, self.self_attn_norm, self_attention)
        cross_weights = None
        if self.cross_attn is not None:
            if memory is None and (cache is None or cache.cross_key is None):
                raise ValueError("this layer has cross-attention: pass the encoder `memory`")
            x, cross_weights = self._residual(x, self.cross_attn_norm, cross_attention)
        x, _ = self._residual(x, self.ffn_norm, lambda h: (self.ffn(h), None))
        return LayerOutput(x, self_weights, cross_weights)


class SinusoidalPositions(nn.Module):
    """Integer positions ``[...]`` -> fixed encodings ``[..., d]`` (Vaswani et al. 2017):
    ``sin(pos / base^(2i/d))`` in the first half of the channels, ``cos`` in the second half
    (fairseq's layout). No parameters and no maximum length."""

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        if d_model % 2 != 0:
            raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
        inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)  # [d/2]
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.to(torch.float32)[..., None] * self.inv_freq  # [..., d/2]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., d]


class LearnedPositions(nn.Module):
    """Integer positions ``[...]`` in ``[0, max_positions)`` -> learned vectors ``[..., d]``."""

    def __init__(self, max_positions: int, d_model: int):
        super().__init__()
        self.max_positions = max_positions
        self.embed = nn.Embedding(max_positions, d_model)
        nn.init.normal_(self.embed.weight, mean=0.0, std=d_model**-0.5)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"position {int(positions.max())} is beyond the {self.max_positions} learned "
                "positions; raise max_positions or filter long sequences"
            )
        return self.embed(positions)  # [..., d]


@dataclass
class StackOutput:
    hidden: torch.Tensor  # [B, L, d]
    # per layer [B, H, L, L] if asked for, or a block [B, H, L - r, k] (Encoder's `block`)
    self_attention: list[torch.Tensor] | None = None
    cross_attention: list[torch.Tensor] | None = None  # per layer [B, H, L, S] if asked for


class _Stack(nn.Module):
    """N Transformer layers; the options (keyword-only) are those of :class:`TransformerLayer`:
    pre_norm (default False), attention_dropout (None: as dropout), activation_dropout (0),
    activation ("relu")."""

    def __init__(
        self,
        layers: int,
        d_model: int,
        heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        *,
        cross_attention: bool,
        pre_norm: bool = False,
        attention_dropout: float | None = None,
        activation_dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a stack needs at least one layer, got {layers}")
        self.d_model = d_model
        self.heads = heads
        self.layers = nn.ModuleList(
            TransformerLayer(
                d_model,
                heads,
                ffn_dim,
                dropout,
                cross_attention=cross_attention,
                pre_norm=pre_norm,
                attention_dropout=attention_dropout,
                activation_dropout=activation_dropout,
                activation=activation,
            )
            for _ in range(layers)
        )
        # Pre-norm leaves the residual stream unnormalized: normalize the stack's output.
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()


class Encoder(_Stack):
    """N self-attention layers over ``x [B, L, d]`` (positions already added by the caller);
    options as :class:`_Stack`."""

    def __init__(self, layers: int, d_model: int, heads: int, ffn_dim: int, *args, **options):
        super().__init__(layers, d_model, heads, ffn_dim, *args, cross_attention=False, **options)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        block: tuple[int, int] | None = None,
    ) -> StackOutput:
        """x ``[B, L, d]``; lengths ``[B]`` masks padded keys; `mask` (bool, broadcastable to
        ``[B, H, L, L]``) is ANDed in, e.g. CoMMA's block mask over ``[source; target]``.
        Returns the hidden states and, if `need_weights`, one ``[B, H, L, L]`` per layer; with
        ``block=(r, k)``, one ``[B, H, L - r, k]`` per layer: queries r: over keys :k,
        renormalized over those keys."""
        attn_mask = _and_masks(_key_mask(lengths, x.shape[1]), mask)
        collect = need_weights or block is not None
        weights = [] if collect else None
        for layer in self.layers:
            out = layer(x, self_mask=attn_mask, need_weights=need_weights, block=block)
            x = out.hidden
            if collect:
                weights.append(out.self_attention)
        return StackOutput(self.final_norm(x), self_attention=weights)


class Decoder(_Stack):
    """N layers of self-attention (causal if `causal`) and cross-attention over a memory.

    ``causal=True`` is the AR decoder (teachers); ``causal=False`` a NAR decoder (NAT,
    NAR-ASR) whose positions all see each other."""

    def __init__(
        self,
        layers: int,
        d_model: int,
        heads: int,
        ffn_dim: int,
        *args,
        causal: bool = True,
        **options,
    ):
        super().__init__(layers, d_model, heads, ffn_dim, *args, cross_attention=True, **options)
        self.causal = causal

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        lengths: torch.Tensor | None = None,
        memory_lengths: torch.Tensor | None = None,
        self_mask: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """x ``[B, T, d]`` (decoder inputs, positions added), memory ``[B, S, d]`` (encoder
        output). lengths/memory_lengths ``[B]`` mask padded keys; `self_mask` ``[.., T, T]`` and
        `cross_mask` ``[.., T, S]`` (e.g. ASR attention windows) are ANDed in.
        Returns hidden ``[B, T, d]`` and, if `need_weights`, per-layer self-attention
        ``[B, H, T, T]`` and cross-attention ``[B, H, T, S]`` weights."""
        length = x.shape[1]
        causal = causal_mask(length, x.device) if self.causal else None
        self_attn_mask = _and_masks(causal, _key_mask(lengths, length), self_mask)
        cross_attn_mask = _and_masks(_key_mask(memory_lengths, memory.shape[1]), cross_mask)
        return self._run(x, memory, self_attn_mask, cross_attn_mask, need_weights, None)

    def new_cache(self) -> DecoderCache:
        return DecoderCache([LayerCache() for _ in self.layers])

    def step(
        self,
        x: torch.Tensor,
        cache: DecoderCache,
        memory: torch.Tensor | None = None,
        memory_lengths: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """Incremental decoding: x ``[B, T_new, d]`` are the next positions (usually one).

        They attend causally over themselves and every position already in `cache`, which is
        extended in place. The memory ``[B, S, d]`` is needed on the first call only (its keys
        and values are cached); memory_lengths each call. In eval mode the outputs equal the
        matching rows of ``forward`` on the whole prefix. For beam search, reorder the cache
        with ``cache.reorder_(beam_index)``."""
        if not self.causal:
            raise ValueError("incremental decoding needs a causal decoder")
        past = len(cache)
        new = x.shape[1]
        if memory is not None:
            num_keys = memory.shape[1]
        elif cache.layers[0].cross_key is not None:
            num_keys = cache.layers[0].cross_key.shape[2]
        else:
            raise ValueError("pass the encoder `memory` on the first step")
        query_pos = past + torch.arange(new, device=x.device)  # [T_new]
        key_pos = torch.arange(past + new, device=x.device)  # [t + T_new]
        self_attn_mask = key_pos[None, :] <= query_pos[:, None]  # [T_new, t + T_new]
        cross_attn_mask = _and_masks(_key_mask(memory_lengths, num_keys), cross_mask)
        return self._run(x, memory, self_attn_mask, cross_attn_mask, need_weights, cache)

    def _run(self, x, memory, self_attn_mask, cross_attn_mask, need_weights, cache):
        self_weights = [] if need_weights else None
        cross_weights = [] if need_weights else None
        for k, layer in enumerate(self.layers):
            out = layer(
                x,
                self_mask=self_attn_mask,
                memory=memory,
                cross_mask=cross_attn_mask,
                need_weights=need_weights,
                cache=None if cache is None else cache.layers[k],
            )
            x = out.hidden
            if need_weights:
                self_weights.append(out.self_attention)
                cross_weights.append(out.cross_attention)
        return StackOutput(self.final_norm(x), self_weights, cross_weights)
