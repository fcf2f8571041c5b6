"""Benchmark: a length-matched control of the cross-task ranking, NMT with a character source.

On the mini preset the tasks share no source/target length ratio (log2(M/N): TTS about -3,
NMT about 0, ASR about +1.7), so the findings' length-matched control (claim 12) cannot
decide whether ASR's R above NMT's is modality or eq. 1's division by the lengths. This
moves NMT alone along M/N and keeps everything else: the same sentences, the same target
(BPE), the same CoMMA and training, with the German source spelled out in characters
(a word boundary is its own symbol). M grows about fourfold, which puts NMT's M/N in ASR's
range. If R rises with M/N at fixed content, the ranking by R is a length effect; the
masked-loss dependency D, which reads neither attention nor lengths, should not move.

Trains raw CoMMA on the character-source corpus for each seed (the mini preset's architecture,
lr, batch and NMT step count; one thread), measures R, T and D on its test split as
`measure_ratio` does, and prints them beside the study's own NMT (BPE source) and ASR raw runs
read from a finished study directory, overall and in the bins of log2(M/N) that NMT-char and
ASR share.

    .venv/bin/python benchmarks/length_matched_control.py --study DIR [--seeds 1 2 3]
        [--out DIR] [--steps N]   # --study: a study directory with work/data/nmt and the raw
                                  # CoMMA runs; --steps: CoMMA steps (default: the preset's)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.analysis.length_control import sentence_means  # noqa: E402
from comma.data.packed import PackedSequences, Split, load_split, save_split  # noqa: E402
from comma.data.vocab import Vocabulary  # noqa: E402
from comma.stages.comma import measure_ratio, train_comma  # noqa: E402
from comma.workflow_config import family_settings  # noqa: E402

WORD_BOUNDARY = "▁"  # sentencepiece's symbol: a space cannot be a dict.txt symbol


def source_characters(pieces: list[str]) -> list[str]:
    """The characters of a BPE-segmented source (subword-nmt's "@@" joins a piece to the
    next), with a boundary symbol between words."""
    words = " ".join(pieces).replace("@@ ", "").removesuffix("@@").split()
    return list(WORD_BOUNDARY.join(words))


def character_source_corpus(nmt: Path, out: Path) -> None:
    """work/data/nmt with its source re-spelled in characters, into `out` (same splits, ids,
    target and target dictionary)."""
    out.mkdir(parents=True, exist_ok=True)
    bpe = Vocabulary.load(nmt / "dict.src.txt")
    spelled = {}
    for name in ("train", "valid", "test"):
        split = load_split(nmt / f"{name}.pt")
        spelled[name] = (split, [source_characters(bpe.decode(s)) for s in _rows(split.src)])
    chars = Vocabulary.build(spelled["train"][1])
    chars.save(out / "dict.src.txt")
    (out / "dict.tgt.txt").write_bytes((nmt / "dict.tgt.txt").read_bytes())
    for name, (split, sentences) in spelled.items():
        src = [torch.tensor(chars.encode(s), dtype=torch.int32) for s in sentences]
        save_split(out / f"{name}.pt", Split(PackedSequences.from_list(src), split.tgt, split.ids))


def _rows(packed: PackedSequences):
    return (packed[k].tolist() for k in range(len(packed)))


def train_and_measure(
    data: Path, run: Path, seed: int, config: dict, steps: int | None
) -> pd.DataFrame:
    architecture, training = family_settings(config, "comma", "nmt")
    if steps:
        training["max_steps"] = steps
    # a finished run resumes at its last step and only rewrites model.pt; a run of other
    # settings (say --steps) is retrained: the checkpoint's fingerprint differs
    train_comma(
        "nmt",
        data,
        run / "model.pt",
        run / "metrics.jsonl",
        architecture=architecture,
        training=training,
        seed=seed,
        threads=1,
        resume_path=run / "resume.pt",
    )
    ratio = config["ratio"]
    measure_ratio(
        run / "model.pt",
        data / "test.pt",
        run / "ratio.csv",
        run / "ratio_heads.csv",
        labels={"task": "nmt", "variant": "charsrc", "seed": seed},
        p_grid=list(ratio["p_grid"]),
        mask_seed=ratio["mask_seed"],
        bootstrap=100,
        sentences_csv=run / "ratio_sentences.csv",
    )
    return pd.read_csv(run / "ratio_sentences.csv")


def per_sentence(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The length control's per-sentence R, T and log2(M/N) (means over the p grid), with D
    of each sentence as a ratio of its losses summed over the p grid."""
    table = table.assign(task=name)
    means = sentence_means(table)
    sums = (
        table.groupby(["task", "seed", "sentence"], sort=True)[["loss_context", "loss_no_target"]]
        .sum()
        .reset_index()
    )
    means = means.merge(sums, on=["task", "seed", "sentence"])
    means["D"] = 1 - means.loss_context / means.loss_no_target
    return means.rename(columns={"task": "setup", "log2_M_over_N": "log2_m_over_n"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a finished study directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("length_matched_control"))
    parser.add_argument("--steps", type=int, help="CoMMA steps (default: the preset's for NMT)")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    data = args.out / "data"
    if not (data / "test.pt").exists():
        character_source_corpus(args.study / "work/data/nmt", data)
    test = load_split(data / "test.pt")
    print(f"character source: {len(Vocabulary.load(data / 'dict.src.txt'))} symbols; test mean "
          f"M {float(test.src.lengths.double().mean()):.1f}, N "
          f"{float(test.tgt.lengths.double().mean()):.1f}")  # fmt: skip
    frames = []
    for seed in args.seeds:
        start = time.perf_counter()
        table = train_and_measure(data, args.out / f"seed{seed}", seed, config, args.steps)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s")
        frames.append(per_sentence(table, "NMT, character source"))
    for task, name in (("nmt", "NMT, BPE source"), ("asr", "ASR")):
        for seed in args.seeds:
            path = args.study / f"work/comma/{task}/raw_noac/seed{seed}/ratio_sentences.csv"
            frames.append(per_sentence(pd.read_csv(path), name))
    sentences = pd.concat(frames, ignore_index=True)

    per_seed = sentences.groupby(["setup", "seed"]).agg(
        R=("R", "mean"),
        T=("T", "mean"),
        context=("loss_context", "sum"),
        no_target=("loss_no_target", "sum"),
        log2_m_over_n=("log2_m_over_n", "mean"),
    )
    # D of a corpus is a ratio of the summed losses (comma.dependency.corpus_dependency)
    per_seed.insert(2, "D", 1 - per_seed.pop("context") / per_seed.pop("no_target"))
    print("\n== per seed, means over the test sentences and the p grid")
    print(per_seed.round(3).to_markdown())
    print("\n== over seeds: mean (seed std)")
    summary = per_seed.groupby("setup").agg(["mean", "std"]).round(3)
    print(summary.to_markdown())

    # the findings' length control's bins (ratio.length_control in the config)
    width = config["ratio"]["length_control"]["bin_width"]
    least = config["ratio"]["length_control"]["min_sentences"]
    sentences["bin"] = np.floor(sentences.log2_m_over_n / width) * width
    counts = sentences.groupby(["setup", "seed", "bin"]).size().unstack("setup").fillna(0)
    shared = counts[(counts.get("ASR", 0) >= least)
                    & (counts.get("NMT, character source", 0) >= least)]  # fmt: skip
    print(f"\n== bins of log2(M/N) (width {width}) with >= {least} sentences of "
          "both ASR and NMT with a character source, per seed")  # fmt: skip
    if shared.empty:
        print("none")
        return
    keep = sentences.set_index(["seed", "bin"]).index.isin(shared.index)
    binned = (
        sentences[keep & sentences.setup.isin(["ASR", "NMT, character source"])]
        .groupby(["seed", "bin", "setup"])[["R", "T", "D"]]
        .mean()
        .unstack("setup")
    )
    print(binned.round(3).to_markdown())
    by_seed = binned.groupby("seed").mean()
    for measure in ("R", "T", "D"):
        gap = by_seed[(measure, "ASR")] - by_seed[(measure, "NMT, character source")]
        print(f"{measure}: ASR - NMT(char) over the shared bins, per seed: "
              f"{', '.join(f'{g:+.3f}' for g in gap)}")  # fmt: skip


if __name__ == "__main__":
    main()
