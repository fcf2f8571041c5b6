"""Intelligibility of generated speech (rule ``tts_intelligibility``): the ASR teacher
transcribes the TTS teacher's test utterances, vocoded with Griffin-Lim, and the recordings of
the same utterances; the WER of each against the normalized transcript.

The ASR-WER of synthesized speech is the usual objective intelligibility check of TTS output
(e.g. FastSpeech 2's and VITS's evaluations use a pretrained ASR model the same way). The WER on
the recordings is printed beside it: it is what the ASR model makes of this voice at all (the
TTS corpus's speaker need not be one the ASR model was trained on), so the generated speech's
WER is read against it, not against 0.

Audio path, the same for both: log-mel ``[T, n_mels]`` of the TTS corpus -> Griffin-Lim audio at
the TTS corpus's sample rate (the recordings are read from their WAV files instead) ->
resampled to the ASR corpus's rate (libsoxr, as the mini LibriTTS generator) -> the ASR
corpus's log-mel recipe (``comma.data.audio.LogMel`` with the study's ``features``) -> beam
search with the ASR teacher (``decoding.asr``). Transcripts are tokenized as ``prepare_asr``
does (Moses, lowercased if the ASR corpus is), BPE removed from the hypotheses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch

from comma.data.audio import LogMel, load_wav
from comma.data.ljspeech import read_ljspeech
from comma.data.packed import PackedSequences, Split, load_split
from comma.data.text import MosesPipeline
from comma.data.vocab import Vocabulary
from comma.engine.decode import decode_split
from comma.engine.decode_settings import DecodingSettings
from comma.engine.device import for_inference
from comma.errors import InputError
from comma.io import read_json, write_json
from comma.models.registry import load_teacher
from comma.models.teacher_base import TokenTeacher
from comma.stages.scoring import griffin_lim, griffin_lim_settings, ids_to_text, text_scores
from comma.threads import torch_threads

__all__ = ["speech_to_asr_features", "evaluate_intelligibility"]

log = logging.getLogger(__name__)


def speech_to_asr_features(audio: np.ndarray, sample_rate: int, asr_mel: LogMel) -> torch.Tensor:
    """Mono float audio at `sample_rate` -> the ASR corpus's log-mel ``[T, n_mels]``."""
    if sample_rate != asr_mel.sample_rate:
        audio = librosa.resample(
            np.asarray(audio, dtype=np.float32),
            orig_sr=sample_rate,
            target_sr=asr_mel.sample_rate,
            res_type="soxr_hq",
        )
    return asr_mel(audio)


def _transcribe(
    model: TokenTeacher,
    frames: Sequence[torch.Tensor],
    ids: Sequence[str],
    vocab: Vocabulary,
    decoding: DecodingSettings,
) -> list[str]:
    split = Split(
        PackedSequences.from_list(list(frames), dtype=torch.float32),
        # the search reads only the source; one placeholder token per utterance
        PackedSequences.from_list([torch.ones(1, dtype=torch.int32)] * len(ids)),
        list(ids),
    )
    hypotheses, _ = decode_split(model, split, **decoding.arguments())
    return [ids_to_text(h.tokens, vocab) for h in hypotheses]


def evaluate_intelligibility(
    generated_path: str | Path,
    tts_data_dir: str | Path,
    ljspeech_root: str | Path,
    asr_model_path: str | Path,
    asr_data_dir: str | Path,
    metrics_path: str | Path,
    *,
    features: dict,
    decoding: dict,
    griffin_lim_iters: int,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """WER of the ASR teacher on the TTS test set: on `generated_path` (a split of generated
    log-mel, ``evaluate_teacher``'s ``test.hyp.pt``) vocoded with Griffin-Lim, and on the
    recordings in `ljspeech_root`; writes `metrics_path` (JSON) and returns it."""
    with torch_threads(threads):
        search = DecodingSettings.from_config(decoding, "asr")
        tts_data_dir, asr_data_dir = Path(tts_data_dir), Path(asr_data_dir)
        generated = load_split(generated_path)
        test = load_split(tts_data_dir / "test.pt")
        if generated.ids != test.ids:
            raise InputError(
                generated_path, f"its utterances are not those of {tts_data_dir}/test.pt"
            )
        tts_stats = read_json(tts_data_dir / "stats.json")["features"]
        asr_stats = read_json(asr_data_dir / "stats.json")
        asr_mel = LogMel(
            int(asr_stats["features"]["sample_rate"]),
            int(features["n_mels"]),
            float(features["win_ms"]),
            float(features["hop_ms"]),
            float(features["f_min"]),
            None if features["f_max"] is None else float(features["f_max"]),
        )
        utterances = {u.id: u for u in read_ljspeech(ljspeech_root)}
        missing = [i for i in test.ids if i not in utterances]
        if missing:
            raise InputError(
                Path(ljspeech_root) / "metadata.csv", f"lists no utterance {missing[0]}"
            )
        pipeline = MosesPipeline("en", bool(asr_stats["lowercase"]))
        references = [" ".join(pipeline(utterances[i].text)) for i in test.ids]

        vocoder = griffin_lim_settings(tts_stats, features, griffin_lim_iters, seed)
        frames = {"generated": [], "vocoded_recordings": [], "recordings": []}
        for k, utt_id in enumerate(test.ids):
            for name, mel in (("generated", generated.tgt[k]), ("vocoded_recordings", test.tgt[k])):
                if len(mel) < 2:
                    raise InputError(
                        generated_path, f"utterance {utt_id} has {len(mel)} mel frame(s)"
                    )
                audio = griffin_lim(mel.numpy(), **vocoder)
                frames[name].append(speech_to_asr_features(audio, vocoder["sample_rate"], asr_mel))
            recording, rate = load_wav(utterances[utt_id].wav_path, None)
            frames["recordings"].append(speech_to_asr_features(recording, rate, asr_mel))

        model, precision = for_inference(load_teacher(asr_model_path))
        device = next(model.parameters()).device
        if model.config.task != "asr":
            raise ValueError(f"{asr_model_path} is a {model.config.task} teacher, not asr")
        vocab = Vocabulary.load(asr_data_dir / "dict.tgt.txt")
        scores = {}
        with precision:
            for name, speech in frames.items():
                texts = _transcribe(model, [f.to(device) for f in speech], test.ids, vocab, search)
                scores[name] = {
                    "wer": text_scores(texts, references)["wer"],
                    "examples": [
                        {"id": i, "reference": r, "hypothesis": h}
                        for i, r, h in list(zip(test.ids, references, texts, strict=True))[:5]
                    ],
                }
        metrics = {
            "what": "WER of the ASR teacher on the TTS test set: the TTS teacher's generated "
            "log-mel vocoded with Griffin-Lim, and the recordings (what the ASR model makes of "
            "this voice)",
            "utterances": len(test),
            "asr_model": str(asr_model_path),
            "generated": str(generated_path),
            "griffin_lim_iters": int(griffin_lim_iters),
            "wer_generated": scores["generated"]["wer"],
            "wer_vocoded_recordings": scores["vocoded_recordings"]["wer"],
            "wer_recordings": scores["recordings"]["wer"],
            "examples": {name: s["examples"] for name, s in scores.items()},
        }
        write_json(metrics_path, metrics)
        log.info(
            "ASR teacher WER on %d TTS test utterances: generated %.2f, vocoded recordings %.2f, "
            "recordings %.2f",
            len(test),
            metrics["wer_generated"],
            metrics["wer_vocoded_recordings"],
            metrics["wer_recordings"],
        )
        return metrics
