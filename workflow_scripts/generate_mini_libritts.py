"""rule generate_mini_libritts: the mini LibriTTS subsets, synthesized offline."""

from _workflow import rule_log
from comma.mini.speech import generate_mini_libritts

with rule_log(snakemake):
    p = snakemake.params
    generate_mini_libritts(
        p.root,
        subsets=dict(p.subsets),
        speakers=p.speakers,
        chapters_per_speaker=p.chapters_per_speaker,
        min_words=p.min_words,
        max_words=p.max_words,
        seed=p.seed,
    )
