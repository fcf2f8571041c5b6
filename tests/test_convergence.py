"""comma.analysis.convergence: R at every checkpoint, and the step from which it settles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from comma.analysis.convergence import converged_steps, ratio_convergence


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
            1,
            _metrics(
                tmp_path / "a.jsonl", [(50, 0.2), (100, 0.25), (150, 0.25)], [0.0, 0.05, 0.20]
            ),
        ),
        (
            "tts",
            2,
            _metrics(
                tmp_path / "b.jsonl", [(50, 0.3), (100, 0.27), (150, 0.27)], [0.0, 0.07, 0.22]
            ),
        ),
        ("nmt", 1, _metrics(tmp_path / "n.jsonl", [(50, 0.5), (100, 0.4)])),  # probed before D
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
    assert "| TTS | 2 | 3 | 150 | 0.2600 | 0.0141 | 50 | yes | 0.2100 | 0.0141 | 150 | no |" in text
    assert "| NMT | 1 | 2 | 100 | 0.4000 | 0.0000 | 100 | no | n/a | n/a | n/a | n/a |" in text
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="bare.jsonl: no R\\(p\\) at checkpoints"):
        ratio_convergence([("nmt", 1, bare)], tmp_path / "d.png", tmp_path / "d.md")
