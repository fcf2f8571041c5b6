"""espeak-ng synthesis and the generated mini LJSpeech / LibriTTS corpora (layouts, determinism,
atomicity)."""

from __future__ import annotations

import _ctypes
import ctypes
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from comma.mini import speech as mini_speech
from comma.mini.espeak import EspeakSynthesizer, SynthesisError
from comma.mini.speech import (
    ACCENTS,
    LJSPEECH_VOICE,
    VARIANTS,
    cardinal_words,
    generate_mini_libritts,
    generate_mini_ljspeech,
    generate_sentences,
    ordinal_suffix,
    ordinal_words,
    year_words,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LJSPEECH_SAMPLE = SHARED_DATA / "ljspeech-sample" / "LJSpeech-1.1"

TEXT = "The old printer carried twelve heavy books to the church."


def words(text: str) -> list[str]:
    return [word for word in text.split() if any(char.isalnum() for char in word)]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --------------------------------------------------------------------------------------------
# espeak-ng


@pytest.fixture(scope="module")
def synthesizer() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def test_synthesizer_returns_audible_finite_float_audio(synthesizer):
    audio = synthesizer.synthesize(TEXT, "en-us")
    assert synthesizer.sample_rate == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all()
    assert 0.1 < np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.01
    assert 1.5 < len(audio) / synthesizer.sample_rate < 6.0


def test_duration_grows_with_text_and_shrinks_with_rate(synthesizer):
    short = synthesizer.synthesize("The dog slept.", "en-us")
    long = synthesizer.synthesize(
        "The dog slept in the old garden behind the church until the next morning.", "en-us"
    )
    assert len(long) > 2 * len(short)
    slow = synthesizer.synthesize(TEXT, "en-us", rate=100)
    fast = synthesizer.synthesize(TEXT, "en-us", rate=300)
    assert len(slow) > 2 * len(fast)


def median_f0(audio: np.ndarray) -> float:
    # Not librosa.yin: its numba gufuncs, cached on disk by every process that first calls
    # them, crashed a parallel test worker with a segmentation fault (numba/numba#10128).
    pitch = torchaudio.functional.detect_pitch_frequency(
        torch.from_numpy(audio), 22050, freq_low=60
    )
    return float(pitch.median())


def test_pitch_and_voice_variant_change_the_fundamental_frequency(synthesizer):
    low = median_f0(synthesizer.synthesize(TEXT, "en-us", pitch=20))
    high = median_f0(synthesizer.synthesize(TEXT, "en-us", pitch=80))
    assert high > 1.3 * low
    male = median_f0(synthesizer.synthesize(TEXT, "en-us+m1"))
    female = median_f0(synthesizer.synthesize(TEXT, "en-us+f3"))
    assert female > 1.5 * male


def test_synthesis_does_not_depend_on_what_was_spoken_before(synthesizer):
    # en-us+f5 is breathy (random noise) and every voice has pitch flutter: both are state that
    # espeak-ng would otherwise carry from one utterance to the next.
    first = synthesizer.synthesize(TEXT, "en-us+f5", rate=160, pitch=45)
    synthesizer.synthesize("Something else entirely, and longer than that.", "en-gb-scotland+m3")
    again = EspeakSynthesizer().synthesize(TEXT, "en-us+f5", rate=160, pitch=45)
    assert np.array_equal(first, again)


def test_bad_requests_are_clear_errors(synthesizer):
    with pytest.raises(ValueError, match="empty"):
        synthesizer.synthesize("   ", "en-us")
    with pytest.raises(ValueError, match="variant 'nosuchvariant'"):
        synthesizer.synthesize("hello", "en-us+nosuchvariant")
    with pytest.raises(ValueError, match="no voice 'xx-nosuchlanguage'"):
        synthesizer.synthesize("hello", "xx-nosuchlanguage")
    with pytest.raises(ValueError, match="rate 20"):
        synthesizer.synthesize("hello", "en-us", rate=20)
    with pytest.raises(ValueError, match="pitch 101"):
        synthesizer.synthesize("hello", "en-us", pitch=101)
    with pytest.raises(SynthesisError, match="no audio"):
        synthesizer.synthesize(".", "en-us")


def test_refuses_to_share_the_library_with_other_code(synthesizer):
    other = ctypes.CDLL(str(synthesizer.library_path))
    try:
        with pytest.raises(RuntimeError, match="already loaded in this process"):
            synthesizer.synthesize("hello", "en-us")
    finally:
        _ctypes.dlclose(other._handle)
    assert synthesizer.synthesize("hello", "en-us").any()


def test_every_corpus_voice_exists_in_the_shipped_data(synthesizer):
    voices = [LJSPEECH_VOICE.name] + [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    for voice in voices:
        assert synthesizer.synthesize("Yes.", voice).any(), voice


# --------------------------------------------------------------------------------------------
# Sentences


def test_number_words():
    assert cardinal_words(12) == "twelve"
    assert cardinal_words(312) == "three hundred twelve"
    assert ordinal_words(23) == "twenty-third"
    assert [ordinal_suffix(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23)] == [
        "st", "nd", "rd", "th", "th", "th", "th", "st", "nd", "rd",
    ]  # fmt: skip
    assert year_words(1863) == "eighteen sixty-three"
    assert year_words(1805) == "eighteen oh five"
    assert year_words(1900) == "nineteen hundred"


def test_sentences_have_the_asked_lengths_and_normalized_numbers():
    sentences = generate_sentences(400, min_words=3, max_words=7, rng=random.Random(0))
    assert len(sentences) == 400
    lengths = [len(words(s.normalized)) for s in sentences]
    assert set(lengths) == {3, 4, 5, 6, 7}
    assert len({s.normalized for s in sentences}) == 400
    for sentence in sentences:
        assert sentence.normalized.endswith(".") and sentence.original.endswith(".")
        assert not re.search(r"[\d$|\t\n]", sentence.normalized), sentence
        assert sentence.normalized[0].isupper(), sentence
    with_numerals = [s for s in sentences if re.search(r"\d", s.original)]
    assert len(with_numerals) > 20
    assert all(s.original != s.normalized for s in with_numerals)
    assert all(s.original == s.normalized for s in sentences if s not in with_numerals)
    vocabulary = {word.strip(",.").lower() for s in sentences for word in s.normalized.split()}
    assert 300 < len(vocabulary) < 1000


def test_sentences_are_deterministic_by_seed():
    def draw(seed):
        return generate_sentences(50, min_words=2, max_words=9, rng=random.Random(seed))

    assert draw(1) == draw(1)
    assert len(set(draw(1)) & set(draw(2))) < 5


def test_sentence_requests_the_grammar_cannot_meet_are_errors(monkeypatch):
    with pytest.raises(ValueError, match="min_words must be at least 2"):
        generate_sentences(5, min_words=1, max_words=4, rng=random.Random(0))
    with pytest.raises(ValueError, match="less than min_words"):
        generate_sentences(5, min_words=6, max_words=4, rng=random.Random(0))
    # A smaller vocabulary: two-word sentences are then "He slept." and "John slept." only.
    monkeypatch.setattr(mini_speech, "SUBJECT_PRONOUNS", ["he"])
    monkeypatch.setattr(mini_speech, "NAMES", ["John"])
    monkeypatch.setattr(mini_speech, "INTRANSITIVE_VERBS", {"person": ["slept"], "animal": ["ran"]})
    assert len(generate_sentences(2, min_words=2, max_words=2, rng=random.Random(0))) == 2
    with pytest.raises(ValueError, match="3 distinct sentences of 2-2 words \\(found 2\\)"):
        generate_sentences(3, min_words=2, max_words=2, rng=random.Random(0))


# --------------------------------------------------------------------------------------------
# Mini LJSpeech

LJ_ARGS = dict(utterances=12, min_words=2, max_words=6)


@pytest.fixture(scope="module")
def ljspeech(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lj") / "LJSpeech-1.1"
    generate_mini_ljspeech(out, seed=3, **LJ_ARGS)
    return out


def read_metadata(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    return [line.split("|") for line in raw.decode("utf-8").split("\n")[:-1]]


def test_ljspeech_layout(ljspeech):
    assert sorted(p.name for p in ljspeech.iterdir()) == ["README", "metadata.csv", "wavs"]
    rows = read_metadata(ljspeech / "metadata.csv")
    assert len(rows) == 12
    assert [row[0] for row in rows] == [f"LJ001-{index:04d}" for index in range(1, 13)]
    for _, transcription, normalized in rows:
        assert transcription and normalized
        assert 2 <= len(words(normalized)) <= 6
        assert not re.search(r"\d", normalized)
    assert sorted(p.name for p in (ljspeech / "wavs").iterdir()) == [f"{r[0]}.wav" for r in rows]
    for row in rows:
        info = sf.info(ljspeech / "wavs" / f"{row[0]}.wav")
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "WAV", "PCM_16", 22050, 1,
        )  # fmt: skip
        assert 0.5 < info.duration < 6.0


def test_ljspeech_matches_the_real_sample_conventions(ljspeech):
    if not LJSPEECH_SAMPLE.is_dir():
        pytest.skip(f"real LJSpeech sample not found at {LJSPEECH_SAMPLE} (only in project CI)")
    real_rows = read_metadata(LJSPEECH_SAMPLE / "metadata.csv")
    ours = read_metadata(ljspeech / "metadata.csv")
    assert {len(row) for row in real_rows} == {len(row) for row in ours} == {3}
    id_pattern = re.compile(r"LJ\d{3}-\d{4}")
    assert all(id_pattern.fullmatch(row[0]) for row in real_rows + ours)

    def wav_format(path):
        info = sf.info(path)
        return info.format, info.subtype, info.samplerate, info.channels

    real = wav_format(LJSPEECH_SAMPLE / "wavs" / f"{real_rows[0][0]}.wav")
    assert wav_format(ljspeech / "wavs" / f"{ours[0][0]}.wav") == real


def test_ljspeech_reader_parses_it(ljspeech):
    ljspeech_reader = pytest.importorskip("comma.data.ljspeech")
    utterances = ljspeech_reader.read_ljspeech(ljspeech)
    rows = read_metadata(ljspeech / "metadata.csv")
    assert [(u.id, u.text) for u in utterances] == [(row[0], row[2]) for row in rows]


def test_ljspeech_is_deterministic_by_seed(ljspeech, tmp_path):
    generate_mini_ljspeech(tmp_path / "same", seed=3, **LJ_ARGS)
    generate_mini_ljspeech(tmp_path / "other", seed=4, **LJ_ARGS)
    assert tree_bytes(tmp_path / "same") == tree_bytes(ljspeech)
    assert (tmp_path / "other" / "metadata.csv").read_bytes() != (
        ljspeech / "metadata.csv"
    ).read_bytes()


def failing_after(monkeypatch, calls: int) -> None:
    """Make espeak-ng synthesis fail from call number `calls` + 1 on."""
    real = EspeakSynthesizer.synthesize
    done = []

    def synthesize(self, *args, **kwargs):
        if len(done) == calls:
            raise SynthesisError("simulated synthesis failure")
        done.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EspeakSynthesizer, "synthesize", synthesize)


def test_failed_ljspeech_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    failing_after(monkeypatch, 2)
    with pytest.raises(SynthesisError, match="simulated"):
        generate_mini_ljspeech(tmp_path / "LJSpeech-1.1", seed=1, **LJ_ARGS)
    assert list(tmp_path.iterdir()) == []


def test_failed_regeneration_keeps_the_previous_corpus(tmp_path, monkeypatch):
    out = tmp_path / "LJSpeech-1.1"
    generate_mini_ljspeech(out, utterances=3, min_words=2, max_words=4, seed=1)
    before = tree_bytes(out)
    failing_after(monkeypatch, 1)
    with pytest.raises(SynthesisError):
        generate_mini_ljspeech(out, utterances=3, min_words=2, max_words=4, seed=2)
    assert tree_bytes(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["LJSpeech-1.1"]


def test_bad_ljspeech_arguments_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="less than min_words"):
        generate_mini_ljspeech(tmp_path / "lj", utterances=3, min_words=5, max_words=3, seed=1)
    with pytest.raises(ValueError, match="utterances must be an integer >= 1"):
        generate_mini_ljspeech(tmp_path / "lj", utterances=0, min_words=2, max_words=3, seed=1)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Mini LibriTTS

SUBSETS = {"train-clean-100": 8, "dev-clean": 4, "test-clean": 4}
LIBRITTS_ARGS = dict(subsets=SUBSETS, speakers=2, chapters_per_speaker=2, min_words=2, max_words=6)
UTTERANCE_ID = re.compile(r"(\d+)_(\d+)_(\d{6})_(\d{6})")


@pytest.fixture(scope="module")
def libritts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("libri") / "LibriTTS"
    generate_mini_libritts(out, seed=5, **LIBRITTS_ARGS)
    return out


def read_tsv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    return [line.split("\t") for line in raw.decode("utf-8").split("\n")[:-1]]


def test_libritts_layout(libritts):
    assert sorted(p.name for p in libritts.iterdir()) == sorted([*SUBSETS, "SPEAKERS.txt"])
    speakers_by_subset = {}
    for subset, count in SUBSETS.items():
        speaker_dirs = sorted((libritts / subset).iterdir())
        speakers_by_subset[subset] = {p.name for p in speaker_dirs}
        assert len(speaker_dirs) == 2
        utterances = 0
        for speaker_dir in speaker_dirs:
            assert re.fullmatch(r"[1-9]\d*", speaker_dir.name)
            chapter_dirs = sorted(speaker_dir.iterdir())
            assert len(chapter_dirs) == 2
            for chapter_dir in chapter_dirs:
                assert re.fullmatch(r"[1-9]\d*", chapter_dir.name)
                utterances += check_libritts_chapter(chapter_dir)
        assert utterances == count
    all_speakers = [name for names in speakers_by_subset.values() for name in names]
    assert len(set(all_speakers)) == len(all_speakers) == 6  # disjoint across subsets


def check_libritts_chapter(chapter_dir: Path) -> int:
    """Check one <speaker>/<chapter> folder; return its number of utterances."""
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    prefix = f"{speaker}_{chapter}"
    ids = sorted(p.stem for p in chapter_dir.glob("*.wav"))
    expected_files = {f"{prefix}.book.tsv", f"{prefix}.trans.tsv"}
    for utterance_id in ids:
        match = UTTERANCE_ID.fullmatch(utterance_id)
        assert match and match[1] == speaker and match[2] == chapter, utterance_id
        expected_files |= {
            f"{utterance_id}{s}" for s in (".wav", ".original.txt", ".normalized.txt")
        }
    assert {p.name for p in chapter_dir.iterdir()} == expected_files

    trans = read_tsv(chapter_dir / f"{prefix}.trans.tsv")
    book = read_tsv(chapter_dir / f"{prefix}.book.tsv")
    assert [row[0] for row in trans] == [row[0] for row in book] == ids
    previous_end = 0.0
    for (utterance_id, original, normalized), book_row in zip(trans, book, strict=True):
        for suffix, text in ((".original.txt", original), (".normalized.txt", normalized)):
            raw = (chapter_dir / f"{utterance_id}{suffix}").read_bytes()
            assert raw.decode("utf-8") == text and b"\n" not in raw
        assert not re.search(r"\d", normalized)
        assert 2 <= len(words(normalized)) <= 6
        assert len(book_row) == 7 and book_row[:3] == [utterance_id, original, normalized]
        assert book_row[3] == "true"
        start, end, snr = (float(value) for value in book_row[4:])
        info = sf.info(chapter_dir / f"{utterance_id}.wav")
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "WAV", "PCM_16", 24000, 1,
        )  # fmt: skip
        assert start == pytest.approx(previous_end, abs=0.011)
        assert end - start == pytest.approx(info.duration, abs=0.011)
        assert 20 < snr < 60
        previous_end = end
    return len(ids)


def test_libritts_speakers_file(libritts):
    lines = (libritts / "SPEAKERS.txt").read_text(encoding="utf-8").splitlines()
    rows = [
        [field.strip() for field in line.split("|")] for line in lines if not line.startswith(";")
    ]
    assert all(len(row) == 5 for row in rows)
    on_disk = {speaker_dir.name: speaker_dir.parent.name for speaker_dir in libritts.glob("*/*")}
    assert {row[0]: row[2] for row in rows} == on_disk
    for _, sex, _, minutes, name in rows:
        assert sex in ("F", "M") and float(minutes) > 0
        assert name.startswith("espeak-ng ")
        variant = name.split()[1].partition("+")[2]
        assert variant[0].upper() == sex


def test_libritts_sentences_do_not_repeat_across_subsets(libritts):
    texts = [
        row[2]
        for subset in SUBSETS
        for trans in (libritts / subset).glob("*/*/*.trans.tsv")
        for row in read_tsv(trans)
    ]
    assert len(texts) == sum(SUBSETS.values()) == len(set(texts))


def test_libritts_reader_parses_it(libritts):
    libritts_reader = pytest.importorskip("comma.data.libritts")
    for subset, count in SUBSETS.items():
        utterances = libritts_reader.read_libritts(libritts / subset)
        assert len(utterances) == count
        for utterance in utterances:
            assert utterance.speaker == utterance.id.split("_")[0]
            normalized = utterance.wav_path.with_name(f"{utterance.id}.normalized.txt")
            assert utterance.text == normalized.read_text(encoding="utf-8")


def test_libritts_is_deterministic_by_seed(libritts, tmp_path):
    generate_mini_libritts(tmp_path / "same", seed=5, **LIBRITTS_ARGS)
    generate_mini_libritts(tmp_path / "other", seed=6, **LIBRITTS_ARGS)
    assert tree_bytes(tmp_path / "same") == tree_bytes(libritts)
    assert {p.name for p in (tmp_path / "other" / "dev-clean").iterdir()} != {
        p.name for p in (libritts / "dev-clean").iterdir()
    }


def test_failed_libritts_generation_leaves_only_complete_subsets(tmp_path, monkeypatch):
    failing_after(monkeypatch, 3)
    out = tmp_path / "LibriTTS"
    with pytest.raises(SynthesisError, match="simulated"):
        generate_mini_libritts(
            out,
            subsets={"train-clean-100": 3, "dev-clean": 2},
            speakers=1,
            chapters_per_speaker=1,
            min_words=2,
            max_words=4,
            seed=1,
        )
    assert [p.name for p in out.iterdir()] == ["train-clean-100"]
    assert len(list(out.glob("train-clean-100/*/*/*.wav"))) == 3


def test_bad_libritts_arguments_write_nothing(tmp_path):
    args = dict(speakers=2, chapters_per_speaker=2, min_words=2, max_words=4, seed=1)
    with pytest.raises(ValueError, match="needs at least speakers x chapters_per_speaker = 4"):
        generate_mini_libritts(tmp_path / "LibriTTS", subsets={"dev-clean": 3}, **args)
    with pytest.raises(ValueError, match="not a plain folder name"):
        generate_mini_libritts(tmp_path / "LibriTTS", subsets={"../dev-clean": 8}, **args)
    with pytest.raises(ValueError, match="subsets is empty"):
        generate_mini_libritts(tmp_path / "LibriTTS", subsets={}, **args)
    assert list(tmp_path.iterdir()) == []


def test_module_constants_are_consistent():
    assert mini_speech.LJSPEECH_SAMPLE_RATE == 22050
    assert mini_speech.LIBRITTS_SAMPLE_RATE == 24000
    assert LJSPEECH_VOICE.sex == "F"
