"""The schema stops a bad config before any job runs, naming the key and the cause."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, snakemake


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
        ({"seed": "one"}, ["seed", "'one' is not of type 'integer'"]),
        ({"tasks": ["nmt", "mt"]}, ["tasks", "'mt'"]),
        ({"features": {"n_mels": 80.5}}, ["n_mels", "integer"]),
        ({"data": {"source": "ftp"}}, ["source", "'ftp'"]),
        ({"data": {"ljspeech": {"sha256": "abc"}}}, ["sha256", "does not match"]),
        ({"prepare": {"nmt": {"bpe_merge": 10}}}, ["bpe_merge"]),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, override, names):
    result = dry_run(tmp_path, override)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    for name in names:
        assert name in out, out[-3000:]
    assert "Job stats" not in out
