"""rule ratio_convergence: R(p) and D(p) at every checkpoint of the CoMMA runs against the step."""

from _workflow import rule_log
from comma.analysis.convergence import ratio_convergence

with rule_log(snakemake):
    ratio_convergence(
        [tuple(run) for run in snakemake.params.runs],
        snakemake.output.plot,
        snakemake.output.table,
    )
