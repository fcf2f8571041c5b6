"""One trainer for every model of the study: resumable, deterministic, single- or multi-process.

A model is an ``nn.Module`` with ``loss(batch) -> (loss, logs)``:

* ``batch`` is a :class:`comma.data.batching.Batch` already on the training device;
* ``loss`` is a scalar tensor, the MEAN of a per-unit loss over the batch (units: target
  tokens, mel frames, masked tokens, ...);
* ``logs`` maps names to floats written to the metrics file each step. The optional key
  ``"units"`` says how many units the mean is over; without it every sentence is one unit.
  The trainer uses it to make the optimized quantity the mean over ALL units of the global
  batch, whatever the number of processes, so 2 processes == 1 process with the same global
  batch. Other logs are averaged over processes weighted by units.

Training: Adam (betas 0.9/0.98, eps 1e-9), fairseq's inverse-square-root schedule with linear
warm-up (:func:`comma.engine.schedule.inverse_sqrt_lr`), gradient-norm clipping, bf16 autocast
on CUDA only, exactly ``max_steps`` updates over length-bucketed batches
(:class:`comma.data.batching.BatchPlan`).

Randomness: models draw it from torch's global generators (dropout does; for a
``torch.Generator`` argument, e.g. ``comma.nn.masking``, pass ``torch.default_generator`` on the
CPU or ``torch.cuda.default_generators[i]``), which the trainer seeds and checkpoints. A model
that keeps a generator of its own is not resumable bit for bit.

Checkpoints (``checkpoint_path``, every ``checkpoint_every`` steps and at the last step,
written to a temporary name and renamed) hold the model, the optimizer, the schedule, every
RNG state of every process (python, numpy, torch CPU, CUDA) and the data position (epoch,
batch in epoch). If ``checkpoint_path`` exists, training resumes from it, so a run killed at
any point (even SIGKILL) and started again ends with a checkpoint bitwise identical to an
uninterrupted run on the CPU (same thread count). They load with
``torch.load(..., weights_only=True)``.

Metrics: one JSON object per step in ``metrics_path`` (step, epoch, loss, lr, tokens,
src_tokens, tgt_tokens, sentences, units, grad_norm, seconds, and the model's logs). They are
written as training goes to ``<checkpoint>.metrics.jsonl`` beside the checkpoint (on resume
the lines after the checkpoint's step are dropped, so it always matches the checkpoint) and
copied whole to ``metrics_path`` at the end, so a resumed run's file has every step even if
``metrics_path`` was deleted in between (as Snakemake does with a failed job's outputs).

Distributed: under ``torchrun`` (env vars RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) the
trainer initializes torch.distributed (nccl on CUDA, gloo on CPU) and wraps the model in
DistributedDataParallel; every process builds the same global batches and computes
:func:`comma.data.batching.rank_share` of each. Rank 0 writes the checkpoint and metrics.

This module is the training loop, with what it writes (checkpoints, metrics) and resumes; its
settings are :class:`comma.engine.train_config.TrainConfig`, the learning-rate schedule
:mod:`comma.engine.schedule`'s, the device, process group and precision
:mod:`comma.engine.device`'s, the RNG states, checkpoint file and run fingerprints
:mod:`comma.engine.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from comma.data.batching import Batch, BatchPlan, TeacherTargets, rank_share
from comma.data.packed import Split
from comma.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    TrainingError,
    fingerprint_differences,
    load_checkpoint,
    rank_seed,
    rng_state,
    run_fingerprint,
    seed_everything,
    set_rng_state,
)
from comma.engine.device import (
    DistributedContext,
    bf16_autocast,
    pick_device,
    setup_distributed,
    torch_settings,
)
from comma.engine.launch import is_main_process
from comma.engine.schedule import InverseSqrtSchedule
from comma.engine.train_config import TrainConfig
from comma.io import atomic_path, remove_stale_temporaries, torch_save, write_lines

__all__ = [
    "UNITS_KEY",
    "LossModel",
    "TrainResult",
    "train",
    "train_and_save",
]

log = logging.getLogger(__name__)

UNITS_KEY = "units"
# Metric names the trainer writes itself; a model's logs may not reuse them.
TRAINER_METRICS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "tokens",
    "src_tokens",
    "tgt_tokens",
    "sentences",
    "grad_norm",
    "seconds",
)


class LossModel(Protocol):
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass(frozen=True)
class TrainResult:
    step: int  # updates done (== config.max_steps)
    epoch: int  # data position after the last update
    batch_in_epoch: int
    loss: float | None  # the last update's loss, None if no update ran in this call
    resumed_from: int | None  # the checkpoint's step if training resumed


def train_and_save(
    model: nn.Module,
    split: Split,
    config: TrainConfig,
    *,
    model_path: str | Path,
    metrics_path: str | Path | None,
    resume_path: str | Path,
    model_format: str,
    model_config: dict[str, Any],
    identity: dict[str, Any] | None = None,
    teacher_targets: Callable[[torch.Tensor], TeacherTargets] | None = None,
    probe: Callable[[nn.Module], dict[str, float]] | None = None,
    order_of: Split | None = None,
) -> TrainResult | None:
    """`train`, then (rank 0 only) write the final weights with the model's config to
    `model_path` as ``{"format", "config", "model", "seed"}``: the file a rule declares. The
    resumable checkpoint stays at `resume_path`, which a rule does not declare, so that a killed
    job's retry resumes from it."""
    log.info("%s: %s parameters", type(model).__name__, sum(p.numel() for p in model.parameters()))
    result = train(
        model, split, config, resume_path, metrics_path, identity, teacher_targets, probe, order_of
    )
    log.info("trained to step %d, last loss %s", result.step, result.loss)
    if not is_main_process():
        return None  # under torchrun every rank gets here; rank 0 writes the model
    weights = load_checkpoint(resume_path)["model"]
    saved = {"format": model_format, "config": model_config, "model": weights, "seed": config.seed}
    torch_save(saved, model_path)
    return result


class _LossModule(nn.Module):
    """Routes ``loss`` through ``forward`` so that DistributedDataParallel sees the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch):
        return self.model.loss(batch)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the complete records of steps <= last_step (drop a line cut by a kill)."""
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", math.inf) <= last_step:
                kept.append(line)
    write_lines(path, kept)


def train(
    model: nn.Module,
    split: Split,
    config: TrainConfig,
    checkpoint_path: str | Path,
    metrics_path: str | Path | None = None,
    identity: dict[str, Any] | None = None,
    teacher_targets: Callable[[torch.Tensor], TeacherTargets] | None = None,
    probe: Callable[[nn.Module], dict[str, float]] | None = None,
    order_of: Split | None = None,
) -> TrainResult:
    """Train `model` on `split` for ``config.max_steps`` updates (resuming from
    `checkpoint_path` if it holds a checkpoint of this very run: same fingerprint, see
    :func:`run_fingerprint`; `identity` is the caller's part of it); see the module docstring.
    `teacher_targets` (sentence indices -> :class:`TeacherTargets`) attaches the teacher's
    alignment targets to every batch. `probe` (the model in eval mode -> named floats, e.g.
    R(p) on a held-out slice) runs on rank 0 at every checkpoint step; its values join that
    step's metrics line, and it changes neither the weights nor any random stream. `order_of`:
    the split whose sizes plan the batches (:class:`BatchPlan`). The model ends on the training
    device with the final weights; `checkpoint_path` holds the final checkpoint."""
    checkpoint_path = Path(checkpoint_path)
    metrics_path = Path(metrics_path) if metrics_path is not None else None
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"{type(model).__name__} has no loss(batch) -> (loss, logs) method")
    ctx = setup_distributed()
    try:
        device = pick_device(ctx.local_rank)
        with torch_settings(config.threads, config.deterministic, device):
            trainer = _Trainer(
                model, split, config, checkpoint_path, ctx, device, identity, teacher_targets
            )
            if order_of is not None:  # plan the batches by the twin's sizes instead
                trainer.plan = trainer.batch_plan(split, teacher_targets, order_of)
            trainer.probe = probe
            return _train(trainer, checkpoint_path, metrics_path)
    finally:
        if ctx.initialized_here:
            dist.destroy_process_group()


@dataclass(frozen=True)
class _StepOutcome:
    loss: float  # mean over the global batch's units
    units: float  # summed over ranks
    logs: dict[str, float]  # the model's logs, unit-weighted means over ranks
    grad_norm: float


class _Trainer:
    """The state of one run: model, optimizer, schedule, data position; see `train`."""

    def __init__(
        self,
        model: nn.Module,
        split: Split,
        config: TrainConfig,
        checkpoint_path: Path,
        ctx: DistributedContext,
        device: torch.device,
        identity: dict[str, Any] | None = None,
        teacher_targets: Callable[[torch.Tensor], TeacherTargets] | None = None,
    ):
        self.model = model.to(device)
        self.config = config
        self.fingerprint = run_fingerprint(config, identity)
        self.probe: Callable[[nn.Module], dict[str, float]] | None = None
        self.checkpoint_path = checkpoint_path
        self.ctx = ctx
        self.device = device
        self.plan = self.batch_plan(split, teacher_targets)
        self.src_lengths = split.src.lengths.numpy()
        self.tgt_lengths = split.tgt.lengths.numpy()
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            betas=config.adam_betas,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        self.schedule = InverseSqrtSchedule(self.optimizer, config.lr, config.warmup_steps)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.loss_module: nn.Module = _LossModule(model)
        self.autocast = bf16_autocast(device, config.bf16)

    def batch_plan(self, split, teacher_targets=None, order_of: Split | None = None) -> BatchPlan:
        """The run's :class:`BatchPlan` of `split` (by `order_of`'s sizes, if given)."""
        c = self.config
        return BatchPlan(
            split,
            max_tokens=c.max_tokens,
            max_sentences=c.max_sentences,
            seed=c.seed,
            measure=c.budget_length,
            teacher_targets=teacher_targets,
            order_of=order_of,
        )

    def restore_or_seed(self) -> int | None:
        """Resume from the checkpoint if it belongs to this run (returns its step), else seed
        afresh.

        A checkpoint with another fingerprint (settings, inputs or model changed), or beyond
        ``max_steps``, is never resumed: the log names what differs and the run starts afresh,
        replacing it. An unreadable one is moved aside to ``<name>.corrupt``. Called after the
        model is built, so that a fresh run and a resumed one draw the same random numbers from
        here on."""
        path, config, ctx = self.checkpoint_path, self.config, self.ctx
        checkpoint = self._checkpoint_of_this_run() if path.is_file() else None
        if checkpoint is None:
            seed_everything(rank_seed(config.seed, ctx.rank))
            return None
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as err:
            raise TrainingError(f"{path}: the weights do not fit this model: {err}") from err
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        self.step, self.epoch = checkpoint["step"], checkpoint["epoch"]
        self.batch_in_epoch = checkpoint["batch_in_epoch"]
        if len(checkpoint["rng"]) == ctx.world_size:
            set_rng_state(checkpoint["rng"][ctx.rank])
        else:  # another process count: the data order holds, the dropout streams cannot
            seed_everything(rank_seed(config.seed + self.step, ctx.rank))
        return self.step

    def _checkpoint_of_this_run(self) -> dict[str, Any] | None:
        """The checkpoint at the checkpoint path if this run may resume it; otherwise None,
        after logging why (and, on rank 0, moving an unreadable file aside)."""
        path = self.checkpoint_path
        try:
            checkpoint = load_checkpoint(path)
        except TrainingError as err:
            if self.ctx.rank == 0:
                aside = path.with_name(path.name + ".corrupt")
                log.warning("%s; moved aside to %s, training starts afresh", err, aside)
                os.replace(path, aside)
            return None
        differences = fingerprint_differences(checkpoint.get("fingerprint"), self.fingerprint)
        if checkpoint.get("fingerprint") is None:
            differences = ["the checkpoint records no fingerprint (written by an older version)"]
        if checkpoint["step"] > self.config.max_steps:
            differences.append(
                f"the checkpoint is at step {checkpoint['step']}, beyond max_steps "
                f"{self.config.max_steps}"
            )
        if differences:
            if self.ctx.rank == 0:
                log.warning(
                    "%s belongs to another run (%s): training starts afresh and replaces it",
                    path,
                    "; ".join(differences),
                )
            return None
        return checkpoint

    def wrap_distributed(self) -> None:
        if self.ctx.distributed:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.config.find_unused_parameters,
            )

    def save_checkpoint(self) -> None:
        states = [rng_state()]
        if self.ctx.distributed:
            states = [None] * self.ctx.world_size
            dist.all_gather_object(states, rng_state())
        if self.ctx.rank != 0:
            return
        torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "rng": states,
                "world_size": self.ctx.world_size,
                "config": asdict(self.config),
                "fingerprint": self.fingerprint,
                "torch_version": str(torch.__version__),
            },
            self.checkpoint_path,
        )

    def _stop(self, what: str) -> TrainingError:
        path = self.checkpoint_path
        kept = f"{path} (step {load_checkpoint(path)['step']})" if path.is_file() else "none yet"
        return TrainingError(
            f"step {self.step + 1}: {what}; training stopped, last good checkpoint: {kept}"
        )

    def update(self, global_indices: np.ndarray) -> _StepOutcome:
        """One optimizer update on this rank's share of the global batch."""
        ctx = self.ctx
        share = rank_share(global_indices, ctx.rank, ctx.world_size)
        # A rank without sentences (a batch smaller than the process count) still joins the
        # gradient all-reduce: it computes one sentence with weight 0.
        is_dummy = len(share) == 0
        batch = self.plan.collate(global_indices[:1] if is_dummy else share).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss, logs = self.loss_module(batch)
        if loss.dim() != 0:
            raise TypeError(f"loss(batch) must return a scalar loss, got {tuple(loss.shape)}")
        logs = {name: float(value) for name, value in logs.items()}
        clashes = sorted(set(logs) & set(TRAINER_METRICS))
        if clashes:
            raise ValueError(f"the model's logs reuse the trainer's metric names {clashes}")
        units = logs.pop(UNITS_KEY, float(len(batch)))
        if is_dummy:
            units = 0.0
        names = sorted(logs)
        # [loss * units, units, log_1 * units, ...], summed over ranks
        totals = [float(loss.detach()) * units, units] + [logs[k] * units for k in names]
        if ctx.distributed:
            reduced = torch.tensor(totals, dtype=torch.float64, device=self.device)
            dist.all_reduce(reduced)
            totals = reduced.tolist()
        units_total = totals[1]
        if units_total > 0:
            weight = units / units_total
            global_loss = totals[0] / units_total
            global_logs = {k: t / units_total for k, t in zip(names, totals[2:], strict=True)}
        else:  # nothing to weight by: plain average over ranks
            weight = 1.0 / ctx.world_size
            global_loss = float(loss.detach())
            global_logs = logs
        if not math.isfinite(global_loss):
            raise self._stop(f"the loss is {global_loss} (non-finite)")
        # DDP averages gradients over ranks; this scale makes the result the global mean
        # (and is exactly 1 in a single process).
        (loss * (weight * ctx.world_size)).backward()
        clip_norm = self.config.clip_norm if self.config.clip_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip_norm))
        if not math.isfinite(grad_norm):
            raise self._stop(f"the gradient norm is {grad_norm} (non-finite, loss {global_loss})")
        self.optimizer.step()
        return _StepOutcome(global_loss, units_total, global_logs, grad_norm)

    def run_probe(self) -> dict[str, float]:
        """The probe's values for the current weights (eval mode, no gradient), with every
        random state put back afterwards, so a probed run ends bitwise where an unprobed one
        does."""
        if self.probe is None:
            return {}
        state = rng_state()
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast:
                values = self.probe(self.model)
        finally:
            self.model.train()
            set_rng_state(state)
        clashes = sorted(set(values) & set(TRAINER_METRICS))
        if clashes:
            raise ValueError(f"the probe's values reuse the trainer's metric names {clashes}")
        return {name: float(value) for name, value in values.items()}

    def run(self, metrics_path: Path | None) -> float | None:
        """Update until max_steps, logging each step and checkpointing; the last loss."""
        config, is_main = self.config, self.ctx.rank == 0
        last_loss, tokens_per_second = None, None
        batches, batches_epoch = [], None
        self.model.train()
        with contextlib.ExitStack() as stack:
            metrics = None
            if is_main and metrics_path is not None:
                metrics = stack.enter_context(open(metrics_path, "a", encoding="utf-8"))
            progress = stack.enter_context(
                tqdm(
                    total=config.max_steps,
                    initial=self.step,
                    desc="train",
                    unit="step",
                    dynamic_ncols=True,
                    disable=not (config.progress and is_main),
                )
            )
            while self.step < config.max_steps:
                started = time.perf_counter()
                if batches_epoch != self.epoch:
                    batches, batches_epoch = self.plan.epoch_batches(self.epoch), self.epoch
                global_indices = batches[self.batch_in_epoch]
                lr = self.schedule.step(self.step + 1)
                outcome = self.update(global_indices)

                batch_epoch = self.epoch
                self.step += 1
                self.batch_in_epoch += 1
                if self.batch_in_epoch == len(batches):
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                seconds = time.perf_counter() - started
                src_tokens = int(self.src_lengths[global_indices].sum())
                tgt_tokens = int(self.tgt_lengths[global_indices].sum())
                last_loss = outcome.loss
                at_checkpoint = (
                    self.step % config.checkpoint_every == 0 or self.step == config.max_steps
                )
                probed = self.run_probe() if at_checkpoint and is_main else {}
                if metrics is not None:
                    record = {
                        "step": self.step,
                        "epoch": batch_epoch,
                        "loss": outcome.loss,
                        "lr": lr,
                        "tokens": src_tokens + tgt_tokens,
                        "src_tokens": src_tokens,
                        "tgt_tokens": tgt_tokens,
                        "sentences": len(global_indices),
                        UNITS_KEY: outcome.units,
                        "grad_norm": outcome.grad_norm,
                        "seconds": seconds,
                        **outcome.logs,
                        **probed,
                    }
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                # After the metrics line: a kill in between leaves a line the resume drops.
                if at_checkpoint:
                    self.save_checkpoint()

                rate = (src_tokens + tgt_tokens) / max(seconds, 1e-9)
                smoothed = tokens_per_second if tokens_per_second is not None else rate
                tokens_per_second = 0.9 * smoothed + 0.1 * rate
                progress.set_postfix(loss=f"{outcome.loss:.4f}", tok_s=f"{tokens_per_second:.0f}")
                progress.update(1)
        return last_loss


def _train(trainer: _Trainer, checkpoint_path: Path, metrics_path: Path | None) -> TrainResult:
    ctx = trainer.ctx
    resumed_from = trainer.restore_or_seed()
    if resumed_from is not None and ctx.rank == 0:
        log.info("resuming from %s at step %d", checkpoint_path, resumed_from)
    # The running metrics live beside the checkpoint: a workflow deletes a failed job's
    # declared outputs (metrics_path among them), but must not lose the steps before the
    # checkpoint it resumes from. metrics_path gets a complete copy at the end.
    running_metrics = None
    if metrics_path is not None:
        running_metrics = checkpoint_path.with_name(checkpoint_path.name + ".metrics.jsonl")
    if ctx.rank == 0:
        remove_stale_temporaries(checkpoint_path)
        if running_metrics is not None:
            _truncate_metrics(running_metrics, trainer.step)
    trainer.wrap_distributed()
    try:
        last_loss = trainer.run(running_metrics)
    finally:  # also after a TrainingError: the steps up to the failure, for the diagnosis
        if ctx.rank == 0 and running_metrics is not None and running_metrics.is_file():
            with atomic_path(metrics_path) as tmp:
                shutil.copyfile(running_metrics, tmp)
    if ctx.distributed:
        dist.barrier()  # when any rank returns, rank 0 has written the final checkpoint
    return TrainResult(trainer.step, trainer.epoch, trainer.batch_in_epoch, last_loss, resumed_from)
