"""comma.alignment.calculators and comma.nn.attention: focus rate, durations, expected
positions, ASR windows, eq. 6-8 losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from comma.alignment.calculators import (
    durations_from_attention,
    expected_positions,
    focus_rate,
    select_diagonal_head,
    window_mask,
)
from comma.nn.attention import attention_kl_loss, normalize_source_attention, softmax_safe_mask

NAN = float("nan")


def diagonal_and_uniform_heads() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[2, 2, 4, 4]: sentence 0 (T = 4, M = 4) has head 0 diagonal, head 1 uniform;
    sentence 1 (T = 3, M = 2) has head 0 uniform, head 1 (soft) diagonal; its padding
    rows and columns hold garbage."""
    attn = torch.full((2, 2, 4, 4), 9.0)
    attn[0, 0] = torch.eye(4)
    attn[0, 1] = 0.25
    attn[1, 0, :3, :2] = 0.5
    attn[1, 1, :3, :2] = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    return attn, torch.tensor([4, 2]), torch.tensor([4, 3])


def test_focus_rate_by_hand_ignoring_padding():
    attn, src_len, tgt_len = diagonal_and_uniform_heads()
    rates = focus_rate(attn, src_len, tgt_len)
    expected = torch.tensor([[1.0, 0.25], [0.5, (0.9 + 0.8 + 0.7) / 3]])
    assert torch.allclose(rates, expected)


def test_select_diagonal_head_per_batch_and_per_sentence():
    attn, src_len, tgt_len = diagonal_and_uniform_heads()
    # batch means: head 0 (1 + 0.5) / 2 = 0.75, head 1 (0.25 + 0.8) / 2 = 0.525
    head = select_diagonal_head(attn, src_len, tgt_len)
    assert head.dim() == 0 and int(head) == 0
    per_sentence = select_diagonal_head(attn, src_len, tgt_len, per_sentence=True)
    assert per_sentence.tolist() == [0, 1]
    picked = attn[torch.arange(2), per_sentence]  # [B, T, M]
    assert torch.equal(picked[0], torch.eye(4))


def test_focus_rate_rejects_wrong_shapes():
    attn, src_len, tgt_len = diagonal_and_uniform_heads()
    with pytest.raises(ValueError, match=r"attn must have shape \[B, H, T_max, M_max\]"):
        focus_rate(attn[:, 0], src_len, tgt_len)
    with pytest.raises(ValueError, match="src_len must be <= 4"):
        focus_rate(attn, torch.tensor([5, 2]), tgt_len)


def soft_alignment(token_of_frame: list[int], num_tokens: int) -> torch.Tensor:
    """[T, M]: 0.7 on each frame's token, the rest spread evenly over the other tokens."""
    rest = 0.3 / (num_tokens - 1)
    attn = torch.full((len(token_of_frame), num_tokens), rest)
    attn[torch.arange(len(token_of_frame)), torch.tensor(token_of_frame)] = 0.7
    return attn


def test_durations_match_a_hand_made_diagonal_alignment():
    attn = torch.full((2, 6, 4), 5.0)  # padding cells hold more weight than any valid one
    attn[0, :, :3] = soft_alignment([0, 0, 1, 1, 1, 2], 3)
    attn[1, :4, :2] = soft_alignment([0, 1, 1, 1], 2)
    src_len, tgt_len = torch.tensor([3, 2]), torch.tensor([6, 4])
    durations = durations_from_attention(attn, src_len, tgt_len)
    assert durations.dtype == torch.long
    assert durations.tolist() == [[2, 3, 1, 0], [1, 3, 0, 0]]
    assert torch.equal(durations.sum(1), tgt_len)


def test_durations_sum_to_mel_length_on_random_attention():
    generator = torch.Generator().manual_seed(0)
    attn = torch.rand(8, 50, 12, generator=generator).softmax(-1)
    src_len = torch.randint(1, 13, (8,), generator=generator)
    tgt_len = torch.randint(1, 51, (8,), generator=generator)
    durations = durations_from_attention(attn, src_len, tgt_len)
    assert torch.equal(durations.sum(1), tgt_len)
    assert not (durations * (torch.arange(12) >= src_len[:, None])).any()


def test_durations_reject_nan_at_valid_positions():
    attn = torch.full((1, 3, 2), 0.5)
    attn[0, 1, 0] = NAN
    with pytest.raises(ValueError, match="NaN"):
        durations_from_attention(attn, torch.tensor([2]), torch.tensor([3]))


def test_expected_positions_by_hand():
    attn = torch.tensor(
        [
            [
                [0.5, 0.5, 0.0, 0.0],  # 1.5 -> 2 (halves round up)
                [0.0, 0.0, 1.0, 0.0],  # 3
                [0.2, 0.3, 0.5, 0.0],  # 0.2 + 0.6 + 1.5 = 2.3 -> 2
            ],
            [
                [0.25, 0.25, 8.0, 8.0],  # padding columns ignored: renormalized 0.5/0.5 -> 2
                [0.0, 0.4, 3.0, 3.0],  # all valid mass on j = 2 -> 2
                [9.0, 9.0, 9.0, 9.0],  # padding row -> 0
            ],
        ]
    )
    positions = expected_positions(attn, torch.tensor([3, 2]), torch.tensor([3, 2]))
    assert positions.dtype == torch.long
    assert positions.tolist() == [[2, 3, 2], [2, 2, 0]]


def test_expected_positions_are_clamped_to_the_source():
    attn = torch.zeros(1, 2, 3)
    attn[0, 0, 2] = 1.0  # E = 3
    positions = expected_positions(attn, torch.tensor([3]), torch.tensor([2]))
    assert positions.tolist() == [[3, 1]]  # a row with no mass gets 1


def rows(mask: torch.Tensor) -> list[str]:
    return ["".join("x" if v else "." for v in row) for row in mask.tolist()]


def test_window_mask_first_middle_and_last_tokens():
    mask = window_mask(torch.tensor([[1, 3, 4, 6]]), torch.tensor([6]), torch.tensor([4]))
    assert mask.shape == (1, 4, 6) and mask.dtype == torch.bool
    assert rows(mask[0]) == [
        "xxx...",  # first: 1..E_2 = 1..3
        "xxxx..",  # E_1..E_3 = 1..4
        "..xxxx",  # E_2..E_4 = 3..6
        "...xxx",  # last: E_3..M = 4..6
    ]


def test_window_mask_one_and_two_token_targets_with_padding():
    expected = torch.tensor([[2, 0, 0], [2, 3, 0], [4, 1, 2]])
    mask = window_mask(expected, torch.tensor([3, 4, 5]), torch.tensor([1, 2, 3]))
    assert mask.shape == (3, 3, 5)
    assert rows(mask[0]) == ["xxx..", ".....", "....."]  # N = 1: everything valid
    assert rows(mask[1]) == ["xxx..", ".xxx.", "....."]  # 1..E_2 and E_1..M
    # non-monotone E = (4, 1, 2): first 1..E_2 = 1..1; middle E_1 > E_3, so the span
    # min(E_1, E_3)..max(E_1, E_3) = 2..4; last E_2..M = 1..5
    assert rows(mask[2]) == ["x....", ".xxx.", "xxxxx"]


def test_window_mask_every_valid_row_is_open_on_random_positions():
    generator = torch.Generator().manual_seed(3)
    src_len = torch.randint(1, 9, (20,), generator=generator)
    tgt_len = torch.randint(1, 7, (20,), generator=generator)
    expected = (torch.rand(20, 6, generator=generator) * src_len[:, None]).long() + 1
    mask = window_mask(expected, src_len, tgt_len, max_src_len=10)
    assert mask.shape == (20, 6, 10)
    valid_rows = torch.arange(6) < tgt_len[:, None]
    assert torch.equal(mask.any(-1), valid_rows)
    assert not (mask & (torch.arange(10) >= src_len[:, None])[:, None, :]).any()


def test_window_mask_rejects_positions_outside_the_source():
    with pytest.raises(ValueError, match=r"E\[0, 1\] = 4 with src_len\[0\] = 3"):
        window_mask(torch.tensor([[1, 4]]), torch.tensor([3]), torch.tensor([2]))
    with pytest.raises(ValueError, match=r"expected must have shape \[B, N_max\]"):
        window_mask(torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([2]))


def test_softmax_safe_mask_keeps_softmax_finite_on_padded_rows():
    expected = torch.tensor([[1, 2, 0], [2, 0, 0]])
    src_len, tgt_len = torch.tensor([2, 3]), torch.tensor([2, 1])
    window = window_mask(expected, src_len, tgt_len)  # [2, 3, 3], padded rows all False
    scores = torch.randn(2, 3, 3)
    unsafe = scores.masked_fill(~window, float("-inf")).softmax(-1)
    assert torch.isnan(unsafe).any()  # why the helper exists
    safe = softmax_safe_mask(window)
    probs = scores.masked_fill(~safe, float("-inf")).softmax(-1)
    assert torch.isfinite(probs).all()
    valid_rows = torch.arange(3) < tgt_len[:, None]
    assert torch.equal(safe[valid_rows], window[valid_rows])  # valid rows untouched
    assert torch.equal(probs[valid_rows], unsafe[valid_rows])
    # the same mask drives scaled_dot_product_attention over heads: [B, 1, N, M]
    query, key, value = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=safe[:, None])
    assert torch.isfinite(out).all()


def test_kl_loss_is_zero_for_identical_attention_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.rand(3, 2, 5, 6, generator=generator).softmax(-1)
    src_len, tgt_len = torch.tensor([6, 6, 6]), torch.tensor([5, 5, 5])
    assert float(attention_kl_loss(teacher, teacher, src_len, tgt_len)) == pytest.approx(
        0.0, abs=1e-6
    )
    student = torch.rand(3, 2, 5, 6, generator=generator).softmax(-1)
    assert float(attention_kl_loss(teacher, student, src_len, tgt_len)) > 1e-3


def test_kl_loss_matches_a_hand_computation():
    # Sentence 0: N = 2, M = 2; sentence 1: N = 1, M = 1 (padding holds garbage).
    teacher = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[1.0, 7.0], [7.0, 7.0]]])
    student = torch.tensor([[[0.25, 0.75], [1.0, 0.0]], [[1.0, NAN], [NAN, NAN]]])
    src_len, tgt_len = torch.tensor([2, 1]), torch.tensor([2, 1])
    loss = attention_kl_loss(teacher, student, src_len, tgt_len)
    kl_row = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.1438
    # sentence 0: (kl_row + 0) / 2 rows; sentence 1: 0; mean over the 2 sentences.
    assert float(loss) == pytest.approx(kl_row / 2 / 2, rel=1e-5)


def test_kl_loss_averages_heads_and_broadcasts_a_single_teacher_map():
    teacher = torch.tensor([[[0.5, 0.5]]])  # [B=1, N=1, M=2]
    student = torch.tensor([[[[0.25, 0.75]], [[0.5, 0.5]]]])  # [B=1, H=2, N=1, M=2]
    lengths = (torch.tensor([2]), torch.tensor([1]))
    kl_head0 = 0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75)
    loss = attention_kl_loss(teacher, student, *lengths)
    assert float(loss) == pytest.approx(kl_head0 / 2, rel=1e-5)
    layered = torch.stack([student, student], dim=1)  # [B, L=2, H=2, N, M]
    assert float(attention_kl_loss(teacher, layered, *lengths)) == pytest.approx(
        kl_head0 / 2, rel=1e-5
    )
    with pytest.raises(ValueError, match="broadcast"):
        attention_kl_loss(torch.rand(1, 3, 1, 2), student, *lengths)


def test_kl_loss_is_finite_with_zero_student_weights_and_padding_nan():
    teacher = torch.tensor([[[0.5, 0.5, 0.0]]])
    student = torch.tensor([[[1.0, 0.0, NAN]]], requires_grad=True)
    loss = attention_kl_loss(teacher, student, torch.tensor([2]), torch.tensor([1]), eps=1e-8)
    # 0.5 log(0.5 / 1) + 0.5 log(0.5 / 1e-8)
    expected = 0.5 * math.log(0.5) + 0.5 * math.log(0.5e8)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[0, 0, 2] == 0.0


def test_kl_loss_gradient_reaches_the_student_only():
    teacher = torch.tensor([[[0.9, 0.1]]], requires_grad=True)
    student = torch.tensor([[[0.5, 0.5]]], requires_grad=True)
    attention_kl_loss(teacher, student, torch.tensor([2]), torch.tensor([1])).backward()
    assert teacher.grad is None
    # d/dA_j of -sum A'_j log A_j = -A'_j / A_j
    assert torch.allclose(student.grad, torch.tensor([[[-1.8, -0.2]]]))


def test_normalize_source_attention_rows_sum_to_one_over_valid_source():
    # [B=2, H=1, N_max=2, N_max + M_max = 2 + 3]
    mix = torch.tensor(
        [
            [[[0.2, 0.3, 0.25, 0.25, 4.0], [0.1, 0.1, 0.2, 0.6, 4.0]]],  # N = 2, M = 2
            [[[0.5, 3.0, 0.1, 0.2, 0.2], [3.0, 3.0, 3.0, 3.0, 3.0]]],  # N = 1, M = 3
        ]
    )
    src_len, tgt_len = torch.tensor([2, 3]), torch.tensor([2, 1])
    normalized = normalize_source_attention(mix, src_len, tgt_len)
    assert normalized.shape == (2, 1, 2, 3)
    expected = torch.tensor(
        [
            [[[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]]],
            [[[0.2, 0.4, 0.4], [0.0, 0.0, 0.0]]],
        ]
    )
    assert torch.allclose(normalized, expected)


def test_normalize_source_attention_with_layer_dim_and_random_rows():
    generator = torch.Generator().manual_seed(4)
    mix = torch.rand(3, 2, 4, 5, 5 + 7, generator=generator).softmax(-1)  # [B, L, H, N, N+M]
    src_len, tgt_len = torch.tensor([7, 3, 1]), torch.tensor([5, 2, 4])
    normalized = normalize_source_attention(mix, src_len, tgt_len)
    assert normalized.shape == (3, 2, 4, 5, 7)
    sums = normalized.sum(-1)  # [B, L, H, N]
    valid_rows = (torch.arange(5) < tgt_len[:, None])[:, None, None, :].expand_as(sums)
    assert torch.allclose(sums[valid_rows], torch.ones(()))
    assert torch.equal(sums[~valid_rows], torch.zeros_like(sums[~valid_rows]))
    # eq. 8 with the teacher equal to the normalized student is zero
    assert float(attention_kl_loss(normalized, normalized, src_len, tgt_len)) == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="M_max >= 1"):
        normalize_source_attention(mix[..., :5], src_len, tgt_len)
