"""Benchmark: what an ASR encoder transcribes without any decoder, in one run.

The CTC head of each model, read greedily (best id per frame, runs merged, blanks dropped:
:func:`comma.models.nar_asr.ctc_collapse`), scored by the workflow's WER against the
references of a study's validation and test splits (``_splits.py``). Models: the study's AR
ASR teacher (joint CTC, ``models.teacher.asr.ctc_weight``) and any Mask-CTC NAR-ASR model
files given. The teacher's own CTC read-out is the non-autoregressive transcript of an
encoder as large as the NAR student's: how far the student can get from the teacher's WER
without a better encoder.

    .venv/bin/python benchmarks/asr_ctc_readout.py --study DIR \\
        [DIR/work/nar/asr/raw_ac/seed1/model.pt ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from _splits import split_dirs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.data.batching import collate, make_batches  # noqa: E402
from comma.data.packed import load_split  # noqa: E402
from comma.data.vocab import Vocabulary  # noqa: E402
from comma.models.nar_asr import ctc_collapse  # noqa: E402
from comma.models.registry import load_nar, load_teacher  # noqa: E402
from comma.stages.scoring import ids_to_text, read_references, text_scores  # noqa: E402


@torch.no_grad()
def encoder_states(model, src: torch.Tensor, src_len: torch.Tensor):
    """(encoder output ``[B, M, d]``, its lengths ``[B]``) of an AR teacher or a NAR-ASR."""
    encoded = model.encode(src, src_len)
    if isinstance(encoded, tuple):  # NAR-ASR: (memory, lengths, pre-net output)
        return encoded[0], encoded[1]
    return encoded.hidden, encoded.lengths


@torch.no_grad()
def ctc_readout(model, split, vocab: Vocabulary, batch_sentences: int = 32) -> list[str]:
    """The greedy CTC transcript of every sentence of `split`, in split order."""
    if getattr(model, "ctc_output", None) is None:
        raise SystemExit(f"{type(model).__name__} has no CTC head")
    transcripts = [""] * len(split)
    sizes = split.src.lengths.numpy()
    for indices in make_batches(sizes, max_sentences=batch_sentences, shuffle=False):
        batch = collate(split, indices)
        hidden, lengths = encoder_states(model, batch.src, batch.src_lengths)
        probs, ids = model.ctc_output(hidden).float().softmax(-1).max(-1)  # [B, M]
        tokens, _, counts = ctc_collapse(ids, probs, lengths)
        for row, k in enumerate(indices):
            transcripts[k] = ids_to_text(tokens[row, : counts[row]].tolist(), vocab)
    return transcripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a study directory")
    parser.add_argument("models", type=Path, nargs="*", help="Mask-CTC NAR-ASR model.pt files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = args.study / "work" / "data" / "asr"
    vocab = Vocabulary.load(data / "dict.tgt.txt")
    teacher_path = args.study / "work" / "teacher" / "asr" / "model.pt"
    models = [("AR teacher", teacher_path, load_teacher(teacher_path))]
    models += [(path.parent.parent.name, path, load_nar(path)) for path in args.models]
    metrics = args.study / "results" / "teacher" / "asr" / "metrics.json"
    if metrics.is_file():
        wer = json.loads(metrics.read_text())["wer"]
        print(f"the AR teacher's beam-search test WER ({metrics}): {wer:.1f} %")
    print("| model | file | split | CTC read-out WER % |\n|---|---|---|---:|")
    with tempfile.TemporaryDirectory(prefix="ctc_readout_") as tmp:
        for split_name, split_dir in split_dirs(data, Path(tmp)).items():
            split = load_split(split_dir / "test.pt")
            references = read_references(split_dir / "test.ref.txt", len(split))
            for name, path, model in models:
                wer = text_scores(ctc_readout(model.eval(), split, vocab), references)["wer"]
                print(f"| {name} | {path} | {split_name} | {wer:.1f} |", flush=True)


if __name__ == "__main__":
    main()
