"""rule generate_mini_iwslt14: the mini IWSLT14 De-En corpus in the real layout."""

from _workflow import rule_log
from comma.mini.nmt import generate_mini_iwslt14

with rule_log(snakemake):
    p = snakemake.params
    generate_mini_iwslt14(snakemake.output[0], train=p.train, test=p.test, seed=p.seed)
