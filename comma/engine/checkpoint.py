"""A training run's state and identity: the global RNG states (seeding, saving, restoring),
the trainer's checkpoint file, and the fingerprint that decides whether a checkpoint belongs to
a run (its settings and the content hashes of its inputs, :func:`file_identity`). The trainer
(:mod:`comma.engine.trainer`) writes and resumes the checkpoints."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comma.io import torch_load

__all__ = [
    "TrainingError",
    "CHECKPOINT_FORMAT",
    "RESUMABLE_CHANGES",
    "seed_everything",
    "rank_seed",
    "rng_state",
    "set_rng_state",
    "load_checkpoint",
    "load_model_weights",
    "run_fingerprint",
    "fingerprint_differences",
    "file_identity",
]

CHECKPOINT_FORMAT = "comma-train-checkpoint-v1"
# Config fields that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = frozenset({"max_steps", "checkpoint_every", "threads", "progress"})


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradient, incompatible checkpoint)."""


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and every CUDA device) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 uses `seed` itself (a single process is seeded plainly); others a derived seed,
    so that their dropout masks differ."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def rng_state() -> dict[str, Any]:
    """Every global RNG state of this process, as tensors and primitives (weights_only-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),  # [625]
            "gauss": py_gauss,
        },
        "numpy": {
            "kind": str(np_kind),
            "key": torch.from_numpy(np_key.astype(np.int64)),  # [624] uint32 values
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["key"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        if not torch.cuda.is_available() or torch.cuda.device_count() != len(state["cuda"]):
            raise TrainingError(
                f"the checkpoint holds RNG states of {len(state['cuda'])} CUDA devices, but "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} are present"
            )
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A trainer checkpoint (on the CPU), checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch_load(path)
    except Exception as err:  # a truncated or foreign file: say which
        raise TrainingError(f"{path}: cannot read the checkpoint: {err}") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return checkpoint


def load_model_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a trainer checkpoint's weights into `model`; returns the checkpoint."""
    checkpoint = load_checkpoint(path)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise TrainingError(f"{path}: the weights do not fit this model: {err}") from err
    return checkpoint


def run_fingerprint(config: Any, identity: dict[str, Any] | None) -> dict[str, Any]:
    """What decides a run's result: the training settings (`config`, a
    :class:`~comma.engine.train_config.TrainConfig`) (except those a run may change and
    still resume: RESUMABLE_CHANGES) and the caller's `identity` (model config, input files'
    content hashes, family). A checkpoint resumes only a run with an equal fingerprint."""
    settings = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    return json.loads(json.dumps({"training": settings, **(identity or {})}, sort_keys=True))


def fingerprint_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """The keys whose values differ between two fingerprints, as "key: old -> new"."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved:
                out.append(f"{name}: (absent) -> {current[key]!r}")
            elif key not in current:
                out.append(f"{name}: {saved[key]!r} -> (absent)")
            else:
                out.extend(fingerprint_differences(saved[key], current[key], name))
        return out
    return [] if saved == current else [f"{prefix or 'fingerprint'}: {saved!r} -> {current!r}"]


def file_identity(path: str | Path) -> str:
    """The sha256 of a file's content: a run's inputs are identified by what they hold, not by
    their mtime (a re-prepared corpus with equal bytes still resumes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
