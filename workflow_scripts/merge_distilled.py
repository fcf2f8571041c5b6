"""rule merge_distilled: the shards, in order, become the KD training split and its report
(comma.stages.distill.merge_distilled)."""

from _workflow import rule_log
from comma.stages.distill import merge_distilled

with rule_log(snakemake):
    merge_distilled(list(snakemake.input.shards), snakemake.output.train, snakemake.output.report)
