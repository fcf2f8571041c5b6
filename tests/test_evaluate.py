"""Metrics (BLEU, WER, MCD, mel L1), Griffin-Lim audio, and the teacher evaluation entry point
on tiny prepared corpora."""

from __future__ import annotations

import json

import jiwer
import numpy as np
import pytest
import sacrebleu
import soundfile
import torch

from comma.data.audio import LogMel
from comma.data.packed import PackedSequences, Split, load_split, save_split
from comma.data.vocab import Vocabulary
from comma.io import torch_save, write_json
from comma.models.teacher import MODEL_FORMAT, build_teacher
from comma.models.teacher_base import TeacherConfig
from comma.stages.scoring import (
    corpus_bleu,
    griffin_lim,
    ids_to_text,
    mel_cepstra,
    mel_distance,
    text_scores,
    word_error_rate,
)
from comma.stages.teacher import evaluate_teacher

HYPS = ["the cat sat on the mat .", "a dog barked at me", "hello world", "&apos;s fine"]
REFS = ["the cat sat on a mat .", "the dog barked at me .", "hello there world", "&apos;s fine"]


def test_bleu_is_sacrebleus_tokenized_bleu():
    ours = corpus_bleu(HYPS, REFS)
    theirs = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none")
    assert ours["bleu"] == pytest.approx(theirs.score)
    assert ours["hyp_len"] == theirs.sys_len and ours["ref_len"] == theirs.ref_len
    assert "tok:none" in ours["signature"]
    # sacrebleu's default tokenizer would split "&apos;s": a different (detokenized) score
    assert ours["bleu"] != pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert corpus_bleu(REFS, REFS)["bleu"] == pytest.approx(100.0)


def test_wer_is_jiwers_corpus_wer():
    ours = word_error_rate(HYPS, REFS)
    assert ours["wer"] == pytest.approx(jiwer.wer(REFS, HYPS))
    assert ours["reference_words"] == sum(len(r.split()) for r in REFS)
    assert word_error_rate(["", "a b"], ["x y", "a b"])["wer"] == pytest.approx(0.5)
    scores = text_scores(HYPS, REFS)
    assert scores["wer"] == pytest.approx(100 * jiwer.wer(REFS, HYPS))  # percent, as Table 2
    with pytest.raises(ValueError, match="3 hypotheses for 4"):
        corpus_bleu(HYPS[:3], REFS)
    with pytest.raises(ValueError, match="non-empty references"):
        word_error_rate(["a"], [" "])


def test_ids_to_text_removes_bpe_and_stops_at_eos():
    vocab = Vocabulary(["hel@@", "lo", "world", "."])
    ids = [vocab.index[s] for s in ["hel@@", "lo", "world", "."]] + [vocab.eos, vocab.index["lo"]]
    assert ids_to_text(ids, vocab) == "hello world ."


def _mel(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(-4.0, 2.0, size=(frames, 80)).astype(np.float32)


def test_mcd_is_zero_for_identical_mels_and_positive_otherwise():
    a, b = _mel(50, 0), _mel(50, 1)
    same = mel_distance(a, a, n_cepstra=24)
    assert same.mcd == pytest.approx(0.0, abs=1e-9) and same.l1 == pytest.approx(0.0, abs=1e-9)
    other = mel_distance(a, b, n_cepstra=24)
    assert other.mcd > 0 and other.l1 > 0
    # DTW: a copy slowed down to twice the frames still aligns perfectly
    slow = mel_distance(a, np.repeat(a, 2, axis=0), n_cepstra=24)
    assert slow.mcd == pytest.approx(0.0, abs=1e-9) and slow.path_length >= 100
    # A constant offset (loudness) lives in c0 only, which MCD leaves out; L1 sees it
    louder = mel_distance(a, a + 1.0, n_cepstra=24)
    assert louder.mcd == pytest.approx(0.0, abs=1e-6) and louder.l1 == pytest.approx(1.0)


def test_mel_cepstra_invert_to_the_log_mel():
    x = _mel(3, 2).astype(np.float64)
    n = x.shape[1]
    c = np.concatenate([mel_cepstra(x, n - 1), np.zeros((3, 0))], axis=1)  # c_1..c_{N-1}
    c0 = x.mean(axis=1, keepdims=True)
    k = np.arange(1, n)[None, :]
    basis = np.cos(np.pi * k * (np.arange(n)[:, None] + 0.5) / n)  # [N, N-1]
    torch.testing.assert_close(c0 + 2 * c @ basis.T, x)  # log S_n = c0 + 2 sum_k c_k cos(...)
    with pytest.raises(ValueError, match="n_cepstra"):
        mel_cepstra(x, 80)


def test_griffin_lim_returns_finite_audio_that_resynthesizes_the_mel():
    sr, hop = 22050, 276
    t = np.arange(int(0.5 * sr)) / sr
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(len(t))).astype(np.float32)
    logmel = LogMel(sr, 80, 50.0, 12.5)
    mel = logmel(wave).numpy()  # [T, 80]
    settings = dict(
        sample_rate=sr, n_fft=logmel.n_fft, hop_length=hop, win_length=logmel.win_length, n_iter=16
    )
    audio = griffin_lim(mel, **settings)
    assert audio.dtype == np.float32 and audio.shape == (hop * (len(mel) - 1),)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01
    # Its log-mel is much closer to the input than that of a tone a fifth higher
    again = logmel(audio).numpy()[: len(mel)]
    fifth = logmel((0.3 * np.sin(2 * np.pi * 330 * t) * np.hanning(len(t))).astype(np.float32))
    loud = mel > np.log(1e-3)  # where there is sound (the floor is -11.5)
    error = np.abs(again - mel)[loud].mean()
    assert error < 0.5 * np.abs(fifth.numpy() - mel)[loud].mean(), error
    assert np.array_equal(audio, griffin_lim(mel, **settings))  # seeded phases


ARCH = dict(d_model=16, encoder_layers=1, decoder_layers=1, heads=2, ffn_dim=32, dropout=0.1)


def _words(n):
    return [f"w{k}" for k in range(n)]


@pytest.fixture
def nmt_corpus(tmp_path):
    data = tmp_path / "nmt"
    data.mkdir()
    vocab = Vocabulary(_words(10), [1] * 10)
    vocab.save(data / "dict.src.txt")
    vocab.save(data / "dict.tgt.txt")
    g = torch.Generator().manual_seed(0)
    sentences = [torch.randint(5, 15, (int(n),), generator=g) for n in [3, 5, 4, 6, 2, 4]]
    split = Split(
        PackedSequences.from_list(sentences),
        PackedSequences.from_list(sentences),
        [f"s{k}" for k in range(6)],
    )
    save_split(data / "train.pt", split)
    save_split(data / "test.pt", split)
    refs = [" ".join(vocab.decode(s.tolist())) for s in sentences]
    (data / "test.ref.txt").write_text("\n".join(refs) + "\n")
    torch.manual_seed(0)
    config = TeacherConfig(task="nmt", src_vocab=15, tgt_vocab=15, **ARCH)
    model_path = tmp_path / "model.pt"
    torch_save(
        {
            "format": MODEL_FORMAT,
            "config": config.to_dict(),
            "model": build_teacher(config).state_dict(),
        },
        model_path,
    )
    return data, model_path


def test_evaluate_teacher_nmt_writes_hypotheses_and_scores(nmt_corpus, tmp_path):
    data, model_path = nmt_corpus
    decoding = dict(beam=2, lenpen=1.0, max_len_a=1.0, max_len_b=2, batch_sentences=4)
    callers_threads = torch.get_num_threads()
    metrics = evaluate_teacher(
        "nmt",
        model_path,
        data,
        tmp_path / "m.json",
        tmp_path / "hyp.txt",
        decoding=decoding,
        threads=callers_threads + 1,
    )
    # the evaluation ran on its own thread count and gave the caller's back
    assert torch.get_num_threads() == callers_threads
    hypotheses = (tmp_path / "hyp.txt").read_text().splitlines()
    assert len(hypotheses) == 6
    refs = (data / "test.ref.txt").read_text().splitlines()
    assert metrics["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [refs], tokenize="none").score
    )
    assert metrics["baseline"]["name"] == "copy_source"
    assert metrics["baseline"]["bleu"] == pytest.approx(100.0)  # here the source is the target
    assert metrics["teacher_forced_ppl"] > 1
    assert json.loads((tmp_path / "m.json").read_text())["wer"] == pytest.approx(metrics["wer"])
    with pytest.raises(ValueError, match="not asr"):
        evaluate_teacher(
            "asr", model_path, data, tmp_path / "x.json", tmp_path / "x.txt", decoding=decoding
        )


def test_evaluate_teacher_tts_scores_mels_and_writes_wavs(tmp_path):
    data = tmp_path / "tts"
    data.mkdir()
    Vocabulary(_words(10), [1] * 10).save(data / "dict.src.txt")
    g = torch.Generator().manual_seed(1)
    phonemes = [torch.randint(5, 15, (n,), generator=g) for n in [3, 4, 2]]
    mels = [torch.randn(n, 80, generator=g) - 5 for n in [12, 15, 9]]
    split = Split(
        PackedSequences.from_list(phonemes), PackedSequences.from_list(mels), ["a", "b", "c"]
    )
    save_split(data / "train.pt", split)
    save_split(data / "test.pt", split)
    write_json(
        data / "stats.json",
        {"features": {"sample_rate": 22050, "hop_length": 276, "win_length": 1102, "n_fft": 2048}},
    )
    torch.manual_seed(0)
    config = TeacherConfig(task="tts", src_vocab=15, prenet_hidden=16, postnet_channels=8, **ARCH)
    model_path = tmp_path / "model.pt"
    state = build_teacher(config).state_dict()
    torch_save({"format": MODEL_FORMAT, "config": config.to_dict(), "model": state}, model_path)
    metrics = evaluate_teacher(
        "tts",
        model_path,
        data,
        tmp_path / "m.json",
        tmp_path / "hyp.pt",
        decoding=dict(max_len_a=2.0, max_len_b=4, stop_threshold=0.5, batch_sentences=2),
        evaluation=dict(mcd_cepstra=24, griffin_lim_wavs=2, griffin_lim_iters=4),
        features=dict(f_min=0.0, f_max=None),
        samples_dir=tmp_path / "wavs",
        seed=1,
    )
    generated = load_split(tmp_path / "hyp.pt")
    assert generated.ids == ["a", "b", "c"] and generated.tgt.values.shape[1] == 80
    lengths = generated.tgt.lengths.tolist()
    assert all(1 <= n <= limit for n, limit in zip(lengths, [10, 12, 8], strict=True))
    assert metrics["mcd"] > 0 and metrics["baseline"]["mcd"] > 0
    assert metrics["generated_frames"] == sum(lengths)
    # Griffin-Lim audio of the first 2 test utterances (a generated mel needs 2 frames)
    expected = {"a.reference.wav", "b.reference.wav"} | {
        f"{utt}.generated.wav" for utt, n in zip("ab", lengths, strict=False) if n >= 2
    }
    assert {p.name for p in (tmp_path / "wavs").iterdir()} == expected
    audio, rate = soundfile.read(tmp_path / "wavs" / "a.reference.wav")
    assert rate == 22050 and len(audio) == 276 * (12 - 1)
