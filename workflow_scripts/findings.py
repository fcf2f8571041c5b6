"""rule findings: the paper's claims checked against this run's R(p) tables."""

from _workflow import rule_log
from comma.findings import write_findings

with rule_log(snakemake):
    write_findings(snakemake.input[0], snakemake.output[0])
