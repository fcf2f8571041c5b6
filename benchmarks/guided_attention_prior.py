"""Benchmark: how much of a speech teacher's attention is the guided-attention prior.

The mini preset trains the ASR and TTS teachers with Tachibana et al.'s guided-attention loss
on the first `guided_attention_heads` heads of the last `guided_attention_layers` decoder
layers: it pushes those heads towards the diagonal. Their maps then become the attention
constraint's targets (CoMMA ``ac``: every teacher head; FastSpeech's durations and NAR-ASR's
windows: the head of highest focus rate). Do the AC variants then learn the teacher's
alignment, or the prior the teacher was pushed to?

For every decoder layer and head of one study's teacher, teacher-forced on training sentences
(:func:`comma.engine.decode.teacher_forced_attention`, as the alignment stage runs it), in one
run:

* focus rate (ESPnet's duration calculator: the mean of each row's largest weight);
* distance from the diagonal, the attention-weighted ``|s/S - t/T|`` per row, averaged;
* the guided-attention penalty at the teacher's sigma, per row (the loss's own quantity);
* agreement of each row's argmax with that of the sharpest guided head (the same source
  position, and within one): whether an unguided head found the same alignment on its own;
* TTS: the spread of the durations each head gives (argmax counts per phoneme, their
  coefficient of variation within a sentence): the straight diagonal splits a sentence's
  frames evenly, a real alignment does not.

Two reference rows: uniform attention, and the prior itself (each row the normalized
``exp(-(s/S - t/T)^2 / (2 sigma^2))``), to read the heads against.

    .venv/bin/python benchmarks/guided_attention_prior.py --study DIR --task tts [--sentences 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from study_time import mm_peak

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.alignment.calculators import focus_rate  # noqa: E402
from comma.data.batching import collate, make_batches  # noqa: E402
from comma.data.packed import load_split  # noqa: E402
from comma.engine.decode import teacher_forced_attention  # noqa: E402
from comma.models.registry import load_teacher  # noqa: E402
from comma.models.teacher_base import guided_attention_weights  # noqa: E402
from comma.nn.masking import valid_positions  # noqa: E402


def relative_offsets(src_len: torch.Tensor, tgt_len: torch.Tensor, s_max: int, t_max: int):
    """``s/S - t/T`` per cell ``[B, T_max, S_max]``, and the valid cells (bool, same shape)."""
    t = torch.arange(t_max, dtype=torch.float32)[None, :, None] / tgt_len[:, None, None]
    s = torch.arange(s_max, dtype=torch.float32)[None, None, :] / src_len[:, None, None]
    valid = valid_positions(tgt_len, t_max)[:, :, None] & valid_positions(src_len, s_max)[:, None]
    return s - t, valid


def head_statistics(
    attention: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor, sigma: float, ref: int
) -> dict[str, torch.Tensor]:
    """Per head of `attention` ``[B, H, T, S]`` (rows summing to 1 over the valid source), sums
    over sentences of each sentence's row mean: focus rate, distance from the diagonal, the
    guided penalty at `sigma`, and the argmax agreement (within one position) with head `ref`."""
    offsets, valid = relative_offsets(src_len, tgt_len, attention.shape[-1], attention.shape[-2])
    rows = valid.any(-1)  # [B, T]
    penalty = guided_attention_weights(
        src_len, tgt_len, attention.shape[-1], attention.shape[-2], sigma
    )  # [B, T, S]
    cells = attention * valid[:, None]

    def row_mean(per_row: torch.Tensor) -> torch.Tensor:  # [B, H, T] -> [H]
        return (per_row * rows[:, None]).sum(-1).div(tgt_len[:, None]).sum(0)

    peak = attention.masked_fill(~valid[:, None], -1.0).argmax(-1)  # [B, H, T]
    apart = (peak - peak[:, ref : ref + 1]).abs()  # [B, H, T]
    # Durations as FastSpeech reads them: how many rows have their argmax on each source
    # position; their spread within the sentence (coefficient of variation over the valid
    # source) says how far an alignment is from the even split of the straight diagonal.
    counts = torch.zeros(attention.shape[:2] + attention.shape[-1:])  # [B, H, S]
    counts.scatter_add_(-1, peak, rows[:, None].float().expand_as(peak))
    source = valid_positions(src_len, attention.shape[-1])[:, None]  # [B, 1, S]
    mean = counts.sum(-1) / src_len[:, None]  # [B, H]
    var = ((counts - mean[..., None]) ** 2 * source).sum(-1) / src_len[:, None]
    return {
        "focus": focus_rate(attention, src_len, tgt_len).sum(0),
        "distance": row_mean((cells * offsets.abs()[:, None]).sum(-1)),
        "penalty": row_mean((cells * penalty[:, None]).sum(-1)),
        "same": row_mean((apart == 0).float()),
        "agree": row_mean((apart <= 1).float()),
        "duration_cv": (var.sqrt() / mean).sum(0),
    }


def reference_maps(src_len: torch.Tensor, tgt_len: torch.Tensor, s_max: int, t_max: int, sigma):
    """``[B, 2, T, S]``: uniform attention and the guided prior, each row normalized over the
    valid source."""
    offsets, valid = relative_offsets(src_len, tgt_len, s_max, t_max)
    uniform = valid.float()
    prior = torch.exp(-(offsets**2) / (2 * sigma**2)) * valid
    maps = torch.stack([uniform, prior], dim=1)
    return maps / maps.sum(-1, keepdim=True).clamp_min(1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a study directory")
    parser.add_argument("--task", choices=("asr", "tts"), required=True)
    parser.add_argument("--sentences", type=int, default=256, help="first N training sentences")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher_path = args.study / "work" / "teacher" / args.task / "model.pt"
    model = load_teacher(teacher_path).eval()
    c = model.config
    if c.guided_attention_weight <= 0:
        raise SystemExit(f"{teacher_path}: trained without guided attention")
    guided = {
        (layer, head)
        for layer in range(c.decoder_layers - c.guided_attention_layers, c.decoder_layers)
        for head in range(c.guided_attention_heads)
    }
    split = load_split(args.study / "work" / "data" / args.task / "train.pt")
    split = split.select(range(min(args.sentences, len(split))))
    print(
        f"{teacher_path}: guided-attention weight {c.guided_attention_weight:g}, sigma "
        f"{c.guided_attention_sigma:g}, guided (layer, head) {sorted(guided)}; "
        f"{len(split)} training sentences; torch.mm peak {mm_peak() / 1e9:.1f} GFLOP/s"
    )
    torch.manual_seed(0)  # the TTS teacher's pre-net dropout stays on at inference
    sizes = split.src.lengths.numpy()
    passes = []
    for indices in make_batches(sizes, max_sentences=args.batch, shuffle=False):
        forced = teacher_forced_attention(model, collate(split, indices))
        passes.append((forced.attention.float().flatten(1, 2), forced))  # [B, L*H, T, S]
    # The reference head for the argmax agreement: the guided head of highest focus rate.
    focus = sum(focus_rate(a, f.src_lengths, f.tgt_lengths).sum(0) for a, f in passes)
    flat_guided = [layer * c.heads + head for layer, head in guided]
    ref = max(flat_guided, key=lambda k: float(focus[k]))
    totals: dict[str, torch.Tensor] = {}
    for attention, forced in passes:
        s_len, t_len = forced.src_lengths, forced.tgt_lengths
        refs = reference_maps(
            s_len, t_len, attention.shape[-1], attention.shape[-2], c.guided_attention_sigma
        )
        maps = torch.cat([attention, refs], dim=1)
        for key, value in head_statistics(
            maps, s_len, t_len, c.guided_attention_sigma, ref
        ).items():
            totals[key] = totals.get(key, 0) + value
    n = len(split)
    names = [f"layer {k // c.heads} head {k % c.heads}" for k in range(c.decoder_layers * c.heads)]
    names += ["uniform attention", f"the prior (sigma {c.guided_attention_sigma:g})"]
    header = ("guided", "focus", "|s/S-t/T|", "penalty", "argmax same", "within 1")
    # Durations (frames per phoneme) are what FastSpeech reads; an ASR row is a token.
    header += ("durations CV",) if args.task == "tts" else ()
    widths = [max(len(h), 6) for h in header]
    print(f"\n{'map':<22}" + "".join(f" {h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for k, name in enumerate(names):
        is_guided = k < c.decoder_layers * c.heads and divmod(k, c.heads) in guided
        mean = {key: float(total[k]) / n for key, total in totals.items()}
        cells = (
            "yes" if is_guided else "",
            f"{mean['focus']:.3f}",
            f"{mean['distance']:.3f}",
            f"{mean['penalty']:.3f}",
            f"{mean['same']:.1%}",
            f"{mean['agree']:.1%}",
        ) + ((f"{mean['duration_cv']:.3f}",) if args.task == "tts" else ())
        line = f"{name:<22}" + "".join(f" {v:>{w}}" for v, w in zip(cells, widths, strict=True))
        print(line + ("  (reference head)" if k == ref else ""))


if __name__ == "__main__":
    main()
