"""Shared fixtures: the repository root, the shared real-data samples, a Snakemake runner, and
the benchmark scripts as modules."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_CONFIG = REPO / "tests" / "tiny.yaml"
# The files that take minutes, longest first: they start at once, one per test process
# (`make test` runs two), instead of after the quick ones; then the rest in file order.
LONGEST_FIRST = ("test_workflow.py", "test_slurm.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: file order otherwise


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (real dataset samples); absent in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (only in the project's CI)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (a module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models run fastest so, and
    do not fight the parallel test processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the folder is no package), to test its pieces. Its
    imports of sibling benchmarks (``from study_time import ...``) resolve as when it runs."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.append(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 1200):
    """Run this repository's workflow in `workdir` with the venv's snakemake; return the result.

    Targets go first in `args`: `--configfile` and `--forcerun` take every value after them,
    and `--config` must come last."""
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # Its own process group: on a timeout (or Ctrl-C) snakemake's running jobs are stopped with
    # it; killing snakemake alone left a training job running on for an hour after its test.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{result.stdout[-5000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
        )
    return result
