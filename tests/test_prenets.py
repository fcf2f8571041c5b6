"""Task pre-nets: shapes, subsampled lengths, and that padding never leaks into valid frames."""

from __future__ import annotations

import torch

from comma.nn.prenets import Conv2dPrenet, DensePrenet, TokenEmbedding


def test_conv_prenet_lengths_match_its_output_and_ignore_padding():
    torch.manual_seed(0)
    prenet = Conv2dPrenet(n_mels=80, d_model=32, channels=8).eval()
    lengths = torch.tensor([161, 100, prenet.min_input_length()])
    mels = torch.randn(3, 161, 80)
    out, out_lengths = prenet(mels, lengths)
    assert out.shape == (3, int(out_lengths.max()), 32)
    assert out_lengths.tolist() == [37, 22, 1]
    # Frames beyond a sentence's length change nothing in its valid outputs, except the few
    # positions whose receptive field crosses the end (kernel 3, strides 2, 2, 1).
    noisy = mels.clone()
    noisy[1, 100:] = 1e3
    out_noisy, _ = prenet(noisy, lengths)
    safe = int(out_lengths[1]) - 3
    assert torch.allclose(out[1, :safe], out_noisy[1, :safe])
    assert not torch.allclose(out[1], out_noisy[1])


def test_token_embedding_scales_and_zeroes_padding():
    emb = TokenEmbedding(10, 16)
    out, lengths = emb(torch.tensor([[5, 0]]), torch.tensor([1]))
    assert out.shape == (1, 2, 16)
    assert torch.count_nonzero(out[0, 1]) == 0
    assert torch.allclose(out[0, 0], emb.embed.weight[5] * 4.0)
    assert lengths.tolist() == [1]


def test_dense_prenet_is_framewise():
    prenet = DensePrenet(n_mels=80, d_model=16, hidden=32).eval()
    mels = torch.randn(2, 5, 80)
    out, _ = prenet(mels, torch.tensor([5, 3]))
    single, _ = prenet(mels[:, 2:3], torch.tensor([1, 1]))
    assert torch.allclose(out[:, 2:3], single, atol=1e-6)
