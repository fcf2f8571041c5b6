"""Figures 2-4 drawn from a fixture R(p) table."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from comma.analysis.plots import (
    paired_differences,
    plot_dependency_measures,
    plot_ratio_curves,
    plot_variant_comparison,
)

LEVEL = {"nmt": 0.45, "asr": 0.8, "tts": 0.2}
SHIFT = {"raw": 0.0, "kd": 0.05, "ac": 0.08}


@pytest.fixture
def runs():
    rows = []
    for task, variant, seed, p in itertools.product(
        LEVEL, SHIFT, (1, 2, 3), (0.1, 0.2, 0.3, 0.4, 0.5)
    ):
        r = LEVEL[task] - SHIFT[variant] - 0.1 * p + 0.01 * (seed - 2) * (1 + p)
        rows.append(dict(task=task, variant=variant, seed=seed, p=p, R=r, T=0.5, M_over_N=1.0))
    return pd.DataFrame(rows)


def test_paired_differences_are_per_seed(runs):
    diff = paired_differences(runs, "kd")
    assert len(diff) == 3 * 3 * 5
    assert diff.difference.to_numpy() == pytest.approx([-0.05] * len(diff))
    assert paired_differences(runs[runs.variant == "raw"], "kd").empty


@pytest.mark.parametrize(("variant", "tasks"), [("kd", ["nmt", "tts", "asr"]), ("ac", ["asr"])])
def test_variant_figures_are_written(runs, tmp_path, variant, tasks):
    paths = [tmp_path / "fig.pdf", tmp_path / "fig.png"]
    plot_variant_comparison(
        runs, variant, tasks, paths, panel_notes={"asr": "beyond the paper"}, title="t"
    )
    for path in paths:
        assert path.stat().st_size > 10_000


def test_missing_variant_fails_naming_the_file_and_what_is_there(runs, tmp_path):
    no_ac = runs[~((runs.variant == "ac") & (runs.task == "tts"))]
    with pytest.raises(ValueError, match=r"results/ratio\.csv has no R\(p\) .* for tts/ac"):
        plot_variant_comparison(
            no_ac, "ac", ["nmt", "tts"], [tmp_path / "f.png"], source="results/ratio.csv"
        )
    assert not (tmp_path / "f.png").exists()
    with pytest.raises(ValueError, match="tts/ac"):
        plot_ratio_curves(no_ac, [("tts", "ac")], [tmp_path / "g.png"])


def test_figure2_still_draws(runs, tmp_path):
    plot_ratio_curves(runs, [(t, "raw") for t in LEVEL], [tmp_path / "fig2.png"])
    assert (tmp_path / "fig2.png").stat().st_size > 10_000


def test_dependency_figure_draws_r_t_and_d_and_names_a_missing_column(runs, tmp_path):
    runs = runs.assign(D=1 - runs.R)
    paths = [tmp_path / "dependency.pdf", tmp_path / "dependency.png"]
    plot_dependency_measures(runs, ["asr", "nmt", "tts"], paths)
    assert all(path.stat().st_size > 1000 for path in paths)
    with pytest.raises(ValueError, match="no D column"):
        plot_dependency_measures(runs.drop(columns="D"), ["nmt"], [tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()
