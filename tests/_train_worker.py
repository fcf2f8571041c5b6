"""A tiny copy-task model and a training entry point for the trainer's subprocess tests.

Run as a script (plain python, or under torchrun for DistributedDataParallel) it trains
:class:`CopyModel` on :func:`copy_split` with :func:`comma.engine.trainer.train`. The tests import
the
model and the data from here too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `comma`

from comma.data.batching import Batch  # noqa: E402
from comma.data.packed import PackedSequences, Split  # noqa: E402
from comma.engine.checkpoint import seed_everything  # noqa: E402
from comma.engine.train_config import TrainConfig  # noqa: E402
from comma.engine.trainer import train  # noqa: E402
from comma.nn.transformer import Decoder, Encoder, SinusoidalPositions  # noqa: E402

PAD, BOS, EOS, FIRST_WORD = 0, 1, 2, 5  # comma.data.vocab's specials, then words


def copy_split(
    sentences: int,
    vocab_size: int,
    min_len: int,
    max_len: int,
    seed: int,
    long_sentence: int | None = None,
) -> Split:
    """Random word sequences (ids >= 5, no specials) whose target is the source itself.

    `long_sentence` appends one sentence of that length (to test batches it fills alone)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (sentences,), generator=generator).tolist()
    if long_sentence is not None:
        lengths.append(long_sentence)
    seqs = [
        torch.randint(FIRST_WORD, vocab_size, (n,), generator=generator, dtype=torch.int32)
        for n in lengths
    ]
    packed = PackedSequences.from_list(seqs, dtype=torch.int32)
    return Split(packed, packed, [f"s{k}" for k in range(len(seqs))])


class CopyModel(nn.Module):
    """Encoder-decoder Transformer, teacher-forced cross-entropy on ``target + eos``."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 32,
        heads: int = 4,
        ffn_dim: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        pre_norm: bool = True,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.positions = SinusoidalPositions(d_model)
        self.dropout = nn.Dropout(dropout)
        self.encoder = Encoder(layers, d_model, heads, ffn_dim, dropout, pre_norm=pre_norm)
        self.decoder = Decoder(layers, d_model, heads, ffn_dim, dropout, pre_norm=pre_norm)
        self.out = nn.Linear(d_model, vocab_size)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)  # [L]
        return self.dropout(self.embed(tokens) + self.positions(positions))  # [B, L, d]

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        src, tgt = batch.src, batch.tgt  # [B, S], [B, T]
        batch_size = tgt.shape[0]
        bos = torch.full((batch_size, 1), BOS, dtype=tgt.dtype, device=tgt.device)
        decoder_in = torch.cat([bos, tgt], dim=1)  # [B, T + 1]
        target = torch.cat([tgt, torch.full_like(bos, PAD)], dim=1)  # [B, T + 1]
        target[torch.arange(batch_size, device=tgt.device), batch.tgt_lengths] = EOS
        memory = self.encoder(self._embed(src), batch.src_lengths).hidden  # [B, S, d]
        hidden = self.decoder(
            self._embed(decoder_in), memory, batch.tgt_lengths + 1, batch.src_lengths
        ).hidden  # [B, T + 1, d]
        logits = self.out(hidden).float()  # [B, T + 1, V]
        loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=PAD)
        real = target != PAD
        accuracy = (logits.argmax(-1) == target)[real].float().mean()
        return loss, {"accuracy": float(accuracy), "units": float(real.sum())}


class SlowCopyModel(CopyModel):
    """Sleeps in every loss call, so a test can kill the process between checkpoints."""

    step_delay = 0.0

    def loss(self, batch):
        time.sleep(self.step_delay)
        return super().loss(batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--metrics", type=Path)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--max-sentences", type=int)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--long-sentence", type=int)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    vocab_size = 16
    split = copy_split(args.sentences, vocab_size, 3, 8, seed=0, long_sentence=args.long_sentence)
    seed_everything(args.seed)
    model = SlowCopyModel(vocab_size, dropout=args.dropout)
    model.step_delay = args.step_delay
    config = TrainConfig(
        max_steps=args.max_steps,
        lr=args.lr,
        warmup_steps=4,
        seed=args.seed,
        max_tokens=args.max_tokens,
        max_sentences=args.max_sentences,
        clip_norm=1.0,
        checkpoint_every=args.checkpoint_every,
        threads=1,
        progress=False,
    )
    train(model, split, config, args.checkpoint, args.metrics)


if __name__ == "__main__":
    main()
