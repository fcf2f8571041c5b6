"""rule train_nar: train one NAR model (task, corpus, constraint) with the project's trainer.

One process per GPU the job was given (its `gpu` resource), data-parallel through torchrun
when there are several (comma.engine.launch); the job's threads are shared among them."""

from pathlib import Path

from _workflow import rule_log
from comma.engine.launch import launch_job
from comma.stages.nar import train_nar

with rule_log(snakemake):
    launch_job(
        train_nar,
        dict(
            task=snakemake.wildcards.task,
            data_dir=str(Path(snakemake.input.vocab[0]).parent),
            train_path=str(snakemake.input.train),
            model_path=str(snakemake.output.model),
            metrics_path=str(snakemake.output.metrics),
            constraint=snakemake.wildcards.constraint,
            architecture=dict(snakemake.params.architecture),
            training=dict(snakemake.params.training),
            seed=int(snakemake.params.seed),
            alignment_path=snakemake.input.get("alignment"),
            alignment_summary_path=snakemake.input.get("alignment_summary"),
        ),
        resources=snakemake.resources,
        threads=snakemake.threads,
    )
