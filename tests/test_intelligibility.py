"""The ASR teacher's WER on TTS output (comma.stages.intelligibility), on a generated mini
LJSpeech corpus and a tiny untrained ASR teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comma.data.audio import LogMel, load_wav
from comma.data.ljspeech import read_ljspeech
from comma.data.packed import PackedSequences, Split, save_split
from comma.data.text import MosesPipeline
from comma.data.vocab import Vocabulary
from comma.errors import InputError
from comma.io import torch_save, write_json
from comma.mini.speech import generate_mini_ljspeech
from comma.models.teacher import MODEL_FORMAT, build_teacher
from comma.models.teacher_base import TeacherConfig
from comma.stages.intelligibility import evaluate_intelligibility, speech_to_asr_features

FEATURES = dict(n_mels=80, win_ms=50.0, hop_ms=12.5, f_min=0.0, f_max=None)
DECODING = dict(beam=2, lenpen=1.0, max_len_a=0.1, max_len_b=3, batch_sentences=2)


def test_speech_is_resampled_to_the_asr_corpus_rate_before_its_log_mel():
    asr_mel = LogMel(24000, 80, 50.0, 12.5)
    audio = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)  # 1 s
    frames = speech_to_asr_features(audio, 22050, asr_mel)
    assert frames.shape == (1 + 24000 // asr_mel.hop_length, 80)  # 1 s at 24 kHz, not 22.05
    # the tone stays at 440 Hz: its peak bin is the one a 24 kHz tone of 440 Hz has
    native = asr_mel(np.sin(2 * np.pi * 440 * np.arange(24000) / 24000).astype(np.float32))
    assert frames[40].argmax() == native[40].argmax()
    # audio already at the ASR rate is not touched
    assert torch.equal(speech_to_asr_features(audio, 24000, asr_mel), asr_mel(audio))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("intelligibility")
    ljspeech = root / "LJSpeech-1.1"
    generate_mini_ljspeech(ljspeech, utterances=3, min_words=2, max_words=3, seed=1)
    utterances = read_ljspeech(ljspeech)
    tts_mel = LogMel(22050, **FEATURES)
    mels = [tts_mel(load_wav(u.wav_path, 22050)[0]) for u in utterances]
    tts = root / "tts"
    tts.mkdir()
    ids = [u.id for u in utterances]
    phonemes = PackedSequences.from_list([torch.tensor([5, 6])] * len(ids))
    save_split(tts / "test.pt", Split(phonemes, PackedSequences.from_list(mels), ids))
    write_json(tts / "stats.json", {"features": tts_mel.describe()})
    asr = root / "asr"
    asr.mkdir()
    words = sorted({w for u in utterances for w in MosesPipeline("en", True)(u.text)})
    Vocabulary(words, [1] * len(words)).save(asr / "dict.tgt.txt")
    write_json(asr / "stats.json", {"features": {"sample_rate": 24000}, "lowercase": True})
    torch.manual_seed(0)
    config = TeacherConfig(
        task="asr",
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        ffn_dim=32,
        dropout=0.1,
        src_vocab=None,
        tgt_vocab=len(words) + 4,
        n_mels=80,
        conv_channels=4,
    )
    model = root / "asr.pt"
    torch_save(
        {
            "format": MODEL_FORMAT,
            "config": config.to_dict(),
            "model": build_teacher(config).state_dict(),
        },
        model,
    )
    return dict(ljspeech=ljspeech, tts=tts, asr=asr, model=model, utterances=utterances)


def _evaluate(corpora, generated, metrics_path):
    return evaluate_intelligibility(
        generated,
        corpora["tts"],
        corpora["ljspeech"],
        corpora["model"],
        corpora["asr"],
        metrics_path,
        features=FEATURES,
        decoding=DECODING,
        griffin_lim_iters=4,
        seed=1,
    )


def test_intelligibility_transcribes_generated_vocoded_and_recorded_speech(corpora, tmp_path):
    # "generated" = the recordings' own log-mel here
    metrics = _evaluate(corpora, corpora["tts"] / "test.pt", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["utterances"] == 3
    for key in ("wer_generated", "wer_vocoded_recordings", "wer_recordings"):
        assert metrics[key] >= 0
    # the generated mels are the recordings' mels: the two vocoded inputs are the same audio
    assert metrics["wer_generated"] == metrics["wer_vocoded_recordings"]
    # references: the normalized transcripts, tokenized as prepare_asr (Moses, lowercased)
    first = corpora["utterances"][0]
    example = metrics["examples"]["recordings"][0]
    assert example["id"] == first.id
    assert example["reference"] == " ".join(MosesPipeline("en", True)(first.text))


def test_intelligibility_refuses_generated_speech_of_other_utterances(corpora, tmp_path):
    other = tmp_path / "other.pt"
    save_split(
        other,
        Split(
            PackedSequences.from_list([torch.tensor([5])]),
            PackedSequences.from_list([torch.zeros(4, 80)]),
            ["LJ999-0001"],
        ),
    )
    with pytest.raises(InputError, match="not those of"):
        _evaluate(corpora, other, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
