"""Where and how a model computes: the process group torchrun describes, the device of this
process, bf16 autocast on CUDA, and torch's thread and determinism settings for a run. Training
(:mod:`comma.engine.trainer`) and inference (teacher and NAR evaluation, distillation) alike."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from comma.engine.checkpoint import TrainingError
from comma.threads import torch_threads

__all__ = [
    "DistributedContext",
    "setup_distributed",
    "pick_device",
    "bf16_autocast",
    "for_inference",
    "torch_settings",
]


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistributedContext:
    """Join the process group torchrun describes in the environment (nccl with CUDA, gloo
    without), or return a single-process context when WORLD_SIZE is absent or 1."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, False)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_available():
        raise TrainingError(f"WORLD_SIZE={world_size} but torch.distributed is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, True)


def pick_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when a GPU is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def bf16_autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on a CUDA device (training and inference alike), a no-op elsewhere."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def for_inference(model: nn.Module) -> tuple[nn.Module, contextlib.AbstractContextManager]:
    """`model` moved to this process's device (:func:`pick_device`) and the precision to run
    it in there: bf16 autocast on a GPU, as training (:func:`bf16_autocast`)."""
    device = pick_device()
    return model.to(device), bf16_autocast(device)


@contextlib.contextmanager
def torch_settings(threads: int | None, deterministic: bool, device: torch.device):
    """torch's thread count (None: unchanged) and, with `deterministic`, deterministic
    algorithms for a run on `device`; restored afterwards."""
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: an op without a deterministic kernel warns instead of stopping training.
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
