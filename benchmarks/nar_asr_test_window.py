"""Benchmark: NAR-ASR (Mask-CTC) decoded without and with the test-time window of its own CTC
alignment (``evaluation.asr.nar_test_window``: none, the paper's decoding, against ctc), on
the validation and test splits of a study's prepared ASR corpus, in one run.

Every model is decoded with each window by the workflow's own evaluation
(:func:`comma.stages.nar.evaluate_nar`), on the validation split as on the test split
(``_splits.py``).

    .venv/bin/python benchmarks/nar_asr_test_window.py --study DIR \
        DIR/work/nar/asr/raw_ac/seed1/model.pt [more model.pt ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _splits import split_dirs

from comma.stages.nar import evaluate_nar

WINDOWS = ("none", "ctc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a study directory")
    parser.add_argument("models", type=Path, nargs="+", help="NAR-ASR model.pt files")
    parser.add_argument("--batch-sentences", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="test_window_") as tmp:
        scratch = Path(tmp)
        dirs = split_dirs(args.study / "work/data/asr", scratch)
        print("| model | test_window | split | WER % | BLEU | length ratio |")
        print("|---|---|---|---:|---:|---:|")
        for model in args.models:
            for window in WINDOWS:
                for split, data_dir in dirs.items():
                    scores = evaluate_nar(
                        "asr",
                        model,
                        data_dir,
                        scratch / "metrics.json",
                        scratch / "hypotheses.txt",
                        batch_sentences=args.batch_sentences,
                        threads=1,
                        test_window=window,
                    )
                    print(
                        f"| {model} | {window} | {split} | {scores['wer']:.1f} | "
                        f"{scores['bleu']:.2f} | {scores['length_ratio']:.3f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
