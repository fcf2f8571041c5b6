"""End to end: the tiny preset runs the whole DAG so far through Snakemake: data,
preparation, CoMMA training per task and seed, R(p), the summaries and Figure 2."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from conftest import TINY_CONFIG, snakemake

from comma.data.packed import load_split
from comma.data.vocab import Vocabulary

pytestmark = pytest.mark.slow

TARGET = "all"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, TARGET, "--cores", "2", "--configfile", str(TINY_CONFIG))
    return workdir


def planned_jobs(result) -> dict[str, int]:
    """Job counts of a dry run's 'Job stats' table."""
    table = result.stdout.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_prepared_corpora(tiny_run):
    for task, (src_tokens, tgt_tokens) in {
        "nmt": (True, True),
        "asr": (False, True),
        "tts": (True, False),
    }.items():
        directory = tiny_run / "work" / "data" / task
        stats = json.loads((directory / "stats.json").read_text())
        for split in ("train", "valid", "test"):
            data = load_split(directory / f"{split}.pt")
            assert len(data) == stats["splits"][split]["sequences"] > 0
            for side, is_tokens, dict_name in (
                (data.src, src_tokens, "dict.src.txt"),
                (data.tgt, tgt_tokens, "dict.tgt.txt"),
            ):
                assert side.is_tokens == is_tokens
                if is_tokens:
                    vocab = Vocabulary.load(directory / dict_name)
                    assert int(side.values.max()) < len(vocab)
                else:
                    assert side.values.shape[1] == 80  # mel bins
                    assert bool(side.values.isfinite().all())
    summary = (tiny_run / "results" / "data_summary.md").read_text()
    assert "| nmt | train |" in summary and "| tts | test |" in summary
    assert (tiny_run / "results" / "data_lengths.png").stat().st_size > 10_000


def test_rerun_is_a_no_op_and_forcerun_redoes_only_dependents(tiny_run):
    nothing = snakemake(tiny_run, TARGET, "-n", "--cores", "1", "--configfile", str(TINY_CONFIG))
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    forced = snakemake(
        tiny_run,
        TARGET,
        "-n",
        "--cores",
        "1",
        "--configfile",
        str(TINY_CONFIG),
        "--forcerun",
        "prepare_nmt",
    )
    # NMT's corpus changed: its CoMMA runs (2 seeds) and everything downstream, nothing else
    assert planned_jobs(forced) == {
        "prepare_nmt": 1,
        "summarize_data": 1,
        "train_comma": 2,
        "measure_ratio": 2,
        "aggregate_ratio": 1,
        "figure2": 1,
        "findings": 1,
        "all": 1,
    }


def test_every_job_logged_and_benchmarked(tiny_run):
    logs = list((tiny_run / "logs").rglob("*.log"))
    benchmarks = list((tiny_run / "benchmarks" / "runs").rglob("*.tsv"))
    # 3 generators, 4 log-mel parts, 3 preparations, 1 summary, 3 tasks x 2 seeds x
    # (train + measure), 1 aggregation, 1 figure, 1 findings
    assert len(logs) == len(benchmarks) == 11 + 12 + 3


def test_ratio_tables_and_figure2(tiny_run):
    runs = pd.read_csv(tiny_run / "results" / "ratio.csv")
    assert len(runs) == 3 * 2 * 2  # tasks x seeds x p
    assert set(runs.task) == {"nmt", "asr", "tts"} and set(runs.seed) == {1, 2}
    assert ((runs.R > 0) & (runs.R < 1) & (runs["T"] > 0) & (runs["T"] < 1)).all()
    assert (runs.sentences > 0).all()
    # the same masks for both seeds: the predicted counts depend only on the test set and p
    counts = runs.pivot_table(index=["task", "p"], columns="seed", values="predicted")
    assert (counts[1] == counts[2]).all()
    heads = pd.read_csv(tiny_run / "work" / "comma" / "tts" / "raw" / "seed1" / "ratio_heads.csv")
    assert len(heads) == 2 * 2 * 4  # p x layers x heads
    for name in ("fig2.pdf", "fig2.png"):
        assert (tiny_run / "results" / name).stat().st_size > 10_000
    assert "| asr | raw | 0.50 |" in (tiny_run / "results" / "ratio_summary.md").read_text()
    findings = (tiny_run / "results" / "findings.md").read_text()
    assert "R(p) ranks ASR > NMT > TTS at every p" in findings and "seeds [1, 2]" in findings
    metrics = (tiny_run / "work" / "comma" / "nmt" / "raw" / "seed2" / "metrics.jsonl").read_text()
    assert len(metrics.splitlines()) == 30  # one line per training step
