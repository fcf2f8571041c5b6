"""Batching and the trainer: budgets, determinism, learning, SIGKILL-safe resume, DDP."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_worker import CopyModel, copy_split

from comma.data.batching import BatchPlan, collate, make_batches, rank_share, sentence_sizes
from comma.data.packed import PackedSequences, Split
from comma.engine.checkpoint import (
    TrainingError,
    load_checkpoint,
    run_fingerprint,
    seed_everything,
)
from comma.engine.schedule import inverse_sqrt_lr
from comma.engine.train_config import TrainConfig
from comma.engine.trainer import train

WORKER = Path(__file__).with_name("_train_worker.py")
VOCAB = 16


def _mel_split(n: int = 30, seed: int = 0) -> Split:
    generator = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        tokens = int(torch.randint(2, 9, (1,), generator=generator))
        frames = int(torch.randint(5, 40, (1,), generator=generator))
        src.append(torch.randint(5, 20, (tokens,), generator=generator, dtype=torch.int32))
        tgt.append(torch.randn(frames, 4, generator=generator))
    return Split(
        PackedSequences.from_list(src, torch.int32),
        PackedSequences.from_list(tgt, torch.float32),
        [f"utt{k}" for k in range(n)],
    )


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize(("max_tokens", "max_sentences"), [(40, None), (None, 5), (60, 4)])
def test_batches_cover_every_sentence_once_within_budget(max_tokens, max_sentences):
    split = _mel_split()
    plan = BatchPlan(split, max_tokens=max_tokens, max_sentences=max_sentences, seed=3)
    sizes = sentence_sizes(split)
    for epoch in range(3):
        batches = plan.epoch_batches(epoch)
        assert len(batches) == len(plan)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(split)))
        for batch in batches:
            if max_tokens is not None:
                assert len(batch) * int(sizes[batch].max()) <= max_tokens
            if max_sentences is not None:
                assert len(batch) <= max_sentences


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    sizes = np.random.default_rng(0).integers(1, 10, size=200)
    first = make_batches(sizes, max_tokens=30, seed=5, epoch=2)
    again = make_batches(sizes, max_tokens=30, seed=5, epoch=2)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    other_epoch = make_batches(sizes, max_tokens=30, seed=5, epoch=3)
    other_seed = make_batches(sizes, max_tokens=30, seed=6, epoch=2)
    assert [b.tolist() for b in first] != [b.tolist() for b in other_epoch]
    assert [b.tolist() for b in first] != [b.tolist() for b in other_seed]
    # Batches group similar sizes (bucketing): within a batch the sizes span at most 1 here,
    # since 200 sentences over 9 sizes fill every batch from one or two neighbouring sizes.
    assert all(int(np.ptp(sizes[b])) <= 1 for b in first)
    ordered = make_batches(sizes, max_sentences=50, shuffle=False)
    assert np.concatenate(ordered).tolist() == np.argsort(sizes, kind="stable").tolist()


def test_budget_errors_name_the_sentence():
    split = _mel_split()
    longest = int(sentence_sizes(split).max())
    with pytest.raises(ValueError, match=r"sentence 'utt\d+' has size"):
        BatchPlan(split, max_tokens=longest - 1)
    with pytest.raises(ValueError, match="give a budget"):
        make_batches(np.array([1, 2]))
    assert sentence_sizes(split, "sum").tolist() == (split.src.lengths + split.tgt.lengths).tolist()


def test_collate_pads_tokens_and_frames():
    split = _mel_split()
    batch = collate(split, [3, 0])
    assert batch.src.dtype == torch.int64 and batch.tgt.dtype == torch.float32
    assert batch.indices.tolist() == [3, 0]
    assert batch.src_lengths.tolist() == [len(split.src[3]), len(split.src[0])]
    assert batch.tgt.shape == (2, int(batch.tgt_lengths.max()), 4)
    for row, k in enumerate([3, 0]):
        n_src, n_tgt = len(split.src[k]), len(split.tgt[k])
        assert batch.src[row, :n_src].tolist() == split.src[k].tolist()
        assert torch.all(batch.src[row, n_src:] == 0)
        assert torch.equal(batch.tgt[row, :n_tgt], split.tgt[k])
        assert torch.all(batch.tgt[row, n_tgt:] == 0)
    moved = batch.to("cpu")
    assert torch.equal(moved.tgt, batch.tgt) and len(moved) == 2
    assert batch.num_src_tokens == int(batch.src_lengths.sum())


def test_rank_shares_partition_a_batch():
    batch = np.arange(7)
    shares = [rank_share(batch, r, 3) for r in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == batch.tolist()
    assert len(rank_share(np.arange(1), 1, 2)) == 0
    plan = BatchPlan(_mel_split(), max_sentences=4, seed=1)
    together = [b.indices.tolist() for b in plan.iterate(1, start=2)]
    assert together == [b.tolist() for b in plan.epoch_batches(1)[2:]]


# ---------------------------------------------------------------- schedule and config


def test_inverse_sqrt_schedule():
    assert inverse_sqrt_lr(1, 1e-3, 4) == pytest.approx(2.5e-4)
    assert inverse_sqrt_lr(4, 1e-3, 4) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(16, 1e-3, 4) == pytest.approx(5e-4)  # 1e-3 * sqrt(4 / 16)
    with pytest.raises(ValueError):
        inverse_sqrt_lr(0, 1e-3, 4)
    with pytest.raises(ValueError, match="batch budget"):
        TrainConfig(max_steps=1, lr=1e-3, warmup_steps=1, seed=1)
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"max_steps": 1, "lr": 1e-3, "warmup_steps": 1, "seed": 1, "x": 2})


# ---------------------------------------------------------------- in-process training


def _config(**overrides) -> TrainConfig:
    values = dict(
        max_steps=120,
        lr=3e-3,
        warmup_steps=10,
        seed=1,
        max_sentences=32,
        clip_norm=1.0,
        checkpoint_every=40,
        threads=1,
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_loss_falls_on_a_copy_task_and_resumes_with_more_steps(tmp_path):
    split = copy_split(128, VOCAB, 3, 8, seed=0)
    seed_everything(0)
    model = CopyModel(VOCAB, dropout=0.0)
    result = train(model, split, _config(), tmp_path / "ck.pt", tmp_path / "metrics.jsonl")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 121))
    for key in ("loss", "lr", "tokens", "seconds", "accuracy", "units", "grad_norm"):
        assert key in records[0]
    first = np.mean([r["loss"] for r in records[:5]])
    last = np.mean([r["loss"] for r in records[-10:]])
    assert last < 0.4 * first, (first, last)
    assert records[-1]["accuracy"] > 0.6
    assert result.step == 120 and result.resumed_from is None
    assert load_checkpoint(tmp_path / "ck.pt")["step"] == 120
    # The checkpoint loads with weights_only=True.
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 120

    more = train(
        model, split, _config(max_steps=123), tmp_path / "ck.pt", tmp_path / "metrics.jsonl"
    )
    assert more.resumed_from == 120 and more.step == 123
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 123


def test_a_checkpoint_of_another_run_is_replaced_never_resumed(tmp_path, caplog):
    split = copy_split(64, VOCAB, 3, 8, seed=0)
    ck, metrics = tmp_path / "ck.pt", tmp_path / "metrics.jsonl"
    identity = {"model": {"dropout": 0.0}, "inputs": {"train": "aa"}}
    first = train(CopyModel(VOCAB), split, _config(max_steps=8), ck, metrics, identity)
    old_weights = load_checkpoint(ck)["model"]
    changes = [
        (_config(max_steps=8, lr=1e-3), identity, "training.lr: 0.003 -> 0.001"),
        (
            _config(max_steps=8),
            {**identity, "model": {"dropout": 0.3}},
            "model.dropout: 0.0 -> 0.3",
        ),
        (
            _config(max_steps=8),
            {**identity, "inputs": {"train": "bb"}},
            "inputs.train: 'aa' -> 'bb'",
        ),
        (_config(max_steps=8, seed=7), identity, "training.seed: 1 -> 7"),
        (_config(max_steps=4), identity, "beyond max_steps 4"),
    ]
    for config, changed, named in changes:
        # Put the first run's checkpoint back, then train with one thing changed.
        train(CopyModel(VOCAB), split, _config(max_steps=8), ck, metrics, identity)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="comma.engine.trainer"):
            result = train(CopyModel(VOCAB), split, config, ck, metrics, changed)
        assert result.resumed_from is None, named
        assert named in caplog.text and "starts afresh" in caplog.text, caplog.text
        assert load_checkpoint(ck)["fingerprint"] == run_fingerprint(config, changed)
        assert len(metrics.read_text().splitlines()) == config.max_steps  # no stale steps
    assert first.step == 8 and old_weights is not None


def test_an_unreadable_checkpoint_is_moved_aside(tmp_path, caplog):
    split = copy_split(32, VOCAB, 3, 8, seed=0)
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="comma.engine.trainer"):
        result = train(CopyModel(VOCAB), split, _config(max_steps=3), ck)
    assert result.resumed_from is None and result.step == 3
    assert (tmp_path / "ck.pt.corrupt").read_bytes() == b"not a checkpoint"
    assert "moved aside" in caplog.text
    assert load_checkpoint(ck)["step"] == 3


class _PoisonedCopyModel(CopyModel):
    """A NaN loss whenever the batch holds sentence `poison`."""

    poison = -1

    def loss(self, batch):
        loss, logs = super().loss(batch)
        if bool((batch.indices == self.poison).any()):
            loss = loss * float("nan")
        return loss, logs


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    split = copy_split(64, VOCAB, 3, 8, seed=0)
    config = _config(max_sentences=8, checkpoint_every=2)
    fourth_batch = BatchPlan(split, max_sentences=8, seed=config.seed).epoch_batches(0)[3]
    seed_everything(0)
    model = _PoisonedCopyModel(VOCAB)
    model.poison = int(fourth_batch[0])
    checkpoint = tmp_path / "ck.pt"
    with pytest.raises(TrainingError, match=r"step 4: the loss is nan .*ck\.pt \(step 2\)"):
        train(model, split, config, checkpoint, tmp_path / "metrics.jsonl")
    kept = load_checkpoint(checkpoint)
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert not list(tmp_path.glob(".ck.pt.*"))


# ---------------------------------------------------------------- subprocesses


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _run_worker(*args: str, timeout: float = 300) -> None:
    result = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _assert_identical(a, b, where: str = "checkpoint") -> None:
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{k}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    common = ["--max-steps", "40", "--checkpoint-every", "5", "--max-tokens", "64"]
    common += ["--dropout", "0.1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run_worker(*common, "--checkpoint", str(straight / "ck.pt"), "--metrics", str(straight / "m"))

    # Slow steps so that the kill lands mid-run, between (or during) checkpoints.
    cmd = [sys.executable, str(WORKER), *common, "--step-delay", "0.05"]
    cmd += ["--checkpoint", str(killed / "ck.pt"), "--metrics", str(killed / "m")]
    process = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, f"worker ended early: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint at step >= 15 in time"
            if (killed / "ck.pt").is_file() and load_checkpoint(killed / "ck.pt")["step"] >= 15:
                break
            time.sleep(0.02)
        time.sleep(0.12)  # a few steps past the checkpoint: the resume must redo them
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(killed / "ck.pt")["step"]
    assert 15 <= interrupted_at < 40
    _run_worker(*common, "--checkpoint", str(killed / "ck.pt"), "--metrics", str(killed / "m"))

    _assert_identical(
        torch.load(straight / "ck.pt", weights_only=True),
        torch.load(killed / "ck.pt", weights_only=True),
    )
    straight_log = [json.loads(x) for x in (straight / "m").read_text().splitlines()]
    killed_log = [json.loads(x) for x in (killed / "m").read_text().splitlines()]
    assert [r["step"] for r in killed_log] == list(range(1, 41))
    assert [r["loss"] for r in killed_log] == [r["loss"] for r in straight_log]
    assert not list(killed.glob(".ck.pt.*"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    # One sentence of 40 tokens fills a batch alone: one rank computes it, the other a dummy.
    data = ["--sentences", "40", "--long-sentence", "40", "--max-tokens", "60"]
    split = copy_split(40, VOCAB, 3, 8, seed=0, long_sentence=40)
    plan = BatchPlan(split, max_tokens=60, seed=1)
    assert min(len(b) for b in plan.epoch_batches(0)) == 1
    steps = str(len(plan) + 1)
    common = [*data, "--max-steps", steps, "--checkpoint-every", "100", "--dropout", "0.0"]
    _run_worker(*common, "--checkpoint", str(tmp_path / "one.pt"))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), str(WORKER), *common]
    cmd += ["--checkpoint", str(tmp_path / "two.pt")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = load_checkpoint(tmp_path / "one.pt"), load_checkpoint(tmp_path / "two.pt")
    assert one["step"] == two["step"] == int(steps)
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    changed = [n for n, t in one["model"].items() if n.endswith("weight") and t.dim() == 2]
    assert changed  # the comparison covers real weight matrices


def test_a_probe_joins_the_checkpoint_metrics_and_changes_nothing(tmp_path):
    split = copy_split(64, VOCAB, 3, 8, seed=0)
    config = _config(max_steps=9, checkpoint_every=4, max_sentences=8)
    seen = []

    def probe(model):
        assert not model.training
        seen.append(torch.rand(()))  # draws from the global stream, which must be put back
        return {"R@0.5": float(sum(p.sum() for p in model.parameters()))}

    seed_everything(0)
    plain = train(CopyModel(VOCAB), split, config, tmp_path / "a.pt", tmp_path / "a.jsonl")
    seed_everything(0)
    probed = train(
        CopyModel(VOCAB), split, config, tmp_path / "b.pt", tmp_path / "b.jsonl", probe=probe
    )
    assert plain.loss == probed.loss and len(seen) == 3  # steps 4, 8 and the last, 9
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for name, weight in a["model"].items():
        assert torch.equal(weight, b["model"][name]), name
    records = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "R@0.5" in r] == [4, 8, 9]


class _IdRecorder(CopyModel):
    """The copy model, noting the sentence ids of every batch it trains on."""

    def __init__(self, split: Split):
        super().__init__(VOCAB)
        self.split, self.seen = split, []

    def loss(self, batch):
        if self.training:
            self.seen.append([self.split.ids[k] for k in batch.indices.tolist()])
        return super().loss(batch)


def test_kd_planned_by_its_rawkept_twin_sees_the_same_ids_in_the_same_batches(tmp_path):
    """A kd corpus and its rawkept twin: the same sources and ids, other target lengths (the
    teacher's outputs). Planned by its own lengths, kd sees other batches than rawkept with
    the same seed; planned by rawkept's (order_of), the same ids in the same batches and
    order, step by step."""
    rawkept = copy_split(96, VOCAB, 3, 12, seed=0)
    kd_targets = copy_split(96, VOCAB, 3, 12, seed=1).tgt  # other lengths, same sentences
    kd = Split(rawkept.src, kd_targets, list(rawkept.ids))
    config = _config(max_steps=12, max_sentences=None, max_tokens=120, checkpoint_every=12)
    runs = {}
    for name, split, order_of in (
        ("rawkept", rawkept, None),
        ("kd", kd, None),
        ("kd planned by rawkept", kd, rawkept),
    ):
        model = _IdRecorder(split)
        train(model, split, config, tmp_path / f"{name}.pt", order_of=order_of)
        runs[name] = model.seen
    assert len(runs["rawkept"]) == 12
    assert runs["kd"] != runs["rawkept"]  # by its own lengths: another data order
    assert runs["kd planned by rawkept"] == runs["rawkept"]
    # a twin of other sentences cannot plan the batches
    with pytest.raises(ValueError, match="other sentences"):
        BatchPlan(kd, max_sentences=8, order_of=rawkept.select(range(95)))
