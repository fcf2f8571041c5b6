"""rule train_comma: train one CoMMA (task, variant, seed) with the project's trainer.

One process per GPU the job was given (its `gpu` resource), data-parallel through torchrun
when there are several (comma.engine.launch); the job's threads are shared among them."""

from pathlib import Path

from _workflow import rule_log
from comma.engine.launch import launch_job
from comma.stages.comma import train_comma

with rule_log(snakemake):
    launch_job(
        train_comma,
        dict(
            task=snakemake.wildcards.task,
            data_dir=str(Path(snakemake.input.vocab[0]).parent),
            train_path=str(snakemake.input.train),
            alignment_path=snakemake.input.get("alignment"),
            order_path=snakemake.input.get("batch_order"),  # kd: its rawkept twin's batches
            **dict(snakemake.params.constraint),  # ac runs: ac_weight, ac_mode
            probe=snakemake.params.probe,
            model_path=str(snakemake.output.model),
            metrics_path=str(snakemake.output.metrics),
            architecture=dict(snakemake.params.architecture),
            training=dict(snakemake.params.training),
            seed=int(snakemake.wildcards.seed),
        ),
        resources=snakemake.resources,
        threads=snakemake.threads,
    )
