"""A real single-node Slurm for the tests: Debian's slurm-wlm and munge, started as root.

`running_cluster(workdir)` starts munged (its own key and socket), slurmctld and slurmd as
child processes in the foreground, waits until the node takes jobs, and on exit cancels every
job and stops each daemon by its PID, whether the test passed or not. The daemons also get
SIGTERM if the Python process that started them dies (PR_SET_PDEATHSIG).

Slurm's job steps read /etc/slurm/slurm.conf (the Snakemake jobstep executor drops SLURM_CONF
from their environment), so the config has to be there. It is written only where no
slurm.conf exists or where one of ours was left behind (it carries MARKER), and is removed at
the end; a real cluster's config is never touched. One lock file serialises test sessions on
the machine, since they share that path.

`check_available()` says why this machine cannot run the cluster (binaries missing, not root,
a foreign slurm.conf), after installing the packages with install.sh when that is allowed:
as root, with CI or COMMA_INSTALL_SLURM=1 set.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTALL_SCRIPT = HERE / "install.sh"
CONF_TEMPLATE = HERE / "slurm.conf.in"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "comma-study-test-cluster"
LOCK_FILE = Path("/run/lock/comma-study-slurm-test.lock")
MUNGE_PARENT = Path("/run")
# Daemons and the client commands the tests and the Snakemake executor call.
BINARIES = (
    "munged",
    "munge",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
)
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PARTITION = "comma"
# The executor polls squeue: jobs must stay listed well past 3x its status-check interval.
MIN_JOB_AGE_S = 300
START_TIMEOUT_S = 60
LOCK_TIMEOUT_S = 1800


class SlurmUnavailable(Exception):
    """This machine cannot run the test cluster; the message says why and what to do."""


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def in_ci() -> bool:
    return _truthy("CI")


def _which(binary: str) -> str | None:
    return shutil.which(binary, path=SEARCH_PATH)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def install() -> float:
    """Run install.sh (apt-get, root only); return its wall time in seconds."""
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{INSTALL_SCRIPT} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    still_missing = missing_binaries()
    if still_missing:
        raise RuntimeError(
            f"{INSTALL_SCRIPT} succeeded but {', '.join(still_missing)} are still not on "
            f"PATH ({SEARCH_PATH})"
        )
    return time.monotonic() - start


def check_available() -> None:
    """Raise SlurmUnavailable unless this machine can run the test cluster; install the
    packages first when missing, running as root, and allowed (CI or COMMA_INSTALL_SLURM=1)."""
    is_root = os.geteuid() == 0
    missing = missing_binaries()
    if missing:
        if not is_root:
            raise SlurmUnavailable(
                f"Slurm is not installed ({', '.join(missing)} not found) and installing it "
                f"needs root: run `sudo bash {INSTALL_SCRIPT.relative_to(HERE.parents[1])}`"
            )
        if not (in_ci() or _truthy("COMMA_INSTALL_SLURM")):
            raise SlurmUnavailable(
                f"Slurm is not installed ({', '.join(missing)} not found): set "
                "COMMA_INSTALL_SLURM=1 to let the tests apt-get install slurm-wlm and munge, "
                f"or run `bash {INSTALL_SCRIPT.relative_to(HERE.parents[1])}` as root"
            )
        seconds = install()
        print(f"installed slurm-wlm and munge in {seconds:.0f} s", file=sys.stderr)
    if not is_root:
        raise SlurmUnavailable(
            "the test cluster runs slurmctld, slurmd and munged as root (and writes "
            f"{SLURM_CONF}); run the tests as root"
        )
    foreign_conf(SLURM_CONF)


def foreign_conf(path: Path) -> None:
    """Refuse to replace a slurm.conf that is not one of ours."""
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        raise SlurmUnavailable(
            f"{path} exists and was not written by these tests (it lacks '{MARKER}'): "
            "this machine has a real Slurm configuration, which the tests leave alone"
        )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _tail(path: Path, chars: int = 3000) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return f"--- {path} ---\n{path.read_text(errors='replace')[-chars:]}"


class Daemon:
    """One foreground daemon, its output in `out`, stopped by PID."""

    def __init__(self, name: str, argv: list[str], out: Path, logs: list[Path]):
        self.name = name
        self.out = out
        self.logs = [out, *logs]
        with open(out, "wb") as sink:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} (pid {self.pid}) exited with {code}\n{self.report()}")

    def report(self) -> str:
        return "\n".join(_tail(log) for log in self.logs)

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)


def _wait_until(what: str, ready: Callable[[], bool], daemons: list[Daemon], timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        for daemon in daemons:
            daemon.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            reports = "\n".join(d.report() for d in daemons)
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s\n{reports}")
        time.sleep(0.2)


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [_which(argv[0]) or argv[0], *argv[1:]],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


@contextlib.contextmanager
def _machine_lock(timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """One test cluster per machine at a time: they all use /etc/slurm/slurm.conf."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another test session has held {LOCK_FILE} for {timeout:.0f} s"
                    ) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _installed_conf(text: str) -> Iterator[None]:
    """Put our slurm.conf at /etc/slurm/slurm.conf (never over a foreign one); remove it after."""
    foreign_conf(SLURM_CONF)
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    partial = SLURM_CONF.with_name(f".{SLURM_CONF.name}.{os.getpid()}")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, SLURM_CONF)
    try:
        yield
    finally:
        if SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text(errors="replace"):
            SLURM_CONF.unlink()


@dataclass(frozen=True)
class Cluster:
    root: Path
    node: str
    partition: str
    cpus: int
    memory_mb: int
    daemons: tuple[Daemon, ...]

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still lists (MinJobAge keeps finished ones for minutes)."""
        fields = ("id", "name", "state", "comment", "cpus", "memory")
        out = _run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T|%k|%C|%m").stdout
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]

    def report(self) -> str:
        """Daemon logs, for a failing test's message."""
        return "\n".join(d.report() for d in self.daemons)

    def cancel_all(self, timeout: float = 60) -> None:
        ids = [job["id"] for job in self.jobs() if job["state"] in {"PENDING", "RUNNING"}]
        if ids:
            _run("scancel", *ids)
        deadline = time.monotonic() + timeout
        active = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED"}
        while any(job["state"] in active for job in self.jobs()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs still active {timeout:.0f} s after scancel")
            time.sleep(0.5)


def _node_line() -> tuple[str, str, int, int]:
    """slurmd -C: this machine's NodeName line, its name, CPUs and memory (MB)."""
    line = _run("slurmd", "-C").stdout.splitlines()[0].strip()
    fields = dict(item.split("=", 1) for item in line.split())
    return line, fields["NodeName"], int(fields["CPUs"]), int(fields["RealMemory"])


def _munge_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    return _run("munge", "--no-input", f"--socket={socket_path}", check=False).returncode == 0


def _controller_up() -> bool:
    return "UP" in _run("scontrol", "ping", check=False).stdout


def _node_takes_jobs(node: str) -> bool:
    state = _run("sinfo", "--noheader", "-n", node, "-o", "%T", check=False).stdout.strip()
    return state in {"idle", "mixed", "allocated"}


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd (state and logs under `root`); on exit cancel every
    job, stop each daemon and remove the config, also when starting or the body failed."""
    check_available()
    node_line, node, cpus, memory_mb = _node_line()
    ctld_port, slurmd_port = _free_ports(2)
    dirs = {name: root / name for name in ("state", "spool", "run", "logs")}
    for path in dirs.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_machine_lock())
        # munged wants every folder above its socket searchable by all users (a pytest
        # tmp_path is not) and its key where nobody else can write: a fresh folder in /run.
        munge_dir = Path(tempfile.mkdtemp(prefix="comma-study-munge-", dir=MUNGE_PARENT))
        stack.callback(shutil.rmtree, munge_dir)
        munge_dir.chmod(0o755)
        munge_socket = munge_dir / "munge.socket"
        conf = string.Template(CONF_TEMPLATE.read_text()).substitute(
            marker=f"{MARKER} (pid {os.getpid()}, {root})",
            node=node,
            node_line=node_line,
            partition=PARTITION,
            ctld_port=ctld_port,
            slurmd_port=slurmd_port,
            munge_socket=munge_socket,
            min_job_age=MIN_JOB_AGE_S,
            **{name: str(path) for name, path in dirs.items()},
        )
        (root / "slurm.conf").write_text(conf)  # a copy beside the logs, for debugging
        daemons: list[Daemon] = []

        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munged = Daemon(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={munge_socket}",
                f"--key-file={key}",
                f"--pid-file={dirs['run'] / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                f"--log-file={dirs['logs'] / 'munged.log'}",
            ],
            dirs["logs"] / "munged.out",
            [dirs["logs"] / "munged.log"],
        )
        stack.callback(munged.stop)
        daemons.append(munged)
        _wait_until("munged", lambda: _munge_answers(munge_socket), daemons, START_TIMEOUT_S)

        stack.enter_context(_installed_conf(conf))
        slurmctld = Daemon(
            "slurmctld",
            [_which("slurmctld"), "-D", "-i"],
            dirs["logs"] / "slurmctld.out",
            [dirs["logs"] / "slurmctld.log"],
        )
        stack.callback(slurmctld.stop)
        daemons.append(slurmctld)
        _wait_until("slurmctld", _controller_up, daemons, START_TIMEOUT_S)

        slurmd = Daemon(
            "slurmd",
            [_which("slurmd"), "-D", "-N", node],
            dirs["logs"] / "slurmd.out",
            [dirs["logs"] / "slurmd.log"],
        )
        stack.callback(slurmd.stop)
        daemons.append(slurmd)
        _wait_until("slurmd", lambda: _node_takes_jobs(node), daemons, START_TIMEOUT_S)

        cluster = Cluster(root, node, PARTITION, cpus, memory_mb, tuple(daemons))
        # Runs first on exit: no job outlives the daemons.
        stack.callback(cluster.cancel_all)
        yield cluster
