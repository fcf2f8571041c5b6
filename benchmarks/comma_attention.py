"""Benchmark: CoMMA's fused vs explicit attention, and the cost of measuring R(p).

In one run on this machine, for batches shaped like the mini preset's NMT and TTS corpora:

1. training-step throughput (target positions/s) with the fused attention
   (scaled_dot_product_attention, what training uses) against the explicit softmax that
   returns weights;
2. the cost of one R(p) pass (forward with weights + eq. 1-3 over every layer and head, as
   `comma.stages.comma.ratio_pass`, which `measure_ratio` runs per batch) relative to a plain
   fused forward (target: <= 1.5x);
3. a training step with the attention constraint (eq. 7-8, per head) whose student maps come
   from the whole mix-attention (explicit softmax) against eq. 7's source block beside the
   fused attention (what training uses), and against a step without the constraint.

    .venv/bin/python benchmarks/comma_attention.py [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from comma.data.batching import Batch, TeacherTargets
from comma.models.comma import CoMMA, CoMMAConfig
from comma.stages.comma import ratio_pass

# (task, batch, source length, target length): the mini corpora's means (data_summary.md)
SHAPES = [("nmt", 32, 15, 17), ("tts", 32, 23, 185)]
ARCH = dict(d_model=64, layers=3, heads=4, ffn_dim=128, dropout=0.1, prenet_hidden=64)


def make(task: str, batch: int, m: int, n: int):
    torch.manual_seed(0)
    vocab = {"src_vocab": 400, "tgt_vocab": 400 if task == "nmt" else None}
    model = CoMMA(CoMMAConfig(task=task, **ARCH, **vocab))
    src = torch.randint(5, 400, (batch, m))
    src_len = torch.full((batch,), m)
    tgt = torch.randint(5, 400, (batch, n)) if task == "nmt" else torch.randn(batch, n, 80)
    tgt_len = torch.full((batch,), n)
    predicted = model.mask_targets(tgt_len, 0.3, torch.Generator().manual_seed(0))
    return model, (src, src_len, tgt, tgt_len, predicted)


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_shape(task: str, batch: int, m: int, n: int, repeats: int) -> str:
    """One table row: training throughput fused vs explicit, R(p) pass vs forward."""
    model, inputs = make(task, batch, m, n)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tgt, predicted = inputs[2], inputs[4]

    def train_step(need_weights: bool):
        model.train()
        out = model(*inputs, need_weights=need_weights)
        loss = model.prediction_loss(out, tgt, predicted)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    fused = seconds_per_call(lambda: train_step(False), repeats)
    explicit = seconds_per_call(lambda: train_step(True), repeats)

    model.eval()

    @torch.no_grad()
    def plain_forward():
        model(*inputs)

    whole = Batch(inputs[0], inputs[1], inputs[2], inputs[3], torch.arange(len(inputs[0])))
    everything = range(model.config.layers), range(model.config.heads)

    forward = seconds_per_call(plain_forward, repeats)
    measured = seconds_per_call(lambda: ratio_pass(model, whole, predicted, *everything), repeats)
    positions = batch * n
    return (
        f"{task:<5} {batch:>5} {m:>4} {n:>4} {positions / fused:>10.0f}/s "
        f"{positions / explicit:>13.0f}/s {explicit / fused:>14.2f}x "
        f"{forward * 1e3:>7.1f}ms {measured * 1e3:>8.1f}ms {measured / forward:>5.2f}x"
    )


def bench_constraint(task: str, batch: int, m: int, n: int, repeats: int) -> str:
    """One row: ms per training step without AC, with AC from the whole map, from the block."""
    model, inputs = make(task, batch, m, n)
    src, src_len, tgt, tgt_len, predicted = inputs
    teacher = torch.softmax(torch.randn(batch, model.config.layers, model.config.heads, n, m), -1)
    targets = TeacherTargets(src_len, tgt_len, torch.arange(batch), head_attention=teacher)
    whole = Batch(src, src_len, tgt, tgt_len, torch.arange(batch)).with_teacher(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def train_step(**options):
        out = model(*inputs, **options)
        loss = model.prediction_loss(out, tgt, predicted)
        if options:
            loss = loss + model.attention_constraint(out, whole)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    plain = seconds_per_call(train_step, repeats)
    from_map = seconds_per_call(lambda: train_step(need_weights=True), repeats)
    from_block = seconds_per_call(lambda: train_step(source_attention=True), repeats)
    return (
        f"{task:<5} {plain * 1e3:>9.1f}ms {from_map * 1e3:>11.1f}ms {from_block * 1e3:>11.1f}ms "
        f"{from_map / plain:>9.2f}x {from_block / plain:>9.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats\n")
    table(
        f"{'task':<5} {'batch':>5} {'M':>4} {'N':>4} {'train fused':>12} {'train explicit':>15} "
        f"{'fused speed-up':>15} {'forward':>9} {'R(p) pass':>10} {'ratio':>6}",
        bench_shape,
        "\ntrain: target positions per second of a full training step (forward, backward, Adam);"
        "\nR(p) pass: forward with attention weights plus eq. 1-3 for the average and every"
        " layer/head, against a fused forward without weights (target <= 1.5x).\n",
        args.repeats,
    )
    table(
        f"{'task':<5} {'no AC':>11} {'AC from map':>13} {'AC from block':>13} "
        f"{'map/none':>10} {'block/none':>10}",
        bench_constraint,
        "\nAC: a training step with the per-head attention constraint (random teacher maps),"
        " the student's maps from the whole mix-attention or from eq. 7's source block.",
        args.repeats,
    )


def table(header: str, bench, legend: str, repeats: int) -> None:
    """One comparison: its header, a row per shape of SHAPES, its legend."""
    print(header)
    for shape in SHAPES:
        print(bench(*shape, repeats))
    print(legend)


if __name__ == "__main__":
    main()
