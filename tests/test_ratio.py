"""comma.ratio: eq. 1-3 on hand-computed cases, padding, length effects and the bootstrap CI."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import comma.ratio
from comma.ratio import (
    attention_density_ratio,
    bootstrap_ci,
    ratio_over_corpus,
    target_attention_share,
    token_density_ratio,
)

NAN = float("nan")


def padded_batch(fill: float = 0.0):
    """Two sentences, N_max = 3, M_max = 3, columns [t0 t1 t2 | s0 s1 s2].

    Sentence 0: N = 2, M = 3. Sentence 1: N = 3, M = 1. `fill` goes in every padding cell."""
    f = fill
    attn = torch.tensor(
        [
            [
                [0.2, 0.2, f, 0.3, 0.2, 0.1],  # t = 0.4, s = 0.6: alpha = 0.2 / 0.4 = 1/2
                [0.1, 0.5, f, 0.1, 0.1, 0.2],  # t = 0.6, s = 0.4: alpha = 0.3 / (0.3 + 0.4/3)
                [f, f, f, f, f, f],  # padding row
            ],
            [
                [0.1, 0.1, 0.2, 0.6, f, f],  # t = 0.4, s = 0.6: alpha = (0.4/3) / (0.4/3 + 0.6)
                [0.3, 0.3, 0.3, 0.1, f, f],  # not predicted
                [0.0, 0.0, 0.5, 0.5, f, f],  # not predicted
            ],
        ],
        dtype=torch.float64,
    )
    src_len = torch.tensor([3, 1])
    tgt_len = torch.tensor([2, 3])
    predicted = torch.tensor([[True, True, False], [True, False, False]])
    return attn, src_len, tgt_len, predicted


def test_ratio_hand_computed_with_padding_and_different_lengths():
    attn, src_len, tgt_len, predicted = padded_batch()
    ratio = attention_density_ratio(attn, src_len, tgt_len, predicted)
    # sentence 0: (1/2 + 9/13) / 2 = 31/52; sentence 1: (2/15) / (2/15 + 9/15) = 2/11.
    assert ratio.dtype == torch.float64
    assert torch.allclose(ratio, torch.tensor([31 / 52, 2 / 11], dtype=torch.float64))


def test_token_density_ratio_is_nan_on_padding_rows():
    attn, src_len, tgt_len, _ = padded_batch()
    alpha = token_density_ratio(attn, src_len, tgt_len)
    assert torch.allclose(alpha[0, :2], torch.tensor([0.5, 9 / 13], dtype=torch.float64))
    assert math.isnan(alpha[0, 2])
    assert torch.allclose(alpha[1, 2], torch.tensor(0.5 / 3 / (0.5 / 3 + 0.5), dtype=torch.float64))


def test_target_share_is_the_raw_target_mass_without_length_normalization():
    attn, src_len, tgt_len, predicted = padded_batch()
    share = target_attention_share(attn, src_len, tgt_len, predicted)
    assert torch.allclose(share, torch.tensor([0.5, 0.4], dtype=torch.float64))


@pytest.mark.parametrize("fill", [7.0, 1e6, NAN, float("inf")])
def test_ratio_ignores_garbage_in_padding(fill):
    clean = padded_batch(0.0)
    dirty = padded_batch(fill)
    for measure in (attention_density_ratio, target_attention_share):
        assert torch.allclose(measure(*dirty), measure(*clean))


def test_ratio_is_nan_for_a_sentence_without_predicted_tokens():
    attn, src_len, tgt_len, predicted = padded_batch()
    predicted[1] = False
    ratio = attention_density_ratio(attn, src_len, tgt_len, predicted)
    assert math.isclose(float(ratio[0]), 31 / 52) and math.isnan(ratio[1])
    assert math.isnan(target_attention_share(attn, src_len, tgt_len, predicted)[1])


def uniform_halves(n: int, m: int) -> torch.Tensor:
    """[1, n, n + m]: every row puts 1/2 on the target and 1/2 on the source, evenly."""
    return torch.cat([torch.full((1, n, n), 0.5 / n), torch.full((1, n, m), 0.5 / m)], dim=-1)


def test_same_attention_gives_higher_ratio_with_longer_source():
    # Half the mass on each side: alpha = (0.5/N) / (0.5/N + 0.5/M) = M / (N + M).
    results = {}
    for n, m in [(2, 2), (2, 6), (6, 2)]:
        predicted = torch.ones(1, n, dtype=torch.bool)
        ratio = attention_density_ratio(
            uniform_halves(n, m), torch.tensor([m]), torch.tensor([n]), predicted
        )
        share = target_attention_share(
            uniform_halves(n, m), torch.tensor([m]), torch.tensor([n]), predicted
        )
        results[(n, m)] = float(ratio[0])
        assert math.isclose(float(share[0]), 0.5, rel_tol=1e-6)  # T does not move
    assert math.isclose(results[(2, 2)], 0.5, rel_tol=1e-6)
    assert math.isclose(results[(2, 6)], 0.75, rel_tol=1e-6)  # M = 3N: higher
    assert math.isclose(results[(6, 2)], 0.25, rel_tol=1e-6)  # N = 3M: lower


def test_ratio_matches_a_per_sentence_loop_on_random_batches():
    generator = torch.Generator().manual_seed(0)
    batch, n_max, m_max = 6, 7, 9
    tgt_len = torch.randint(1, n_max + 1, (batch,), generator=generator)
    src_len = torch.randint(1, m_max + 1, (batch,), generator=generator)
    attn = torch.rand(batch, n_max, n_max + m_max, generator=generator)
    predicted = (torch.rand(batch, n_max, generator=generator) < 0.5) & (
        torch.arange(n_max) < tgt_len[:, None]
    )
    ratio = attention_density_ratio(attn, src_len, tgt_len, predicted)
    for b in range(batch):
        n, m = int(tgt_len[b]), int(src_len[b])
        alphas = []
        for i in range(n):
            if predicted[b, i]:
                row = attn[b, i]
                t, s = row[:n].sum() / n, row[n_max : n_max + m].sum() / m
                alphas.append(float(t / (t + s)))
        expected = sum(alphas) / len(alphas) if alphas else NAN
        if alphas:
            assert math.isclose(float(ratio[b]), expected, rel_tol=1e-5)
        else:
            assert math.isnan(ratio[b])


def test_ratio_rejects_bad_shapes_and_padding_predictions():
    attn, src_len, tgt_len, predicted = padded_batch()
    with pytest.raises(ValueError, match=r"attn must have shape.*\(3, 6\)"):
        attention_density_ratio(attn[0], src_len, tgt_len, predicted)
    with pytest.raises(ValueError, match="M_max >= 1"):
        attention_density_ratio(attn[:, :, :3], src_len, tgt_len, predicted)
    with pytest.raises(ValueError, match="src_len must be <= 3"):
        attention_density_ratio(attn, torch.tensor([4, 1]), tgt_len, predicted)
    with pytest.raises(ValueError, match=r"tgt_len must have shape \[2\]"):
        attention_density_ratio(attn, src_len, torch.tensor([2]), predicted)
    with pytest.raises(ValueError, match=r"predicted must have shape \(2, 3\)"):
        attention_density_ratio(attn, src_len, tgt_len, predicted[:, :2])
    with pytest.raises(ValueError, match="bool"):
        attention_density_ratio(attn, src_len, tgt_len, predicted.long())
    predicted[0, 2] = True  # row 2 of sentence 0 is padding
    with pytest.raises(ValueError, match="padding"):
        attention_density_ratio(attn, src_len, tgt_len, predicted)


def test_ratio_over_corpus_skips_sentences_without_predictions():
    assert math.isclose(ratio_over_corpus(torch.tensor([0.2, NAN, 0.4], dtype=torch.float64)), 0.3)
    assert math.isclose(ratio_over_corpus([0.1, 0.2, 0.6]), 0.3)
    assert math.isnan(ratio_over_corpus(torch.tensor([NAN, NAN])))
    with pytest.raises(ValueError, match=r"per_sentence must have shape \[B\]"):
        ratio_over_corpus(torch.zeros(2, 2))


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    generator = torch.Generator().manual_seed(1)
    values = torch.rand(200, generator=generator)
    values[::7] = NAN  # sentences without predictions are dropped, as in eq. 3
    lo, hi = bootstrap_ci(values)
    mean = ratio_over_corpus(values)
    assert lo < mean < hi
    assert hi - lo < 0.2  # ~ 2 * 1.96 * 0.29 / sqrt(171) = 0.087
    assert (lo, hi) == bootstrap_ci(values)
    assert (lo, hi) != bootstrap_ci(values, seed=1)


def test_bootstrap_ci_narrows_with_more_sentences():
    generator = torch.Generator().manual_seed(2)
    few = torch.rand(50, generator=generator)
    many = torch.rand(5000, generator=generator)
    lo_few, hi_few = bootstrap_ci(few, n_boot=500)
    lo_many, hi_many = bootstrap_ci(many, n_boot=500)
    # widths scale as 1/sqrt(n): ~0.16 vs ~0.016
    assert hi_many - lo_many < (hi_few - lo_few) / 4


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))
    lo, hi = bootstrap_ci([NAN])
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([0.1, 0.2], alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([0.1, 0.2], n_boot=0)


def test_docstring_example_runs():
    result = doctest.testmod(comma.ratio, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
