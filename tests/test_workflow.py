"""End to end: the tiny preset runs the whole DAG through Snakemake: data, preparation, AR
teachers, KD corpora, alignments, NAR models and Tables 2-4, CoMMA per task, variant and seed,
R(p), Figures 2-4, the length control, the findings and the report's plots."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_CONFIG, snakemake

from comma.alignment.store import TeacherAlignment
from comma.data.packed import load_split
from comma.data.vocab import Vocabulary

pytestmark = pytest.mark.slow

TARGET = "all"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    # About 5 minutes on 2 idle cores (129 jobs): three small teachers trained until they stop,
    # then the rest of the study
    snakemake(workdir, TARGET, "--cores", "2", "--configfile", str(TINY_CONFIG), timeout=3000)
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


def test_teachers_trained_decoded_and_scored(tiny_run):
    """The `teachers` part of the study: each teacher trained, its test set decoded and scored."""
    steps = yaml.safe_load(TINY_CONFIG.read_text())["training"]["teacher"]
    for task in ("nmt", "asr", "tts"):
        metrics = json.loads((tiny_run / "results" / "teacher" / task / "metrics.json").read_text())
        test = load_split(tiny_run / "work" / "data" / task / "test.pt")
        assert metrics["task"] == task and metrics["test_sentences"] == len(test)
        assert "baseline" in metrics
        lines = (tiny_run / "work" / "teacher" / task / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == steps[task]["max_steps"]  # one line per training step
        for kind in ("train_teacher", "evaluate_teacher"):
            assert (tiny_run / "logs" / "teacher" / kind / f"{task}.log").is_file()
            assert (tiny_run / "logs" / "benchmarks" / kind / f"{task}.tsv").is_file()
    hypotheses = (tiny_run / "work" / "teacher" / "nmt" / "test.hyp.txt").read_text().splitlines()
    assert len(hypotheses) == 40  # tiny.yaml: 40 test pairs
    # Griffin-Lim audio of tiny.yaml's 1 utterance: generated and reference
    assert len(list((tiny_run / "results" / "teacher" / "tts" / "samples").glob("*.wav"))) >= 2
    nothing = snakemake(
        tiny_run, "teachers", "-n", "--cores", "1", "--configfile", str(TINY_CONFIG)
    )
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


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
    # NMT's corpus changed: its teacher, KD corpus (2 shards), alignments (raw, kd), CoMMA
    # runs (raw, kd, ac, rawkept x 2 seeds), NAR models (3 rows x 2 seeds) and everything
    # downstream; no other task's job
    assert planned_jobs(forced) == {
        "prepare_nmt": 1,
        "summarize_data": 1,
        "train_teacher": 1,
        "evaluate_teacher": 1,
        "distill": 2,
        "merge_distilled": 1,
        "extract_alignment": 2,
        "train_comma": 8,
        "measure_ratio": 8,
        "train_nar": 6,
        "evaluate_nar": 6,
        "aggregate_ratio": 1,
        "length_control": 1,
        "figure2": 1,
        "figure3": 1,
        "figure4": 1,
        "figure_dependency": 1,
        "tables": 1,
        "findings": 1,
        "training_curves": 1,
        "ratio_convergence": 1,
        "runtimes": 1,
        "all": 1,
    }


def test_every_job_logged_and_benchmarked(tiny_run):
    logs = list((tiny_run / "logs").rglob("*.log"))
    benchmarks = list((tiny_run / "logs" / "benchmarks").rglob("*.tsv"))
    # 3 generators and 5 corpus manifests, 4 log-mel parts, 3 preparations, 1 summary; 3
    # teachers trained and evaluated; 6 KD shards and 3 merges; 5 alignments; 8 NAR models x 2
    # seeds trained and evaluated; 3 tasks x 4 variants (raw, kd, ac, rawkept) x 2 seeds x
    # (train + measure); aggregation, length control, 4 figures, tables, findings, training
    # curves, R(p) convergence, runtimes; the ASR teacher's WER on the TTS teacher's speech
    assert len(logs) == len(benchmarks) == 16 + 6 + 9 + 5 + 32 + 48 + 11 + 1


def test_ratio_tables_and_figure2(tiny_run):
    runs = pd.read_csv(tiny_run / "results" / "ratio.csv")
    assert len(runs) == 3 * 4 * 2 * 2  # tasks x variants x seeds x p
    assert set(runs.variant) == {"raw", "kd", "ac", "rawkept"}
    assert set(runs.task) == {"nmt", "asr", "tts"} and set(runs.seed) == {1, 2}
    assert ((runs.R > 0) & (runs.R < 1) & (runs["T"] > 0) & (runs["T"] < 1)).all()
    assert (runs.sentences > 0).all()
    # the same masks for both seeds: the predicted counts depend only on the test set and p
    counts = runs.pivot_table(index=["task", "p"], columns="seed", values="predicted")
    assert (counts[1] == counts[2]).all()
    # kd trains on the KD corpus, ac with the eq. 8 loss; all are measured on the raw test set
    ac_metrics = tiny_run / "work" / "comma" / "asr" / "raw_ac" / "seed1" / "metrics.jsonl"
    assert all("ac_kl" in json.loads(line) for line in ac_metrics.read_text().splitlines())
    sentences = runs.groupby(["task", "variant"]).sentences.max().unstack()
    assert (sentences["kd"] == sentences["raw"]).all() and (
        sentences["ac"] == sentences["raw"]
    ).all()
    heads = pd.read_csv(
        tiny_run / "work" / "comma" / "tts" / "raw_noac" / "seed1" / "ratio_heads.csv"
    )
    assert len(heads) == 2 * 2 * 4  # p x layers x heads
    assert runs.D.notna().all() and (runs.D < 1).all()  # the masked-loss dependency
    for name in (
        *("fig2.pdf", "fig2.png", "fig3.pdf", "fig4.png", "dependency.png"),
        "training_curves.png",
    ):
        assert (tiny_run / "results" / name).stat().st_size > 10_000
    assert "| asr | raw | 0.50 |" in (tiny_run / "results" / "ratio_summary.md").read_text()
    findings = (tiny_run / "results" / "findings.md").read_text()
    assert "R(p) ranks ASR > NMT > TTS at every p" in findings and "seeds [1, 2]" in findings
    metrics = (
        tiny_run / "work" / "comma" / "nmt" / "raw_noac" / "seed2" / "metrics.jsonl"
    ).read_text()
    assert len(metrics.splitlines()) == 30  # one line per training step


def test_kd_corpora_alignments_and_tables(tiny_run):
    for task in ("nmt", "asr", "tts"):
        raw = load_split(tiny_run / "work" / "data" / task / "train.pt")
        kd = load_split(tiny_run / "work" / "data" / task / "kd" / "train.pt")
        report = json.loads((tiny_run / "results" / "distill" / f"{task}.json").read_text())
        assert len(kd) == report["kept"] == report["sentences"] - report["dropped_total"] > 0
        assert report["sentences"] == len(raw)
        assert set(kd.ids) <= set(raw.ids)
        assert kd.tgt.is_tokens == raw.tgt.is_tokens and kd.src.values.dtype == raw.src.values.dtype
        raw_kept = load_split(tiny_run / "work" / "data" / task / "rawkept" / "train.pt")
        assert raw_kept.ids == kd.ids  # the paired raw corpus of Figure 3
    alignment = TeacherAlignment.load(tiny_run / "work" / "align" / "tts" / "kd" / "alignment.pt")
    kd_tts = load_split(tiny_run / "work" / "data" / "tts" / "kd" / "train.pt")
    every = torch.arange(len(kd_tts))
    sums = alignment.durations(every, int(kd_tts.src.lengths.max())).sum(1).tolist()
    assert sums == kd_tts.tgt.lengths.tolist()  # durations sum to each KD mel length
    # per-head soft maps for the per-head constraint, TTS included: [B, L, H, T, M], rows sum 1
    maps = alignment.head_attention(every[:3], int(kd_tts.tgt.lengths.max()), 64)
    assert maps.shape[1:3] == (2, 4)
    row_sums = maps.sum(-1)[0, :, :, : int(kd_tts.tgt.lengths[0])]
    assert torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-3)
    table4 = pd.read_csv(tiny_run / "results" / "table4.csv")
    # one row per NAR model and seed (2 in tiny), the teachers once
    assert list(table4.drop_duplicates("model").model) == [
        "Transformer",
        "NAT",
        "NAT w/o AC",
        "Transformer ASR",
        "NAR-ASR",
        "NAR-ASR w/o AC",
        "Transformer TTS",
        "FastSpeech",
        "FastSpeech w/o AC",
    ]
    assert (table4[table4.kind == "NAR"].groupby("model").seed.apply(sorted) == [[1, 2]] * 6).all()
    assert table4[table4.kind == "AR"].seed.isna().all()
    assert table4.loc[table4.task != "tts", ["bleu", "wer"]].notna().all().all()
    assert table4.loc[table4.task == "tts", ["mcd", "mel_l1"]].notna().all().all()
    assert "MOS" in (tiny_run / "results" / "table2.md").read_text()
    nar_tts = tiny_run / "results" / "nar" / "tts" / "kd_ac"
    samples = list((nar_tts / "seed1" / "samples").glob("*.wav"))
    assert samples
    findings = (tiny_run / "results" / "findings.md").read_text()
    assert "KD" in findings and "AC" in findings


def test_html_report_holds_every_figure_and_table(tiny_run):
    snakemake(tiny_run, "--report", "results/report.html", "--configfile", str(TINY_CONFIG))
    report = tiny_run / "results" / "report.html"
    assert report.stat().st_size > 100_000
    text = report.read_text(encoding="utf-8", errors="replace")
    for name in ("fig2.pdf", "fig3.pdf", "fig4.pdf", "table4.csv", "findings.md", "runtimes"):
        assert name in text, name
