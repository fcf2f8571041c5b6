"""comma.stages.align.extract_alignment and TeacherAlignment: a teacher's alignments of a corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_teachers import _config, _toy_split

from comma.alignment.store import TeacherAlignment
from comma.data.packed import save_split
from comma.io import torch_save
from comma.models.teacher import MODEL_FORMAT, build_teacher
from comma.stages.align import extract_alignment


def _saved_teacher(tmp_path, task):
    torch.manual_seed(0)
    config = _config(task)
    model = build_teacher(config)
    path = tmp_path / f"{task}.model.pt"
    torch_save(
        {"format": MODEL_FORMAT, "config": config.to_dict(), "model": model.state_dict()}, path
    )
    split = _toy_split(task, n=12)
    save_split(tmp_path / f"{task}.train.pt", split)
    return path, tmp_path / f"{task}.train.pt", split


def _extract(tmp_path, task, **kw):
    teacher, train, split = _saved_teacher(tmp_path, task)
    out, summary = tmp_path / f"{task}.align.pt", tmp_path / f"{task}.summary.json"
    kw = {"attention": "diagonal_head", "batch_sentences": 5, "seed": 1, "progress": False} | kw
    extract_alignment(teacher, train, out, summary, **kw)
    return TeacherAlignment.load(out), json.loads(summary.read_text()), split


def test_tts_durations_sum_to_each_mel_length(tmp_path):
    alignment, summary, split = _extract(tmp_path, "tts", min_focus_rate=0.99)
    assert torch.equal(alignment.tgt_lengths, split.tgt.lengths)
    assert torch.equal(alignment.src_lengths, split.src.lengths)
    durations = alignment.durations(torch.arange(len(split)), int(split.src.lengths.max()))
    assert torch.equal(durations.sum(1), split.tgt.lengths)
    assert alignment.maps is None and alignment.expected is None
    # a random teacher is far from diagonal: every utterance is under a 0.99 threshold
    assert summary["low_focus"] == list(range(len(split)))
    assert summary["attention"].startswith("layer ")
    # the AC target rebuilt from durations is the one-hot alignment, frame by frame
    maps = alignment.attention(torch.tensor([0, 1]), 40, 10)
    t0, m0 = int(split.tgt.lengths[0]), int(split.src.lengths[0])
    assert torch.equal(maps[0, :t0].sum(-1), torch.ones(t0))
    owner = maps[0, :t0, :m0].argmax(-1)
    assert torch.equal(torch.bincount(owner, minlength=m0), durations[0, :m0])
    assert maps[0, t0:].sum() == 0


def test_asr_expected_positions_lie_in_the_subsampled_source(tmp_path):
    alignment, _, split = _extract(tmp_path, "asr")
    assert torch.equal(alignment.tgt_lengths, split.tgt.lengths)
    assert bool((alignment.src_lengths < split.src.lengths).all())  # conv subsampling
    for k in range(len(split)):
        expected = alignment.expected[k]
        assert len(expected) == int(split.tgt.lengths[k])
        assert int(expected.min()) >= 1 and int(expected.max()) <= int(alignment.src_lengths[k])
    index = torch.tensor([3, 0])
    n_max, m_max = int(alignment.tgt_lengths.max()), int(alignment.src_lengths.max())
    window = alignment.window(index, n_max, m_max)
    assert window.shape == (2, n_max, m_max)
    assert bool(window[0, : int(alignment.tgt_lengths[3])].any(-1).all())
    maps = alignment.attention(index, n_max, m_max)
    rows = maps.sum(-1)
    assert torch.allclose(rows[0, : int(alignment.tgt_lengths[3])], torch.ones(1), atol=1e-3)


def test_nmt_maps_roundtrip_select_and_determinism(tmp_path):
    alignment, summary, split = _extract(tmp_path, "nmt", attention="last_layer")
    assert summary["attention"] == "layer 1 mean over heads"
    assert not list(tmp_path.glob(".head_maps.*"))  # the scratch store is gone
    assert summary["head_maps_bytes"] == alignment.head_maps.values.numel() * 2
    again = TeacherAlignment.load(tmp_path / "nmt.align.pt")
    assert torch.equal(again.maps.values, alignment.maps.values)
    picked = alignment.select([4, 2])
    assert torch.equal(picked.tgt_lengths, alignment.tgt_lengths[[4, 2]])
    assert torch.equal(picked.maps[0], alignment.maps[4])
    n_max, m_max = 8, 8
    assert torch.equal(
        picked.attention(torch.tensor([1]), n_max, m_max),
        alignment.attention(torch.tensor([2]), n_max, m_max),
    )
    with pytest.raises(ValueError, match="has no durations"):
        alignment.durations(torch.tensor([0]), 8)
    with pytest.raises(ValueError, match="beyond the student's batch"):
        alignment.attention(torch.tensor([0]), 1, 1)
    # A batch's targets travel with it, padded to its longest teacher lengths, and refuse a
    # student whose lengths differ from the teacher's.
    targets = alignment.batch_targets(torch.tensor([4, 2]), ("attention",))
    assert targets.attention.shape == (
        2,
        *(int(alignment.tgt_lengths[[4, 2]].max()),),
        int(alignment.src_lengths[[4, 2]].max()),
    )
    assert torch.equal(
        targets.attention_map(n_max, m_max), alignment.attention(torch.tensor([4, 2]), n_max, m_max)
    )
    assert targets.windows is None and targets.token_durations is None
    with pytest.raises(ValueError, match="sentence 4: the teacher's alignment has source length"):
        targets.check_lengths(targets.src_lengths + 1, targets.tgt_lengths)
    # the same seed and corpus give the same alignments
    _extract(tmp_path, "nmt", attention="last_layer")
    assert torch.equal(
        TeacherAlignment.load(tmp_path / "nmt.align.pt").maps.values, again.maps.values
    )


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_loaded_alignment_is_memory_mapped_not_read(tmp_path):
    """A store of per-head maps can be corpus-sized (~30 GB for LJSpeech): training reads
    its batches' rows from the file's mapping, it does not copy the store into memory."""
    _extract(tmp_path, "nmt", attention="last_layer")
    path = tmp_path / "nmt.align.pt"
    loaded = TeacherAlignment.load(path)
    address = loaded.head_maps.values.data_ptr()
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            mapped.append(rest[-1] if len(rest) >= 5 else "")
    assert mapped == [str(path.resolve())]


def test_a_wrong_file_is_named(tmp_path):
    torch_save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(Exception, match="x.pt"):
        TeacherAlignment.load(tmp_path / "x.pt")
