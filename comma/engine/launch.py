"""Run a training entry point in one process, or data-parallel in several through torchrun.

Every training rule calls :func:`launch_job` with its entry point (a module-level function,
which the workers import by its ``"module:function"`` name, :func:`entry_name`), the function's
keyword arguments (JSON-serializable) and the job's resources and threads; it calls
:func:`launch` with a process count:

* ``nprocs == 1``: the function is called in this process (what a rule did before).
* ``nprocs > 1``: the keyword arguments go to a spec file, and torchrun (run as
  ``python -m torch.distributed.run``, the same program, with this interpreter) starts
  ``nprocs`` workers on this machine::

      torchrun --nproc_per_node N --master_addr 127.0.0.1 --master_port <free> \\
          --log-dir <temporary> -m comma.engine.launch <spec file>

  Each worker imports the entry point and calls it with the same arguments; torchrun's
  environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) makes ``comma.engine.trainer.train``
  join the process group (nccl on GPUs, gloo on the CPU) and wrap the model in
  DistributedDataParallel. :func:`launch` forwards the workers' output to ``sys.stderr`` (a
  rule's log), waits, and raises :class:`LaunchError` with every failed rank's exit code and
  the end of the output if any worker fails.

The arguments are JSON-encoded and decoded in both cases, so a call that works with one
process works with several (tuples arrive as lists; a ``Path`` must be passed as ``str``).
The entry point's return value is discarded. It runs in every process: whatever it writes
after training (a model file, say) must be written by rank 0 only (:func:`is_main_process`).

How many processes: :func:`processes_for` reads a job's resources, one process per GPU the
job was given (the ``gpu`` resource the profiles set, which the Slurm executor turns into
``--gpus=N`` for the job and its step, or a ``gres`` such as ``gpu:a100:2``); no GPU resource
means one process. Devices come from ``CUDA_VISIBLE_DEVICES`` as Slurm sets it: worker k uses
the k-th listed device (``cuda:LOCAL_RANK``), and the workers see only the first N. On a
machine without CUDA, N processes train on the CPU with gloo (what the tests do).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import importlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LaunchError",
    "entry_name",
    "launch",
    "launch_job",
    "processes_for",
    "threads_per_process",
    "is_main_process",
    "resolve_entry",
]

log = logging.getLogger(__name__)

SPEC_FORMAT = "comma-launch-spec-v1"
# The directory holding the `comma` package: prepended to the workers' PYTHONPATH, so that
# `-m comma.engine.launch` imports this very copy (a rule script may have put it on sys.path only).
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_TAIL_CHARS = 12_000
STOP_TIMEOUT_S = 60
# torchrun's failure summary: "rank : 1 (local_rank: 1)" then "exitcode : -9 (pid: 123)".
_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


class LaunchError(RuntimeError):
    """Workers failed: `returncode` is torchrun's, `failures` maps rank -> exit code (as
    torchrun reported them; negative = killed by that signal), `output` is the output's end."""

    def __init__(self, message: str, returncode: int, failures: dict[int, int], output: str):
        super().__init__(message)
        self.returncode = returncode
        self.failures = failures
        self.output = output


def resolve_entry(entry: str) -> Callable[..., Any]:
    """The function an ``"package.module:function"`` name points to (``function`` may be
    dotted: ``module:Class.method``)."""
    module_name, sep, attribute = entry.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"entry point must look like 'package.module:function', got {entry!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"entry point {entry!r}: cannot import {module_name}: {err}") from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"entry point {entry!r}: {module_name} has no {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"entry point {entry!r} is not callable ({type(target).__name__})")
    return target


def entry_name(function: Callable[..., Any]) -> str:
    """The ``"module:function"`` name by which a worker process imports `function`; a
    function that cannot be imported by its name (a lambda, a nested function) is refused."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not callable(function) or not module or not qualname or module == "__main__":
        raise ValueError(
            f"entry point {function!r}: worker processes import it by name, so it must be a "
            "function of an importable module"
        )
    name = f"{module}:{qualname}"
    if "<" in qualname or resolve_entry(name) is not function:
        raise ValueError(
            f"entry point {name}: worker processes cannot import it by that name (define it "
            "at the top level of its module)"
        )
    return name


def processes_for(resources: Mapping[str, Any]) -> int:
    """Processes for a training job with these Snakemake resources: one per GPU (``gpu``, or
    the count in a ``gres`` of GPUs: ``gpu``, ``gpu:N``, ``gpu:MODEL:N``); 1 without GPUs."""
    gpu = resources.get("gpu")
    gres = resources.get("gres")
    from_gpu = None if gpu is None else _count(gpu, "gpu")
    from_gres = None
    if gres:
        fields = str(gres).split(":")
        if fields[0] == "gpu":
            from_gres = _count(fields[-1], "gres") if len(fields) > 1 else 1
    if from_gpu is not None and from_gres is not None and from_gpu != from_gres:
        raise ValueError(
            f"the job's resources disagree on its GPUs: gpu={gpu!r} but gres={gres!r}; "
            "give one of them"
        )
    count = from_gpu if from_gpu is not None else from_gres
    return max(1, count or 0)


def _count(value: Any, name: str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"resource {name}: expected a GPU count, got {value!r}") from None
    if count < 0 or str(count) != str(value).strip():
        raise ValueError(f"resource {name}: expected a GPU count >= 0, got {value!r}")
    return count


def threads_per_process(threads: int, nprocs: int) -> int:
    """The job's CPU threads shared among its processes (at least one each)."""
    return max(1, int(threads) // int(nprocs))


def is_main_process() -> bool:
    """True in a single process and in rank 0 of a torchrun group (RANK unset or 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def launch_job(
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    resources: Mapping[str, Any],
    threads: int,
) -> None:
    """Call `function` as a job with these Snakemake `resources` and `threads` (a training
    rule's one call): one process per GPU (:func:`processes_for`), each given its share of the
    job's threads as its ``threads`` argument (:func:`threads_per_process`)."""
    nprocs = processes_for(resources)
    launch(function, {**kwargs, "threads": threads_per_process(threads, nprocs)}, nprocs)


def launch(
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    nprocs: int,
    *,
    master_port: int | None = None,
) -> None:
    """Call `function` with `kwargs` in this process (``nprocs == 1``) or in `nprocs`
    torchrun workers on this machine, which import it by :func:`entry_name`; see the module
    docstring. `master_port` defaults to a free port on 127.0.0.1. Raises LaunchError when a
    worker fails."""
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be an int >= 1, got {nprocs!r}")
    entry = entry_name(function)
    try:
        encoded = json.dumps({"format": SPEC_FORMAT, "entry": entry, "kwargs": dict(kwargs)})
    except TypeError as err:
        raise TypeError(
            f"launch({entry}): the keyword arguments must be JSON-serializable (worker "
            f"processes read them from a file): {err}"
        ) from err
    if nprocs == 1:
        function(**json.loads(encoded)["kwargs"])
        return
    env = _worker_environment(nprocs)
    with tempfile.TemporaryDirectory(prefix="comma-launch-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(encoded, encoding="utf-8")
        port = master_port if master_port is not None else _free_port()
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nprocs),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            # torchrun's error files (else left in /tmp/torchelastic_*): removed with `tmp`
            "--log-dir",
            str(Path(tmp) / "torchrun"),
            "-m",
            "comma.engine.launch",
            str(spec),
        ]
        log.info(
            "%s: %d processes (%s), torchrun on 127.0.0.1:%d",
            entry,
            nprocs,
            f"CUDA devices {env['CUDA_VISIBLE_DEVICES']}"
            if "CUDA_VISIBLE_DEVICES" in env
            else "CPU, gloo",
            port,
        )
        returncode, output = _run_forwarding_output(cmd, env)
    if returncode != 0:
        failures = {int(rank): int(code) for rank, code in _FAILURE.findall(output)}
        if failures:
            ranks = ", ".join(f"rank {r} exited with {c}" for r, c in sorted(failures.items()))
        else:
            ranks = "no worker exit code reported"
        raise LaunchError(
            f"{entry} with {nprocs} processes failed ({ranks}; torchrun exited with "
            f"{returncode}); the end of their output:\n{output}",
            returncode,
            failures,
            output,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_environment(nprocs: int) -> dict[str, str]:
    """This environment with `comma` importable and the workers' CUDA devices chosen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        if len(devices) < nprocs:
            raise ValueError(
                f"{nprocs} processes need {nprocs} GPUs, but CUDA_VISIBLE_DEVICES={visible!r} "
                f"lists {len(devices)}: ask for as many GPUs as processes (the `gpu` resource)"
            )
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[:nprocs])
    else:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < nprocs:
            raise ValueError(
                f"{nprocs} processes need {nprocs} GPUs, but this machine has "
                f"{torch.cuda.device_count()}"
            )
    return env


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when this process dies (Linux; else nothing)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return set_death_signal


class _Terminated(Exception):
    pass


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception while waiting, so that torchrun is stopped too."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame):
    raise _Terminated(f"signal {signum}")


def _run_forwarding_output(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd`, copying its output to sys.stderr as it comes; its exit code and the
    output's end. The process (torchrun, which stops its workers) never outlives this call."""
    tail: deque[str] = deque()
    tail_chars = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    process = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent(),
    )
    try:
        with _sigterm_raises():
            assert process.stdout is not None
            while chunk := os.read(process.stdout.fileno(), 65536):
                text = decoder.decode(chunk)
                sys.stderr.write(text)
                sys.stderr.flush()
                tail.append(text)
                tail_chars += len(text)
                while tail_chars - len(tail[0]) > OUTPUT_TAIL_CHARS:
                    tail_chars -= len(tail.popleft())
            returncode = process.wait()
    finally:
        if process.poll() is None:
            process.terminate()  # torchrun forwards it to the workers and waits for them
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
    return returncode, "".join(tail)[-OUTPUT_TAIL_CHARS:]


def _worker_main(argv: list[str]) -> None:
    """One torchrun worker: call the spec's entry point with its keyword arguments."""
    if len(argv) != 1:
        raise SystemExit("usage: torchrun ... -m comma.engine.launch SPEC.json")
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if spec.get("format") != SPEC_FORMAT:
        raise SystemExit(f"{argv[0]}: not a {SPEC_FORMAT} file")
    rank = os.environ.get("RANK", "?")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {rank}] %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    resolve_entry(spec["entry"])(**spec["kwargs"])


if __name__ == "__main__":
    # record(): a worker's traceback reaches torchrun's failure summary (and so LaunchError).
    from torch.distributed.elastic.multiprocessing.errors import record

    record(_worker_main)(sys.argv[1:])
