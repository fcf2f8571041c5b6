"""The task registry (comma.tasks) is the one home of a task's facts: a task added to it for the
length of a test (monkeypatch) reaches every fact derived from it, and a student added to the
model registry decides what the alignment stage stores for its task.

What this cannot show, and docs/architecture.md's "Adding a task" lists instead: the module-level
views TASK_NAMES, TASK_LABELS, TASK_COLORS and WILDCARD are computed once at import (the
workflow reads WILDCARD while Snakemake parses the rules), so a task added after import is not
in them; here they are checked to be exactly those views of TASKS. The data readers, the
prepare rule, the config keys and the paper's table rows of a new task are code and settings
that must be written, not derived."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from comma import tasks
from comma.analysis import tables
from comma.analysis.findings_accuracy import table2_gaps
from comma.data.packed import PackedSequences, Split
from comma.engine.decode_settings import MEL_KEYS, TOKEN_KEYS, DecodingSettings
from comma.errors import InputError
from comma.models.registry import NAR_MODELS
from comma.stages import distill
from comma.stages.align import stored_kinds
from comma.tasks import TASKS, Task, check_task
from comma.workflow_config import family_settings

# speech-to-speech: log-mel on both sides, judged by mel L1 first
S2S = Task(
    "s2s",
    "S2S",
    "tab:purple",
    ("src", "tgt"),
    "a fake parallel speech corpus",
    units=("log-mel frames", "log-mel frames"),
    prepared_files=("stats.json",),
    metrics=("mcd", "mel_l1"),
    primary="mel_l1",
    table_heading="S2S (MCD dB / mel L1)",
)


class FakeStudent:
    """A NAR student of s2s whose constraint reads the teacher's durations and windows."""

    TEACHER_TARGETS = ("durations", "window")


@pytest.fixture
def s2s(monkeypatch):
    monkeypatch.setitem(TASKS, "s2s", S2S)
    monkeypatch.setitem(NAR_MODELS, "s2s", FakeStudent)
    return S2S


def _mel_split(n: int, n_mels: int) -> Split:
    mels = [torch.zeros(3 + k, n_mels) for k in range(n)]
    return Split(PackedSequences.from_list(mels), PackedSequences.from_list(mels), list(range(n)))


def test_a_task_in_the_registry_reaches_every_derived_fact(s2s, tmp_path):
    assert check_task("s2s") == "s2s"
    # decoding: a log-mel target is generated frame by frame
    assert DecodingSettings.keys("s2s") == MEL_KEYS and DecodingSettings.keys("nmt") == TOKEN_KEYS
    mel = dict(max_len_a=2.0, max_len_b=10, stop_threshold=0.5, batch_sentences=4)
    assert DecodingSettings.from_config(mel, "s2s").arguments() == mel
    # distillation's corpus check: both sides must be log-mel of the teacher's bins
    teacher = SimpleNamespace(config=SimpleNamespace(n_mels=5))
    distill._check_corpus("s2s", _mel_split(2, 5), teacher, tmp_path / "t.pt", tmp_path / "m.pt")
    with pytest.raises(InputError, match="4 mel bins"):
        distill._check_corpus("s2s", _mel_split(2, 4), teacher, tmp_path / "t", tmp_path / "m")
    # the alignment stores what its student reads
    assert stored_kinds("s2s") == {"durations", "expected"}
    # the workflow's vocabularies (rules/common.smk vocab_files) and the corpus summary's units
    assert s2s.vocabularies == () and TASKS["nmt"].vocabularies == ("dict.src.txt", "dict.tgt.txt")
    assert s2s.units == ("log-mel frames", "log-mel frames")
    # Tables 2-4: its metrics, in the tables and in the findings' primary and secondary gaps
    rows = [{"mcd": 5.0, "mel_l1": 0.5}, {"mcd": 7.0, "mel_l1": 0.7}]
    assert tables._accuracy("s2s", rows) == "6.00 ± 1.41 / 0.600 ± 0.141"
    table2 = pd.DataFrame(
        [
            dict(model="AR", kind="AR", corpus="raw", constraint="", mcd=5.0, mel_l1=0.5),
            dict(model="NAR", kind="NAR", corpus="kd", constraint="ac", mcd=6.0, mel_l1=1.0),
        ]
    ).assign(task="s2s", bleu=float("nan"), wer=float("nan"))  # as read_table fills them
    gaps = table2_gaps(table2).iloc[0]
    assert (gaps.primary_metric, gaps.secondary_metric) == ("mel_l1", "mcd")
    assert gaps.primary_gap == pytest.approx(1.0) and gaps.secondary_gap == pytest.approx(0.2)


def test_the_paper_tasks_keep_their_facts():
    """The three tasks' derived facts as the code held them before the registry did."""
    ranked = {name: task.ranked_metrics() for name, task in TASKS.items()}
    assert ranked == {
        "nmt": (("bleu", 1), ("wer", -1)),
        "asr": (("wer", -1), ("bleu", 1)),
        "tts": (("mcd", -1), ("mel_l1", -1)),
    }
    assert {name: stored_kinds(name) for name in TASKS} == {
        "nmt": {"map"},
        "asr": {"map", "expected"},
        "tts": {"durations"},
    }
    assert [DecodingSettings.keys(name) for name in TASKS] == [TOKEN_KEYS, TOKEN_KEYS, MEL_KEYS]
    assert tables.METRICS == ["bleu", "wer", "mcd", "mel_l1"]


def test_the_import_time_views_are_the_registry():
    assert tuple(TASKS) == tasks.TASK_NAMES
    assert "|".join(TASKS) == tasks.WILDCARD
    assert {name: task.label for name, task in TASKS.items()} == tasks.TASK_LABELS
    assert {name: task.color for name, task in TASKS.items()} == tasks.TASK_COLORS
    assert set(tasks.PAPER_RANKING) == set(TASKS)


def test_a_new_family_splits_its_settings_like_the_others():
    """A family with one models.<family>.<task> per task needs no code in family_settings."""
    config = {
        "models": {"new": {"s2s": {"d_model": 8, "lr": 1e-3, "batch_size": 4}}},
        "training": {"new": {"s2s": {"max_steps": 10, "warmup_steps": 2}}},
    }
    assert family_settings(config, "new", "s2s") == (
        {"d_model": 8},
        {"max_steps": 10, "warmup_steps": 2, "lr": 1e-3, "max_sentences": 4},
    )
