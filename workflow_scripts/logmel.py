"""rule logmel: log-mel features of every utterance of one corpus (part)."""

from _workflow import rule_log
from comma.data.audio import extract_corpus_mels

with rule_log(snakemake):
    extract_corpus_mels(
        snakemake.wildcards.corpus,
        snakemake.input[0],
        snakemake.output[0],
        **snakemake.params.features,
    )
