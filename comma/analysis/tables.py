"""The paper's Tables 2-4 from this run's metrics files.

Light on purpose (no torch): the workflow reads :data:`TABLE_ROWS` when it is parsed, to know
which NAR models to train (:func:`nar_variants_of_tables`). A NAR variant is
``{corpus}_{constraint}``: trained on the raw corpus or the teacher's distillation of it (kd),
with or without the alignment constraint (ac / noac), once per seed; the AR teachers once. The
CSV tables hold one row per model and seed (``seed`` empty for the teacher), the Markdown
tables the mean and standard deviation over seeds. TTS has no MOS here: mel-cepstral
distortion and log-mel L1 against the recordings are the objective proxy (lower is better).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from comma.tasks import METRICS as TASK_METRICS
from comma.tasks import TASKS

# The paper's tables: (table, task) -> rows of (model name, NAR variant or None for the teacher)
# where a NAR variant is "{corpus}_{constraint}".
TABLE_ROWS: dict[str, dict[str, list[tuple[str, str | None]]]] = {
    "table2": {
        "nmt": [("Transformer", None), ("NAT", "kd_ac")],
        "asr": [("Transformer ASR", None), ("NAR-ASR", "raw_ac")],
        "tts": [("Transformer TTS", None), ("FastSpeech", "kd_ac")],
    },
    "table3": {
        "nmt": [("Transformer", None), ("NAT", "kd_ac"), ("NAT w/o KD", "raw_ac")],
        "tts": [
            ("Transformer TTS", None),
            ("FastSpeech", "kd_ac"),
            ("FastSpeech w/o KD", "raw_ac"),
        ],
    },
    "table4": {
        "nmt": [("Transformer", None), ("NAT", "kd_ac"), ("NAT w/o AC", "kd_noac")],
        "asr": [
            ("Transformer ASR", None),
            ("NAR-ASR", "raw_ac"),
            ("NAR-ASR w/o AC", "raw_noac"),
        ],
        "tts": [
            ("Transformer TTS", None),
            ("FastSpeech", "kd_ac"),
            ("FastSpeech w/o AC", "kd_noac"),
        ],
    },
}
TABLE_CAPTIONS = {
    "table2": "Table 2: the accuracy gap between NAR and AR models.",
    "table3": "Table 3: NAR models with and without knowledge distillation.",
    "table4": "Table 4: NAR models with and without the alignment constraint.",
}
COLUMNS = ["task", "model", "kind", "corpus", "constraint", "seed"]
METRICS = list(TASK_METRICS)
DIGITS = {"bleu": 2, "wer": 2, "mcd": 2, "mel_l1": 3}  # in the Markdown tables


def nar_variants_of_tables(tasks: Iterable[str]) -> dict[str, list[str]]:
    """Every NAR variant the tables need, per task (the train_nar runs of a study)."""
    variants: dict[str, list[str]] = {task: [] for task in tasks}
    for rows in TABLE_ROWS.values():
        for task, models in rows.items():
            for _, variant in models:
                if task in variants and variant is not None and variant not in variants[task]:
                    variants[task].append(variant)
    return variants


def _row(task: str, model: str, variant: str | None, seed, metrics: dict) -> dict[str, Any]:
    corpus, constraint = ("raw", "") if variant is None else variant.split("_")
    return {
        "task": task,
        "model": model,
        "kind": "AR" if variant is None else "NAR",
        "corpus": corpus,
        "constraint": constraint,
        "seed": seed,
        "bleu": metrics.get("bleu", math.nan),
        "wer": metrics.get("wer", math.nan),
        "mcd": metrics.get("mcd", math.nan),
        "mel_l1": metrics.get("mel_l1_dtw", math.nan),
    }


def _spread(values, digits: int) -> str:
    """Mean, and ``± std`` over seeds when there are several."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _accuracy(task: str, rows: list[Mapping[str, Any]]) -> str:
    """The task's two metrics (:attr:`comma.tasks.Task.metrics`), mean ± std over seeds."""
    return " / ".join(_spread([r[m] for r in rows], DIGITS[m]) for m in TASKS[task].metrics)


def write_tables(
    teacher_metrics: Mapping[str, str | Path],
    nar_metrics: Mapping[str, Mapping[str, Mapping[int, str | Path]]],
    out_dir: str | Path,
    preset: str = "",
) -> dict[str, Any]:
    """Tables 2-4 from the metrics files: `teacher_metrics` task -> metrics.json of the AR
    teacher; `nar_metrics` task -> variant -> seed -> metrics.json of a NAR model. Writes
    ``table{2,3,4}.csv`` (columns :data:`COLUMNS` and :data:`METRICS`, one row per model and
    seed) and ``.md`` (mean ± std over seeds) to `out_dir`, with the rows of the tasks given;
    every number comes from those files."""
    import pandas as pd

    from comma.io import atomic_path, read_json, write_lines

    out_dir = Path(out_dir)
    tables = {}
    for name, per_task in TABLE_ROWS.items():
        rows, lines = [], []
        for task, models in per_task.items():
            if task not in teacher_metrics:
                continue
            for model, variant in models:
                if variant is None:
                    runs = {None: teacher_metrics[task]}
                else:
                    runs = nar_metrics[task][variant]
                    if not runs:
                        raise ValueError(f"no seed of the {task} NAR model {variant}")
                model_rows = [
                    _row(task, model, variant, seed, read_json(path))
                    for seed, path in sorted(runs.items(), key=lambda item: item[0] or 0)
                ]
                rows += model_rows
                constraint = {"ac": "yes", "noac": "no", "": ""}[model_rows[0]["constraint"]]
                seeds = "" if variant is None else str(len(model_rows))
                lines.append(
                    f"| {TASKS[task].table_heading} | {model} | {model_rows[0]['corpus']} | "
                    f"{constraint} | {seeds} | {_accuracy(task, model_rows)} |"
                )
        table = pd.DataFrame(rows, columns=COLUMNS + METRICS).astype({"seed": "Int64"})
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
        header = [
            f"# {TABLE_CAPTIONS[name]}",
            "",
            f"Computed by this run ({preset} preset) from the models' test-set metrics. "
            "BLEU: sacrebleu on tokenized, BPE-removed text; WER: jiwer; TTS: mel-cepstral "
            "distortion and log-mel L1 against the recordings after DTW, the objective proxy "
            "that replaces the paper's MOS (lower is better). NAR models: mean ± standard "
            "deviation over the seeds (one row per seed in the CSV); AR teachers: one run.",
            "",
            "| Task | Model | Corpus | AC | Seeds | Accuracy |",
            "|---|---|---|---|---:|---:|",
        ]
        write_lines(out_dir / f"{name}.md", header + lines)
        tables[name] = table
    return tables
