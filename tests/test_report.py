"""Training curves and per-rule runtimes from fixture metrics and benchmark files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from comma.analysis.curves import Curve, plot_training_curves, read_metrics, smooth
from comma.analysis.runtimes import read_benchmarks, summarize_runtimes

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_metrics(path, steps=60, start=5.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for step in range(1, steps + 1):
            loss = start * np.exp(-step / 30) + 0.1 * np.sin(step)
            out.write(json.dumps({"step": step, "loss": loss, "lr": 1e-3, "seconds": 0.1}) + "\n")
    return str(path)


def test_smoothing_is_a_trailing_mean():
    assert smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert smooth(np.array([2.0, 4.0]), 1).tolist() == [2.0, 4.0]


def test_training_curves_one_panel_per_family_and_task(tmp_path):
    curves = [
        Curve("teacher", t, "teacher", write_metrics(tmp_path / t / "t.jsonl"))
        for t in ("nmt", "tts")
    ]
    curves += [
        Curve("comma", "nmt", f"{v} seed{s}", write_metrics(tmp_path / v / f"{s}.jsonl"), group=v)
        for v in ("raw", "kd")
        for s in (1, 2)
    ]
    curves.append(Curve("nar", "tts", "kd_ac", write_metrics(tmp_path / "nar.jsonl", start=-1.0)))
    plot_training_curves(curves, tmp_path / "curves.png", smoothing=5, title="loss")
    assert (tmp_path / "curves.png").stat().st_size > 20_000


def test_bad_metrics_file_is_named(tmp_path):
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not JSON"):
        read_metrics(bad)
    bad.write_text('{"step": 1, "lr": 2.0}\n')
    with pytest.raises(ValueError, match="no per-step metrics with step and loss"):
        read_metrics(bad)


def write_benchmark(root, name, *rows):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50.0\t{cpu}\n" for s, rss, cpu in rows]
    path.write_text(HEADER + "".join(lines))
    return path


def test_runtimes_per_job_and_per_rule(tmp_path):
    root = tmp_path / "benchmarks" / "runs"
    files = [
        write_benchmark(root, "train_comma/nmt_raw_seed1.tsv", (100.0, 900.0, 80.0)),
        write_benchmark(root, "train_comma/nmt_raw_seed2.tsv", (120.0, 950.0, 90.0)),
        write_benchmark(root, "figure2.tsv", (3.0, "NA", 2.0)),
        write_benchmark(
            root, "measure_ratio/nmt_raw_seed1.tsv", (4.0, 500.0, 3.0), (6.0, 700.0, 5.0)
        ),
    ]
    jobs = read_benchmarks(files, root)
    assert jobs.rule.tolist() == ["figure2", "measure_ratio", "train_comma", "train_comma"]
    assert jobs.job.tolist() == ["", "nmt_raw_seed1", "nmt_raw_seed1", "nmt_raw_seed2"]
    repeated = jobs[jobs.rule == "measure_ratio"].iloc[0]
    assert repeated.s == 5.0 and repeated.repeats == 2 and np.isnan(jobs.max_rss[0])
    out = {n: tmp_path / n for n in ("r.csv", "r.md", "r.png")}
    summary = summarize_runtimes(files, root, *out.values())
    assert summary.rule.tolist() == ["train_comma", "measure_ratio", "figure2"]
    first = summary.iloc[0]
    assert first.jobs == 2 and first.total_s == 220.0 and first.peak_rss_mb == 950.0
    assert len(pd.read_csv(out["r.csv"])) == 4
    text = out["r.md"].read_text()
    assert "| train_comma | 2 | 3:40 min | 1:50 min | 2:00 min | 2:50 min | 950 |" in text
    assert out["r.png"].stat().st_size > 5_000


def test_a_file_that_is_no_benchmark_is_named(tmp_path):
    bad = tmp_path / "x.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match=r"x\.tsv: not a Snakemake benchmark file"):
        read_benchmarks([bad], tmp_path)
