"""rule prepare_tts: LJSpeech text -> g2p phonemes, paired with log-mel features, split."""

from pathlib import Path

from _workflow import rule_log
from comma.data.speech import prepare_tts

with rule_log(snakemake):
    p = snakemake.params
    prepare_tts(
        snakemake.input.corpus,
        snakemake.input.mels,
        Path(snakemake.output.stats).parent,
        valid=p.valid,
        test=p.test,
        seed=p.seed,
        seconds=(p.min_seconds, p.max_seconds),
        max_chars_per_second=p.max_chars_per_second,
    )
