"""Accuracy of generated sequences (paper Table 2) shared by every model's evaluation.

Text (NMT, ASR), both metrics for both tasks as in Table 2:

* BLEU with sacrebleu on BPE-removed, Moses-tokenized, lowercased text, with sacrebleu's own
  tokenizer off (``tokenize="none"``): the "tokenized BLEU" of fairseq's ``score.py`` /
  ``multi-bleu.perl`` that IWSLT14 papers (and this one) report, NOT sacrebleu's detokenized
  standard score. The sacrebleu signature is stored with every score.
* WER with jiwer (corpus level: total edits / total reference words) on the same text.

Speech (TTS): the paper's MOS needs listeners and WaveGlow; we replace it with objective
distances between generated and ground-truth log-mel spectrograms, aligned by DTW (librosa)
since a free-running AR model's length differs from the recording's:

* MCD, mel-cepstral distortion in dB: the mel-cepstrum c_1..c_K of each frame's natural-log
  mel magnitudes S_0..S_{N-1}, in the real-cepstrum convention ``log S_n = c_0 + 2 sum_k c_k
  cos(pi k (n + 1/2) / N)`` (``c_k = DCT-II(log S)_k / 2N``; c_0, the energy, excluded); per
  aligned frame pair ``10 / ln 10 * sqrt(2 * sum_k (c_k - c'_k)^2)``, averaged over the DTW
  path. The mel filterbank stands in for SPTK's all-pass frequency warping, so values are
  comparable within this study, and only roughly with published MCDs.
* mel L1: mean absolute difference of the log-mel frames along the same path; and the
  teacher-forced L1 of the post-net output on the ground-truth length (no alignment needed).

Audio samples: Griffin-Lim (librosa's ``mel_to_stft``, the mel filterbank inverted by
non-negative least squares, then ``griffinlim`` phase reconstruction from seeded phases) with
the exact STFT and mel settings of the features, written as 16-bit WAV with soundfile. They
are for listening, not for scoring.


"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import librosa
import numpy as np
import scipy.fft
import soundfile
import torch
from sacrebleu.metrics import BLEU

from comma.data.packed import PackedSequences, Split, load_split, save_split
from comma.data.text import BpeSegmenter
from comma.data.vocab import Vocabulary
from comma.engine.device import for_inference
from comma.errors import InputError
from comma.io import atomic_path
from comma.models.registry import load_model

__all__ = [
    "corpus_bleu",
    "word_error_rate",
    "text_scores",
    "mel_cepstra",
    "MelDistance",
    "mel_distance",
    "griffin_lim",
    "write_wav",
    "score_generated_mels",
    "ids_to_text",
    "read_references",
    "griffin_lim_settings",
    "write_samples",
]

log = logging.getLogger(__name__)

MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)  # dB per unit of cepstral distance


def load_for_evaluation(
    family: str,
    task: str,
    model_path: str | Path,
    data_dir: str | Path,
) -> tuple[torch.nn.Module, Split, contextlib.AbstractContextManager]:
    """What every evaluation of a trained model starts with: the model of `family` saved at
    `model_path` on this process's device, checked to be one of `task`, the test split of
    `data_dir`, and the precision to run the model in
    (:func:`comma.engine.device.for_inference`)."""
    model, precision = for_inference(load_model(model_path, family))
    if model.config.task != task:
        noun = "teacher" if family == "teacher" else "model"
        raise ValueError(f"{model_path} is a {model.config.task} {noun}, not {task}")
    return model, load_split(Path(data_dir) / "test.pt"), precision


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("no sentences to score")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Tokenized corpus BLEU (sacrebleu, ``tokenize="none"``) of whitespace-tokenized text:
    score, n-gram precisions, brevity penalty, lengths and the sacrebleu signature."""
    _check_pairs(hypotheses, references)
    metric = BLEU(tokenize="none", force=True)  # tokenized on purpose: no warning
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": score.score,
        "precisions": list(score.precisions),
        "brevity_penalty": score.bp,
        "hyp_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": str(metric.get_signature()),
    }


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus WER (jiwer): (substitutions + deletions + insertions) / reference words."""
    _check_pairs(hypotheses, references)
    if any(not r.strip() for r in references):
        raise ValueError("WER needs non-empty references")
    out = jiwer.process_words(list(references), list(hypotheses))
    return {
        "wer": out.wer,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "reference_words": out.hits + out.substitutions + out.deletions,
    }


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """BLEU and WER (x100, as Table 2 prints them) with their details."""
    bleu = corpus_bleu(hypotheses, references)
    wer = word_error_rate(hypotheses, references)
    return {
        "bleu": bleu["bleu"],
        "wer": 100.0 * wer["wer"],
        "bleu_details": bleu,
        "wer_details": wer,
    }


def mel_cepstra(log_mel: np.ndarray, n_cepstra: int) -> np.ndarray:
    """Natural-log mel magnitudes ``[T, N]`` -> mel-cepstra ``c_1..c_K`` ``[T, K]`` (see the
    module docstring: ``c_k = DCT-II(log S)_k / 2N``)."""
    if log_mel.ndim != 2 or not 1 <= n_cepstra < log_mel.shape[1]:
        raise ValueError(
            f"need log-mel [T, n_mels] and 1 <= n_cepstra < n_mels, got {log_mel.shape} "
            f"and {n_cepstra}"
        )
    n_mels = log_mel.shape[1]
    cepstra = scipy.fft.dct(log_mel, type=2, norm=None, axis=1) / (2 * n_mels)  # [T, N]
    return cepstra[:, 1 : n_cepstra + 1]


@dataclass(frozen=True)
class MelDistance:
    mcd: float  # dB, mean over the DTW path
    l1: float  # mean |log-mel difference| over the DTW path
    path_length: int


def mel_distance(reference: np.ndarray, generated: np.ndarray, n_cepstra: int) -> MelDistance:
    """MCD and mel L1 between two log-mel sequences ``[T1, n]``, ``[T2, n]`` aligned by DTW on
    their mel-cepstra (Euclidean cost, librosa's default steps)."""
    reference = np.asarray(reference, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    if reference.ndim != 2 or generated.ndim != 2 or reference.shape[1] != generated.shape[1]:
        raise ValueError(f"mel shapes differ: {reference.shape} vs {generated.shape}")
    if not len(reference) or not len(generated):
        raise ValueError("cannot compare an empty mel sequence")
    ref_cep = mel_cepstra(reference, n_cepstra)
    gen_cep = mel_cepstra(generated, n_cepstra)
    _, path = librosa.sequence.dtw(X=ref_cep.T, Y=gen_cep.T, metric="euclidean")  # [P, 2]
    ref_idx, gen_idx = path[:, 0], path[:, 1]
    per_pair = np.linalg.norm(ref_cep[ref_idx] - gen_cep[gen_idx], axis=1)  # [P]
    l1 = np.abs(reference[ref_idx] - generated[gen_idx]).mean()
    return MelDistance(float(MCD_SCALE * per_pair.mean()), float(l1), int(len(path)))


def griffin_lim(
    log_mel: np.ndarray | torch.Tensor,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    win_length: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    n_iter: int = 60,
    seed: int = 0,
) -> np.ndarray:
    """Log-mel magnitudes ``[T, n_mels]`` (``comma.data.audio.LogMel``'s features) -> float32
    audio ``[hop_length * (T - 1)]`` by mel-filterbank inversion and Griffin-Lim, with the
    features' STFT settings (Hann window, centred frames) and Slaney mel filters."""
    mel = np.exp(np.asarray(log_mel, dtype=np.float64)).T  # [n_mels, T] magnitudes
    if mel.ndim != 2 or mel.shape[1] < 2:
        raise ValueError(f"need log-mel [T >= 2, n_mels], got {tuple(mel.T.shape)}")
    magnitudes = librosa.feature.inverse.mel_to_stft(
        mel,
        sr=sample_rate,
        n_fft=n_fft,
        power=1.0,
        fmin=f_min,
        fmax=f_max,
        norm="slaney",
        htk=False,
    )  # [1 + n_fft / 2, T], non-negative least squares through the mel filterbank
    audio = librosa.griffinlim(
        magnitudes,
        n_iter=n_iter,
        hop_length=hop_length,
        win_length=win_length,
        n_fft=n_fft,
        window="hann",
        center=True,
        pad_mode="reflect",
        length=hop_length * (mel.shape[1] - 1),
        init="random",
        random_state=seed,  # the initial phases: the same audio on every run
    )
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, written atomically."""
    with atomic_path(path) as tmp:
        soundfile.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")


def ids_to_text(ids: Sequence[int], vocab: Vocabulary) -> str:
    """Token ids (BPE pieces) -> the text they spell, BPE removed (fairseq's --remove-bpe)."""
    return " ".join(BpeSegmenter.join(vocab.decode(ids)))


def read_references(path: Path, count: int) -> list[str]:
    if not path.is_file():
        raise InputError(path, "reference file not found (run the prepare rule first)")
    references = path.read_text(encoding="utf-8").splitlines()
    if len(references) != count:
        raise InputError(path, f"{len(references)} references for {count} test sentences")
    return references


def score_generated_mels(
    test: Split,
    frames: Sequence[torch.Tensor],
    evaluation: dict,
    seconds: float,
    hypotheses_path: str | Path,
) -> dict[str, Any]:
    """Generated mels of every test utterance (any model, any length) against the recordings:
    MCD and mel L1 after DTW (``evaluation["mcd_cepstra"]``), the length ratio and the frame
    rate; the generated test set goes to `hypotheses_path` in the prepared corpora's format."""
    save_split(
        hypotheses_path, Split(test.src, PackedSequences.from_list(frames, torch.float32), test.ids)
    )
    n_cepstra = int(evaluation["mcd_cepstra"])
    distances = [
        mel_distance(test.tgt[k].numpy(), frames[k].numpy(), n_cepstra) for k in range(len(test))
    ]
    gen_len = torch.tensor([len(f) for f in frames], dtype=torch.float64)
    return {
        "mcd": float(np.mean([d.mcd for d in distances])),
        "mel_l1_dtw": float(np.mean([d.l1 for d in distances])),
        "length_ratio": float((gen_len / test.tgt.lengths.double()).mean()),
        "generated_frames": int(gen_len.sum()),
        "frames_per_second": float(gen_len.sum()) / seconds,
    }


def griffin_lim_settings(stats: dict, features: dict, n_iter: int, seed: int) -> dict:
    """The keyword arguments of :func:`griffin_lim` for a corpus's log-mel: its STFT settings
    (``stats.json``'s ``features``) and the study's mel range (``features``)."""
    return dict(
        sample_rate=int(stats["sample_rate"]),
        n_fft=int(stats["n_fft"]),
        hop_length=int(stats["hop_length"]),
        win_length=int(stats["win_length"]),
        f_min=float(features["f_min"]),
        f_max=None if features["f_max"] is None else float(features["f_max"]),
        n_iter=int(n_iter),
        seed=seed,
    )


def write_samples(
    samples_dir: Path,
    test: Split,
    generated: Sequence[torch.Tensor],
    stats: dict,
    features: dict,
    evaluation: dict,
    seed: int,
) -> None:
    """Griffin-Lim audio of the first test utterances: generated and ground truth (the latter
    through the same vocoder, so the two differ only in the model)."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    settings = griffin_lim_settings(stats, features, int(evaluation["griffin_lim_iters"]), seed)
    for k in range(min(int(evaluation["griffin_lim_wavs"]), len(test))):
        for name, mel in (("generated", generated[k]), ("reference", test.tgt[k])):
            if len(mel) < 2:
                log.warning("%s: %s mel has %d frame(s), no audio", test.ids[k], name, len(mel))
                continue
            audio = griffin_lim(mel.numpy(), **settings)
            write_wav(samples_dir / f"{test.ids[k]}.{name}.wav", audio, settings["sample_rate"])
