"""GPU check: paper-size CoMMA (Table 6: 6 layers, d_model 512, 4 heads, FFN 1024) trained in
bf16 at NMT-like and TTS-like lengths on synthetic batches.

Prints per setting: target tokens/s, the model FLOP/s utilization (FLOPs of a step counted by
torch's FlopCounterMode, forward and backward) against the device's dense bf16 peak (the
vendor figure for known GPUs, else a bf16 torch.mm measured here), the measured torch.mm
peak, the peak memory, and the time of one R(p) measurement pass (a forward with explicit
attention weights and eq. 1-2 over every layer and head). Runs on the CPU too (float32, few
steps), for a smoke test. Needs only torch and this source tree:

    PYTHONPATH=. python benchmarks/gpu_check.py [--steps 200] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from comma.data.batching import Batch
from comma.models.comma import CoMMA, CoMMAConfig
from comma.stages.comma import ratio_pass

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
PAPER_COMMA = dict(
    d_model=512, layers=6, heads=4, ffn_dim=1024, dropout=0.1, attention_dropout=0.0,
    pre_norm=True, conv_channels=256, conv_strides=(2, 2, 1), prenet_hidden=256,
    prenet_dropout=0.5, mel_chunk=10,
)  # fmt: skip
# (task, source length, target length): IWSLT14-like sentences and LJSpeech-like utterances
SETTINGS = (("nmt", 28, 30), ("tts", 60, 600))


def synthetic_batch(task: str, batch: int, src_len: int, tgt_len: int, device) -> Batch:
    g = torch.Generator().manual_seed(0)
    src_lengths = torch.randint(src_len // 2, src_len + 1, (batch,), generator=g)
    tgt_lengths = torch.randint(tgt_len // 2, tgt_len + 1, (batch,), generator=g)
    src_lengths[0], tgt_lengths[0] = src_len, tgt_len
    src = torch.randint(5, 8000, (batch, src_len), generator=g)
    if task == "tts":
        tgt = torch.randn(batch, tgt_len, 80, generator=g)
    else:
        tgt = torch.randint(5, 8000, (batch, tgt_len), generator=g)
    return Batch(src, src_lengths, tgt, tgt_lengths, torch.arange(batch)).to(device)


def measured_mm_peak(device, dtype) -> float:
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    steps = args.steps if cuda else min(args.steps, 3)
    name = torch.cuda.get_device_name() if cuda else "CPU"
    mm_peak = measured_mm_peak(device, dtype)
    spec = next((v for k, v in BF16_PEAK.items() if k in name), None) if cuda else None
    peak = spec or mm_peak
    print(f"device {name}, torch {torch.__version__}, {dtype}; torch.mm {mm_peak / 1e12:.2f} "
          f"TFLOP/s; MFU against {'the data sheet' if spec else 'torch.mm'}: "
          f"{peak / 1e12:.2f} TFLOP/s")  # fmt: skip
    for task, src_len, tgt_len in SETTINGS:
        torch.manual_seed(0)
        vocab = dict(src_vocab=8000, tgt_vocab=None if task == "tts" else 8000)
        model = CoMMA(CoMMAConfig(task=task, n_mels=80, **vocab, **PAPER_COMMA)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
        batch = synthetic_batch(task, args.batch, src_len, tgt_len, device)

        def step(model=model, optimizer=optimizer, batch=batch):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss, _ = model.loss(batch)
            loss.backward()
            optimizer.step()

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
        # the CPU allocator keeps no peak figure
        memory = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else "n/a on CPU"
        model.eval()
        predicted = model.mask_targets(batch.tgt_lengths.cpu(), 0.3, torch.Generator()).to(device)
        layers, heads = range(model.config.layers), range(model.config.heads)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            ratio_pass(model, batch, predicted, layers, heads)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            ratio_pass(model, batch, predicted, layers, heads)
            if cuda:
                torch.cuda.synchronize()
        ratio_seconds = time.perf_counter() - start
        tokens = int(batch.tgt_lengths.sum())
        print(f"{task}: batch {args.batch} x (M {src_len}, N {tgt_len}), {steps} steps: "
              f"{tokens / seconds:,.0f} target tokens/s, {seconds * 1e3:.1f} ms/step, "
              f"{flops / 1e9:.1f} GFLOP/step, MFU {flops / seconds / peak:.1%}, peak memory "
              f"{memory}, R(p) pass {ratio_seconds * 1e3:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
