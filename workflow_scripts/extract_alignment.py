"""rule extract_alignment: the teacher's alignments of one training corpus (comma.stages.align)."""

from _workflow import rule_log
from comma.stages.align import extract_alignment

with rule_log(snakemake):
    extract_alignment(
        snakemake.input.teacher,
        snakemake.input.train,
        snakemake.output.alignment,
        snakemake.output.summary,
        attention=snakemake.params.attention,
        min_focus_rate=float(snakemake.params.min_focus_rate),
        batch_sentences=int(snakemake.params.batch_sentences),
        seed=int(snakemake.params.seed),
    )
