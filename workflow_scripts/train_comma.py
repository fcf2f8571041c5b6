"""rule train_comma: train one CoMMA (task, variant, seed) with the project's trainer."""

from pathlib import Path

from _workflow import rule_log
from comma.measure import train_comma

with rule_log(snakemake):
    train_comma(
        snakemake.wildcards.task,
        Path(snakemake.input.train).parent,
        snakemake.output.model,
        snakemake.output.metrics,
        architecture=dict(snakemake.params.architecture),
        training=dict(snakemake.params.training),
        seed=int(snakemake.wildcards.seed),
        threads=snakemake.threads,
    )
