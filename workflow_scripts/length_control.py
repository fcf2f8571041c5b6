"""rule length_control: the task ranking of R within bins of the length ratio M/N."""

from _workflow import rule_log
from comma.analysis.length_control import length_control

with rule_log(snakemake):
    o = snakemake.output
    length_control(
        list(snakemake.input),
        o.bins,
        o.slopes,
        o.table,
        o.plot,
        bin_width=float(snakemake.params.bin_width),
        min_sentences=int(snakemake.params.min_sentences),
    )
