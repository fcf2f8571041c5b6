"""Benchmark: the mini study from an empty directory, target by target.

For each target (default: results/fig2.pdf, then all), in a fresh directory: the wall time of
`snakemake --cores N TARGET`, per rule the jobs' wall and CPU time (Snakemake's benchmark
records), and the critical path (the longest chain of dependent jobs, from the DAG and the
jobs' start and finish times). Then the CoMMA training step on the prepared corpora: model
FLOPs per step (torch's FlopCounterMode, forward and backward), its time on one thread, and
the achieved FLOP/s as a fraction of torch.mm's peak measured in the same process. And what
one job pays to start (a fresh Python importing Snakemake's script support, torch and the
stage modules, as every job's script does), against the run's CPU time: whether grouping
small jobs would pay.

    .venv/bin/python benchmarks/study_time.py [--cores 2] [--targets results/fig2.pdf all]
        [--keep DIR]   # run in DIR (must not exist) and keep the study's results there

`--config KEY=VALUE ...` passes Snakemake's --config to every run and dry run, e.g. one
task's slice of the study, `--config 'tasks=[nmt]'` (the step probe then probes those tasks).

A study that did not run in one piece (interrupted and resumed, run beside other work) has no
meaningful wall time; `--from DIR` reads what its jobs cost instead: per rule the CPU and wall
seconds of their benchmark records, the jobs of the target's DAG not run yet, the critical path
by CPU seconds, and the wall time that N cores could not beat, max(critical path, CPU / N).
Snakemake rewrites a job's benchmark record each time the job runs, so a training job that
resumed from its checkpoint after an interruption records only its last attempt. Its
metrics.jsonl (a rule output, carried across attempts by the checkpoint) has every step's
seconds: where they sum to more than the record's wall, the difference ran in earlier attempts.
It is wall time, so it is added to the job's CPU at the last attempt's CPU/wall ratio (an
estimate: the load may have differed; probes between steps are not counted), and the job is
counted as resumed:

    .venv/bin/python benchmarks/study_time.py --from DIR [--targets all] [--cores 2]

Only the CoMMA step probe, on the prepared corpora of a study directory, in one or more
precisions (fp32; bf16 CPU autocast; torch.compile) and on a number of threads:

    .venv/bin/python benchmarks/study_time.py --steps-from DIR [--threads 1]
        [--precisions fp32 bf16 compile]
"""

from __future__ import annotations

import argparse
import functools
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comma.analysis.curves import read_metrics  # noqa: E402
from comma.analysis.runtimes import read_benchmarks  # noqa: E402
from comma.data.batching import BatchPlan  # noqa: E402
from comma.data.packed import load_split, prepared_corpus_sizes  # noqa: E402
from comma.models.registry import FAMILIES  # noqa: E402
from comma.workflow_config import family_settings  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _wildcards(text: str) -> tuple:
    pairs = re.findall(r"(\w+)[:=] ?([^,\n]+)", text)
    return tuple(sorted((k, v.strip()) for k, v in pairs))


def snakemake_command(workdir: Path, target: str, *flags: str, config=()) -> list[str]:
    """Snakemake on the study's Snakefile in `workdir`; `config`: --config KEY=VALUE items, last
    (--config takes every word after it)."""
    command = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return command + [target, *flags] + (["--config", *config] if config else [])


def planned_dag(workdir: Path, target: str, *flags: str, config=()) -> tuple[dict, list]:
    """Nodes (id -> (rule, the wildcards its label shows, every wildcard it may have)) and edges
    (parent, child) of `target`'s plan (the whole DAG with ``--forceall`` in `flags`)."""
    out = subprocess.run(
        snakemake_command(workdir, target, "-n", "--dag", *flags, config=config),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    labels = {}
    for node, label in re.findall(r'^\s*(\d+)\[label = "([^"]*)"', out, re.M):
        rule, _, rest = label.partition("\\n")
        labels[int(node)] = (rule, _wildcards(rest.replace("\\n", "\n")))
    edges = [(int(a), int(b)) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", out, re.M)]
    # Snakemake's --dag label shows only the wildcards a job does not share with its
    # dependencies: a job's own are its label's plus those its dependencies pass down
    parents = defaultdict(list)
    for parent, child in edges:
        parents[child].append(parent)
    inherited: dict[int, frozenset] = {}

    def wildcards_of(n: int) -> frozenset:
        if n not in inherited:
            inherited[n] = frozenset(labels[n][1]).union(*map(wildcards_of, parents[n]))
        return inherited[n]

    nodes = {n: (rule, shown, wildcards_of(n)) for n, (rule, shown) in labels.items()}
    return nodes, edges


def node_seconds(nodes: dict, job_seconds: dict) -> dict:
    """node -> seconds of the job (`job_seconds`: (rule, wildcards) -> s) it is: the job of its
    rule whose wildcards hold the node's label's and lie within the node's own and inherited
    ones; 0 where no single job matches (a job not run)."""
    by_rule = defaultdict(list)
    for (rule, wildcards), s in job_seconds.items():
        by_rule[rule].append((set(wildcards), s))
    seconds = {}
    for n, (rule, shown, possible) in nodes.items():
        match = [s for w, s in by_rule[rule] if set(shown) <= w <= possible]
        seconds[n] = match[0] if len(match) == 1 else 0.0
    return seconds


def _job_at(lines: list[str], k: int, rule: str) -> tuple[tuple, str]:
    """The job whose ``rule NAME:`` header is line `k`: its key (rule, wildcards) and the
    indented block below the header (``input:``, ``benchmark:``, ``jobid:`` ...)."""
    block = []
    for nxt in lines[k + 1 :]:
        if not nxt.startswith("    "):
            break
        block.append(nxt)
    text = "\n".join(block)
    wildcards = re.search(r"wildcards: (.*)", text)
    return (rule, _wildcards(wildcards.group(1)) if wildcards else ()), text


def job_blocks(log: str) -> dict:
    """(rule, wildcards) -> the job's block of Snakemake's console log or dry run."""
    lines = log.splitlines()
    return dict(
        _job_at(lines, k, m.group(1))
        for k, line in enumerate(lines)
        if (m := re.match(r"(?:local)?rule (\w+):", line))
    )


def executed_jobs(log: str) -> dict:
    """(rule, wildcards) -> [start, end] datetimes, from Snakemake's console log."""
    jobs, stamp, started = {}, None, {}
    lines = log.splitlines()
    for k, line in enumerate(lines):
        if m := re.match(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"(?:local)?rule (\w+):", line):
            key, text = _job_at(lines, k, m.group(1))
            started[int(re.search(r"jobid: (\d+)", text).group(1))] = key
            jobs[key] = [stamp, stamp]
        elif m := re.match(r"Finished jobid: (\d+)", line):
            jobs[started[int(m.group(1))]][1] = stamp
    return jobs


def critical_path(nodes: dict, edges: list, job_seconds: dict) -> tuple[float, list]:
    """The longest chain of dependent jobs by their seconds (`job_seconds`: (rule, wildcards)
    -> s; a job not in it counts 0), and its rules."""
    seconds = node_seconds(nodes, job_seconds)
    parents = defaultdict(list)
    for parent, child in edges:
        parents[child].append(parent)
    best: dict[int, tuple[float, list]] = {}

    def longest(n: int) -> tuple[float, list]:
        if n not in best:
            before = max((longest(p) for p in parents[n]), default=(0.0, []))
            best[n] = (before[0] + seconds[n], [*before[1], nodes[n][0]])
        return best[n]

    return max((longest(n) for n in nodes), default=(0.0, []))


def rule_times(workdir: Path) -> dict:
    """rule -> [jobs, wall s, cpu s] from the benchmark records under logs/benchmarks."""
    root = workdir / "logs" / "benchmarks"
    jobs = read_benchmarks(root.rglob("*.tsv"), root)
    by_rule = jobs.groupby("rule").agg(
        jobs=("job", "size"), s=("s", "sum"), cpu=("cpu_time", "sum")
    )
    return {rule: [int(r.jobs), float(r.s), float(r.cpu)] for rule, r in by_rule.iterrows()}


def run_target(target: str, cores: str, workdir: Path, config=()) -> tuple[int, float]:
    nodes, edges = planned_dag(workdir, target, config=config)
    start = time.perf_counter()
    result = subprocess.run(
        snakemake_command(workdir, target, "--cores", cores, config=config),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"snakemake {target} failed:\n{result.stderr[-3000:]}")
    jobs = executed_jobs(result.stdout + result.stderr)
    wall_of = {key: (end - start).total_seconds() for key, (start, end) in jobs.items()}
    path_seconds, path_rules = critical_path(nodes, edges, wall_of)
    print(f"\n== {target}: {len(jobs)} jobs, wall {wall:.1f} s with --cores {cores}")
    print(f"{'rule':<24} {'jobs':>5} {'wall s':>9} {'cpu s':>9}")
    totals = rule_times(workdir)
    for rule, (count, seconds, cpu) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"{rule:<24} {count:>5} {seconds:>9.1f} {cpu:>9.1f}")
    print(
        f"{'sum':<24} {sum(v[0] for v in totals.values()):>5} "
        f"{sum(v[1] for v in totals.values()):>9.1f} {sum(v[2] for v in totals.values()):>9.1f}"
    )
    print(f"critical path {path_seconds:.0f} s: {' -> '.join(path_rules)}")
    return len(jobs), sum(v[2] for v in totals.values())


def earlier_attempts_seconds(workdir: Path, block: str, wall: float) -> float:
    """Step seconds a training job spent before its last attempt: the steps' seconds in its
    metrics.jsonl beyond the wall of the benchmark record (0 for other jobs)."""
    outputs = re.search(r"output: (.*)", block)
    metrics = [
        workdir / path
        for path in (outputs.group(1).split(", ") if outputs else [])
        if path.endswith("metrics.jsonl")
    ]
    if not metrics or not metrics[0].exists():
        return 0.0
    steps = read_metrics(metrics[0])
    if "seconds" not in steps.columns:
        return 0.0
    return max(0.0, float(steps.seconds.sum()) - wall)


def cost_of_directory(workdir: Path, target: str, cores: int, config=()) -> None:
    """What `target`'s jobs cost in a study directory that already ran them, perhaps over
    several invocations: the benchmark records of the jobs of its whole DAG."""
    nodes, edges = planned_dag(workdir, target, "--forceall", config=config)
    plan = subprocess.run(
        snakemake_command(workdir, target, "-n", "--forceall", config=config),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu, wall, missing = {}, {}, defaultdict(int)
    by_rule = defaultdict(lambda: [0, 0.0, 0.0, 0, 0.0])  # jobs, wall, cpu, resumed, added
    for key, block in job_blocks(plan).items():
        record = re.search(r"benchmark: (\S+)", block)
        if record is None:
            continue  # a rule without a benchmark record (aggregation targets such as all)
        path = workdir / record.group(1)
        if not path.exists():
            missing[key[0]] += 1
            continue
        table = read_benchmarks([path], path.parent)
        wall[key] = float(table.s.iloc[0])
        last_cpu = float(table.cpu_time.iloc[0])
        earlier = earlier_attempts_seconds(workdir, block, wall[key])
        if earlier:
            earlier *= last_cpu / wall[key]
        cpu[key] = last_cpu + earlier
        totals = by_rule[key[0]]
        totals[0] += 1
        totals[1] += wall[key]
        totals[2] += cpu[key]
        totals[3] += earlier > 0
        totals[4] += earlier
    total_cpu = sum(cpu.values())
    print(f"\n== {target} in {workdir}: {len(cpu)} jobs measured, {sum(missing.values())} not run")
    print(
        f"{'rule':<24} {'jobs':>5} {'wall s':>9} {'cpu s':>9} {'not run':>8} {'resumed':>8} "
        f"{'of cpu s: earlier attempts (est.)':>34}"
    )
    for rule, (count, seconds, rule_cpu, resumed, added) in sorted(
        by_rule.items(), key=lambda kv: -kv[1][2]
    ):
        print(
            f"{rule:<24} {count:>5} {seconds:>9.1f} {rule_cpu:>9.1f} {missing.get(rule, 0):>8} "
            f"{resumed:>8} {added:>34.1f}"
        )
    for rule in sorted(set(missing) - set(by_rule)):
        print(f"{rule:<24} {0:>5} {'':>9} {'':>9} {missing[rule]:>8}")
    added = sum(v[4] for v in by_rule.values())
    print(
        f"{'sum':<24} {len(cpu):>5} {sum(wall.values()):>9.1f} {total_cpu:>9.1f} {'':>8} "
        f"{sum(v[3] for v in by_rule.values()):>8} {added:>34.1f}"
    )
    path_cpu, path_rules = critical_path(nodes, edges, cpu)
    print(f"critical path by CPU {path_cpu:.0f} s: {' -> '.join(path_rules)}")
    bound = max(path_cpu, total_cpu / cores)
    print(
        f"wall with --cores {cores} cannot beat {bound:.0f} s = max(critical path, CPU / "
        f"{cores}){' (jobs not run yet add to it)' if missing else ''}; a resumed job counts its "
        "last attempt's CPU and an estimate of its earlier attempts'"
    )


# What a job's script imports before it does any work (workflow_scripts/*.py).
JOB_IMPORTS = (
    "import snakemake.script, torch, comma.stages.comma, comma.stages.nar, comma.stages.teacher"
)


def job_start_cpu(repeats: int = 3) -> float:
    """CPU seconds (user + system) of a fresh interpreter importing JOB_IMPORTS, median."""
    seconds = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", JOB_IMPORTS], check=True, cwd=REPO)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(seconds)


def mm_peak(n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a float32 n x n @ n x n torch.mm on this thread count, best of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def comma_step_efficiency(
    workdir: Path,
    steps: int = 10,
    threads: int = 1,
    precisions: tuple[str, ...] = ("fp32",),
    config_overrides: list[str] | tuple[str, ...] = (),
) -> None:
    """Per task: FLOPs of one CoMMA training step and the FLOP/s it reaches on `threads`
    threads, against the fp32 torch.mm peak, in each precision: "fp32", "bf16" (CPU autocast,
    as the trainer on a GPU) or "compile" (torch.compile of the forward, dynamic shapes: the
    first steps compile, so the table's ms are steps after two warm-up steps, and the warm-up
    is printed). The tasks are the config's, or those of a `tasks=[...]` override (Snakemake's
    --config syntax: a study of one task's slice prepared only that task's corpora)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    # Snakemake's --config reads each value as YAML, as here
    config.update({k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in config_overrides)})
    peak = mm_peak()
    print(f"\n== CoMMA training step, {threads} thread(s); torch.mm peak {peak / 1e9:.1f} GFLOP/s")
    header = ("task", "precision", "batch", "positions", "GFLOP", "ms", "GFLOP/s", "of peak")
    print(f"{header[0]:<5}" + "".join(f" {h:>9}" for h in header[1:]) + "  warm-up s")
    for task in config["tasks"]:
        architecture, training = family_settings(config, "comma", task)
        data = workdir / "work" / "data" / task
        split = load_split(data / "train.pt")
        kind = FAMILIES["comma"]
        plan = BatchPlan(split, max_sentences=training["max_sentences"], seed=0, measure="sum")
        batches = [plan.collate(ix) for ix in plan.epoch_batches(0)[: steps + 2]]
        flops = None
        for precision in precisions:
            torch.manual_seed(0)
            model = kind.build(
                kind.config(task=task, **prepared_corpus_sizes(data, split), **architecture)
            )
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(batch, model=model, optimizer=optimizer, autocast=False):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss, _ = model.loss(batch)
                loss.backward()
                optimizer.step()

            if flops is None:  # the model's FLOPs, counted on an eager fp32 step
                with FlopCounterMode(display=False) as counter:
                    step(batches[0])
                flops = counter.get_total_flops()
            if precision == "compile":
                torch._dynamo.reset()  # each task compiles afresh (no recompile limit reached)
                model.forward = torch.compile(model.forward, dynamic=True)
            step = functools.partial(step, autocast=precision == "bf16")
            start = time.perf_counter()
            step(batches[0])
            step(batches[1])
            warm_up = time.perf_counter() - start
            start = time.perf_counter()
            for batch in batches[2:]:
                step(batch)
            seconds = (time.perf_counter() - start) / len(batches[2:])
            positions = sum(int(b.src.shape[1] + b.tgt.shape[1]) * len(b) for b in batches[2:])
            print(
                f"{task:<5} {precision:>9} {len(batches[0]):>9} "
                f"{positions // len(batches[2:]):>9} {flops / 1e9:>9.2f} {seconds * 1e3:>9.1f} "
                f"{flops / seconds / 1e9:>9.1f} {flops / seconds / peak:>9.0%}  {warm_up:9.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="2")
    parser.add_argument("--targets", nargs="+", default=["results/fig2.pdf", "all"])
    parser.add_argument("--keep", type=Path, help="run in this new directory and keep it")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="run nothing: what the targets' jobs cost in this study directory",
    )
    parser.add_argument(
        "--steps-from",
        type=Path,
        help="run nothing but the CoMMA step probe, on the prepared corpora of this study",
    )
    parser.add_argument("--threads", type=int, default=1, help="the step probe's threads")
    parser.add_argument(
        "--config",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Snakemake --config for the runs and dry runs, e.g. 'tasks=[nmt]'",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "compile"],
        help="the step probe's precisions",
    )
    args = parser.parse_args()
    if args.steps_from is not None:
        comma_step_efficiency(
            args.steps_from,
            threads=args.threads,
            precisions=args.precisions,
            config_overrides=args.config,
        )
        return
    if args.source is not None:
        for target in args.targets:
            cost_of_directory(args.source, target, int(args.cores), config=args.config)
        return
    if args.keep is not None:
        args.keep.mkdir(parents=True)  # fails if it exists: every run starts empty
    with tempfile.TemporaryDirectory(prefix="comma-study-time-") as scratch:
        tmp = args.keep or Path(scratch)
        runs = []
        for k, target in enumerate(args.targets):
            workdir = Path(tmp) / f"run{k}"
            workdir.mkdir()
            runs.append((target, *run_target(target, args.cores, workdir, config=args.config)))
        comma_step_efficiency(Path(tmp) / "run0", config_overrides=args.config)
        start = job_start_cpu()
        print(f"\n== job start: {start:.1f} CPU-s per job (python -c '{JOB_IMPORTS}')")
        for target, jobs, cpu in runs:
            print(
                f"{target}: {jobs} jobs x {start:.1f} s = {jobs * start:.0f} CPU-s, "
                f"{jobs * start / max(cpu, 1e-9):.1%} of its jobs' {cpu:.0f} CPU-s"
            )


if __name__ == "__main__":
    main()
