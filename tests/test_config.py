"""The schema stops a bad config before any job runs, naming the key and the cause."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake


def dry_run(tmp_path, override: dict):
    cfg = tmp_path / "override.yaml"
    cfg.write_text(yaml.safe_dump(override))
    return snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg), check=False)


def test_default_and_paper_presets_plan(tmp_path):
    assert dry_run(tmp_path, {}).returncode == 0
    paper = snakemake(
        tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config/paper.yaml"), check=False
    )
    assert paper.returncode == 0, paper.stderr[-3000:]
    for rule in ("download_ljspeech", "prepare_nmt", "prepare_asr", "prepare_tts", "logmel"):
        assert rule in paper.stdout


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ({"seed": "one"}, ["config key seed: 'one' is not of type 'integer'"]),
        ({"seeds": [1, "x"]}, ["config key seeds[1]: 'x' is not of type 'integer'"]),
        ({"tasks": ["nmt", "mt"]}, ["tasks", "'mt'"]),
        ({"features": {"n_mels": 80.5}}, ["n_mels", "integer"]),
        ({"data": {"source": "ftp"}}, ["source", "'ftp'"]),
        ({"data": {"ljspeech": {"sha256": "abc"}}}, ["sha256", "does not match"]),
        ({"prepare": {"nmt": {"bpe_merge": 10}}}, ["bpe_merge"]),
        ({"models": {"comma": {"heads": 3}}}, ["models.comma.heads (3) does not divide"]),
        ({"models": {"nar": {"tts": {"heads": 5}}}}, ["models.nar.tts.heads (5)"]),
        ({"ratio": {"layers": [0, 7]}}, ["ratio.layers [7] beyond CoMMA's 3 layers"]),
        (
            {"prepare": {"nmt": {"min_tokens": 200}}},
            ["prepare.nmt.min_tokens (200) is above prepare.nmt.max_tokens (175)"],
        ),
        (
            {"features": {"f_max": 12000.0}},
            [
                "features.f_max (12000.0 Hz) is above the Nyquist frequency of ljspeech "
                "(11025 Hz, half its 22050 Hz sample rate)"
            ],
        ),
        ({"features": {"f_min": 100, "f_max": 50}}, ["features.f_min (100) is not below"]),
        (
            # the steps are named here, so the case does not follow config.yaml's schedule
            {"training": {"comma": {"warmup_steps": 2500, "max_steps": {"asr": 2000}}}},
            [
                "training.comma.warmup_steps (2500) is above training.comma.max_steps.asr (2000)",
                "the learning rate would never reach its peak",
            ],
        ),
        (
            {"training": {"teacher": {"tts": {"max_steps": 1000, "warmup_steps": 1001}}}},
            ["training.teacher.tts.warmup_steps (1001) is above training.teacher.tts.max_steps"],
        ),
        (
            {"training": {"nar": {"nmt": {"max_steps": 100}}}},
            ["training.nar.nmt.warmup_steps (300) is above training.nar.nmt.max_steps (100)"],
        ),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, override, names):
    result = dry_run(tmp_path, override)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    for name in names:
        assert name in out, out[-3000:]
    assert "Job stats" not in out


def _planned(stdout: str) -> dict[str, int]:
    """Job counts of a dry run's "Job stats" table."""
    table = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_figure2_plans_only_the_raw_comma_runs(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "1", "results/fig2.pdf")
    jobs = _planned(result.stdout)
    assert jobs["train_comma"] == 9 and jobs["measure_ratio"] == 9, jobs
    for rule in ("train_teacher", "distill", "extract_alignment", "aggregate_ratio", "train_nar"):
        assert rule not in jobs, jobs


def test_figure2_prepares_every_corpus_first_and_starts_the_longest_comma_runs_first(tmp_path):
    """Snakemake runs the ready job of highest priority: every preparation job outranks every
    training job, and the CoMMA runs go TTS, ASR, NMT, longest step first. Every job takes
    one thread: a 2-thread logmel waited 16 minutes for two CoMMA runs to free both cores
    at once, as a 1-thread job always held one."""
    import re

    result = snakemake(tmp_path, "-n", "--cores", "8", "results/fig2.pdf")
    threads = re.findall(r"^\s+threads: (\d+)", result.stdout, re.M)  # printed only above 1
    assert threads == [], threads
    priority = {}  # (rule, task or None) -> the priorities planned for its jobs
    for block in re.split(r"\n(?:local)?rule ", result.stdout)[1:]:
        rule = block.split(":", 1)[0]
        task = re.search(r"task=(\w+)", block)
        found = re.search(r"^\s+priority: (\d+)", block, re.M)
        key = (rule, task.group(1) if task and rule == "train_comma" else None)
        priority.setdefault(key, set()).add(int(found.group(1)) if found else 0)
    preparation = {k: v for k, v in priority.items() if k[0].startswith(("prepare_", "logmel"))}
    assert {k[0] for k in preparation} == {"logmel", "prepare_nmt", "prepare_asr", "prepare_tts"}
    comma = {task: priority[("train_comma", task)] for task in ("tts", "asr", "nmt")}
    assert all(len(p) == 1 for p in comma.values()), comma
    tts, asr, nmt = (min(comma[t]) for t in ("tts", "asr", "nmt"))
    assert tts > asr > nmt, comma
    assert min(min(p) for p in preparation.values()) > tts, (preparation, comma)


def test_config_on_the_command_line_takes_yaml_lists_and_nested_keys(tmp_path):
    result = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "1",
        "results/fig2.pdf",
        "--config",
        "seeds=[1,2]",
        "models={comma: {dropout: 0.3, layers: 2}}",
    )
    assert _planned(result.stdout)["train_comma"] == 6  # 3 tasks x 2 seeds
    assert "nmt_raw_noac_seed2" in result.stdout and "seed3" not in result.stdout


def test_yaml_values_are_typed_by_the_schema_only_where_it_expects_a_scalar():
    from comma.workflow_config import coerce_to_schema

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    config = {
        "seeds": ["1", "2"],
        "preset": "123",  # a string key stays a string
        "models": {"comma": {"dropout": "0.3", "pre_norm": "true", "layers": "x"}},
        "data": {"ljspeech": {"sha256": "1" * 64}},
    }
    coerce_to_schema(config, schema)
    assert config["seeds"] == [1, 2]
    assert config["preset"] == "123"
    assert config["models"]["comma"] == {"dropout": 0.3, "pre_norm": True, "layers": "x"}
    assert config["data"]["ljspeech"]["sha256"] == "1" * 64


def _default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _schema() -> dict:
    return yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["models"]["comma"].update(dropout=2),
            "config key models.comma.dropout: 2 is greater than the maximum of 1",
        ),
        (
            lambda c: c["models"]["comma"].update(dropuot=0.2),
            "config key models.comma: Additional properties are not allowed ('dropuot' was "
            "unexpected) ('dropuot': did you mean 'dropout'?)",
        ),
        # an integer or one per task: the bad task's value is named, not "not an integer"
        (
            lambda c: c["training"]["comma"]["max_steps"].update(nmt=-5),
            "config key training.comma.max_steps.nmt: -5 is less than the minimum of 1",
        ),
        (
            lambda c: c["training"]["comma"].update(max_steps=-5),
            "config key training.comma.max_steps: -5 is less than the minimum of 1",
        ),
        (lambda c: c["ratio"].update(p_grid=[0.1, 1.5]), "config key ratio.p_grid[1]: 1.5 is"),
        # fewer than 3 seeds cannot reach p = 0.05 in a t-test over seeds (docs/verdicts.md)
        (
            lambda c: c["findings"].update(min_seeds=2),
            "config key findings.min_seeds: 2 is less than the minimum of 3",
        ),
    ],
)
def test_schema_problems_name_the_key_path(change, expected):
    from comma.workflow_config import schema_problems

    config = _default_config()
    assert schema_problems(config, _schema()) == []
    change(config)
    problems = schema_problems(config, _schema())
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_every_problem_is_listed_before_any_job(tmp_path):
    from comma.workflow_config import prepare_config

    config = _default_config()
    config["seed"] = "one"
    config["models"]["comma"]["heads"] = 0
    with pytest.raises(ValueError) as error:
        prepare_config(config, REPO / "config" / "schema.yaml")
    message = str(error.value)
    assert "config key seed:" in message and "config key models.comma.heads:" in message


def test_a_per_task_mapping_over_one_value_keeps_that_value_for_the_other_tasks():
    from comma.workflow_config import merge_config_layers

    base = {"training": {"comma": {"max_steps": {"nmt": 3000, "asr": 2000, "tts": 3000}}}}
    preset = {"training": {"comma": {"max_steps": 30, "warmup_steps": 10}}}
    command_line = {"training": {"comma": {"max_steps": {"nmt": 10}}}}
    config, notes = merge_config_layers([base, preset, command_line])
    assert config["training"]["comma"] == {
        "max_steps": {"nmt": 10, "asr": 30, "tts": 30},
        "warmup_steps": 10,
    }
    assert notes == [
        "training.comma.max_steps: the tasks it does not name keep the 30 it replaces "
        "(asr: 30, tts: 30)"
    ]
    assert base["training"]["comma"]["max_steps"]["nmt"] == 3000  # the layers stay as given
    # Otherwise as Snakemake merges: a mapping of other keys replaces a value, a value a mapping.
    config, notes = merge_config_layers([{"a": 1, "b": {"c": 2}}, {"a": {"x": 1}, "b": 3}])
    assert config == {"a": {"x": 1}, "b": 3} and notes == []


def test_a_per_task_override_on_the_command_line_keeps_the_presets_other_tasks(tmp_path):
    """--config 'training={comma: {max_steps: {nmt: 10}}}' over tests/tiny.yaml's 30 steps:
    ASR and TTS keep the preset's 30, not config.yaml's 2,000 and 3,000."""
    result = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "1",
        "results/fig2.pdf",
        "--configfile",
        str(TINY_CONFIG),
        "--config",
        "training={comma: {max_steps: {nmt: 10}}}",
    )
    assert (
        "config: training.comma.max_steps: the tasks it does not name keep the 30 it replaces "
        "(asr: 30, tts: 30)" in result.stderr
    ), result.stderr[-3000:]


def test_a_per_task_override_of_the_paper_preset_keeps_its_schedule(tmp_path):
    """The paper preset's 100,000 CoMMA steps with NMT's set apart: ASR and TTS keep 100,000,
    so the preset's 4,000 warm-up steps fit (with config.yaml's 2,000 ASR steps they did not)."""
    result = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "1",
        "results/fig2.pdf",
        "--configfile",
        str(REPO / "config" / "paper.yaml"),
        "--config",
        "training={comma: {max_steps: {nmt: 50000}}}",
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "keep the 100000 it replaces (asr: 100000, tts: 100000)" in result.stderr


def test_the_mel_range_is_checked_against_the_corpora_the_tasks_read():
    """12 kHz is within LibriTTS's Nyquist frequency (24 kHz audio) but beyond LJSpeech's
    (22.05 kHz): an error only when TTS, which reads LJSpeech, is among the tasks."""
    from comma.workflow_config import config_problems

    config = _default_config()
    config["features"]["f_max"] = 12000.0
    assert config_problems(config, {"libritts": 24000}) == []
    assert config_problems(config, {"libritts": 24000, "ljspeech": 22050}) == [
        "features.f_max (12000.0 Hz) is above the Nyquist frequency of ljspeech (11025 Hz, "
        "half its 22050 Hz sample rate); null: up to it"
    ]


def test_f_max_within_librittss_nyquist_plans_without_tts(tmp_path):
    result = dry_run(tmp_path, {"tasks": ["nmt", "asr"], "features": {"f_max": 12000.0}})
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_config_file_snakemake_cannot_read_is_named_with_its_line(tmp_path):
    """Snakemake reads --configfile before the workflow runs and names neither file nor line
    (the README says so); python -m comma.workflow_config, which the README shows, does."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [1,\ntasks: [nmt]\n")
    result = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(bad), check=False)
    assert result.returncode != 0 and "not valid JSON or YAML" in result.stdout + result.stderr
    assert "python -m comma.workflow_config" in (REPO / "README.md").read_text()
    command = [sys.executable, "-m", "comma.workflow_config", str(REPO / "config.yaml")]
    run = subprocess.run(
        [*command, str(bad), str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"{bad}:3:1: while parsing a flow sequence (line 1, column 8): expected ',' or ']', but "
        "got '<stream end>'",
        f"{tmp_path / 'missing.yaml'}: cannot be read ([Errno 2] No such file or directory: "
        f"'{tmp_path / 'missing.yaml'}')",
    ]
    assert subprocess.run(command, cwd=REPO).returncode == 0


def _preset(*files: str) -> dict:
    from comma.workflow_config import merge_config_layers

    return merge_config_layers([yaml.safe_load((REPO / f).read_text()) for f in files])[0]


@pytest.mark.parametrize("preset", [("config.yaml",), ("config.yaml", "config/paper.yaml")])
def test_family_settings_hand_the_trainers_what_the_rules_handed_them(preset):
    """One split of models.<family> for the rules and the benchmarks; the architecture and
    training mappings (hence every run's fingerprint) are those the rules' own copies built,
    written out here key by key for both presets."""
    from comma.tasks import TASK_NAMES
    from comma.workflow_config import family_settings

    config = _preset(*preset)
    models, training = config["models"], config["training"]
    # the pre-net keys of the log-mel sides a task has not (ASR source, TTS target)
    asr_source, tts_target = (
        ("conv_channels", "conv_strides"),
        ("prenet_hidden", "prenet_dropout", "mel_chunk"),
    )
    unread_by_comma = {"nmt": asr_source + tts_target, "asr": tts_target, "tts": asr_source}
    for task in TASK_NAMES:
        steps = training["comma"]["max_steps"]
        expected = {
            "comma": (
                models["comma"],
                {
                    **training["comma"],
                    "max_steps": steps[task] if isinstance(steps, dict) else steps,
                },
                ("batch_size", "lr", "ac_weight", "ac_mode", *unread_by_comma[task]),
            ),
            "teacher": (
                models["teacher"][task],
                {
                    k: v
                    for k, v in training["teacher"][task].items()
                    if k not in ("runtime_minutes", "mem_mb")
                },
                ("batch_size", "lr"),
            ),
            "nar": (models["nar"][task], training["nar"][task], ("batch_size", "lr")),
        }
        for family, (model, schedule, dropped) in expected.items():
            architecture, trainer = family_settings(config, family, task)
            assert architecture == {k: v for k, v in model.items() if k not in dropped}
            assert trainer == {**schedule, "lr": model["lr"], "max_sentences": model["batch_size"]}


def test_a_tts_only_comma_setting_reaches_only_the_tts_runs():
    """models.comma.prenet_dropout is read by the TTS target's pre-net alone: changing it
    changes the TTS runs' settings (their params, hence a retrain) and no other task's."""
    import copy

    from comma.tasks import TASK_NAMES
    from comma.workflow_config import family_settings

    config = _preset("config.yaml")
    changed = copy.deepcopy(config)
    changed["models"]["comma"]["prenet_dropout"] = 0.25
    moved = [
        task
        for task in TASK_NAMES
        if family_settings(config, "comma", task) != family_settings(changed, "comma", task)
    ]
    assert moved == ["tts"]
    assert family_settings(changed, "comma", "tts")[0]["prenet_dropout"] == 0.25
