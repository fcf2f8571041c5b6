"""The one registry of the study's tasks: their names, which side is log-mel, how figures label
and colour them, and the paper's ranking of their target-token dependency.

Everything that loops over tasks, checks a task name or draws one reads it from here (the
workflow's wildcard constraint too), so adding a task starts in this file."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Task",
    "TASKS",
    "TASK_NAMES",
    "PAPER_RANKING",
    "TASK_LABELS",
    "TASK_COLORS",
    "WILDCARD",
    "check_task",
]


@dataclass(frozen=True)
class Task:
    name: str  # the wildcard value and the config key: nmt | asr | tts
    label: str  # in figures and tables
    color: str  # matplotlib colour of its curves
    mel_sides: tuple[str, ...]  # which of "src" / "tgt" are log-mel frames (else tokens)
    dataset: str  # the paper's corpus


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("nmt", "NMT", "tab:blue", (), "IWSLT14 De-En"),
        Task("asr", "ASR", "tab:red", ("src",), "LibriTTS"),
        Task("tts", "TTS", "tab:green", ("tgt",), "LJSpeech"),
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
