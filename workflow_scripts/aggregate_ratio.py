"""rule aggregate_ratio: every run's R(p) in one table, summarized over seeds."""

from _workflow import rule_log
from comma.analysis.aggregate import aggregate_ratio

with rule_log(snakemake):
    o = snakemake.output
    aggregate_ratio(list(snakemake.input), o.runs, o.summary, o.table)
