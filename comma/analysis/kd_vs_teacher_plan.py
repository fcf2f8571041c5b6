"""The settings of the experiment "KD against teacher quality" (target ``kd_vs_teacher``,
issue 27; docs/experiments.md): which NMT teachers make a KD corpus, and which seeds train a NAT
on each. ``experiments.kd_vs_teacher`` in the config:

- ``teacher_steps``: the steps of each earlier teacher, strictly increasing and below
  ``training.teacher.nmt.max_steps``; the study's own teacher (work/teacher/nmt) is the last
  point, so the experiment has ``len(teacher_steps) + 1`` teacher points.
- ``nat_seeds``: the seeds of ``seeds`` whose NAT is trained on each point's KD corpus (a NAT
  costs the most of any job of a point).

Light on purpose (no pandas, no torch): rules/kd_vs_teacher.smk reads it while it builds the
DAG. The checks run only when the target is in the DAG, so a preset whose teacher trains for
fewer steps than these points (tests/tiny.yaml) can still run every other target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "KEY",
    "TASK",
    "TeacherPoint",
    "settings_problems",
    "teacher_points",
    "nat_seeds",
    "plan_files",
]

KEY = "experiments.kd_vs_teacher"
# NMT only: a TTS teacher point costs a 6,000-step teacher and FastSpeech per point and seed.
TASK = "nmt"


@dataclass(frozen=True)
class TeacherPoint:
    """One teacher of the experiment: trained for `steps` updates; `final`: the study's own
    teacher (its KD corpus, CoMMA and NAT runs are the main study's)."""

    steps: int
    final: bool


def _settings(config: Mapping) -> Mapping:
    return (config.get("experiments") or {}).get("kd_vs_teacher") or {}


def settings_problems(config: Mapping) -> list[str]:
    """What keeps ``experiments.kd_vs_teacher`` from planning a run, each naming its key."""
    settings = _settings(config)
    problems = []
    tasks = list(config.get("tasks") or [])
    if TASK not in tasks:
        problems.append(f"{KEY} needs the {TASK} task, and `tasks` is {tasks}")
    steps = settings.get("teacher_steps")
    if not isinstance(steps, list) or not steps:
        problems.append(f"{KEY}.teacher_steps must be a non-empty list of step counts")
        steps = []
    elif not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps):
        problems.append(f"{KEY}.teacher_steps must hold positive integers, got {steps}")
        steps = []
    if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
        problems.append(f"{KEY}.teacher_steps must be strictly increasing, got {steps}")
    teacher = ((config.get("training") or {}).get("teacher") or {}).get(TASK) or {}
    final = teacher.get("max_steps")
    if isinstance(final, int) and any(s >= final for s in steps):
        problems.append(
            f"{KEY}.teacher_steps {[s for s in steps if s >= final]} not below "
            f"training.teacher.{TASK}.max_steps {final}: the last point is the study's own "
            "teacher, the others are trained for fewer steps"
        )
    seeds = list(config.get("seeds") or [])
    chosen = settings.get("nat_seeds")
    if not isinstance(chosen, list) or not chosen:
        problems.append(f"{KEY}.nat_seeds must be a non-empty list of seeds of `seeds`")
    elif lacking := [s for s in chosen if s not in seeds]:
        problems.append(f"{KEY}.nat_seeds {lacking} not in `seeds` {seeds}")
    return problems


def _checked(config: Mapping) -> Mapping:
    problems = settings_problems(config)
    if problems:
        raise ValueError(f"the config cannot plan the target kd_vs_teacher: {'; '.join(problems)}")
    return _settings(config)


def teacher_points(config: Mapping) -> list[TeacherPoint]:
    """The teacher points, fewest steps first: ``teacher_steps``, then the study's teacher
    (``training.teacher.nmt.max_steps``). ValueError naming the key if the settings are bad."""
    steps = _checked(config)["teacher_steps"]
    final = config["training"]["teacher"][TASK]["max_steps"]
    return [TeacherPoint(int(s), False) for s in steps] + [TeacherPoint(int(final), True)]


def nat_seeds(config: Mapping) -> list[int]:
    """The seeds whose NAT each teacher point trains (``nat_seeds``, in the order of `seeds`)."""
    chosen = set(_checked(config)["nat_seeds"])
    return [s for s in config["seeds"] if s in chosen]


def plan_files(plan: Mapping) -> list[str]:
    """Every file of a plan (rules/kd_vs_teacher_inputs.smk: task, points, twins) that the
    report reads, each once, in plan order: per point the teacher's training log and test
    metrics, the KD report, the kd and rawkept R(p) tables, the NAT metrics; then the study's
    raw and rawkept twins (the teacher's weights are named for identity checks, not read)."""
    files = []
    for point in plan["points"]:
        files += [point["teacher_log"], point["teacher_metrics"], point["distill"]]
        files += [path for runs in point["ratio"].values() for path in runs.values()]
        files += list(point["nat"].values())
    files += [path for runs in plan["twins"].values() for path in runs.values()]
    return list(dict.fromkeys(str(f) for f in files))
