"""rule merge_distilled: the shards, in order, become the KD training split, the raw pairs of
the sentences it keeps, and its report (comma.stages.distill.merge_distilled)."""

from _workflow import rule_log
from comma.stages.distill import merge_distilled

with rule_log(snakemake):
    merge_distilled(
        list(snakemake.input.shards),
        snakemake.output.train,
        snakemake.output.report,
        raw_train_path=snakemake.input.raw,
        raw_kept_path=snakemake.output.raw_kept,
    )
