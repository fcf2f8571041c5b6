"""rule prepare_asr: LibriTTS transcripts -> tokens + BPE, paired with log-mel features."""

from pathlib import Path

from _workflow import rule_log
from comma.data.speech import prepare_asr

with rule_log(snakemake):
    p = snakemake.params
    i = snakemake.input
    prepare_asr(
        p.root,
        {split: Path(i[f"mels_{split}"]) for split in ("train", "valid", "test")},
        Path(snakemake.output.stats).parent,
        subsets=dict(p.subsets),
        lowercase=p.lowercase,
        bpe_merges=p.bpe_merges,
        seconds=(p.min_seconds, p.max_seconds),
        max_chars_per_second=p.max_chars_per_second,
    )
