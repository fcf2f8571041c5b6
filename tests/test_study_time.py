"""benchmarks/study_time.py: a resumed training job's earlier attempts are found in its
metrics.jsonl, since Snakemake's benchmark record keeps only the last attempt."""

import json
from pathlib import Path

from conftest import load_benchmark

study_time = load_benchmark("study_time")

BLOCK = """    input: work/data/tts/train.pt
    output: work/comma/tts/raw_noac/seed1/model.pt, work/comma/tts/raw_noac/seed1/metrics.jsonl
    benchmark: logs/benchmarks/train_comma/tts_raw_noac_seed1.tsv"""


def write_steps(workdir: Path, seconds: list[float]) -> None:
    path = workdir / "work/comma/tts/raw_noac/seed1/metrics.jsonl"
    path.parent.mkdir(parents=True)
    rows = [{"step": k + 1, "loss": 1.0, "seconds": s} for k, s in enumerate(seconds)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_step_seconds_beyond_the_last_attempts_wall_ran_before_it(tmp_path):
    write_steps(tmp_path, [2.0] * 10)  # 20 s of steps
    assert study_time.earlier_attempts_seconds(tmp_path, BLOCK, wall=8.0) == 12.0


def test_a_job_that_ran_whole_has_no_earlier_attempts(tmp_path):
    write_steps(tmp_path, [2.0] * 10)
    assert study_time.earlier_attempts_seconds(tmp_path, BLOCK, wall=25.0) == 0.0


def test_a_job_without_metrics_has_no_earlier_attempts(tmp_path):
    block = "    output: results/fig2.pdf\n    benchmark: logs/benchmarks/figure2.tsv"
    assert study_time.earlier_attempts_seconds(tmp_path, block, wall=3.0) == 0.0


def test_config_reaches_the_dry_run_and_comes_after_the_target(tmp_path):
    command = study_time.snakemake_command(tmp_path, "all", "-n", config=["tasks=[nmt]"])
    assert command[-4:] == ["all", "-n", "--config", "tasks=[nmt]"]
    assert "--config" not in study_time.snakemake_command(tmp_path, "all")
    # one task's slice of the study: no job of another task is planned
    nodes, _ = study_time.planned_dag(tmp_path, "results/fig2.pdf", config=["tasks=[nmt]"])
    tasks = {value for *_, wildcards in nodes.values() for key, value in wildcards if key == "task"}
    assert tasks == {"nmt"}
    assert any(rule == "train_comma" for rule, *_ in nodes.values())


def test_a_job_is_found_by_the_wildcards_its_dependencies_pass_down():
    # Snakemake's --dag labels train_nar with only "constraint, seed": corpus and task come from
    # its dependency, extract_alignment; two such jobs differ only in the corpus
    nodes = {
        1: ("extract_alignment", (("corpus", "kd"), ("task", "nmt")), None),
        2: ("extract_alignment", (("corpus", "raw"), ("task", "nmt")), None),
        3: ("train_nar", (("constraint", "ac"), ("seed", "1")), None),
        4: ("train_nar", (("constraint", "ac"), ("seed", "1")), None),
    }
    edges = [(1, 3), (2, 4)]
    inherited = {1: set(nodes[1][1]), 2: set(nodes[2][1])}
    inherited[3] = inherited[1] | set(nodes[3][1])
    inherited[4] = inherited[2] | set(nodes[4][1])
    nodes = {n: (rule, shown, frozenset(inherited[n])) for n, (rule, shown, _) in nodes.items()}
    job = dict(constraint="ac", corpus="raw", seed="1", task="nmt")
    seconds = {
        ("extract_alignment", (("corpus", "kd"), ("task", "nmt"))): 10.0,
        ("extract_alignment", (("corpus", "raw"), ("task", "nmt"))): 20.0,
        ("train_nar", tuple(sorted(job.items()))): 500.0,
        ("train_nar", tuple(sorted({**job, "corpus": "kd"}.items()))): 300.0,
    }
    assert study_time.node_seconds(nodes, seconds) == {1: 10.0, 2: 20.0, 3: 300.0, 4: 500.0}
    assert study_time.critical_path(nodes, edges, seconds) == (
        520.0,
        ["extract_alignment", "train_nar"],
    )
