"""rule summarize_data: a table and a length plot of every prepared corpus."""

from pathlib import Path

from _workflow import rule_log
from comma.analysis.summary import summarize_prepared

with rule_log(snakemake):
    summarize_prepared(
        {
            task: Path(stats).parent
            for task, stats in zip(snakemake.params.tasks, snakemake.input.stats, strict=True)
        },
        snakemake.output.table,
        snakemake.output.plot,
        preset=snakemake.params.preset,
    )
