"""The one registry of the study's tasks: their names, which side is log-mel, what a sequence is
made of, the files their preparation writes, their accuracy metrics, how figures and tables label
and colour them, and the paper's ranking of their target-token dependency.

Everything that loops over tasks, checks a task name or draws one reads it from here (the
workflow's wildcard constraint too), so adding a task starts in this file. Derived from it
elsewhere: the decoding settings a task's teacher takes (mel generation for a log-mel target,
:class:`comma.engine.decode_settings.DecodingSettings`), the corpus check of distillation, the
vocabularies a rule reads (``rules/common.smk``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Task",
    "METRIC_DIRECTIONS",
    "METRICS",
    "TASKS",
    "TASK_NAMES",
    "PAPER_RANKING",
    "TASK_LABELS",
    "TASK_COLORS",
    "WILDCARD",
    "check_task",
]


# The accuracy metrics of Tables 2-4 (the columns of table{2,3,4}.csv) and which way is better:
# +1 higher, -1 lower.
METRIC_DIRECTIONS = {"bleu": 1, "wer": -1, "mcd": -1, "mel_l1": -1}
METRICS = tuple(METRIC_DIRECTIONS)


@dataclass(frozen=True)
class Task:
    name: str  # the wildcard value and the config key: nmt | asr | tts
    label: str  # in figures and tables
    color: str  # matplotlib colour of its curves
    mel_sides: tuple[str, ...]  # which of "src" / "tgt" are log-mel frames (else tokens)
    dataset: str  # the paper's corpus
    units: tuple[str, str]  # what a source and a target sequence is made of (corpus summary)
    # work/data/<task>/ beside {train,valid,test}.pt: vocabularies (dict.*.txt), BPE codes,
    # test references, stats.json (what later rules and the report read)
    prepared_files: tuple[str, ...]
    metrics: tuple[str, str]  # its two accuracy metrics in Tables 2-4, in the tables' order
    primary: str  # which of them the findings judge first (the other is the secondary)
    table_heading: str  # its heading in tables.md

    def is_mel(self, side: str) -> bool:
        """Whether `side` ("src" or "tgt") holds log-mel frames (else tokens)."""
        return side in self.mel_sides

    @property
    def vocabularies(self) -> tuple[str, ...]:
        """The prepared files that are vocabularies (dict.src.txt, dict.tgt.txt)."""
        return tuple(f for f in self.prepared_files if f.startswith("dict."))

    def ranked_metrics(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """(primary, secondary), each as (metric, +1 if higher is better else -1)."""
        secondary = next(m for m in self.metrics if m != self.primary)
        return (
            (self.primary, METRIC_DIRECTIONS[self.primary]),
            (secondary, METRIC_DIRECTIONS[secondary]),
        )


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "nmt",
            "NMT",
            "tab:blue",
            (),
            "IWSLT14 De-En",
            units=("German BPE tokens", "English BPE tokens"),
            prepared_files=(
                "dict.src.txt",
                "dict.tgt.txt",
                "bpe.codes",
                "test.ref.txt",
                "stats.json",
            ),
            metrics=("bleu", "wer"),
            primary="bleu",
            table_heading="NMT (BLEU / WER)",
        ),
        Task(
            "asr",
            "ASR",
            "tab:red",
            ("src",),
            "LibriTTS",
            units=("log-mel frames", "BPE tokens"),
            prepared_files=("dict.tgt.txt", "bpe.codes", "test.ref.txt", "stats.json"),
            metrics=("bleu", "wer"),
            primary="wer",
            table_heading="ASR (BLEU / WER)",
        ),
        Task(
            "tts",
            "TTS",
            "tab:green",
            ("tgt",),
            "LJSpeech",
            units=("phonemes", "log-mel frames"),
            prepared_files=("dict.src.txt", "stats.json"),
            metrics=("mcd", "mel_l1"),
            primary="mcd",
            table_heading="TTS (MCD dB / mel L1; MOS proxy, lower is better)",
        ),
    )
}
TASK_NAMES = tuple(TASKS)  # the order of tables and report sections
# The paper's ranking of R(p), highest first: ASR > NMT > TTS at every p (section 3.2).
PAPER_RANKING = ("asr", "nmt", "tts")
TASK_LABELS = {name: task.label for name, task in TASKS.items()}
TASK_COLORS = {name: task.color for name, task in TASKS.items()}
WILDCARD = "|".join(TASK_NAMES)  # Snakemake's wildcard_constraints for {task}


def check_task(task: str) -> str:
    """`task`, or a ValueError naming the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASK_NAMES}")
    return task
