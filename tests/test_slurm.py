"""The Snakemake profiles, the tiny DAG run through a real single-node Slurm, and a training
job cancelled mid-way that Snakemake's retry resumes from its checkpoint.

The cluster (tests/slurm/cluster.py) is Debian's slurm-wlm and munge, started as root for
each test that needs it and stopped by PID afterwards. Without the packages, or without root,
those tests skip and say why; under CI (or with COMMA_INSTALL_SLURM=1) as root they install
the packages first, and in CI a missing cluster is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yte
from conftest import REPO, TINY_CONFIG, snakemake
from slurm import cluster as slurm_cluster
from slurm.cluster import MARKER, SLURM_CONF, SlurmUnavailable, foreign_conf, running_cluster

from comma.engine.checkpoint import load_checkpoint

SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
PAPER_CONFIG = REPO / "config" / "paper.yaml"
# The ASR corpus through Slurm: one job of each resource class the profile sets (the 4 GB
# default; logmel's 2 CPUs; a preparation's memory), 8 jobs (the whole data preparation, 17
# jobs, took twice as long and tested nothing more about Slurm).
TARGET = "work/data/asr/stats.json"
# GPU rules the profiles configure before the workflow has them (the training stages).
PLANNED_GPU_RULES = {
    "train_teacher",
    "train_nar",
    "train_comma",
    "distill",
    "extract_alignment",
    "measure_ratio",
    "evaluate_teacher",
    "evaluate_teacher_tts",
    "evaluate_nar",
    "evaluate_nar_tts",
}
# The tiny DAG up to TARGET: jobs per rule.
TINY_JOBS = {
    "generate_mini_libritts": 1,
    "corpus_manifest": 3,
    "logmel": 3,
    "prepare_asr": 1,
}


def load_profile(profile: Path) -> dict:
    """The profile's settings as Snakemake reads them (YTE templates evaluated)."""
    with open(profile / "config.yaml") as handle:
        return yte.process_yaml(handle, require_use_yte=True)


def workflow_rules(workdir: Path, *config: str) -> set[str]:
    result = snakemake(workdir, "--list-rules", *(("--configfile", *config) if config else ()))
    return {line.split()[0] for line in result.stdout.splitlines() if re.match(r"^\w+$", line)}


def planned_jobs(stdout: str) -> dict[str, list[dict]]:
    """A dry run's jobs per rule: each job's threads and resources (as printed)."""
    jobs: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        job = {"threads": int(threads[1]) if threads else 1, "resources": {}}
        if resources:
            job["resources"] = dict(item.split("=", 1) for item in resources[1].split(", "))
        jobs.setdefault(head[1], []).append(job)
    return jobs


# --- the profiles, no Slurm needed -------------------------------------------------------


def test_profiles_name_only_real_or_planned_rules(tmp_path):
    """Snakemake ignores set-resources/set-threads for a rule it does not have, silently: a
    misspelt rule name would lose its GPU. Every name must be a rule of the workflow (either
    preset) or one of the planned GPU rules."""
    rules = workflow_rules(tmp_path) | workflow_rules(tmp_path, str(PAPER_CONFIG))
    assert {"logmel", "prepare_asr", "download_libritts", "generate_mini_iwslt14"} <= rules
    for profile in (SLURM_PROFILE, LOCAL_PROFILE):
        settings = load_profile(profile)
        named = set(settings.get("set-resources", {})) | set(settings.get("set-threads", {}))
        unknown = named - rules - PLANNED_GPU_RULES
        assert not unknown, f"{profile}: no such rules: {sorted(unknown)}"
        gpu_rules = {
            rule for rule, res in settings["set-resources"].items() if res.get("gpu", 0) >= 1
        }
        assert gpu_rules == PLANNED_GPU_RULES, profile


def test_paper_plan_with_slurm_profile_needs_no_live_slurm(tmp_path, monkeypatch):
    """`snakemake -n --profile profiles/slurm --configfile config/paper.yaml` plans every job
    with its Slurm resources; account and partitions come from the environment."""
    monkeypatch.setenv("COMMA_SLURM_ACCOUNT", "proj42")
    monkeypatch.setenv("COMMA_SLURM_PARTITION", "cpu")
    monkeypatch.setenv("COMMA_SLURM_GPU_PARTITION", "gpu")
    # --cores only lifts the dry run's cap on the threads it prints (a real run has none).
    plan = snakemake(
        tmp_path,
        "-n",
        "--profile",
        str(SLURM_PROFILE),
        "--cores",
        "64",
        "--configfile",
        str(PAPER_CONFIG),
    )
    jobs = planned_jobs(plan.stdout)
    assert {"download_libritts", "logmel", "prepare_asr", "summarize_data"} <= set(jobs)
    for rule, rule_jobs in jobs.items():
        for job in rule_jobs:
            res = job["resources"]
            if rule == "all":
                continue
            assert res["slurm_account"] == "proj42", (rule, res)
            if rule in PLANNED_GPU_RULES:
                assert (res["gpu"], res["slurm_partition"]) == ("1", "gpu"), (rule, res)
            else:
                assert "gpu" not in res and res["slurm_partition"] == "cpu", (rule, res)
    logmel = jobs["logmel"][0]
    assert logmel["threads"] == 8
    assert (logmel["resources"]["mem_mb"], logmel["resources"]["runtime"]) == ("24000", "480")
    assert jobs["summarize_data"][0]["resources"]["mem_mb"] == "4000"

    # Without the variables: no account or partition, so the plugin picks the cluster's own.
    for name in ("COMMA_SLURM_ACCOUNT", "COMMA_SLURM_PARTITION", "COMMA_SLURM_GPU_PARTITION"):
        monkeypatch.delenv(name)
    bare = snakemake(
        tmp_path, "-n", "--profile", str(SLURM_PROFILE), "--configfile", str(PAPER_CONFIG)
    )
    assert "slurm_account" not in bare.stdout and "slurm_partition" not in bare.stdout
    assert "Job stats" in bare.stdout


def test_local_profile_plans_the_mini_study(tmp_path):
    plan = snakemake(tmp_path, "-n", "--profile", str(LOCAL_PROFILE))
    jobs = planned_jobs(plan.stdout)
    assert "summarize_data" in jobs
    for rule in PLANNED_GPU_RULES & set(jobs):
        assert all(job["resources"]["gpu"] == "1" for job in jobs[rule]), rule


def test_never_replaces_a_foreign_slurm_conf(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=production\n")
    with pytest.raises(SlurmUnavailable, match="real Slurm configuration"):
        foreign_conf(conf)
    conf.write_text(f"# {MARKER} (pid 1)\nClusterName=comma-test\n")
    foreign_conf(conf)  # ours, left behind by a killed session: may be replaced


# --- a real Slurm ------------------------------------------------------------------------


@pytest.fixture
def slurm_ready():
    """Skip (fail in CI) unless this machine can run the test cluster."""
    try:
        slurm_cluster.check_available()
    except SlurmUnavailable as why:
        if slurm_cluster.in_ci():
            pytest.fail(f"CI must run the Slurm tests: {why}")
        pytest.skip(str(why))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slurm
def test_cluster_stops_every_daemon_even_when_the_body_fails(slurm_ready, tmp_path):
    pids = []
    with (
        pytest.raises(RuntimeError, match="the test body failed"),
        running_cluster(tmp_path / "cluster") as cluster,
    ):
        pids = [daemon.pid for daemon in cluster.daemons]
        assert len(pids) == 3 and all(_pid_alive(pid) for pid in pids)
        assert MARKER in SLURM_CONF.read_text()
        # a job still running must not outlive the cluster either
        sbatch = subprocess.run(
            ["sbatch", "--parsable", "--output=/dev/null", "--wrap=sleep 600"],
            capture_output=True,
            text=True,
            check=True,
        )
        job_id = sbatch.stdout.strip().split(";")[0]
        assert any(job["id"] == job_id and job["state"] != "COMPLETED" for job in cluster.jobs())
        raise RuntimeError("the test body failed")
    assert len(pids) == 3
    assert not any(_pid_alive(pid) for pid in pids)
    assert not SLURM_CONF.exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_dag_through_slurm_matches_a_local_run(slurm_ready, tmp_path, monkeypatch):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    started = time.monotonic()
    snakemake(local, TARGET, "--cores", "2", "--configfile", str(TINY_CONFIG))
    local_s = time.monotonic() - started

    # The profile as a user runs it, plus what this 2-CPU node and its setup need:
    monkeypatch.setenv("COMMA_SLURM_PARTITION", slurm_cluster.PARTITION)
    small_memory = {"logmel", "prepare_asr"}
    overrides = [
        # the profile's per-rule sizes are for the paper's data and exceed this node
        # (one option on the command line replaces the profile's whole list)
        "--set-threads",
        "logmel=2",
        "--set-resources",
        *(f"{rule}:mem_mb=2000" for rule in sorted(small_memory)),
        # no slurmdbd here: poll squeue (MinJobAge keeps finished jobs listed), and often
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        # fail at the first error instead of retrying it
        "--retries",
        "0",
    ]
    with running_cluster(tmp_path / "cluster") as cluster:
        started = time.monotonic()
        try:
            result = snakemake(
                remote,
                TARGET,
                "--profile",
                str(SLURM_PROFILE),
                *overrides,
                "--configfile",
                str(TINY_CONFIG),
            )
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{cluster.report()}") from failure
        slurm_s = time.monotonic() - started
        jobs = cluster.jobs()
    print(f"tiny DAG: local {local_s:.1f} s, through Slurm {slurm_s:.1f} s", file=sys.stderr)
    out = result.stdout + result.stderr

    # Every job ran as a Slurm job of this run, with the resources the profile gave it.
    run_id = re.search(r"SLURM run ID: (\S+)", out)[1]
    ours = [job for job in jobs if job["name"] == run_id]
    assert all(job["state"] == "COMPLETED" for job in ours), ours
    per_rule = Counter(re.match(r"rule_(.+?)(?:_wildcards_.*)?$", j["comment"])[1] for j in ours)
    assert per_rule == TINY_JOBS
    assert len(re.findall(r"has been submitted with SLURM jobid", out)) == sum(TINY_JOBS.values())
    for job in ours:
        rule = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", job["comment"])[1]
        assert job["cpus"] == ("2" if rule == "logmel" else "1"), job
        # 4000M: the profile's default-resources
        assert job["memory"] == ("2000M" if rule in small_memory else "4000M"), job
    slurm_logs = list((remote / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(slurm_logs) == len(ours)

    # Same artifacts as the local run.
    assert_same_tree(local / "work", remote / "work")
    stats = json.loads((local / TARGET).read_text())
    assert stats["splits"]["train"]["sequences"] > 0, stats["splits"]
    assert (remote / TARGET).read_text() == (local / TARGET).read_text()


def assert_same_tree(expected: Path, actual: Path) -> None:
    """Same files; tensors equal (not bytes: torch.save's archive records file names), JSON
    equal as data, everything else byte for byte."""
    files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    assert any(f.suffix == ".pt" for f in files)
    for name in files:
        a, b = expected / name, actual / name
        if name.suffix == ".pt":
            assert_equal_objects(
                torch.load(a, weights_only=True), torch.load(b, weights_only=True), str(name)
            )
        elif name.suffix == ".json":
            assert json.loads(a.read_text()) == json.loads(b.read_text()), name
        else:
            assert a.read_bytes() == b.read_bytes(), name


def assert_equal_objects(a, b, where: str) -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal_objects(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_objects(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# --- a training job cancelled mid-way resumes in Snakemake's retry ------------------------

FAULT_RUN = Path("work/comma/nmt/raw_noac/seed1")
FAULT_STEPS = 300
FAULT_CHECKPOINT_EVERY = 10
# The checkpoint the job must have written before it is cancelled.
CANCEL_AT_STEP = 2 * FAULT_CHECKPOINT_EVERY


def _snakemake_command(workdir: Path) -> list[str]:
    """conftest.snakemake's command without its arguments, for a run the test watches."""
    snakemake_bin = str(Path(sys.executable).with_name("snakemake"))
    return [snakemake_bin, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]


def _first_progress(log: str) -> tuple[int, int]:
    """The trainer's first progress bar position in a rule log: (step, max_steps). The bar
    starts at the step training resumes from (0 for a fresh run)."""
    found = re.search(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", log)
    assert found, f"no progress bar in the log:\n{log[-3000:]}"
    return int(found[1]), int(found[2])


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_training_job_resumes_from_its_checkpoint(slurm_ready, tmp_path, monkeypatch):
    """`scancel` a running train_comma job: the profile's retries submit it again, the retry
    resumes from the job's last checkpoint, and the model equals an uninterrupted run's."""
    target = str(FAULT_RUN / "model.pt")
    override = tmp_path / "fault.yaml"
    override.write_text(
        "training:\n  comma: "
        f"{{max_steps: {FAULT_STEPS}, checkpoint_every: {FAULT_CHECKPOINT_EVERY}}}\n"
    )
    configs = ["--configfile", str(TINY_CONFIG), str(override)]
    retries = load_profile(SLURM_PROFILE)["retries"]
    assert retries >= 1, "the slurm profile must retry failed jobs"

    # The reference: the same target, uninterrupted, locally.
    local, remote = tmp_path / "local", tmp_path / "slurm"
    started = time.monotonic()
    snakemake(local, target, "--cores", "2", *configs)
    local_s = time.monotonic() - started
    assert _first_progress(
        (local / "logs/comma/train_comma/nmt_raw_noac_seed1.log").read_text()
    ) == (
        0,
        FAULT_STEPS,
    )
    # The Slurm run starts from the same prepared corpus (its preparation through Slurm is
    # test_tiny_dag_through_slurm_matches_a_local_run's): only train_comma is left to run.
    shutil.copytree(
        local,
        remote,
        ignore=lambda folder, names: [
            name
            for name in names
            if (Path(folder) == local and name in {"logs", "benchmarks"})
            or (Path(folder) == local / "work" and name == "comma")
        ],
    )

    monkeypatch.setenv("COMMA_SLURM_PARTITION", slurm_cluster.PARTITION)
    overrides = [
        # the profile's train_comma (8 threads, a GPU) does not fit this node; one thread as
        # in the local run, so that the numbers are the same bit for bit
        "--set-threads",
        "train_comma=1",
        "--set-resources",
        "train_comma:gpu=0",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        # no --retries: the profile's own
    ]
    cmd = _snakemake_command(remote) + [target, "--profile", str(SLURM_PROFILE), *overrides]
    cmd += configs
    output = tmp_path / "snakemake.out"
    resume = remote / FAULT_RUN / "resume.pt"
    with running_cluster(tmp_path / "cluster") as cluster, open(output, "w") as sink:
        started = time.monotonic()
        run = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        try:
            # Wait until the job runs and has written a checkpoint, then cancel it.
            deadline = time.monotonic() + 600
            while True:
                if run.poll() is not None:
                    raise AssertionError(
                        f"snakemake ended ({run.returncode}) before the job was cancelled:\n"
                        f"{output.read_text()[-5000:]}\n{cluster.report()}"
                    )
                assert time.monotonic() < deadline, "no checkpoint in time\n" + cluster.report()
                running = [j for j in cluster.jobs() if j["state"] == "RUNNING"]
                seen = load_checkpoint(resume)["step"] if resume.is_file() else 0
                if running and seen >= CANCEL_AT_STEP:
                    break
                time.sleep(0.05)
            assert len(running) == 1 and "train_comma" in running[0]["comment"], running
            cancelled = running[0]["id"]
            subprocess.run(["scancel", cancelled], check=True, capture_output=True, timeout=60)
            cancel_s = time.monotonic() - started
            run.wait(timeout=900)
        finally:
            if run.poll() is None:  # the test failed: stop Snakemake (the cluster its jobs)
                run.terminate()
                try:
                    run.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    run.kill()
                    run.wait()
        slurm_s = time.monotonic() - started
        jobs = cluster.jobs()
        out = output.read_text()
        if run.returncode != 0:
            raise AssertionError(
                f"snakemake failed ({run.returncode}):\n{out[-5000:]}\n{cluster.report()}"
            )
    print(
        f"fault test: local {local_s:.1f} s; through Slurm {slurm_s:.1f} s "
        f"(cancelled at {cancel_s:.1f} s, checkpoint at step {seen})",
        file=sys.stderr,
    )

    # The cancelled job failed as Slurm reports it, and its retry ran to the end.
    run_id = re.search(r"SLURM run ID: (\S+)", out)[1]
    ours = sorted((j for j in jobs if j["name"] == run_id), key=lambda j: int(j["id"]))
    assert [(j["id"], j["state"]) for j in ours][:1] == [(cancelled, "CANCELLED")], ours
    assert [j["state"] for j in ours] == ["CANCELLED", "COMPLETED"], ours
    assert all("rule_train_comma" in j["comment"] for j in ours), ours
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in out
    assert len(re.findall(r"has been submitted with SLURM jobid", out)) == 2

    # The retry resumed from the cancelled job's checkpoint (the rule log is the retry's).
    log = (remote / "logs/comma/train_comma/nmt_raw_noac_seed1.log").read_text()
    resumed_from, max_steps = _first_progress(log)
    assert max_steps == FAULT_STEPS
    assert CANCEL_AT_STEP <= seen <= resumed_from < FAULT_STEPS, (seen, resumed_from)
    assert resumed_from % FAULT_CHECKPOINT_EVERY == 0

    # ...and ended where an uninterrupted run ends: same model, same trainer state.
    for name in ("model.pt", "resume.pt"):
        assert_equal_objects(
            torch.load(local / FAULT_RUN / name, weights_only=True),
            torch.load(remote / FAULT_RUN / name, weights_only=True),
            name,
        )
    # Every step the retry trained is the uninterrupted run's, loss for loss, bit for bit.
    expected = [json.loads(line) for line in (local / FAULT_RUN / "metrics.jsonl").open()]
    metrics = [json.loads(line) for line in (remote / FAULT_RUN / "metrics.jsonl").open()]
    # Snakemake deleted the failed job's metrics.jsonl; the trainer keeps the running metrics
    # beside resume.pt, so the retry's file still has every step, equal to the reference.
    assert [r["step"] for r in metrics] == list(range(1, FAULT_STEPS + 1))
    assert [r["loss"] for r in metrics] == [r["loss"] for r in expected]
