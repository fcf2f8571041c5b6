"""Benchmark: training throughput of our Transformer NMT against reference implementations,
the FLOP/s it achieves, and beam-search speed of a trained teacher.

In one run on this machine, at the paper's teacher size (d 512, 6 + 6 layers, 4 heads, FFN
1024; Table 5) and one batch shape:

1. training-step throughput (target tokens/s of forward + backward + Adam) of
   ``comma.models.teacher.TransformerNMT``, of ``torch.nn.Transformer`` with the same sizes
   (plus embeddings and an output projection, so the work is the same), and of Hugging Face's
   ``BartForConditionalGeneration`` built from a config (no weights downloaded) if
   ``transformers`` is installed (it is not a dependency: the row is skipped with the reason);
2. the FLOP/s each achieves (FLOPs of one step counted by ``torch.utils.flop_counter``) as a
   fraction of the peak of a large float32 ``torch.mm`` measured in the same run;
3. with ``--teacher model.pt --data work/data/nmt``: beam search (beam 5) over that test set,
   sentences per second.

    .venv/bin/python benchmarks/teacher_throughput.py [--threads 1] [--steps 5]
        [--teacher work/teacher/nmt/model.pt --data work/data/nmt]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from study_time import mm_peak
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from comma.data.batching import Batch
from comma.data.packed import load_split
from comma.engine.decode import decode_split
from comma.models.registry import load_teacher
from comma.models.teacher import TransformerNMT
from comma.models.teacher_base import TeacherConfig, shift_tokens

SIZES = dict(d_model=512, encoder_layers=6, decoder_layers=6, heads=4, ffn_dim=1024)
VOCAB = 10_000  # IWSLT14 De-En with 10k joint BPE merges has about this many symbols per side
DROPOUT = 0.1


def make_batch(batch: int, src_len: int, tgt_len: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, VOCAB, (batch, src_len), generator=g)
    tgt = torch.randint(5, VOCAB, (batch, tgt_len), generator=g)
    lengths = torch.full((batch,), src_len), torch.full((batch,), tgt_len)
    return Batch(src, lengths[0], tgt, lengths[1], torch.arange(batch))


class TorchTransformerNMT(nn.Module):
    """torch.nn.Transformer (post-norm, as ours) with embeddings, learned positions and an
    output projection tied to the target embedding: the same work per step as ours."""

    def __init__(self, max_positions: int = 256):
        super().__init__()
        d = SIZES["d_model"]
        self.src_embed = nn.Embedding(VOCAB, d, padding_idx=0)
        self.tgt_embed = nn.Embedding(VOCAB, d, padding_idx=0)
        self.positions = nn.Embedding(max_positions, d)
        self.transformer = nn.Transformer(
            d_model=d,
            nhead=SIZES["heads"],
            num_encoder_layers=SIZES["encoder_layers"],
            num_decoder_layers=SIZES["decoder_layers"],
            dim_feedforward=SIZES["ffn_dim"],
            dropout=DROPOUT,
            batch_first=True,
        )

    def loss(self, batch: Batch) -> torch.Tensor:
        prev, target, _ = shift_tokens(batch.tgt, batch.tgt_lengths)
        src = self.src_embed(batch.src) + self.positions(torch.arange(batch.src.shape[1]))
        tgt = self.tgt_embed(prev) + self.positions(torch.arange(prev.shape[1]))
        mask = nn.Transformer.generate_square_subsequent_mask(prev.shape[1])
        hidden = self.transformer(src, tgt, tgt_mask=mask, tgt_is_causal=True)  # [B, T, d]
        logits = hidden @ self.tgt_embed.weight.T  # [B, T, V]
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=0.1)


LossFn = Callable[[Batch], torch.Tensor]


def make_ours() -> tuple[nn.Module, LossFn]:
    model = TransformerNMT(
        TeacherConfig(task="nmt", src_vocab=VOCAB, tgt_vocab=VOCAB, dropout=DROPOUT, **SIZES)
    )
    return model, lambda batch: model.loss(batch)[0]


def make_torch() -> tuple[nn.Module, LossFn]:
    model = TorchTransformerNMT()
    return model, model.loss


def make_bart() -> tuple[nn.Module, LossFn]:
    """BART at our sizes from a config (random weights: nothing is downloaded)."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=VOCAB,
        d_model=SIZES["d_model"],
        encoder_layers=SIZES["encoder_layers"],
        decoder_layers=SIZES["decoder_layers"],
        encoder_attention_heads=SIZES["heads"],
        decoder_attention_heads=SIZES["heads"],
        encoder_ffn_dim=SIZES["ffn_dim"],
        decoder_ffn_dim=SIZES["ffn_dim"],
        dropout=DROPOUT,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    model = BartForConditionalGeneration(config)

    def loss(batch: Batch) -> torch.Tensor:
        prev, target, _ = shift_tokens(batch.tgt, batch.tgt_lengths)
        out = model(input_ids=batch.src, decoder_input_ids=prev)
        return F.cross_entropy(
            out.logits.flatten(0, 1), target.flatten(), ignore_index=0, label_smoothing=0.1
        )

    return model, loss


def step_flops(model: nn.Module, loss_fn: LossFn, batch: Batch) -> int:
    """FLOPs of one forward + backward (the optimizer's few element-wise FLOPs left out)."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def seconds_per_step(model: nn.Module, loss_fn: LossFn, batch: Batch, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        optimizer.step()

    step()  # warm-up (allocations, Adam state)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def beam_search_speed(teacher: Path, data: Path, beam: int) -> tuple[int, float]:
    model = load_teacher(teacher)
    test = load_split(data / "test.pt")
    hypotheses, seconds = decode_split(
        model,
        test,
        beam=beam,
        lenpen=1.0,
        max_len_a=1.2,
        max_len_b=10,
        batch_sentences=64,
        progress=False,
    )
    return len(hypotheses), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--batch", type=int, default=32, help="sentences per batch")
    parser.add_argument("--src-len", type=int, default=25)
    parser.add_argument("--tgt-len", type=int, default=25)
    parser.add_argument("--teacher", type=Path, help="a trained NMT teacher (model.pt)")
    parser.add_argument("--data", type=Path, help="its prepared corpus (work/data/nmt)")
    parser.add_argument("--beam", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.batch, args.src_len, args.tgt_len)
    target_tokens = args.batch * (args.tgt_len + 1)  # EOS included
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); batch {args.batch} x "
        f"({args.src_len} source, {args.tgt_len} + EOS target) tokens; d {SIZES['d_model']}, "
        f"{SIZES['encoder_layers']}+{SIZES['decoder_layers']} layers, {SIZES['heads']} heads, "
        f"FFN {SIZES['ffn_dim']}, vocabulary {VOCAB}, dropout {DROPOUT}; {args.steps} steps\n"
    )
    peak = mm_peak(n=2048)
    print(f"torch.mm float32 peak: {peak / 1e9:.1f} GFLOP/s\n")
    candidates = [("comma TransformerNMT", make_ours), ("torch.nn.Transformer", make_torch)]
    rows, skipped = [], []
    if importlib.util.find_spec("transformers") is not None:
        candidates.append(("HF BartForConditionalGeneration", make_bart))
    else:
        skipped.append(
            "HF BartForConditionalGeneration: skipped, `transformers` is not installed in this "
            "environment (not a dependency of the project)"
        )
    for name, make in candidates:
        torch.manual_seed(0)
        model, loss_fn = make()
        parameters = sum(p.numel() for p in model.parameters())
        flops = step_flops(model, loss_fn, batch)
        seconds = seconds_per_step(model, loss_fn, batch, args.steps)
        rows.append((name, parameters, seconds, flops))
    print(
        f"{'model':<34} {'params':>8} {'s/step':>8} {'tgt tok/s':>10} {'GFLOP/step':>11} "
        f"{'GFLOP/s':>8} {'of peak':>8}"
    )
    for name, parameters, seconds, flops in rows:
        rate = flops / seconds
        print(
            f"{name:<34} {parameters / 1e6:>7.1f}M {seconds:>8.3f} "
            f"{target_tokens / seconds:>10.0f} {flops / 1e9:>11.1f} {rate / 1e9:>8.1f} "
            f"{rate / peak:>7.0%}"
        )
    for line in skipped:
        print(line)
    if args.teacher is not None:
        if args.data is None:
            parser.error("--teacher needs --data (the prepared corpus with test.pt)")
        sentences, seconds = beam_search_speed(args.teacher, args.data, args.beam)
        print(
            f"\nbeam search (beam {args.beam}) with {args.teacher} on {args.data / 'test.pt'}: "
            f"{sentences} sentences in {seconds:.2f} s = {sentences / seconds:.1f} sentences/s"
        )
    print(
        "\ntgt tok/s: target tokens (EOS included) per second of a full training step "
        "(forward, backward, Adam);\nGFLOP/step: counted by torch.utils.flop_counter "
        "(forward + backward); of peak: achieved FLOP/s / torch.mm's."
    )


if __name__ == "__main__":
    main()
