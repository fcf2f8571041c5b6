"""rule prepare_nmt: IWSLT14 De-En -> Moses tokens, cleaning, joint BPE, packed splits."""

from pathlib import Path

from _workflow import rule_log
from comma.data.nmt import prepare_nmt

with rule_log(snakemake):
    p = snakemake.params
    prepare_nmt(
        snakemake.input[0],
        Path(snakemake.output.stats).parent,
        lowercase=p.lowercase,
        clean_ratio=p.clean_ratio,
        min_tokens=p.min_tokens,
        max_tokens=p.max_tokens,
        valid_every=p.valid_every,
        bpe_merges=p.bpe_merges,
        test_sets=list(p.test_sets),
    )
