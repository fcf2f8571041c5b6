"""rule runtimes: wall time, CPU time and memory of every job, from Snakemake's benchmark files
(every record under the rule's `directory`, except its own from an earlier run)."""

from pathlib import Path

from _workflow import rule_log
from comma.analysis.runtimes import summarize_runtimes

with rule_log(snakemake):
    p = snakemake.params
    excluded = {Path(f) for f in p.exclude}
    files = {f for f in Path(p.directory).rglob("*.tsv") if f not in excluded}
    o = snakemake.output
    summarize_runtimes(sorted(files), p.directory, o.table, o.summary, o.plot)
