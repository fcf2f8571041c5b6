"""Benchmark: what more training steps buy a NAR model, on validation data, in one run.

Trains one NAR model of a study (`--task`, `--corpus`, `--constraint`, `--seed`; the
architecture and schedule of config.yaml, or of `--configfile`) with the workflow's own
trainer (:func:`comma.stages.nar.train_nar`), stopping at every step count of `--steps` in
turn: each stop saves the model, and the next resumes from the run's checkpoint (``max_steps``
is a setting a run may change and still resume, so the stops do not change the run). Each
saved model is scored by the workflow's evaluation (:func:`comma.stages.nar.evaluate_nar`) on
the validation split, the instrument's own quality that a setting is chosen by, and on the test
split, with the training CPU seconds up to that stop.

    .venv/bin/python benchmarks/nar_steps.py --study DIR --task tts --corpus kd \\
        --constraint ac --steps 1500 3000 4500 [--seed 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _splits import split_dirs
from study_time import mm_peak

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.stages.nar import evaluate_nar, train_nar  # noqa: E402
from comma.workflow_config import family_settings, nar_decoding  # noqa: E402

# The metrics printed per task: (key in evaluate_nar's metrics, column title).
COLUMNS = {
    "nmt": (("bleu", "BLEU"), ("wer", "WER %"), ("length_ratio", "length ratio")),
    "asr": (("wer", "WER %"), ("bleu", "BLEU"), ("length_ratio", "length ratio")),
    "tts": (("mcd", "MCD dB"), ("mel_l1_dtw", "mel L1"), ("length_ratio", "length ratio")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a study directory")
    parser.add_argument("--task", choices=sorted(COLUMNS), required=True)
    parser.add_argument("--corpus", choices=("raw", "kd"), required=True)
    parser.add_argument("--constraint", choices=("ac", "noac"), required=True)
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="stops, ascending")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temporary dir)")
    args = parser.parse_args()
    if args.steps != sorted(set(args.steps)):
        parser.error("--steps must be ascending and distinct")
    torch.set_num_threads(1)  # as a mini job runs
    config = yaml.safe_load(args.configfile.read_text())
    architecture, training = family_settings(config, "nar", args.task)
    data = args.study / "work" / "data" / args.task
    train_path = data / ("train.pt" if args.corpus == "raw" else f"{args.corpus}/train.pt")
    align = args.study / "work" / "align" / args.task / args.corpus
    ac = args.constraint == "ac"
    evaluation = {}
    if args.task == "tts":
        evaluation = dict(evaluation=config["evaluation"]["tts"], features=config["features"])
    else:
        evaluation = nar_decoding(config, args.task)
    with tempfile.TemporaryDirectory(prefix="nar_steps_") as tmp:
        out = args.out or Path(tmp) / "run"
        out.mkdir(parents=True, exist_ok=True)
        dirs = split_dirs(data, Path(tmp) / "splits")
        titles = [title for _, title in COLUMNS[args.task]]
        print(
            f"{args.task} {args.corpus}_{args.constraint} seed {args.seed}, "
            f"{args.configfile.name}; torch.mm peak on 1 thread {mm_peak() / 1e9:.1f} GFLOP/s"
        )
        cells = " | ".join(f"valid {t} | test {t}" for t in titles)
        print(f"| steps | train CPU s | {cells} |")
        print("|---:|---:|" + "---:|---:|" * len(titles))
        cpu = 0.0
        for steps in args.steps:
            start = time.process_time()
            train_nar(
                args.task,
                data,
                train_path,
                out / "model.pt",
                out / "metrics.jsonl",
                constraint=args.constraint,
                architecture=architecture,
                alignment_path=align / "alignment.pt" if ac else None,
                alignment_summary_path=align / "summary.json" if ac else None,
                training={**training, "max_steps": steps},
                seed=args.seed,
                threads=1,
            )
            cpu += time.process_time() - start
            saved = out / f"model_{steps}.pt"
            shutil.copyfile(out / "model.pt", saved)
            scores = {}
            for split, split_dir in dirs.items():
                scores[split] = evaluate_nar(
                    args.task,
                    saved,
                    split_dir,
                    Path(tmp) / "metrics.json",
                    Path(tmp) / ("hypotheses.pt" if args.task == "tts" else "hypotheses.txt"),
                    batch_sentences=int(config["decoding"][args.task]["batch_sentences"]),
                    seed=args.seed,
                    threads=1,
                    **evaluation,
                )
            cells = [
                f"{scores['valid'][key]:.3f} | {scores['test'][key]:.3f}"
                for key, _ in COLUMNS[args.task]
            ]
            print(f"| {steps} | {cpu:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
