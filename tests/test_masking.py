"""comma.nn.masking: exact mask counts, chunk granularity, determinism, and clear errors."""

from __future__ import annotations

import pytest
import torch

from comma.nn.masking import (
    check_lengths,
    chunk_mask,
    random_token_mask,
    sample_mask_ratio,
    valid_positions,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_valid_positions_marks_positions_below_each_length():
    mask = valid_positions(torch.tensor([2, 0, 3]), max_len=4)
    expected = torch.tensor(
        [[True, True, False, False], [False, False, False, False], [True, True, True, False]]
    )
    assert torch.equal(mask, expected)
    assert valid_positions(torch.tensor([1, 3])).shape == (2, 3)


@pytest.mark.parametrize(
    "lengths, kwargs, message",
    [
        (torch.tensor([[1, 2]]), {}, r"shape \[B\]"),
        (torch.tensor([1.0, 2.0]), {}, "integer"),
        (torch.tensor([1, 5]), {"max_len": 4}, "<= 4"),
        (torch.tensor([0, 2]), {}, ">= 1"),
        (torch.tensor([1, 2]), {"batch_size": 3}, r"shape \[3\]"),
    ],
)
def test_check_lengths_rejects_bad_lengths_by_name(lengths, kwargs, message):
    with pytest.raises(ValueError, match="my_len.*" + message):
        check_lengths(lengths, "my_len", **kwargs)


def test_sample_mask_ratio_is_uniform_per_sentence_and_deterministic():
    p = sample_mask_ratio(4000, gen(3))
    assert p.shape == (4000,) and p.dtype == torch.float32
    assert float(p.min()) >= 0.0 and float(p.max()) < 1.0
    assert abs(float(p.mean()) - 0.5) < 0.03  # std of the mean ~0.0046
    assert torch.equal(p, sample_mask_ratio(4000, gen(3)))
    assert not torch.equal(p, sample_mask_ratio(4000, gen(4)))


def test_random_token_mask_counts_are_exact():
    tgt_len = torch.tensor([10, 7, 3, 1, 4, 5, 4])
    p = torch.tensor([0.5, 0.3, 0.5, 0.2, 0.0, 1.0, 0.1])
    mask = random_token_mask(tgt_len, p, gen())
    # round half up: 3 * 0.5 = 1.5 -> 2; at least one when p > 0: 1 * 0.2 -> 1, 4 * 0.1 -> 1.
    assert mask.sum(1).tolist() == [5, 2, 2, 1, 0, 5, 1]
    assert mask.shape == (7, 10) and mask.dtype == torch.bool
    assert not (mask & ~valid_positions(tgt_len, 10)).any()


def test_random_token_mask_float_p_and_max_len():
    mask = random_token_mask(torch.tensor([4, 8]), 0.25, gen(), max_len=12)
    assert mask.shape == (2, 12)
    assert mask.sum(1).tolist() == [1, 2]
    assert not mask[:, 8:].any()


def test_random_token_mask_is_deterministic_given_the_generator():
    tgt_len = torch.full((16,), 12)
    first = random_token_mask(tgt_len, 0.5, gen(7))
    assert torch.equal(first, random_token_mask(tgt_len, 0.5, gen(7)))
    assert not torch.equal(first, random_token_mask(tgt_len, 0.5, gen(8)))


def test_random_token_mask_positions_are_uniform():
    # 2 of 5 tokens per sentence: each position is masked with probability 0.4.
    mask = random_token_mask(torch.full((4000,), 5), 0.4, gen(1))
    frequency = mask.double().mean(0)
    assert torch.all((frequency - 0.4).abs() < 0.04), frequency  # std ~0.008


@pytest.mark.parametrize(
    "p, message", [(torch.tensor([0.5]), r"shape \[2\]"), (1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]")]
)
def test_random_token_mask_rejects_bad_p(p, message):
    with pytest.raises(ValueError, match="p must.*" + message):
        random_token_mask(torch.tensor([3, 4]), p, gen())


def test_chunk_mask_masks_whole_chunks_with_the_partial_last_chunk():
    tgt_len = torch.tensor([25] * 200)
    mask = chunk_mask(tgt_len, 0.5, chunk=10, generator=gen(2))
    assert mask.shape == (200, 25)
    chunks = [mask[:, 0:10], mask[:, 10:20], mask[:, 20:25]]
    for frames in chunks:  # each chunk is all masked or all kept
        assert torch.equal(frames.all(1), frames.any(1))
    # target 12.5 frames from chunks of 10, 10, 5: 10 or 15 (tie -> 15) are the reachable
    # closest counts, depending on where the random order puts the 5-frame chunk.
    counts = set(mask.sum(1).tolist())
    assert counts <= {10, 15} and counts == {10, 15}


def test_chunk_mask_hits_the_ratio_within_chunk_granularity():
    generator = gen(5)
    tgt_len = torch.randint(1, 300, (500,), generator=generator)
    p = torch.rand(500, generator=generator)
    mask = chunk_mask(tgt_len, p, chunk=10, generator=generator)
    masked = mask.sum(1).double()
    target = p.double() * tgt_len.double()
    reachable = target > 5.0  # below half a chunk, the at-least-one rule takes over
    assert torch.all((masked - target)[reachable].abs() <= 5.0)
    assert torch.all(masked[~reachable] <= 10.0) and torch.all(masked[p > 0] >= 1)
    assert not (mask & ~valid_positions(tgt_len, mask.shape[1])).any()


def test_chunk_mask_exact_cases():
    tgt_len = torch.tensor([200, 95, 3, 40, 40])
    p = torch.tensor([0.3, 1.0, 0.1, 0.0, 0.02])
    mask = chunk_mask(tgt_len, p, chunk=10, generator=gen())
    # 60 frames = 6 whole chunks; everything; a 3-frame sentence is one partial chunk;
    # p = 0 masks nothing; 0.8 frames still masks one chunk (p > 0).
    assert mask.sum(1).tolist() == [60, 95, 3, 0, 10]


def test_chunk_mask_with_chunk_one_is_token_masking():
    tgt_len = torch.tensor([10, 7, 3])
    p = torch.tensor([0.5, 0.3, 0.5])
    assert torch.equal(
        chunk_mask(tgt_len, p, chunk=1, generator=gen(9)), random_token_mask(tgt_len, p, gen(9))
    )


def test_chunk_mask_is_deterministic_and_validates_arguments():
    tgt_len = torch.tensor([80, 55])
    assert torch.equal(
        chunk_mask(tgt_len, 0.5, generator=gen(1)), chunk_mask(tgt_len, 0.5, generator=gen(1))
    )
    with pytest.raises(ValueError, match="chunk"):
        chunk_mask(tgt_len, 0.5, chunk=0, generator=gen())
    with pytest.raises(ValueError, match="generator"):
        chunk_mask(tgt_len, 0.5)
    with pytest.raises(ValueError, match="tgt_len"):
        chunk_mask(tgt_len.float(), 0.5, generator=gen())
