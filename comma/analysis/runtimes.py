"""What the run cost: the benchmark TSVs Snakemake writes for every job (wall time ``s``,
``max_rss`` in MB, ``cpu_time``, ...) as one table per job, a per-rule summary in Markdown, and
a bar chart of the wall time per rule (:func:`summarize_runtimes`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from comma.analysis.plots import save_figure  # noqa: E402
from comma.io import write_csv, write_lines  # noqa: E402

BENCHMARK_COLUMNS = ("s", "max_rss", "cpu_time")


def read_benchmarks(files: Iterable[str | Path], root: str | Path) -> pd.DataFrame:
    """One row per benchmark TSV under `root`: rule (its first path component, or the file
    name for rule-level files), job (the rest), and the mean over repeats of s (wall seconds),
    max_rss (MB), cpu_time (s), mean_load; repeats = rows in the file."""
    root = Path(root)
    rows = []
    for file in sorted({Path(f) for f in files}):
        table = pd.read_csv(file, sep="\t", na_values=["NA", "-", ""])
        missing = [c for c in BENCHMARK_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{file}: not a Snakemake benchmark file (no {', '.join(missing)})")
        relative = file.relative_to(root) if file.is_relative_to(root) else Path(file.name)
        parts = relative.with_suffix("").parts
        rows.append(
            {
                "rule": parts[0],
                "job": "/".join(parts[1:]),
                "s": float(table.s.mean()),
                "max_rss": float(table.max_rss.mean()),
                "cpu_time": float(table.cpu_time.mean()),
                "mean_load": float(table.mean_load.mean()) if "mean_load" in table else np.nan,
                "repeats": len(table),
            }
        )
    if not rows:
        raise ValueError(f"no benchmark files under {root}")
    return pd.DataFrame(rows).sort_values(["rule", "job"], kind="stable", ignore_index=True)


def runtime_summary(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total / mean / max wall seconds, total CPU seconds, peak RSS (MB);
    sorted by total wall time."""
    summary = (
        jobs.groupby("rule")
        .agg(
            jobs=("s", "size"),
            total_s=("s", "sum"),
            mean_s=("s", "mean"),
            max_s=("s", "max"),
            cpu_s=("cpu_time", "sum"),
            peak_rss_mb=("max_rss", "max"),
        )
        .reset_index()
    )
    return summary.sort_values("total_s", ascending=False, kind="stable", ignore_index=True)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d} min"


def summarize_runtimes(
    files: Iterable[str | Path],
    root: str | Path,
    out_csv: str | Path,
    out_md: str | Path,
    out_png: str | Path | None = None,
) -> pd.DataFrame:
    """Write the per-job table `out_csv`, the per-rule Markdown summary and a bar chart."""
    jobs = read_benchmarks(files, root)
    summary = runtime_summary(jobs)
    write_csv(jobs, out_csv)
    total = jobs.s.sum()
    lines = [
        "# Runtime per rule",
        "",
        f"From {len(jobs)} Snakemake benchmark files under `{Path(root).as_posix()}/` (one per "
        "job; wall time, CPU time and peak resident memory as Snakemake measured them). Jobs "
        "ran in parallel, so the total wall time of the jobs exceeds the elapsed time of "
        f"the run. Sum of the jobs' wall time: {_duration(total)}.",
        "",
        "| rule | jobs | total wall | mean wall | max wall | CPU time | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.rule} | {r.jobs} | {_duration(r.total_s)} | {_duration(r.mean_s)} | "
            f"{_duration(r.max_s)} | {_duration(r.cpu_s)} | {r.peak_rss_mb:.0f} |"
            for r in summary.itertuples(index=False)
        ),
    ]
    write_lines(out_md, lines)
    if out_png is not None:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(summary) + 1.2))
        order = summary.iloc[::-1]
        ax.barh(order.rule, order.total_s / 60.0, color="tab:blue")
        for y, (minutes, n) in enumerate(zip(order.total_s / 60.0, order.jobs, strict=True)):
            ax.text(minutes, y, f" {n} job{'s' if n > 1 else ''}", va="center", fontsize=7)
        ax.set_xlabel("total wall time of the rule's jobs (minutes)")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        save_figure(fig, [out_png], dpi=120)
    return summary
