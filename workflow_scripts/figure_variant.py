"""rules figure3 and figure4: R(p) of a baseline (rawkept, raw) against a variant (kd, ac), one
panel per task, from the baseline and variant runs."""

from _workflow import rule_log
from comma.analysis.aggregate import read_runs
from comma.analysis.plots import plot_variant_comparison

with rule_log(snakemake):
    p = snakemake.params
    plot_variant_comparison(
        read_runs(list(snakemake.input)),
        p.variant,
        list(p.tasks),
        [snakemake.output.pdf, snakemake.output.png],
        panel_notes=dict(p.notes),
        title=p.title,
        baseline=p.baseline,
        source="the runs' ratio.csv files",
    )
