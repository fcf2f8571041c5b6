"""rule findings: the paper's claims checked against this run's tables."""

from _workflow import rule_log
from comma.analysis.findings import write_findings

with rule_log(snakemake):
    i = snakemake.input
    write_findings(
        i.ratio,
        snakemake.output[0],
        length_bins_csv=i.length_bins,
        length_slopes_csv=i.length_slopes,
        table_csvs=list(i.tables),  # Tables 2, 3 and 4
        distill_jsons=list(i.distill),
        min_seeds=snakemake.params.min_seeds,
        min_dependency=snakemake.params.min_dependency,
        ac_mode=snakemake.params.ac_mode,
    )
