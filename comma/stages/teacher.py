"""The AR teachers' stage: train (rule ``train_teacher``) and evaluate (rules
``evaluate_teacher``, ``evaluate_teacher_tts``) the teacher of each task.

Evaluation decodes the test set (beam search for NMT and ASR, greedy mel generation with the
stop token for TTS), scores it with :mod:`comma.stages.scoring` (BLEU and WER; MCD and mel L1
after DTW, Griffin-Lim samples) and puts a trivial baseline beside every score.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comma.data.batching import collate, make_batches
from comma.data.packed import Split, load_split
from comma.data.vocab import Vocabulary
from comma.engine.decode import decode_split, generate_split
from comma.engine.decode_settings import DecodingSettings
from comma.io import read_json, write_json, write_lines
from comma.models.teacher import TransformerTTS
from comma.models.teacher_base import TokenTeacher
from comma.stages.scoring import (
    ids_to_text,
    load_for_evaluation,
    mel_distance,
    read_references,
    score_generated_mels,
    text_scores,
    write_samples,
)
from comma.stages.training import train_model
from comma.threads import torch_threads

__all__ = ["train_teacher", "evaluate_teacher"]

log = logging.getLogger(__name__)


def train_teacher(
    task: str, data_dir: str | Path, model_path: str | Path, metrics_path: str | Path, **settings
) -> None:
    """Train the AR teacher of `task` on `data_dir`/train.pt: :func:`train_model` of the
    ``teacher`` family (`settings`: architecture, training, seed, resume_path, threads)."""
    train_model("teacher", task, data_dir, model_path, metrics_path, **settings)


def _most_frequent_target(split: Split, vocab: Vocabulary) -> str:
    """The most frequent target sentence of a split (ties: the first seen), as text."""
    texts = [ids_to_text(split.tgt[k].tolist(), vocab) for k in range(len(split))]
    return Counter(texts).most_common(1)[0][0]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _teacher_forced_token_nll(model: TokenTeacher, split: Split, batch_sentences: int) -> float:
    """Mean per-token negative log-likelihood (EOS included) under teacher forcing."""
    total, tokens = 0.0, 0
    sizes = np.maximum(split.src.lengths.numpy(), split.tgt.lengths.numpy())
    for indices in make_batches(sizes, max_sentences=batch_sentences, shuffle=False):
        batch = collate(split, indices).to(_device(model))
        _, logs = model.loss(batch)
        # loss() reports the unsmoothed nll as a mean over its units
        total += logs["nll"] * logs["units"]
        tokens += int(logs["units"])
    return total / tokens


@torch.no_grad()
def _teacher_forced_mel_l1(model: TransformerTTS, split: Split, batch_sentences: int) -> dict:
    """Mean L1 of the mel linear and post-net frames against the truth, teacher forced, in the
    model's units (the training loss's: log-mel, or per-bin std with ``normalize_mel``)."""
    sums = {"mel_l1": 0.0, "postnet_l1": 0.0}
    frames = 0
    sizes = split.tgt.lengths.numpy()
    for indices in make_batches(sizes, max_sentences=batch_sentences, shuffle=False):
        _, logs = model.loss(collate(split, indices).to(_device(model)))
        for key in sums:
            sums[key] += logs[key] * logs["units"]
        frames += int(logs["units"])
    return {key: value / frames for key, value in sums.items()}


def _evaluate_text(
    task: str,
    model: TokenTeacher,
    data_dir: Path,
    test: Split,
    hypotheses_path: Path,
    decoding: DecodingSettings,
) -> dict[str, Any]:
    vocab = Vocabulary.load(data_dir / "dict.tgt.txt")
    references = read_references(data_dir / "test.ref.txt", len(test))
    hypotheses, seconds = decode_split(model, test, **decoding.arguments())
    texts = [ids_to_text(h.tokens, vocab) for h in hypotheses]
    write_lines(hypotheses_path, texts)
    scores = text_scores(texts, references)
    nll = _teacher_forced_token_nll(model, test, decoding.batch_sentences)
    # Baselines: what BLEU/WER a model that learned nothing would get on this test set.
    if task == "nmt":
        src_vocab = Vocabulary.load(data_dir / "dict.src.txt")
        copied = [ids_to_text(test.src[k].tolist(), src_vocab) for k in range(len(test))]
        baseline_name, baseline_texts = "copy_source", copied
    else:
        train_split = load_split(data_dir / "train.pt")
        constant = _most_frequent_target(train_split, vocab)
        baseline_name, baseline_texts = "most_frequent_training_transcript", [constant] * len(test)
    baseline = text_scores(baseline_texts, references)
    return {
        **scores,
        "teacher_forced_nll": nll,
        "teacher_forced_ppl": math.exp(nll),
        "decode_seconds": seconds,
        "sentences_per_second": len(test) / seconds,
        "mean_hyp_tokens": float(np.mean([len(h.tokens) for h in hypotheses])),
        "baseline": {
            "name": baseline_name,
            "bleu": baseline["bleu"],
            "wer": baseline["wer"],
        },
    }


def _evaluate_speech(
    model: TransformerTTS,
    data_dir: Path,
    test: Split,
    hypotheses_path: Path,
    decoding: DecodingSettings,
    evaluation: dict,
    features: dict,
    samples_dir: Path | None,
    seed: int,
) -> dict[str, Any]:
    torch.manual_seed(seed)  # the decoder pre-net's inference-time dropout
    generated, seconds = generate_split(model, test, **decoding.arguments())
    scores = score_generated_mels(test, generated.frames, evaluation, seconds, hypotheses_path)
    n_cepstra = int(evaluation["mcd_cepstra"])
    # Baseline: the mean training frame held for the true length (a model that learned nothing
    # but the average spectrum, and is given the right duration).
    train_split = load_split(data_dir / "train.pt")
    mean_frame = train_split.tgt.values.double().mean(dim=0).float()  # [n_mels]
    baseline = [
        mel_distance(
            test.tgt[k].numpy(), mean_frame.expand(len(test.tgt[k]), -1).numpy(), n_cepstra
        )
        for k in range(len(test))
    ]
    teacher_forced = _teacher_forced_mel_l1(model, test, decoding.batch_sentences)
    stats = read_json(data_dir / "stats.json")["features"]
    if samples_dir is not None:
        write_samples(samples_dir, test, generated.frames, stats, features, evaluation, seed)
    return {
        **scores,
        "teacher_forced_mel_l1": teacher_forced["mel_l1"],
        "teacher_forced_postnet_l1": teacher_forced["postnet_l1"],
        "teacher_forced_l1_units": (
            "per-bin std of the training frames (global CMVN)"
            if model.config.normalize_mel
            else "log-mel"
        ),
        "stopped_fraction": float(np.mean(generated.stopped)),
        "generate_seconds": seconds,
        "baseline": {
            "name": "mean_training_frame_at_true_length",
            "mcd": float(np.mean([d.mcd for d in baseline])),
            "mel_l1_dtw": float(np.mean([d.l1 for d in baseline])),
        },
    }


def evaluate_teacher(
    task: str,
    model_path: str | Path,
    data_dir: str | Path,
    metrics_path: str | Path,
    hypotheses_path: str | Path,
    *,
    decoding: dict,
    evaluation: dict | None = None,
    features: dict | None = None,
    samples_dir: str | Path | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Decode the test split of `data_dir` with a trained teacher and score it.

    NMT/ASR: beam search (``decoding``: beam, lenpen, max_len_a, max_len_b, batch_sentences),
    hypotheses as text (BPE removed) to `hypotheses_path`, BLEU and WER against
    ``test.ref.txt``, the teacher-forced perplexity, and a trivial baseline (NMT: copy the
    source; ASR: the most frequent training transcript). TTS: mel generation (``decoding``:
    max_len_a, max_len_b, stop_threshold, batch_sentences), the generated split to
    `hypotheses_path` (``save_split`` format), MCD and mel L1 (``evaluation``: mcd_cepstra,
    griffin_lim_wavs, griffin_lim_iters; ``features``: f_min, f_max of the log-mel), a
    mean-frame baseline, and Griffin-Lim WAVs in `samples_dir`. Writes `metrics_path` (JSON)."""
    with torch_threads(threads):
        data_dir = Path(data_dir)
        # bf16 on a GPU, as training; the search itself scores in float32
        model, test, precision = load_for_evaluation("teacher", task, model_path, data_dir)
        settings = DecodingSettings.from_config(decoding, task)
        started = time.perf_counter()
        with precision:
            if task == "tts":
                if evaluation is None or features is None:
                    raise ValueError(
                        "TTS evaluation needs the `evaluation` and `features` settings"
                    )
                scores = _evaluate_speech(
                    model,
                    data_dir,
                    test,
                    Path(hypotheses_path),
                    settings,
                    evaluation,
                    features,
                    Path(samples_dir) if samples_dir is not None else None,
                    seed,
                )
            else:
                scores = _evaluate_text(
                    task, model, data_dir, test, Path(hypotheses_path), settings
                )
        metrics = {
            "task": task,
            "model": str(model_path),
            "test_sentences": len(test),
            "decoding": settings.arguments(),
            **scores,
            "seconds": time.perf_counter() - started,
        }
        write_json(metrics_path, metrics)
        log.info(
            "%s teacher on %d test sentences: %s",
            task,
            len(test),
            {k: v for k, v in metrics.items() if isinstance(v, float)},
        )
        return metrics
