"""rule tables: the paper's Tables 2-4 from the teachers' and NAR models' metrics."""

from pathlib import Path

from _workflow import rule_log
from comma.analysis.tables import write_tables

with rule_log(snakemake):
    write_tables(
        dict(snakemake.params.teachers),
        {
            task: {variant: dict(seeds) for variant, seeds in variants.items()}
            for task, variants in snakemake.params.nar.items()
        },
        Path(snakemake.output.table2_csv).parent,
        preset=snakemake.params.preset,
    )
