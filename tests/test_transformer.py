"""Transformer blocks: fused vs explicit attention, masks, causality, cached decoding."""

from __future__ import annotations

import math

import pytest
import torch

from comma.nn.transformer import (
    Decoder,
    Encoder,
    LearnedPositions,
    MultiHeadAttention,
    SinusoidalPositions,
    TransformerLayer,
    causal_mask,
    padding_mask,
)

D, H = 32, 4


def _attention(seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(D, H, dropout=0.3).eval()


def test_masks():
    assert padding_mask(torch.tensor([2, 0, 3]), 4).tolist() == [
        [True, True, False, False],
        [False, False, False, False],
        [True, True, True, False],
    ]
    assert padding_mask(torch.tensor([1, 2])).shape == (2, 2)
    with pytest.raises(ValueError, match="exceeds the padded size"):
        padding_mask(torch.tensor([5]), 4)
    assert causal_mask(3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]


@pytest.mark.parametrize("kind", ["padding", "causal", "cross", "none", "per-head"])
def test_fused_and_explicit_attention_agree(kind):
    attn = _attention()
    torch.manual_seed(1)
    lengths = torch.tensor([7, 4, 1])
    query = torch.randn(3, 7, D)
    key_value = query
    mask = padding_mask(lengths, 7)[:, None, None, :]
    if kind == "causal":
        mask = mask & causal_mask(7)
    elif kind == "cross":
        key_value = torch.randn(3, 5, D)
        mask = padding_mask(torch.tensor([5, 2, 3]), 5)[:, None, None, :]
    elif kind == "none":
        mask = None
    elif kind == "per-head":
        mask = torch.rand(3, H, 7, 7) > 0.4
        mask[0, 1, 2] = False  # a row with no allowed key at all
    fused, no_weights = attn(query, key_value, mask)
    explicit, weights = attn(query, key_value, mask, need_weights=True)
    assert no_weights is None
    assert weights.shape == (3, H, 7, key_value.shape[1])
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    allowed = (
        torch.ones_like(weights, dtype=torch.bool) if mask is None else mask.expand_as(weights)
    )
    # Rows sum to 1 over allowed keys, disallowed keys get exactly 0.
    assert torch.all(weights[~allowed] == 0)
    row_sums = weights.sum(-1)
    has_key = allowed.any(-1)
    torch.testing.assert_close(row_sums[has_key], torch.ones_like(row_sums[has_key]))
    assert torch.all(row_sums[~has_key] == 0)


def test_block_weights_are_the_whole_map_renormalized_over_the_block():
    """A block (queries r:, keys :k) is the softmax of its own scores: the whole map's block
    divided by its row sums, padded keys 0, a row without keys in the block all 0, while the
    attention output stays the fused one."""
    attn = _attention()
    torch.manual_seed(2)
    x = torch.randn(3, 7, D)
    mask = padding_mask(torch.tensor([7, 5, 6]), 7)[:, None, None, :].expand(3, 1, 7, 7).clone()
    mask[:, :, :, 1] &= torch.tensor([True, False, True])[:, None, None]  # a padded source key
    mask[2, :, 5, :3] = False  # query 5 of sentence 2 sees no key of the block
    fused, _ = attn(x, x, mask)
    out, block = attn.attend(x, *attn.project_key_value(x), mask, block=(3, 3))
    _, whole = attn(x, x, mask, need_weights=True)
    torch.testing.assert_close(out, fused)
    part = whole[:, :, 3:, :3]
    totals = part.sum(-1, keepdim=True)
    expected = torch.where(totals > 0, part / totals.clamp_min(1e-30), torch.zeros(()))
    assert block.shape == (3, H, 4, 3)
    torch.testing.assert_close(block, expected, rtol=1e-5, atol=1e-6)
    assert torch.all(block[1, :, :, 1] == 0) and torch.all(block[2, :, 2] == 0)
    with pytest.raises(ValueError, match="not both"):
        attn.attend(x, *attn.project_key_value(x), mask, need_weights=True, block=(3, 3))


def test_rows_without_keys_give_zero_attention_and_no_nan():
    attn = _attention()
    query = torch.randn(2, 3, D, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])[None, None]  # [1,1,2,3]
    mask = mask.expand(2, 1, 2, 3)
    key_value = torch.randn(2, 3, D)
    for need_weights in (False, True):
        out, weights = attn(query[:, :2], key_value, mask, need_weights=need_weights)
        # Row 1 attends to nothing: the output is the projection of a zero vector (its bias).
        torch.testing.assert_close(out[:, 1], attn.out_proj.bias.expand(2, D))
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(query.grad).all()
        query.grad = None
        if need_weights:
            assert torch.all(weights[:, :, 1] == 0)


def test_mask_must_be_boolean():
    attn = _attention()
    x = torch.randn(1, 2, D)
    with pytest.raises(TypeError, match="must be bool"):
        attn(x, x, torch.zeros(2, 2))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_causal_decoder_output_at_t_ignores_later_inputs(pre_norm):
    torch.manual_seed(0)
    decoder = Decoder(2, D, H, 64, dropout=0.1, pre_norm=pre_norm).eval()
    x = torch.randn(2, 6, D)
    memory = torch.randn(2, 5, D)
    memory_lengths = torch.tensor([5, 3])
    out = decoder(x, memory, torch.tensor([6, 6]), memory_lengths).hidden
    for t in range(5):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(2, 5 - t, D) * 10
        out_changed = decoder(changed, memory, torch.tensor([6, 6]), memory_lengths).hidden
        torch.testing.assert_close(out_changed[:, : t + 1], out[:, : t + 1])
        assert not torch.allclose(out_changed[:, t + 1 :], out[:, t + 1 :])
    # Padded memory positions change nothing.
    changed_memory = memory.clone()
    changed_memory[1, 3:] = 100.0
    torch.testing.assert_close(
        decoder(x, changed_memory, None, memory_lengths).hidden,
        decoder(x, memory, None, memory_lengths).hidden,
    )


def test_non_causal_decoder_sees_the_future():
    torch.manual_seed(0)
    decoder = Decoder(1, D, H, 64, dropout=0.0, causal=False).eval()
    x, memory = torch.randn(1, 4, D), torch.randn(1, 3, D)
    changed = x.clone()
    changed[:, 3] += 1.0
    assert not torch.allclose(
        decoder(x, memory).hidden[:, 0], decoder(changed, memory).hidden[:, 0]
    )
    with pytest.raises(ValueError, match="causal"):
        decoder.step(x[:, :1], decoder.new_cache(), memory)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_ignores_padding_and_returns_weights(pre_norm):
    torch.manual_seed(0)
    encoder = Encoder(3, D, H, 64, dropout=0.1, pre_norm=pre_norm).eval()
    x = torch.randn(2, 5, D)
    lengths = torch.tensor([5, 3])
    out = encoder(x, lengths)
    assert out.self_attention is None
    changed = x.clone()
    changed[1, 3:] = 50.0
    out_changed = encoder(changed, lengths, need_weights=True)
    torch.testing.assert_close(out_changed.hidden[1, :3], out.hidden[1, :3])
    torch.testing.assert_close(out_changed.hidden[0], out.hidden[0])
    assert len(out_changed.self_attention) == 3
    for weights in out_changed.self_attention:
        assert weights.shape == (2, H, 5, 5)
        assert torch.all(weights[1, :, :, 3:] == 0)
    # An extra mask (e.g. CoMMA's block mask) is ANDed with the padding mask.
    block = torch.ones(5, 5, dtype=torch.bool)
    block[:2, 2:] = False
    weights = encoder(x, lengths, mask=block, need_weights=True).self_attention[0]
    assert torch.all(weights[:, :, :2, 2:] == 0)
    assert torch.all(weights[1, :, :, 3:] == 0)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_incremental_decoding_matches_full_forward(pre_norm):
    torch.manual_seed(0)
    decoder = Decoder(2, D, H, 64, dropout=0.1, pre_norm=pre_norm).eval()
    x = torch.randn(3, 6, D)
    memory = torch.randn(3, 4, D)
    memory_lengths = torch.tensor([4, 2, 3])
    full = decoder(x, memory, memory_lengths=memory_lengths, need_weights=True)
    cache = decoder.new_cache()
    steps = []
    for t in range(6):
        out = decoder.step(
            x[:, t : t + 1],
            cache,
            memory if t == 0 else None,
            memory_lengths,
            need_weights=True,
        )
        steps.append(out.hidden)
        assert len(cache) == t + 1
        assert out.cross_attention[1].shape == (3, H, 1, 4)
        torch.testing.assert_close(
            out.self_attention[0][:, :, 0], full.self_attention[0][:, :, t, : t + 1]
        )
    torch.testing.assert_close(torch.cat(steps, dim=1), full.hidden, rtol=1e-5, atol=1e-5)
    # Several positions at once, after a prefix.
    cache = decoder.new_cache()
    decoder.step(x[:, :2], cache, memory, memory_lengths)
    rest = decoder.step(x[:, 2:], cache, None, memory_lengths).hidden
    torch.testing.assert_close(rest, full.hidden[:, 2:], rtol=1e-5, atol=1e-5)
    # Beam search reorders the cache: rows follow the index.
    cache = decoder.new_cache()
    decoder.step(x[:, :3], cache, memory, memory_lengths)
    index = torch.tensor([2, 0, 0])
    cache.reorder_(index)
    reordered = decoder.step(x[index, 3:4], cache, None, memory_lengths[index]).hidden
    torch.testing.assert_close(reordered, full.hidden[index, 3:4], rtol=1e-5, atol=1e-5)


def test_layer_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    layer = TransformerLayer(D, H, 64, dropout=0.5)
    x = torch.randn(2, 4, D)
    layer.train()
    assert not torch.allclose(layer(x).hidden, layer(x).hidden)
    layer.eval()
    torch.testing.assert_close(layer(x).hidden, layer(x).hidden)
    with pytest.raises(ValueError, match="memory"):
        TransformerLayer(D, H, 64, cross_attention=True)(x)


def test_positions():
    sinusoidal = SinusoidalPositions(8)
    enc = sinusoidal(torch.tensor([[0, 3]]))
    assert enc.shape == (1, 2, 8)
    # channel i < d/2: sin(pos / 10000^(2i/d)); channel d/2 + i: the cosine.
    assert enc[0, 1, 1].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 8)), abs=1e-6)
    assert enc[0, 1, 5].item() == pytest.approx(math.cos(3 / 10000 ** (2 / 8)), abs=1e-6)
    assert torch.equal(enc[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4))
    learned = LearnedPositions(4, 8)
    assert learned(torch.arange(4)).shape == (4, 8)
    with pytest.raises(ValueError, match="beyond the 4 learned positions"):
        learned(torch.tensor([4]))
    with pytest.raises(ValueError, match="even"):
        SinusoidalPositions(7)
