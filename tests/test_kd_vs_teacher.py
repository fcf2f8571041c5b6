"""KD against teacher quality (issue 27, part 2): the workflow plans one teacher, one KD corpus
and one kd/rawkept CoMMA pair per teacher point and seed (the last point the study's own), a bad
teacher_steps is named, the claims read "KD lowers it at every point" as reproduced and say
where a sign change stops it, and every number of the table comes from the run's files."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import yaml
from _train_worker import CopyModel, copy_split
from conftest import REPO, TINY_CONFIG, snakemake

from comma.analysis.kd_vs_teacher import read_point, write_kd_vs_teacher
from comma.analysis.kd_vs_teacher_plan import nat_seeds, settings_problems, teacher_points
from comma.analysis.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from comma.engine.checkpoint import seed_everything
from comma.engine.train_config import TrainConfig
from comma.engine.trainer import train
from comma.errors import InputError
from comma.io import read_json, write_json
from comma.workflow_config import merge_config_layers, schema_problems

KEY = "experiments.kd_vs_teacher"


def preset(*overrides: dict) -> dict:
    return merge_config_layers([yaml.safe_load((REPO / "config.yaml").read_text()), *overrides])[0]


def planned_jobs(result) -> dict[str, int]:
    table = result.stdout.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


# --- the settings ------------------------------------------------------------------------


def test_the_preset_plans_three_earlier_teachers_and_the_study_s():
    config = preset()
    assert settings_problems(config) == []
    points = teacher_points(config)
    earlier = config["experiments"]["kd_vs_teacher"]["teacher_steps"]
    assert len(earlier) >= 3  # the issue asks for four teacher points or more
    assert [(p.steps, p.final) for p in points] == [
        *((steps, False) for steps in earlier),
        (config["training"]["teacher"]["nmt"]["max_steps"], True),
    ]
    assert nat_seeds(config) and set(nat_seeds(config)) <= set(config["seeds"])


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"teacher_steps": [300, 150]}, f"{KEY}.teacher_steps must be strictly increasing"),
        ({"teacher_steps": [150, 150]}, f"{KEY}.teacher_steps must be strictly increasing"),
        (
            {"teacher_steps": [150, 1500]},
            f"{KEY}.teacher_steps [1500] not below training.teacher.nmt.max_steps 1500",
        ),
        ({"nat_seeds": [1, 7]}, f"{KEY}.nat_seeds [7] not in `seeds` [1, 2, 3]"),
    ],
)
def test_bad_settings_are_named(settings, named):
    config = preset({"experiments": {"kd_vs_teacher": settings}})
    assert any(p.startswith(named) for p in settings_problems(config)), settings_problems(config)
    with pytest.raises(ValueError, match=re.escape(named)):
        teacher_points(config)


def test_the_schema_names_a_bad_teacher_steps():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert schema_problems(preset(), schema) == []
    for steps, named in (
        ([150, "x"], f"{KEY}.teacher_steps[1]: 'x' is not of type 'integer'"),
        ([0, 300], f"{KEY}.teacher_steps[0]: 0 is less than the minimum of 1"),
        ([], f"{KEY}.teacher_steps: [] should be non-empty"),
    ):
        problems = schema_problems(
            preset({"experiments": {"kd_vs_teacher": {"teacher_steps": steps}}}), schema
        )
        assert any(p.startswith(f"config key {named}") for p in problems), problems
    typo = preset({"experiments": {"kd_vs_teacher": {"teacher_step": [150]}}})
    assert any("teacher_step" in p for p in schema_problems(typo, schema))


def test_a_teacher_trained_for_fewer_steps_is_the_longer_run_after_as_many_updates(tmp_path):
    """Why the earlier teachers are trained afresh instead of snapshotted: neither the
    learning rate nor the data order nor dropout depends on max_steps, so N steps of training
    are the first N updates of a longer run (same losses; continued, the same weights)."""
    split = copy_split(96, 16, 3, 8, seed=0)

    def run(name, steps, model=None):
        if model is None:
            seed_everything(0)
            model = CopyModel(16, dropout=0.1)
        config = TrainConfig(
            max_steps=steps,
            lr=3e-3,
            warmup_steps=10,
            seed=1,
            max_sentences=16,
            checkpoint_every=500,
            threads=1,
            progress=False,
        )
        train(model, split, config, tmp_path / f"{name}.pt", tmp_path / f"{name}.jsonl")
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        return model, [(r["lr"], r["loss"]) for r in map(json.loads, lines)]

    short, short_log = run("short", 8)  # stops within the warm-up, as an early teacher point can
    long, long_log = run("long", 20)
    assert short_log == long_log[:8]
    continued, _ = run("short", 20, short)  # resumes the short run's checkpoint
    for a, b in zip(continued.state_dict().values(), long.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --- the plan (dry runs) -------------------------------------------------------------------


@pytest.mark.slow
def test_dry_run_plans_a_distill_and_a_kd_rawkept_pair_per_point_and_seed(tmp_path):
    """Tiny preset (seeds 1, 2; teacher 300 steps): points of 50, 100 and 200 steps and the
    study's teacher, NATs of seed 1. Each earlier point: one teacher, its evaluation, one KD
    corpus (distill.shards shards, one merge), kd and rawkept CoMMA per seed; the last point
    is the study's own jobs; `all` plans none of the experiment's."""
    override = tmp_path / "kd.yaml"
    override.write_text(
        yaml.safe_dump(
            {"experiments": {"kd_vs_teacher": {"teacher_steps": [50, 100, 200], "nat_seeds": [1]}}}
        )
    )
    configs = ("--configfile", str(TINY_CONFIG), str(override))
    plan = snakemake(tmp_path, "kd_vs_teacher", "-n", "--cores", "1", *configs)
    jobs = planned_jobs(plan)
    shards = yaml.safe_load((REPO / "config.yaml").read_text())["distill"]["shards"]
    assert {k: v for k, v in jobs.items() if k.startswith("kd_vs_teacher")} == {
        "kd_vs_teacher_train_teacher": 3,
        "kd_vs_teacher_evaluate_teacher": 3,
        "kd_vs_teacher_distill": 3 * shards,
        "kd_vs_teacher_merge_distilled": 3,
        "kd_vs_teacher_train_comma": 3 * 2 * 2,  # points x (kd, rawkept) x seeds
        "kd_vs_teacher_measure_ratio": 3 * 2 * 2,
        "kd_vs_teacher_train_nar": 3,
        "kd_vs_teacher_evaluate_nar": 3,
        "kd_vs_teacher": 1,
    }
    # the study's teacher is the last point: its KD corpus, kd, rawkept and raw (the noise
    # floor's twin) CoMMA per seed, its NAT w/o AC of seed 1
    assert jobs["train_teacher"] == 1 and jobs["merge_distilled"] == 1
    assert jobs["train_comma"] == 3 * 2 and jobs["train_nar"] == 1
    out = plan.stdout
    for steps in (50, 100, 200):
        point = f"work/kd_vs_teacher/step{steps}"
        assert f"{point}/teacher/nmt/model.pt" in out
        assert (
            f"{point}/data/nmt/kd/train.pt" in out and f"{point}/data/nmt/rawkept/train.pt" in out
        )
        for seed in (1, 2):
            for corpus in ("kd", "rawkept"):
                assert f"{point}/comma/nmt/{corpus}_noac/seed{seed}/ratio.csv" in out
        assert f"results/kd_vs_teacher/step{steps}/nar/nmt/kd_noac/seed1/metrics.json" in out
        assert f"results/kd_vs_teacher/step{steps}/nar/nmt/kd_noac/seed2" not in out
    # a kd run is planned by its own point's rawkept twin
    assert re.search(
        r"input: work/kd_vs_teacher/step50/data/nmt/kd/train.pt, "
        r"work/kd_vs_teacher/step50/data/nmt/rawkept/train.pt",
        out,
    )
    study = snakemake(tmp_path, "all", "-n", "--cores", "1", *configs)
    assert not any(rule.startswith("kd_vs_teacher") for rule in planned_jobs(study))


@pytest.mark.slow
def test_a_bad_teacher_steps_stops_the_target_and_not_the_study(tmp_path):
    override = tmp_path / "kd.yaml"
    # the tiny teacher trains 300 steps: 300 is no earlier point
    override.write_text(
        yaml.safe_dump({"experiments": {"kd_vs_teacher": {"teacher_steps": [100, 300]}}})
    )
    configs = ("--configfile", str(TINY_CONFIG), str(override))
    bad = snakemake(tmp_path, "kd_vs_teacher", "-n", "--cores", "1", *configs, check=False)
    assert bad.returncode != 0
    assert (
        f"{KEY}.teacher_steps [300] not below training.teacher.nmt.max_steps 300"
        in bad.stdout + bad.stderr
    )
    assert snakemake(tmp_path, "all", "-n", "--cores", "1", *configs).returncode == 0


# --- the claims, the table and the figure on synthetic artifacts ---------------------------

STEPS_BLEU = {50: 5.0, 100: 20.0, 200: 35.0, 300: 45.0}  # 300: the study's teacher
SEEDS = (1, 2, 3)
BASE = {"R": 0.40, "T": 0.30, "D": 0.20}
P_GRID = (0.1, 0.3, 0.5)


def _ratio_csv(path, variant, seed, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["task,variant,seed,p,R,T,D,M,N"]
    lines += [
        f"nmt,{variant},{seed},{p},{values['R']},{values['T']},{values['D']},12.0,11.0"
        for p in P_GRID
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def synthetic_plan(tmp_path, difference) -> dict:
    """The files of 4 teacher points and the study's twins; difference(steps, seed) is
    measure(kd) - measure(rawkept) for R, T and D alike at every p."""
    points = []
    for steps, bleu in STEPS_BLEU.items():
        top = tmp_path / f"step{steps}"
        model = str(top / "teacher" / "model.pt")
        log = top / "teacher" / "metrics.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, steps)))
        write_json(top / "teacher.json", {"task": "nmt", "model": model, "bleu": bleu})
        write_json(
            top / "distill.json",
            {
                "task": "nmt",
                "teacher": model,
                "sentences": 1000,
                "kept": 990 - steps // 10,
                "dropped": {"max_length": 10 + steps // 10},
                "dropped_total": 10 + steps // 10,
            },
        )
        ratio = {"kd": {}, "rawkept": {}}
        for seed in SEEDS:
            kept = {m: v + 0.002 * seed for m, v in BASE.items()}
            d = difference(steps, seed)
            ratio["rawkept"][seed] = _ratio_csv(top / f"rawkept{seed}.csv", "rawkept", seed, kept)
            kd = {m: v + d for m, v in kept.items()}
            ratio["kd"][seed] = _ratio_csv(top / f"kd{seed}.csv", "kd", seed, kd)
        nat = {}
        for seed in SEEDS:
            nat[seed] = str(top / f"nat{seed}.json")
            write_json(nat[seed], {"task": "nmt", "bleu": bleu * 0.6 + seed})
        points.append(
            {
                "steps": steps,
                "final": steps == 300,
                "teacher_model": model,
                "teacher_log": str(log),
                "teacher_metrics": str(top / "teacher.json"),
                "distill": str(top / "distill.json"),
                "ratio": ratio,
                "nat": nat,
            }
        )
    twins = {"raw": {}, "rawkept": {}}
    for seed in SEEDS:
        kept = {m: v + 0.002 * seed for m, v in BASE.items()}
        raw = {m: v + 0.001 for m, v in kept.items()}  # noise floor 0.001
        twins["raw"][seed] = _ratio_csv(tmp_path / f"raw{seed}.csv", "raw", seed, raw)
        twins["rawkept"][seed] = _ratio_csv(tmp_path / f"twin{seed}.csv", "rawkept", seed, kept)
    return {"task": "nmt", "points": points, "twins": twins}


def run(tmp_path, plan):
    return write_kd_vs_teacher(
        plan, tmp_path / "kd.png", tmp_path / "kd.md", min_seeds=3, min_dependency=0.05
    )


def test_kd_lowering_every_measure_at_every_point_is_reproduced_everywhere(tmp_path):
    plan = synthetic_plan(tmp_path, lambda steps, seed: -0.10 - 0.01 * seed)
    per_point, overall = run(tmp_path, plan)
    assert {f.verdict for f in per_point.values()} == {REPRODUCED}
    assert len(per_point) == 4 * 3  # points x (R, T, D)
    for finding in overall.values():
        assert finding.verdict == REPRODUCED, finding.evidence
        assert "It holds at every teacher point." in finding.evidence
        assert "sign changes" not in finding.evidence
    table = (tmp_path / "kd.md").read_text()
    assert (
        "| KD lowers target-token dependency for NMT at every teacher quality | **reproduced** |"
        in table
    )
    assert (tmp_path / "kd.png").stat().st_size > 10_000


def test_a_sign_change_says_at_which_teacher_the_claim_stops(tmp_path):
    def difference(steps, seed):
        if steps == 50:  # the weakest teacher: KD raises dependency
            return 0.10 + 0.01 * seed
        if steps == 100:  # no consistent effect
            return {1: 0.01, 2: -0.01, 3: -0.005}[seed]
        return -0.10 - 0.01 * seed

    per_point, overall = run(tmp_path, synthetic_plan(tmp_path, difference))
    assert per_point[(300, "R")].verdict == per_point[(200, "R")].verdict == REPRODUCED
    assert per_point[(100, "R")].verdict == INCONCLUSIVE
    assert per_point[(50, "R")].verdict == NOT_REPRODUCED
    for measure in ("R", "T", "D"):
        evidence = overall[measure].evidence
        assert overall[measure].verdict == NOT_REPRODUCED
        assert (
            "It holds down to the teacher of 200 steps (BLEU 35.0); it stops at the teacher of "
            "100 steps (BLEU 20.0) (inconclusive)." in evidence
        )
        assert (
            f"The sign changes: KD raises {measure} (kd above rawkept, mean over seeds) with the "
            "teacher of 50 steps (BLEU 5.0)." in evidence
        )
    table = (tmp_path / "kd.md").read_text()
    assert "- R: not reproduced. It holds down to the teacher of 200 steps" in table


def test_every_number_of_the_table_comes_from_the_files(tmp_path):
    plan = synthetic_plan(tmp_path, lambda steps, seed: -0.10 - 0.01 * seed)
    run(tmp_path, plan)
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in (tmp_path / "kd.md").read_text().splitlines()
        if re.match(r"^\| \d+", line)
    }
    study = rows["300 (study)"]
    assert study[1] == "45.00"  # the study's teacher's metrics.json
    assert study[2] == "960 of 1000"  # its KD report
    assert study[3] == "1: -0.1100, 2: -0.1200, 3: -0.1300" and study[4] == "-0.1200"
    assert study[9] == "1: 28.00, 2: 29.00, 3: 30.00" and study[10] == "29.00"  # NAT BLEU
    # another BLEU in a file is another number in the table
    bleu_file = plan["points"][0]["teacher_metrics"]
    write_json(bleu_file, {**read_json(bleu_file), "bleu": 7.25})
    run(tmp_path, plan)
    assert "| 50 | 7.25 |" in (tmp_path / "kd.md").read_text()


def test_a_missing_or_foreign_file_is_named(tmp_path):
    plan = synthetic_plan(tmp_path, lambda steps, seed: -0.1)
    point = plan["points"][1]
    nat = point["nat"][2]
    moved = nat + ".away"
    os.rename(nat, moved)
    with pytest.raises(InputError, match=re.escape(nat) + ".*missing: a NAT's test metrics"):
        run(tmp_path, plan)
    os.rename(moved, nat)
    # a training log of another length: not the teacher the plan names
    with pytest.raises(InputError, match="its last step is 100, the plan expects 150"):
        read_point({**point, "steps": 150}, "nmt")
    # a KD report of another teacher
    other = {**point, "distill": plan["points"][0]["distill"]}
    with pytest.raises(InputError, match="its teacher is .*step50.*the plan expects .*step100"):
        read_point(other, "nmt")
    # an R(p) table of another variant
    swapped = {**point, "ratio": {"kd": point["ratio"]["rawkept"], "rawkept": point["ratio"]["kd"]}}
    with pytest.raises(
        InputError, match=r"its variant is \['rawkept'\], the plan expects \['kd'\]"
    ):
        read_point(swapped, "nmt")
