"""A human-facing summary of the prepared corpora: a Markdown table and a length plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from comma.analysis.plots import save_figure  # noqa: E402
from comma.data.packed import SPLITS, load_split  # noqa: E402
from comma.io import read_json, write_lines  # noqa: E402
from comma.tasks import TASKS  # noqa: E402


def summarize_prepared(task_dirs: dict[str, Path], table_path, plot_path, *, preset: str) -> None:
    """Write `table_path` (Markdown: sizes, mean lengths, M/N, vocabularies per task and split)
    and `plot_path` (length histograms of source and target per task) from `work/data/{task}`."""
    lines = [
        f"# Prepared corpora ({preset} preset)",
        "",
        "M = source length, N = target length (eq. 1 of the paper normalizes by both).",
        "",
        "| task | split | sequences | source unit | mean M | target unit | mean N | M/N |",
        "|---|---|---:|---|---:|---|---:|---:|",
    ]
    fig, axes = plt.subplots(1, len(task_dirs), figsize=(4.2 * len(task_dirs), 3.4), squeeze=False)
    for ax, (task, directory) in zip(axes[0], task_dirs.items(), strict=True):
        stats = read_json(Path(directory) / "stats.json")
        src_unit, tgt_unit = TASKS[task].units  # table headers and axis labels
        for split in SPLITS:
            s = stats["splits"][split]
            m, n = s["src_len"]["mean"], s["tgt_len"]["mean"]
            lines.append(
                f"| {task} | {split} | {s['sequences']} | {src_unit} | {m:.1f} "
                f"| {tgt_unit} | {n:.1f} | {m / n:.2f} |"
            )
        train = load_split(Path(directory) / "train.pt")
        ax.hist(train.src.lengths.numpy(), bins=30, alpha=0.6, label=f"source ({src_unit})")
        ax.hist(train.tgt.lengths.numpy(), bins=30, alpha=0.6, label=f"target ({tgt_unit})")
        ax.set_title(f"{task.upper()} train ({len(train)} pairs)")
        ax.set_xlabel("length")
        ax.set_ylabel("sequences")
        ax.legend(fontsize=8)
    left_out = []
    for task, directory in task_dirs.items():
        record = read_json(Path(directory) / "stats.json").get("duration_filter")
        records = (
            {"": record} if record and "left_out" in record else (record or {})
        )  # TTS: one record; ASR: one per split
        for split, r in records.items():
            if r.get("left_out"):
                left_out.append(
                    f"- {task}{' ' + split if split else ''}: {r['left_out']} utterance(s) "
                    f"outside {r['min_seconds']:g}-{r['max_seconds']:g} s left out "
                    f"({r['too_short']} too short, {r['too_long']} too long), e.g. "
                    + ", ".join(r["examples"][:3])
                )
    if left_out:
        lines += ["", "Left out by duration (prepare.*.min_seconds / max_seconds):", *left_out]
    vocab_lines = ["", "| task | source vocabulary | target vocabulary |", "|---|---:|---:|"]
    for task, directory in task_dirs.items():
        vocab = read_json(Path(directory) / "stats.json")["vocab"]
        vocab_lines.append(
            f"| {task} | {vocab.get('src') or 'mel'} | {vocab.get('tgt') or 'mel'} |"
        )
    fig.tight_layout()
    save_figure(fig, [plot_path], dpi=120)
    write_lines(table_path, lines + vocab_lines)
