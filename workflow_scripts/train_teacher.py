"""rule train_teacher: train the AR teacher of one task with the project's trainer.

One process per GPU the job was given (its `gpu` resource), data-parallel through torchrun
when there are several (comma.engine.launch); the job's threads are shared among them."""

from pathlib import Path

from _workflow import rule_log
from comma.engine.launch import launch_job
from comma.stages.teacher import train_teacher

with rule_log(snakemake):
    launch_job(
        train_teacher,
        dict(
            task=snakemake.wildcards.task,
            data_dir=str(Path(snakemake.input.train).parent),
            model_path=str(snakemake.output.model),
            metrics_path=str(snakemake.output.metrics),
            architecture=dict(snakemake.params.architecture),
            training=dict(snakemake.params.training),
            seed=int(snakemake.params.seed),
        ),
        resources=snakemake.resources,
        threads=snakemake.threads,
    )
