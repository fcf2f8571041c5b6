"""Knowledge distillation: the KD corpus has the raw corpus's format and sizes, its ids are the
raw ids in order, shards merge into the whole, unusable outputs are dropped and counted."""

from __future__ import annotations

import json

import pytest
import torch

from comma.data.packed import PackedSequences, Split, load_split, save_split
from comma.engine.decode import NEVER_GENERATED, decode_split, generate_split, max_lengths
from comma.errors import InputError
from comma.io import torch_save
from comma.models.registry import load_teacher
from comma.models.teacher import MODEL_FORMAT, TransformerTTS, build_teacher
from comma.models.teacher_base import BOS_ID, EOS_ID, TeacherConfig, TokenTeacher
from comma.stages.distill import (
    distill_shard,
    load_shard,
    merge_distilled,
    shard_indices,
    shard_seed,
)

N_MELS = 20
SRC_VOCAB, TGT_VOCAB = 20, 15
ARCH = dict(d_model=16, encoder_layers=1, decoder_layers=1, heads=2, ffn_dim=32, dropout=0.0)
SMALL = dict(conv_channels=4, prenet_hidden=16, postnet_layers=2, postnet_channels=8)
VOCABS = {
    "nmt": dict(src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB),
    "asr": dict(tgt_vocab=TGT_VOCAB),
    "tts": dict(src_vocab=SRC_VOCAB),
}
DECODING = {
    "nmt": dict(beam=3, lenpen=1.0, max_len_a=0.0, max_len_b=3, batch_sentences=4),
    "asr": dict(beam=2, lenpen=1.0, max_len_a=0.0, max_len_b=3, batch_sentences=4),
    "tts": dict(max_len_a=0.0, max_len_b=4, stop_threshold=0.5, batch_sentences=4),
}
SEED = 7


def _tokens(g: torch.Generator, length: int, vocab: int) -> torch.Tensor:
    return torch.randint(5, vocab, (length,), generator=g, dtype=torch.int32)


def _mel(g: torch.Generator, length: int) -> torch.Tensor:
    return torch.randn(length, N_MELS, generator=g, dtype=torch.float32)


def make_split(task: str, n: int = 10, seed: int = 0) -> Split:
    """A prepared-format split: int32 token sides, float32 [T, n_mels] mel sides."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        if task == "asr":
            src.append(_mel(g, int(torch.randint(16, 30, (1,), generator=g))))
        else:
            src.append(_tokens(g, int(torch.randint(2, 7, (1,), generator=g)), SRC_VOCAB))
        if task == "tts":
            tgt.append(_mel(g, int(torch.randint(3, 9, (1,), generator=g))))
        else:
            tgt.append(_tokens(g, int(torch.randint(1, 6, (1,), generator=g)), TGT_VOCAB))
    return Split(
        PackedSequences.from_list(src, dtype=src[0].dtype),
        PackedSequences.from_list(tgt, dtype=tgt[0].dtype),
        [f"{task}-{k:03d}" for k in range(n)],
    )


def save_teacher(task: str, path, seed: int = 0):
    """A random-initialized teacher saved as train_teacher saves one."""
    torch.manual_seed(seed)
    config = TeacherConfig(task=task, n_mels=N_MELS, **VOCABS[task], **ARCH, **SMALL)
    model = build_teacher(config)
    saved = {"format": MODEL_FORMAT, "config": config.to_dict(), "model": model.state_dict()}
    torch_save({**saved, "seed": seed}, path)
    return path


@pytest.fixture
def corpus(tmp_path):
    """Per task: (teacher path, training split path, the split)."""

    def make(task: str, n: int = 10):
        split = make_split(task, n)
        save_split(tmp_path / f"{task}.train.pt", split)
        return (
            save_teacher(task, tmp_path / f"{task}.model.pt"),
            tmp_path / f"{task}.train.pt",
            split,
        )

    return make


def distill_all(teacher, train, tmp_path, task, shards):
    paths = []
    for shard in range(shards):
        path = tmp_path / f"{task}.{shards}.shard{shard}.pt"
        distill_shard(
            teacher,
            train,
            path,
            shard=shard,
            shards=shards,
            decoding=DECODING[task],
            seed=SEED,
            progress=False,
        )
        paths.append(path)
    return paths


def bias_eos(monkeypatch, bias: float | str, first: float = -100.0) -> None:
    """Shift every token teacher's EOS log-probability by `first` at the first step and by
    `bias` after it (then renormalize). ``bias="parity"``: +100 for sentences of even source
    length (they end after one token), -100 for odd ones (they run into the length limit)."""
    step = TokenTeacher.step

    def biased(self, prev, cache, encoded):
        lprobs = step(self, prev, cache, encoded).clone()
        later = _parity_bias(encoded) if bias == "parity" else torch.tensor(bias)
        lprobs[:, EOS_ID] += torch.where(prev[:, -1] == BOS_ID, first, later)
        return lprobs.log_softmax(-1)

    monkeypatch.setattr(TokenTeacher, "step", biased)


def bias_stop(monkeypatch, bias: float | str) -> None:
    """Add `bias` to the TTS teacher's stop logit; ``"parity"``: +100 for sentences of even
    source length (they stop at once), -100 for odd ones (they never stop)."""
    step = TransformerTTS.step

    def biased(self, prev, cache, encoded):
        frame, stop = step(self, prev, cache, encoded)
        return frame, stop + (_parity_bias(encoded) if bias == "parity" else bias)

    monkeypatch.setattr(TransformerTTS, "step", biased)


def _parity_bias(encoded) -> torch.Tensor:
    """[R]: +100 where the row's source length is even, -100 where odd."""
    return torch.where(encoded.lengths % 2 == 0, 100.0, -100.0)


def _even(split: Split) -> list[int]:
    return [k for k, n in enumerate(split.src.lengths.tolist()) if n % 2 == 0]


def test_shards_are_contiguous_blocks_in_order():
    blocks = [shard_indices(10, k, 3).tolist() for k in range(3)]
    assert blocks == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert shard_indices(2, 2, 3).tolist() == []  # more shards than sentences: empty ones
    assert shard_seed(1, 0) == shard_seed(1, 0) != shard_seed(1, 1)


@pytest.mark.parametrize("task", ["nmt", "asr", "tts"])
def test_kd_corpus_has_the_raw_corpus_format_and_sizes(task, corpus, tmp_path, monkeypatch):
    if task == "tts":
        bias_stop(monkeypatch, 3.0)  # stops early: most outputs kept
    else:
        bias_eos(monkeypatch, 3.0)
    teacher, train, raw = corpus(task)
    paths = distill_all(teacher, train, tmp_path, task, shards=2)
    out, report_path = tmp_path / "kd" / "train.pt", tmp_path / "report.json"
    raw_kept_path = tmp_path / "rawkept" / "train.pt"
    report = merge_distilled(
        paths, out, report_path, raw_train_path=train, raw_kept_path=raw_kept_path
    )
    kd = load_split(out)
    assert 0 < len(kd) <= len(raw)
    # the paired raw corpus: the raw pairs of exactly the kept sentences, in the KD order
    raw_kept = load_split(raw_kept_path)
    assert raw_kept.ids == kd.ids
    for k, sentence_id in enumerate(kd.ids):
        assert torch.equal(raw_kept.src[k], kd.src[k])
        assert torch.equal(raw_kept.tgt[k], raw.tgt[raw.ids.index(sentence_id)])
    for kd_side, raw_side in ((kd.src, raw.src), (kd.tgt, raw.tgt)):
        assert kd_side.is_tokens == raw_side.is_tokens
        assert kd_side.values.dtype == raw_side.values.dtype
        assert kd_side.values.shape[1:] == raw_side.values.shape[1:]  # n_mels
    if task != "tts":
        assert int(kd.tgt.values.min()) >= 0 and int(kd.tgt.values.max()) < TGT_VOCAB
        assert not set(kd.tgt.values.tolist()) & {*NEVER_GENERATED, EOS_ID}
    else:
        assert bool(kd.tgt.values.isfinite().all())
    assert int(kd.tgt.lengths.min()) > 0
    # ids are the raw ids of the kept sentences, in the raw order, with their raw sources
    positions = [raw.ids.index(i) for i in kd.ids]
    assert positions == sorted(positions)
    for k, position in enumerate(positions):
        assert torch.equal(kd.src[k], raw.src[position])
    on_disk = json.loads(report_path.read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["sentences"] == len(raw) and report["kept"] == len(kd)
    assert report["kept"] + sum(report["dropped"].values()) == len(raw)
    assert report["target_length"]["raw"]["sequences"] == len(raw)
    assert report["target_length"]["kd"]["total"] == int(kd.tgt.lengths.sum())
    assert report["unit"] == ("frames" if task == "tts" else "tokens")


def test_token_outputs_at_the_length_limit_are_dropped_and_counted(corpus, tmp_path, monkeypatch):
    bias_eos(monkeypatch, "parity")  # even source lengths end early, odd ones hit the limit
    teacher, train, raw = corpus("nmt", n=16)
    (path,) = distill_all(teacher, train, tmp_path, "nmt", shards=1)
    kd, stats, kept, _ = load_shard(path)
    # the oracle: decode the split directly with the same settings
    settings = DECODING["nmt"]
    hypotheses, _ = decode_split(load_teacher(teacher), raw, progress=False, **settings)
    limits = max_lengths(raw.src.lengths, settings["max_len_a"], settings["max_len_b"])
    at_limit = [k for k, h in enumerate(hypotheses) if len(h.tokens) >= int(limits[k])]
    empty = [k for k, h in enumerate(hypotheses) if not h.tokens]
    expected = [k for k in range(len(raw)) if k not in at_limit and k not in empty]
    assert expected == _even(raw) and at_limit  # the scripted teacher gives both kinds
    assert kept.tolist() == expected
    assert kd.ids == [raw.ids[k] for k in expected]
    assert [kd.tgt[j].tolist() for j in range(len(kd))] == [hypotheses[k].tokens for k in expected]
    assert stats["dropped"] == {"max_length": len(at_limit), "not_stopped": 0, "empty": len(empty)}
    assert stats["generated_units"] == sum(len(h.tokens) for h in hypotheses)


def test_empty_outputs_are_dropped_and_an_empty_corpus_fails(corpus, tmp_path, monkeypatch):
    bias_eos(monkeypatch, 0.0, first=100.0)  # EOS first: every hypothesis is empty
    teacher, train, _ = corpus("nmt")
    paths = distill_all(teacher, train, tmp_path, "nmt", shards=2)
    assert sum(load_shard(p)[1]["dropped"]["empty"] for p in paths) == 10
    with pytest.raises(ValueError, match="would be empty"):
        merge_distilled(paths, tmp_path / "kd.pt", tmp_path / "report.json")
    assert not (tmp_path / "kd.pt").exists() and not (tmp_path / "report.json").exists()


def test_mel_outputs_that_never_stop_are_dropped(corpus, tmp_path, monkeypatch):
    teacher, train, raw = corpus("tts", n=12)
    bias_stop(monkeypatch, "parity")
    (path,) = distill_all(teacher, train, tmp_path, "tts", shards=1)
    kd, stats, kept, _ = load_shard(path)
    model = load_teacher(teacher)  # the oracle, generated as distill_shard does
    torch.manual_seed(shard_seed(SEED, 0))
    generated, _ = generate_split(model, raw, progress=False, **DECODING["tts"])
    expected = [k for k, stop in enumerate(generated.stopped) if stop]
    assert expected == _even(raw) and 0 < len(expected) < len(raw)  # some stop, some do not
    assert kept.tolist() == expected
    assert stats["dropped"] == {
        "max_length": 0,
        "not_stopped": len(raw) - len(expected),
        "empty": 0,
    }
    for j, k in enumerate(expected):
        assert torch.equal(kd.tgt[j], generated.frames[k])
    bias_stop(monkeypatch, -1000.0)  # on top: never stops
    (path,) = distill_all(teacher, train, tmp_path, "tts", shards=1)
    assert load_shard(path)[1]["dropped"]["not_stopped"] == len(raw)


def test_merged_shards_equal_the_whole(corpus, tmp_path, monkeypatch):
    bias_eos(monkeypatch, 2.0)
    teacher, train, raw = corpus("nmt", n=11)
    whole = merge_distilled(
        distill_all(teacher, train, tmp_path, "nmt", shards=1),
        tmp_path / "whole.pt",
        tmp_path / "whole.json",
    )
    parts = merge_distilled(
        distill_all(teacher, train, tmp_path, "nmt", shards=3),
        tmp_path / "parts.pt",
        tmp_path / "parts.json",
    )
    a, b = load_split(tmp_path / "whole.pt"), load_split(tmp_path / "parts.pt")
    assert a.ids == b.ids
    for side in ("src", "tgt"):
        assert torch.equal(getattr(a, side).values, getattr(b, side).values)
        assert torch.equal(getattr(a, side).offsets, getattr(b, side).offsets)
    assert whole["dropped"] == parts["dropped"] and parts["shards"] == 3
    assert whole["target_length"] == parts["target_length"]


def test_more_shards_than_sentences_leave_empty_shards(corpus, tmp_path, monkeypatch):
    bias_eos(monkeypatch, 100.0)  # one token, then EOS: every output is kept
    teacher, train, raw = corpus("nmt", n=3)
    paths = distill_all(teacher, train, tmp_path, "nmt", shards=4)
    assert [load_shard(p)[1]["sentences"] for p in paths] == [1, 1, 1, 0]
    report = merge_distilled(paths, tmp_path / "kd.pt", tmp_path / "kd.json")
    kd = load_split(tmp_path / "kd.pt")
    assert kd.ids == raw.ids and report["kept"] == 3 and kd.tgt.values.dtype == torch.int32


def test_a_tts_shard_does_not_depend_on_other_shards(corpus, tmp_path, monkeypatch):
    bias_stop(monkeypatch, 1.0)  # stop logits near 0: the pre-net dropout decides the lengths
    teacher, train, _ = corpus("tts", n=8)
    first = distill_all(teacher, train, tmp_path, "tts", shards=2)[1]  # after shard 0 ran
    torch.manual_seed(12345)
    again = tmp_path / "again.pt"
    distill_shard(
        teacher,
        train,
        again,
        shard=1,
        shards=2,
        decoding=DECODING["tts"],
        seed=SEED,
        progress=False,
    )
    a, b = load_shard(first)[0], load_shard(again)[0]
    assert len(a) and a.ids == b.ids and torch.equal(a.tgt.offsets, b.tgt.offsets)
    assert torch.equal(a.tgt.values, b.tgt.values)
    other = tmp_path / "other_seed.pt"  # ... but it does depend on the run's seed
    distill_shard(
        teacher,
        train,
        other,
        shard=1,
        shards=2,
        decoding=DECODING["tts"],
        seed=SEED + 1,
        progress=False,
    )
    c = load_shard(other)[0]
    assert c.ids != a.ids or not torch.equal(c.tgt.values, a.tgt.values)


@pytest.mark.parametrize("shard", [-1, 2, 5])
def test_a_shard_outside_the_range_is_refused(shard, corpus, tmp_path):
    teacher, train, _ = corpus("nmt")
    with pytest.raises(ValueError, match="outside 0..1"):
        distill_shard(
            teacher,
            train,
            tmp_path / "x.pt",
            shard=shard,
            shards=2,
            decoding=DECODING["nmt"],
            seed=1,
        )
    assert not (tmp_path / "x.pt").exists()


def test_bad_inputs_get_clear_errors(corpus, tmp_path):
    teacher, train, _ = corpus("nmt")
    _, tts_train, _ = corpus("tts")
    with pytest.raises(InputError, match="expects tokens"):  # the TTS corpus for NMT
        distill_shard(
            teacher,
            tts_train,
            tmp_path / "x.pt",
            shard=0,
            shards=1,
            decoding=DECODING["nmt"],
            seed=1,
        )
    with pytest.raises(ValueError, match="lack"):
        distill_shard(
            teacher, train, tmp_path / "x.pt", shard=0, shards=1, decoding={"beam": 2}, seed=1
        )
    paths = distill_all(teacher, train, tmp_path, "nmt", shards=2)
    with pytest.raises(InputError, match="expected shard 0 of 2"):
        merge_distilled(paths[::-1], tmp_path / "kd.pt", tmp_path / "r.json")
    with pytest.raises(InputError, match="expected shard 0 of 1"):
        merge_distilled(paths[1:], tmp_path / "kd.pt", tmp_path / "r.json")
    with pytest.raises(InputError, match="not a distillation shard"):
        merge_distilled([train], tmp_path / "kd.pt", tmp_path / "r.json")
