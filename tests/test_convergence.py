"""comma.analysis.convergence: R at every checkpoint, and the step from which it settles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from comma.analysis.convergence import comparison_directions, converged_steps, ratio_convergence


def _metrics(path, values, dependency=None):
    lines = [{"step": s, "loss": 1.0, "R@0.1": r - 0.01, "R@0.5": r + 0.01} for s, r in values]
    for line, d in zip(lines, dependency or [], strict=False):
        line.update({"D@0.1": d + 0.02, "D@0.5": d - 0.02})
    lines.insert(1, {"step": 1, "loss": 2.0})  # an unprobed step
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_converged_step_is_where_the_seed_mean_stays_within_the_seed_spread():
    table = pd.DataFrame(
        {
            "task": ["nmt"] * 8,
            "variant": ["raw"] * 8,
            "seed": [1, 1, 1, 1, 2, 2, 2, 2],
            "step": [100, 200, 300, 400] * 2,
            # mean: 0.10, 0.36, 0.29, 0.30; final 0.30 +- std(0.28, 0.32) = 0.028
            "R": [0.10, 0.35, 0.28, 0.28, 0.10, 0.37, 0.30, 0.32],
        }
    )
    row = converged_steps(table).iloc[0]
    assert row.final_step == 400 and row.final_R == pytest.approx(0.30)
    assert row.final_R_std == pytest.approx(0.028284, rel=1e-4)
    assert row.converged_step == 300  # 200 is within too, but 100 is not; 300 onwards stays
    # One seed has no spread: only checkpoints equal to the final value count as settled.
    one = converged_steps(table[table.seed == 1]).iloc[0]
    assert one.final_R_std == 0 and one.converged_step == 300  # 0.28 at 300 and 400
    shifted = table[table.seed == 1].assign(R=[0.10, 0.35, 0.27, 0.28])
    assert converged_steps(shifted).iloc[0].converged_step == 400


def test_figure_and_table_from_metrics_files(tmp_path):
    # R settles at once while D still climbs: D converges only at the last checkpoint
    runs = [
        (
            "tts",
            "raw",
            1,
            _metrics(
                tmp_path / "a.jsonl", [(50, 0.2), (100, 0.25), (150, 0.25)], [0.0, 0.05, 0.20]
            ),
        ),
        (
            "tts",
            "raw",
            2,
            _metrics(
                tmp_path / "b.jsonl", [(50, 0.3), (100, 0.27), (150, 0.27)], [0.0, 0.07, 0.22]
            ),
        ),
        # probed before D was measured
        ("nmt", "raw", 1, _metrics(tmp_path / "n.jsonl", [(50, 0.5), (100, 0.4)])),
    ]
    summary = ratio_convergence(runs, tmp_path / "c.png", tmp_path / "c.md").set_index("task")
    assert summary.loc["tts"].final_R == pytest.approx(0.26)
    assert summary.loc["tts"].converged_step == 50  # the seeds' mean is 0.25 from step 50 on
    assert summary.loc["tts"].final_D == pytest.approx(0.21)
    assert summary.loc["tts"].converged_step_D == 150
    assert pd.isna(summary.loc["nmt"].final_D)
    assert (tmp_path / "c.png").stat().st_size > 1000
    text = (tmp_path / "c.md").read_text()
    # R within the spread from step 50 of 150 (settled), D only at the last checkpoint (not)
    assert (
        "| TTS | raw | 2 | 3 | 150 | 0.2600 | 0.0141 | 50 | yes | 0.2100 | 0.0141 | 150 | no |"
        in text
    )
    nmt_row = "| NMT | raw | 1 | 2 | 100 | 0.4000 | 0.0000 | 100 | no | n/a | n/a | n/a | n/a |"
    assert nmt_row in text
    assert "Would the comparisons" not in text  # no kd or ac runs: no comparison to read
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="bare.jsonl: no R\\(p\\) at checkpoints"):
        ratio_convergence([("nmt", "raw", 1, bare)], tmp_path / "d.png", tmp_path / "d.md")


def _probes(task, variant, seed, steps, r, d=None):
    return pd.DataFrame(
        {
            "task": task,
            "variant": variant,
            "seed": seed,
            "step": steps,
            "R": r,
            "D": d if d is not None else [float("nan")] * len(steps),
        }
    )


def test_comparison_directions_pair_seeds_and_find_where_the_sign_settles():
    steps = [100, 200, 300, 400]
    table = pd.concat(
        [
            _probes("nmt", "raw", 1, steps, [0.30, 0.30, 0.30, 0.30], [0.0, 0.1, 0.2, 0.3]),
            _probes("nmt", "raw", 2, steps, [0.32, 0.32, 0.32, 0.32], [0.0, 0.1, 0.2, 0.3]),
            # ac: above raw at first, below from step 200 on (raw - ac > 0 from 200)
            _probes("nmt", "ac", 1, steps, [0.35, 0.28, 0.27, 0.26], [0.0, 0.1, 0.2, 0.3]),
            _probes("nmt", "ac", 2, steps, [0.36, 0.31, 0.29, 0.28], [0.0, 0.1, 0.2, 0.3]),
            # kd against rawkept, which takes precedence over raw: the sign flips at the end
            _probes("nmt", "rawkept", 1, steps, [0.20, 0.20, 0.20, 0.20]),
            _probes("nmt", "kd", 1, steps, [0.10, 0.10, 0.10, 0.25]),
            # a task without kd or rawkept: only ac is read, against raw
            _probes("tts", "raw", 1, steps[:2], [0.2, 0.2]),
            _probes("tts", "ac", 1, steps[:2], [0.1, 0.1]),
        ],
        ignore_index=True,
    )
    by_r = comparison_directions(table, "R").set_index(["task", "variant"])
    ac = by_r.loc[("nmt", "ac")]
    assert ac.baseline == "raw" and ac.seeds == 2 and ac.final_step == 400
    assert ac.difference == pytest.approx(0.04)  # (0.30 - 0.26 + 0.32 - 0.28) / 2
    assert ac.difference_std == pytest.approx(0.0)
    assert ac.direction_step == 200 and ac.seeds_with_sign == 2
    kd = by_r.loc[("nmt", "kd")]
    assert kd.baseline == "rawkept" and kd.difference == pytest.approx(-0.05)
    assert kd.direction_step == 400  # positive until the last checkpoint
    assert by_r.loc[("tts", "ac")].direction_step == 100
    assert ("tts", "kd") not in by_r.index
    # D: ac and raw equal at every checkpoint (sign 0 throughout); runs without D are left out
    by_d = comparison_directions(table, "D").set_index(["task", "variant"])
    assert list(by_d.index) == [("nmt", "ac")]
    assert by_d.iloc[0].difference == 0 and by_d.iloc[0].direction_step == 100
    # seeds that disagree at the final step: the mean's sign is held by one of two
    split = pd.concat(
        [
            _probes("asr", "raw", 1, steps[:2], [0.5, 0.5]),
            _probes("asr", "raw", 2, steps[:2], [0.5, 0.5]),
            _probes("asr", "ac", 1, steps[:2], [0.4, 0.47]),
            _probes("asr", "ac", 2, steps[:2], [0.4, 0.51]),
        ]
    )
    row = comparison_directions(split, "R").iloc[0]
    assert row.difference == pytest.approx(0.01) and row.seeds_with_sign == 1


def test_the_table_reads_every_variant_and_the_comparisons(tmp_path):
    runs = []
    for variant, (r, d) in {
        "raw": ([0.30, 0.31, 0.30], [0.02, 0.06, 0.08]),
        "ac": ([0.25, 0.22, 0.21], [0.01, 0.03, 0.05]),
    }.items():
        for seed, shift in ((1, 0.0), (2, 0.01)):
            values = [(s, v + shift) for s, v in zip((100, 200, 300), r, strict=True)]
            path = _metrics(tmp_path / f"{variant}{seed}.jsonl", values, d)
            runs.append(("asr", variant, seed, path))
    summary = ratio_convergence(runs, tmp_path / "c.png", tmp_path / "c.md")
    assert list(zip(summary.task, summary.variant, strict=True)) == [("asr", "raw"), ("asr", "ac")]
    text = (tmp_path / "c.md").read_text()
    assert "| ASR | ac | 2 | 3 | 300 | 0.2150 |" in text
    # raw - ac by R: +0.05, +0.09, +0.09 (both seeds alike): the same sign from the first probe
    assert "| ASR | raw - ac | R | 2 | 300 | +0.0900 | 0.0000 | 2 of 2 | 100 | yes |" in text
    assert "| ASR | raw - ac | D | 2 | 300 | +0.0300 | 0.0000 | 2 of 2 | 100 | yes |" in text
