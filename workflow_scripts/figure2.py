"""rule figure2: R(p) against p for every task (the paper's Figure 2), from the raw runs."""

from _workflow import rule_log
from comma.analysis.aggregate import read_runs
from comma.analysis.plots import plot_ratio_curves

with rule_log(snakemake):
    plot_ratio_curves(
        read_runs(list(snakemake.input)),
        [(task, "raw") for task in snakemake.params.tasks],
        [snakemake.output.pdf, snakemake.output.png],
        panels="single",
        title="Attention density ratio R(p) by task (CoMMA, raw data)",
    )
