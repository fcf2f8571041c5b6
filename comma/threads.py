"""torch's intra-op thread count for a block of code, restored afterwards.

torch keeps one process-wide thread count; a stage that sets it for its own work (an
evaluation, a feature extraction) must not leave it changed for the caller, e.g. a notebook
that imports `comma` and runs several stages in one process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch on `threads` intra-op threads (None: unchanged), then restore
    the count the caller had."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
