"""Benchmark: knowledge-distillation decoding throughput of the trained AR teachers, batched
against one sentence at a time, measured in one run.

For the first N sentences of each task's prepared training split (what the ``distill`` rule
decodes) and its trained teacher:

* NMT (and ASR with ``--tasks asr``): beam search with the config's beam, and greedy search
  (beam 1), in batches of ``decoding.{task}.batch_sentences`` sentences and in batches of 1:
  sentences/s and generated tokens/s (EOS excluded), the speed-up of batching, and how many
  batched outputs equal the unbatched ones (batching must not change the search's result);
* TTS: greedy autoregressive mel generation (torch seeded identically before each run: the
  decoder pre-net keeps its dropout at inference), batched and unbatched: sentences/s and
  generated frames/s.

The settings (beam, lenpen, max_len_a/b, stop_threshold, batch_sentences) come from the
config (default: the repository's config.yaml, the mini preset).

    .venv/bin/python benchmarks/kd_decoding.py [--workdir .] [--sentences 200] [--threads 1]
        [--tasks nmt tts] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from comma.data.packed import Split, load_split
from comma.engine.decode import decode_split, generate_split, max_lengths
from comma.engine.decode_settings import DecodingSettings
from comma.models.registry import load_teacher
from comma.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]


def run_tokens(model, split: Split, decoding: DecodingSettings, beam: int, batch: int) -> dict:
    search = replace(decoding, beam=beam, batch_sentences=batch)
    hypotheses, seconds = decode_split(model, split, **search.arguments(), progress=False)
    limits = max_lengths(split.src.lengths, **decoding.limits).tolist()
    outputs = [h.tokens for h in hypotheses]
    return {
        "seconds": seconds,
        "units": sum(len(t) for t in outputs),
        "at_limit": sum(len(t) >= cap for t, cap in zip(outputs, limits, strict=True)),
        "outputs": outputs,
    }


def run_mel(model, split: Split, decoding: DecodingSettings, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    search = replace(decoding, batch_sentences=batch)
    generated, seconds = generate_split(model, split, **search.arguments(), progress=False)
    return {
        "seconds": seconds,
        "units": sum(len(f) for f in generated.frames),
        "at_limit": sum(not s for s in generated.stopped),
        "outputs": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("."),
        help="where work/teacher/{task}/model.pt and work/data/{task}/train.pt live",
    )
    parser.add_argument("--sentences", type=int, default=200, help="training sentences decoded")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", nargs="+", default=["nmt", "tts"], choices=list(TASKS))
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    missing = []
    for task in args.tasks:
        for path in (
            args.workdir / "work" / "teacher" / task / "model.pt",
            args.workdir / "work" / "data" / task / "train.pt",
        ):
            if not path.is_file():
                missing.append(str(path))
    if missing:
        sys.exit(
            "missing: " + ", ".join(missing) + "\nTrain the teachers first (this also prepares "
            f"the data): run `snakemake --cores 2 teachers` in {args.workdir.resolve()}, or pass "
            "--workdir where a run has them."
        )
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); first {args.sentences} training "
        f"sentences of each task in {args.workdir}/work/data; settings from {args.config}\n"
    )
    header = (
        f"{'task':<5} {'search':<14} {'batch':>5} {'sent':>5} {'seconds':>8} {'sent/s':>8} "
        f"{'units/s':>9} {'unit':<7} {'speed-up':>8} {'at limit':>8} {'same':>6}"
    )
    print(header)
    print("-" * len(header))
    for task in args.tasks:
        decoding = DecodingSettings.from_config(config["decoding"][task], task)
        unit = "frames" if TASKS[task].is_mel("tgt") else "tokens"
        model = load_teacher(args.workdir / "work" / "teacher" / task / "model.pt")
        train = load_split(args.workdir / "work" / "data" / task / "train.pt")
        split = train.select(range(min(args.sentences, len(train))))
        batched = decoding.batch_sentences
        if task == "tts":
            searches = [("greedy mel", None)]
        else:
            searches = [(f"beam {decoding.beam}", decoding.beam), ("greedy", 1)]
        warm = split.select(range(min(2, len(split))))
        for name, beam in searches:
            rows = {}
            for batch in (batched, 1):
                if task == "tts":
                    run_mel(model, warm, decoding, batch, config["seed"])  # warm-up
                    rows[batch] = run_mel(model, split, decoding, batch, config["seed"])
                else:
                    run_tokens(model, warm, decoding, beam, batch)
                    rows[batch] = run_tokens(model, split, decoding, beam, batch)
            for batch in (batched, 1):
                row = rows[batch]
                speedup = rows[1]["seconds"] / row["seconds"]
                same = "-"
                if row["outputs"] is not None:
                    equal = sum(
                        a == b for a, b in zip(row["outputs"], rows[1]["outputs"], strict=True)
                    )
                    same = f"{equal / len(split):.0%}"
                print(
                    f"{task:<5} {name:<14} {batch:>5} {len(split):>5} {row['seconds']:>8.2f} "
                    f"{len(split) / row['seconds']:>8.1f} {row['units'] / row['seconds']:>9.0f} "
                    f"{unit:<7} {speedup:>7.1f}x {row['at_limit']:>8} {same:>6}"
                )
    print(
        "\nbatch: sentences per batch (the config's batch_sentences, or 1); units/s: generated "
        "tokens (EOS excluded) or mel frames per second;\nspeed-up: against batch 1; at limit: "
        "outputs that reached the maximum length or never stopped (the distill rule drops them);"
        "\nsame: share of outputs identical to the unbatched run's (token search only)."
    )


if __name__ == "__main__":
    main()
