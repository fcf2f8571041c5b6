"""benchmarks/guided_attention_prior.py: the statistics that say how close a teacher head is
to the straight diagonal the guided-attention loss pushes it to."""

import pytest
import torch
from conftest import load_benchmark

prior = load_benchmark("guided_attention_prior")

S, T = 5, 10  # source positions, target rows: the straight diagonal gives 2 rows a position
LENGTHS = torch.tensor([S]), torch.tensor([T])


def one_hot_rows(columns: list[int]) -> torch.Tensor:
    """``[1, 1, T, S]``: row t attends to `columns`[t] alone."""
    return torch.nn.functional.one_hot(torch.tensor(columns), S).float()[None, None]


DIAGONAL = one_hot_rows([t * S // T for t in range(T)])  # 0 0 1 1 2 2 3 3 4 4
UNEVEN = one_hot_rows([0, 0, 0, 0, 0, 0, 1, 2, 3, 4])  # 6 frames on the first phoneme
UNIFORM = torch.full((1, 1, T, S), 1 / S)


def statistics(*maps: torch.Tensor, ref: int = 0) -> dict[str, torch.Tensor]:
    return prior.head_statistics(torch.cat(maps, dim=1), *LENGTHS, sigma=0.4, ref=ref)


def test_the_straight_diagonal_is_sharp_on_the_diagonal_and_splits_evenly():
    stats = statistics(DIAGONAL, UNIFORM)
    assert stats["focus"].tolist() == pytest.approx([1.0, 1 / S])
    assert float(stats["distance"][0]) < 1 / S  # rounding only
    assert float(stats["distance"][1]) > 0.25
    assert float(stats["duration_cv"][0]) == pytest.approx(0.0)
    assert float(stats["same"][0]) == 1.0


def test_an_uneven_alignment_spreads_its_durations_and_leaves_the_diagonal():
    stats = statistics(DIAGONAL, UNEVEN)
    assert float(stats["duration_cv"][1]) > 0.5
    assert float(stats["distance"][1]) > float(stats["distance"][0])
    # Rows 0, 1 and 9 of UNEVEN hit the diagonal's column; 2, 3, 7 and 8 are one position off.
    assert float(stats["same"][1]) == pytest.approx(3 / T)
    assert float(stats["agree"][1]) == pytest.approx(7 / T)
    assert float(stats["penalty"][1]) > float(stats["penalty"][0])


def test_padding_rows_and_columns_are_not_counted():
    padded = torch.zeros(1, 1, T + 3, S + 2)
    padded[..., :T, :S] = UNEVEN
    padded[..., T:, :] = 1 / (S + 2)  # garbage in padded rows
    stats = prior.head_statistics(padded, *LENGTHS, sigma=0.4, ref=0)
    expected = statistics(UNEVEN)
    for key, value in expected.items():
        assert float(stats[key][0]) == pytest.approx(float(value[0])), key


def test_the_reference_maps_are_rows_that_sum_to_one_over_the_valid_source():
    maps = prior.reference_maps(torch.tensor([S, 3]), torch.tensor([T, 4]), S, T, sigma=0.4)
    assert maps.shape == (2, 2, T, S)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, T))
    assert torch.allclose(maps[1, :, :4].sum(-1), torch.ones(2, 4))
    assert maps[1, :, :, 3:].abs().sum() == 0 and maps[1, :, 4:].abs().sum() == 0
    # The prior peaks on the diagonal: its argmax is the column nearest t * S / T.
    columns = maps[0, 1].argmax(-1).float()
    assert torch.all((columns - torch.arange(T) * S / T).abs() <= 0.5)
