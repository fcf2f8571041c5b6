"""The one training recipe every model family goes through (teacher, CoMMA, NAR student).

Load the training split, configure the family's model from the prepared corpus's sizes (vocab
sizes, mel bins), seed the initialization, give a log-mel source its corpus statistics (global
CMVN), attach the teacher's alignment for a constrained variant, train with the project's
trainer (:mod:`comma.engine.trainer`, resumable) and save weights + config for
:func:`comma.models.registry.load_model`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

from comma.alignment.store import TeacherAlignment
from comma.data.packed import Split, load_split, prepared_corpus_sizes
from comma.engine.checkpoint import file_identity
from comma.engine.train_config import TrainConfig
from comma.engine.trainer import train_and_save
from comma.models.registry import FAMILIES

__all__ = ["load_alignment_for", "train_model"]


def load_alignment_for(path: str | Path, split: Split, split_path: str | Path) -> TeacherAlignment:
    """The teacher alignment at `path`, checked to align the training split it will be used
    with, sentence for sentence."""
    alignment = TeacherAlignment.load(path)
    if len(alignment) != len(split):
        raise ValueError(
            f"{path} aligns {len(alignment)} sentences but the training split {split_path} has "
            f"{len(split)}: extract the alignment from the same corpus"
        )
    return alignment


def train_model(
    family: str,
    task: str,
    data_dir: str | Path,
    model_path: str | Path,
    metrics_path: str | Path,
    *,
    architecture: dict,
    training: dict,
    seed: int,
    split: Split | None = None,
    alignment: TeacherAlignment | None = None,
    inputs: dict[str, str | Path] | None = None,
    probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    resume_path: str | Path | None = None,
    threads: int | None = None,
    order_path: str | Path | None = None,
) -> None:
    """Train a model of `family` ("teacher", "comma", "nar") for `task`; write weights + config
    to `model_path` and one JSON line per update to `metrics_path`.

    `split`: the training split (default `data_dir`/train.pt); vocabularies and sizes come from
    `data_dir`. `architecture`: the family's config fields other than task and sizes;
    `training`: TrainConfig fields other than seed and threads. `alignment`: the teacher's
    alignment of `split`, for the constrained variants. `inputs`: the files that decide the
    result besides ``data_dir``'s train.pt and vocabularies (a KD corpus, an alignment), by
    role. The run's fingerprint (:func:`comma.engine.checkpoint.run_fingerprint`) holds the
    family and its model file format (the code version), the model config, the training
    settings and the sha256 of every input file, so a resumable checkpoint of another run is
    never resumed. `probe`: measured at every checkpoint
    into the metrics (:func:`comma.engine.trainer.train`). `order_path`: a split of the same
    sentences whose sizes plan the batches (a kd run's rawkept twin: both then see the same
    sentences in the same batches and order), one of the fingerprint's inputs (``batch_order``).
    The trainer's resumable checkpoint goes
    to `resume_path` (default ``resume.pt`` beside the model), which a rule does not declare,
    so it survives a killed job and the next run resumes from it."""
    kind = FAMILIES[family]
    data_dir = Path(data_dir)
    inputs = dict(inputs or {})
    if split is None:
        inputs.setdefault("train", data_dir / "train.pt")
        split = load_split(inputs["train"])
    inputs.update({f.name: f for f in sorted(data_dir.glob("dict.*.txt"))})
    if order_path is not None:
        inputs["batch_order"] = order_path
    config = kind.config(task=task, **prepared_corpus_sizes(data_dir, split), **architecture)
    train_config = TrainConfig.from_dict({**training, "seed": seed, "threads": threads})
    torch.manual_seed(seed)  # initialization; the trainer reseeds data order and dropout
    model = kind.build(config)
    side = getattr(model, "feature_side", None)
    if side is not None:  # a log-mel side: global CMVN from the training frames
        model.set_feature_statistics(getattr(split, side).values)
    targets = None
    if alignment is not None:  # the teacher's targets of each batch travel in the batch
        targets = functools.partial(alignment.batch_targets, kinds=model.TEACHER_TARGETS)
    train_and_save(
        model,
        split,
        train_config,
        model_path=model_path,
        metrics_path=metrics_path,
        resume_path=Path(resume_path or Path(model_path).with_name("resume.pt")),
        model_format=kind.model_format,
        model_config=config.to_dict(),
        teacher_targets=targets,
        probe=probe,
        order_of=None if order_path is None else load_split(order_path),
        identity={
            "family": family,
            "format": kind.model_format,  # the family's code version: a new one never resumes
            "model": config.to_dict(),
            "inputs": {role: file_identity(path) for role, path in sorted(inputs.items())},
        },
    )
