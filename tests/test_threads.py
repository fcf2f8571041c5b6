"""comma.threads.torch_threads: a block's thread count, and the caller's restored after it."""

from __future__ import annotations

import pytest
import torch

from comma.threads import torch_threads


@pytest.fixture
def three_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_the_block_runs_on_its_threads_and_the_callers_come_back(three_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3


def test_none_leaves_the_count(three_threads):
    with torch_threads(None):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 3


def test_the_count_comes_back_after_an_error(three_threads):
    with pytest.raises(RuntimeError, match="inside"), torch_threads(2):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 3


def test_a_count_below_one_is_refused(three_threads):
    with pytest.raises(ValueError, match="at least 1, not 0"), torch_threads(0):
        pass
    assert torch.get_num_threads() == 3
