"""rule calibration: R, T and D against the known dependency (figure, table, verdicts)."""

from _workflow import rule_log
from comma.analysis.calibration import write_calibration

with rule_log(snakemake):
    write_calibration(
        list(snakemake.params.draws),
        list(snakemake.input.reports),
        list(snakemake.input.ratios),
        snakemake.output.figure,
        snakemake.output.table,
        min_seeds=snakemake.params.min_seeds,
    )
