"""rule generate_mini_ljspeech: the mini LJSpeech-1.1 corpus, synthesized offline."""

from _workflow import rule_log
from comma.mini.speech import generate_mini_ljspeech

with rule_log(snakemake):
    p = snakemake.params
    generate_mini_ljspeech(
        snakemake.output[0],
        utterances=p.utterances,
        min_words=p.min_words,
        max_words=p.max_words,
        seed=p.seed,
    )
