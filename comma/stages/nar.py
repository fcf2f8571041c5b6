"""Train and evaluate the NAR models of the paper's Tables 2-4.

The entry points of the `train_nar` and `evaluate_nar` rules, usable from Python:

* :func:`train_nar` trains NAT, NAR-ASR or FastSpeech (``comma.models.nat``,
  ``nar_asr``, ``fastspeech``) on a training
  corpus, raw or the teacher's distillation of it (KD), with or without the alignment
  constraint (AC), whose per-sentence teacher alignment
  (:class:`comma.alignment.store.TeacherAlignment`)
  it attaches to the model.
* :func:`evaluate_nar` generates the test set in one parallel pass per batch and scores it with
  the teachers' metrics (BLEU and WER; MCD and mel L1 after DTW, with Griffin-Lim samples).

The `tables` rule lays out Tables 2-4 from their metrics (:mod:`comma.analysis.tables`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from comma.data.packed import Split, load_split
from comma.data.vocab import Vocabulary
from comma.engine.decode import map_split
from comma.io import read_json, write_json, write_lines
from comma.models.nar_asr import MASK_ITERATIONS, MASK_THRESHOLD
from comma.stages.scoring import (
    ids_to_text,
    load_for_evaluation,
    read_references,
    score_generated_mels,
    text_scores,
    write_samples,
)
from comma.stages.training import load_alignment_for, train_model
from comma.threads import torch_threads

log = logging.getLogger(__name__)

CONSTRAINTS = ("ac", "noac")


def train_nar(
    task: str,
    data_dir: str | Path,
    train_path: str | Path,
    model_path: str | Path,
    metrics_path: str | Path,
    *,
    constraint: str,
    architecture: dict,
    alignment_path: str | Path | None = None,
    alignment_summary_path: str | Path | None = None,
    **settings,
) -> None:
    """Train the NAR model of `task` on the split `train_path` (vocabularies from `data_dir`;
    :func:`comma.stages.training.train_model`).

    `constraint` "ac" needs `alignment_path`, the teacher's alignment of that same split; TTS
    utterances the alignment summary lists as ``low_focus`` are left out (logged). `settings`:
    training, seed, resume_path, threads, as :func:`train_model` takes them."""
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
    constrained = constraint == "ac"
    if constrained and alignment_path is None:
        raise ValueError("the ac variant needs the teacher alignment of its training corpus")
    split = load_split(train_path)
    alignment = None
    if constrained:
        alignment = load_alignment_for(alignment_path, split, train_path)
        dropped = []
        if alignment_summary_path is not None:
            dropped = read_json(alignment_summary_path).get("low_focus", [])
        if dropped:
            keep = sorted(set(range(len(split))) - set(dropped))
            log.warning(
                "left out %d of %d utterances whose teacher attention has a focus rate under "
                "the threshold",
                len(dropped),
                len(split),
            )
            split, alignment = split.select(keep), alignment.select(keep)
    train_model(
        "nar",
        task,
        data_dir,
        model_path,
        metrics_path,
        architecture={**architecture, "constraint": constrained},
        split=split,
        alignment=alignment,
        inputs={
            "train": train_path,
            **({"alignment": alignment_path} if constrained else {}),
            **(
                {"alignment_summary": alignment_summary_path}
                if constrained and alignment_summary_path
                else {}
            ),
        },
        **settings,
    )


@dataclass
class _Generated:
    tokens: list[list[int]] | None
    frames: list[torch.Tensor] | None
    seconds: float


@torch.no_grad()
def _generate_split(
    model: torch.nn.Module, split: Split, batch_sentences: int, **decoding
) -> _Generated:
    """The model's output for every sentence of `split`, in split order (`decoding`: the
    family's own generate keywords)."""
    device = next(model.parameters()).device

    def generate(batch):
        generated = model.generate(batch.src.to(device), batch.src_lengths.to(device), **decoding)
        return generated.tokens if generated.tokens is not None else generated.frames

    outputs, seconds = map_split(split, batch_sentences, generate, desc="generate")
    if model.config.task == "tts":
        return _Generated(None, [f.float().cpu() for f in outputs], seconds)
    return _Generated([list(map(int, t)) for t in outputs], None, seconds)


def evaluate_nar(
    task: str,
    model_path: str | Path,
    data_dir: str | Path,
    metrics_path: str | Path,
    hypotheses_path: str | Path,
    *,
    batch_sentences: int,
    evaluation: dict | None = None,
    features: dict | None = None,
    samples_dir: str | Path | None = None,
    seed: int = 0,
    threads: int | None = None,
    test_window: str = "none",
    mask_iterations: int | None = None,
    mask_threshold: float | None = None,
) -> dict[str, Any]:
    """Generate the test split of `data_dir` with a trained NAR model and score it.

    NMT/ASR: hypotheses as text (BPE removed) to `hypotheses_path`, BLEU and WER against
    ``test.ref.txt``, and how often the predicted length is the reference's. TTS: the generated
    split (``save_split`` format) to `hypotheses_path`, MCD and mel L1 after DTW against the
    recordings (``evaluation``: mcd_cepstra, griffin_lim_wavs, griffin_lim_iters; ``features``:
    f_min, f_max), the length ratio, and Griffin-Lim WAVs in `samples_dir`. NAR-ASR's
    decoding (:meth:`comma.models.nar_asr.NARASR.generate`, recorded in the metrics):
    `test_window` ("none", the paper, or "ctc"), and for a Mask-CTC model `mask_iterations` and
    `mask_threshold` (None: generate's defaults)."""
    with torch_threads(threads):
        data_dir = Path(data_dir)
        mask_ctc = {"mask_iterations": mask_iterations, "mask_threshold": mask_threshold}
        if task != "asr":
            given = {"test_window": test_window} if test_window != "none" else {}
            given.update({key: value for key, value in mask_ctc.items() if value is not None})
            if given:
                raise ValueError(f"{', '.join(given)}: NAR-ASR's decoding, not {task}'s")
        model, test, precision = load_for_evaluation("nar", task, model_path, data_dir)
        decoding = {}
        if task == "asr":
            decoding["test_window"] = test_window
            if model.config.mask_ctc:  # the one-pass model has no Mask-Predict passes
                defaults = {"mask_iterations": MASK_ITERATIONS, "mask_threshold": MASK_THRESHOLD}
                decoding.update({k: defaults[k] if v is None else v for k, v in mask_ctc.items()})
        torch.manual_seed(seed)
        with precision:
            generated = _generate_split(model, test, batch_sentences, **decoding)
        ref_len = test.tgt.lengths.double()
        if task == "tts":
            if evaluation is None or features is None:
                raise ValueError("TTS evaluation needs the `evaluation` and `features` settings")
            scores = score_generated_mels(
                test, generated.frames, evaluation, generated.seconds, hypotheses_path
            )
            if samples_dir is not None:
                stats = read_json(data_dir / "stats.json")["features"]
                write_samples(
                    Path(samples_dir), test, generated.frames, stats, features, evaluation, seed
                )
        else:
            vocab = Vocabulary.load(data_dir / "dict.tgt.txt")
            references = read_references(data_dir / "test.ref.txt", len(test))
            texts = [ids_to_text(tokens, vocab) for tokens in generated.tokens]
            write_lines(hypotheses_path, texts)
            gen_len = torch.tensor([len(t) for t in generated.tokens], dtype=torch.float64)
            scores = {
                **text_scores(texts, references),
                "length_accuracy": float((gen_len == ref_len).double().mean()),
                "length_ratio": float((gen_len / ref_len).mean()),
                "mean_hyp_tokens": float(gen_len.mean()),
            }
        metrics = {
            "task": task,
            "model": str(model_path),
            "constraint": bool(model.config.constraint),
            **decoding,
            "test_sentences": len(test),
            **scores,
            "generate_seconds": generated.seconds,
            "sentences_per_second": len(test) / generated.seconds,
        }
        write_json(metrics_path, metrics)
        log.info("%s NAR model on %d test sentences: %s", task, len(test), scores)
        return metrics
