"""rule figure_dependency: R(p), T(p) and the masked-loss dependency D(p) side by side, from
the raw runs."""

from _workflow import rule_log
from comma.analysis.aggregate import read_runs
from comma.analysis.plots import plot_dependency_measures

with rule_log(snakemake):
    plot_dependency_measures(
        read_runs(list(snakemake.input)),
        snakemake.params.tasks,
        [snakemake.output.pdf, snakemake.output.png],
    )
