"""rule kd_vs_teacher: KD's effect on R, T and D, and NAT BLEU, against the teacher's BLEU, from
every teacher point's artifacts (comma.analysis.kd_vs_teacher)."""

from _workflow import rule_log
from comma.analysis.kd_vs_teacher import write_kd_vs_teacher

with rule_log(snakemake):
    write_kd_vs_teacher(
        snakemake.params.plan,
        snakemake.output.figure,
        snakemake.output.table,
        min_seeds=int(snakemake.params.min_seeds),
        min_dependency=float(snakemake.params.min_dependency),
    )
