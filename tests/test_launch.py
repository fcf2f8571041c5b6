"""comma.engine.launch: a training entry point in one process, or data-parallel through torchrun.

The workers of these tests are real torchrun processes on the CPU (gloo). Entry points that
workers import live in this module; the tests put tests/ on PYTHONPATH for them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_CONFIG, snakemake

from comma.data.packed import PackedSequences, Split, save_split
from comma.data.vocab import Vocabulary
from comma.engine.checkpoint import load_checkpoint
from comma.engine.launch import (
    LaunchError,
    entry_name,
    is_main_process,
    launch,
    launch_job,
    processes_for,
    resolve_entry,
    threads_per_process,
)
from comma.models.comma import CoMMA, CoMMAConfig
from comma.stages.comma import train_comma

TESTS = Path(__file__).resolve().parent
RUN = Path("work/comma/nmt/raw_noac/seed1")


@pytest.fixture
def importable_tests(monkeypatch):
    """Workers import this module's entry points (`test_launch:...`)."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), path])))
    monkeypatch.syspath_prepend(str(TESTS))


# --- entry points the workers run ----------------------------------------------------------


def record_rank(out_dir: str, values: list) -> None:
    """Each process writes its rank, world size and arguments to out_dir/rank<R>.json."""
    rank = int(os.environ.get("RANK", 0))
    info = {
        "rank": rank,
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "pid": os.getpid(),
        "values": values,
        "main": is_main_process(),
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(info))


def fail_in_rank_one(how: str) -> None:
    """Rank 1 fails (exit code 3, or an exception); rank 0 returns."""
    if int(os.environ["RANK"]) == 1:
        if how == "exit":
            sys.exit(3)
        raise ValueError("rank one cannot go on: the data is bad")


def record_threads(out_dir: str, threads: int) -> None:
    record_rank(out_dir, [threads])


def sleep_forever(out_dir: str) -> None:
    record_rank(out_dir, [])
    time.sleep(600)


# --- the process count and arguments -------------------------------------------------------


def test_one_process_per_gpu_resource():
    assert processes_for({}) == 1
    assert processes_for({"mem_mb": 4000, "gpu": 0}) == 1
    assert processes_for({"gpu": 1}) == 1
    assert processes_for({"gpu": 4}) == 4
    assert processes_for({"gpu": "2"}) == 2
    assert processes_for({"gres": "gpu:a100:2"}) == 2
    assert processes_for({"gres": "gpu:3", "gpu": 3}) == 3
    assert processes_for({"gres": "gpu"}) == 1
    assert processes_for({"gres": "nvme:1"}) == 1
    with pytest.raises(ValueError, match="disagree"):
        processes_for({"gpu": 2, "gres": "gpu:4"})
    with pytest.raises(ValueError, match="GPU count"):
        processes_for({"gpu": "two"})
    with pytest.raises(ValueError, match="GPU count"):
        processes_for({"gpu": -1})
    assert [threads_per_process(8, n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]


def test_one_process_runs_in_process_with_json_arguments(tmp_path, importable_tests):
    launch(record_rank, {"out_dir": str(tmp_path), "values": (1, "a")}, 1)
    info = json.loads((tmp_path / "rank0.json").read_text())
    # in this very process, with the arguments as the workers would see them (JSON)
    assert info == {
        "rank": 0,
        "world_size": 1,
        "pid": os.getpid(),
        "values": [1, "a"],
        "main": True,
    }


def test_bad_calls_are_refused_before_any_process_starts(tmp_path, monkeypatch):
    # the workers import the entry point by the name derived from the function
    assert entry_name(train_comma) == "comma.stages.comma:train_comma"
    assert resolve_entry(entry_name(train_comma)) is train_comma

    def nested(**kwargs):
        pass

    for function in (nested, lambda: None, "comma.stages.comma:train_comma"):
        with pytest.raises(ValueError, match="entry point"):
            launch(function, {}, 2)
    with pytest.raises(ValueError, match="package.module:function"):
        resolve_entry("comma.stages.comma.train_comma")
    with pytest.raises(ValueError, match="has no no_such_function"):
        resolve_entry("comma.stages.comma:no_such_function")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_entry("comma.no_such_module:f")
    with pytest.raises(TypeError, match="JSON-serializable"):
        launch(train_comma, {"data_dir": tmp_path}, 2)
    with pytest.raises(ValueError, match="nprocs"):
        launch(train_comma, {}, 0)
    # Slurm gave the job one GPU, the rule asks for two processes
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES='0' lists 1"):
        launch(train_comma, {}, 2)
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES='0' lists 1"):
        launch_job(train_comma, {}, resources={"gpu": 2}, threads=4)


def test_a_job_shares_its_threads_among_its_processes(tmp_path, importable_tests):
    launch_job(record_threads, {"out_dir": str(tmp_path)}, resources={"gpu": 0}, threads=3)
    assert json.loads((tmp_path / "rank0.json").read_text())["values"] == [3]


# --- real torchrun workers --------------------------------------------------------------------


def test_workers_get_ranks_and_the_same_arguments(tmp_path, importable_tests):
    launch(record_rank, {"out_dir": str(tmp_path), "values": [1.5, None]}, 2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"], r["main"]) for r in ranks] == [
        (0, 2, True),
        (1, 2, False),
    ]
    assert all(r["values"] == [1.5, None] for r in ranks)
    assert len({os.getpid(), *(r["pid"] for r in ranks)}) == 3  # two new processes


@pytest.mark.parametrize("how", ["exit", "exception"])
def test_a_failing_worker_fails_the_launch_with_its_exit_code(how, importable_tests, capsys):
    with pytest.raises(LaunchError) as failure:
        launch(fail_in_rank_one, {"how": how}, 2)
    error = failure.value
    assert error.returncode != 0
    assert error.failures.get(1) == (3 if how == "exit" else 1), str(error)
    assert "rank 1 exited with" in str(error)
    if how == "exception":  # the worker's traceback reaches the error (torchrun's summary)
        assert "ValueError: rank one cannot go on: the data is bad" in str(error)
    # and the workers' output went to stderr as it came (a rule's log)
    assert "comma.engine.launch FAILED" in capsys.readouterr().err


def test_sigterm_to_the_launcher_stops_torchrun_and_its_workers(tmp_path):
    """A cancelled job: the launching process gets SIGTERM; no worker may outlive it."""
    code = (
        "from comma.engine.launch import launch\n"
        "from test_launch import sleep_forever\n"
        f"launch(sleep_forever, {{'out_dir': {str(tmp_path)!r}}}, 2)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    parent = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"rank{r}.json").is_file() for r in (0, 1)):
            assert parent.poll() is None, parent.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        workers = [json.loads((tmp_path / f"rank{r}.json").read_text())["pid"] for r in (0, 1)]
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=90)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stderr.close()
    assert parent.returncode != 0
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is no longer running
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


# --- the train_comma rule on two processes -------------------------------------------------


def write_prepared_nmt(workdir: Path, sentences: int = 40) -> None:
    """A tiny prepared NMT corpus in work/data/nmt/: sources of 3-8 tokens, ONE target token
    each (a function of the source).

    One target token makes CoMMA's loss a function of the batch alone: whatever p a sentence
    draws, its single token is the one masked. With longer targets each process draws the
    masks of its own share from its own generator, so two processes train on other masks than
    one process does, and only the distributions match, not the numbers."""
    data = workdir / "work" / "data" / "nmt"
    data.mkdir(parents=True)
    src_words, tgt_words, first = 20, 12, 5  # ids 0-4 are the specials
    Vocabulary([f"s{k}" for k in range(src_words)]).save(data / "dict.src.txt")
    Vocabulary([f"t{k}" for k in range(tgt_words)]).save(data / "dict.tgt.txt")
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 9, (sentences,), generator=g).tolist()
    src = [torch.randint(first, first + src_words, (n,), generator=g) for n in lengths]
    tgt = [torch.tensor([first + int(s.max() - first) % tgt_words]) for s in src]
    split = Split(
        PackedSequences.from_list(src, dtype=torch.int32),
        PackedSequences.from_list(tgt, dtype=torch.int32),
        [f"train-{k:06d}" for k in range(sentences)],
    )
    save_split(data / "train.pt", split)


@pytest.mark.slow
def test_train_comma_on_two_gpus_equals_one(tmp_path):
    """`train_comma` with gpu=2 runs CoMMA data-parallel in two torchrun processes (gloo on
    this CPU) and ends with the model of one process on the same global batches."""
    override = tmp_path / "override.yaml"
    override.write_text(
        "models:\n  comma: {dropout: 0.0, prenet_dropout: 0.0, batch_size: 16}\n"
        "training:\n  comma: {max_steps: 12, checkpoint_every: 5}\n"
        "ratio: {probe_sentences: 0}\n"  # the corpus below has no validation split
    )
    runs = {}
    for nprocs in (1, 2):
        workdir = tmp_path / f"gpu{nprocs}"
        write_prepared_nmt(workdir)
        gpus = ["--resources", "gpu=2", "--set-resources", "train_comma:gpu=2"]
        started = time.monotonic()
        snakemake(
            workdir,
            str(RUN / "model.pt"),
            "--cores",
            "2",
            # the corpus above stands in for prepare_nmt's output
            "--allowed-rules",
            "train_comma",
            *(gpus if nprocs == 2 else []),
            "--configfile",
            str(TINY_CONFIG),
            str(override),
        )
        print(f"train_comma, {nprocs} process(es): {time.monotonic() - started:.1f} s")
        runs[nprocs] = workdir

    one, two = (torch.load(runs[n] / RUN / "model.pt", weights_only=True) for n in (1, 2))
    checkpoint = load_checkpoint(runs[2] / RUN / "resume.pt")
    assert (checkpoint["world_size"], len(checkpoint["rng"]), checkpoint["step"]) == (2, 2, 12)
    assert load_checkpoint(runs[1] / RUN / "resume.pt")["world_size"] == 1
    log = (runs[2] / "logs/comma/train_comma/nmt_raw_noac_seed1.log").read_text()
    assert "comma.stages.comma:train_comma: 2 processes (CPU, gloo)" in log
    assert "[rank 1] comma.engine.trainer INFO" in log  # the second worker's output reached the log

    assert one["config"] == two["config"] and one["seed"] == two["seed"] == 1
    assert one["model"].keys() == two["model"].keys()
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # ...and the comparison means something: training moved the weights far beyond that.
    torch.manual_seed(1)
    initial = CoMMA(CoMMAConfig(**one["config"])).state_dict()
    moved = max((one["model"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3

    losses = [
        [json.loads(line)["loss"] for line in (runs[n] / RUN / "metrics.jsonl").open()]
        for n in (1, 2)
    ]
    assert len(losses[0]) == len(losses[1]) == 12
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
