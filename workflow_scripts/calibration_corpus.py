"""rule calibration_corpus: one draw of the calibration, the mini IWSLT14 corpus at a register
prior, and its report of the true dependency H(register | German)."""

from _workflow import rule_log
from comma.mini.nmt import generate_register_level

with rule_log(snakemake):
    p = snakemake.params
    generate_register_level(
        snakemake.output.corpus,
        snakemake.output.report,
        train=p.train,
        test=p.test,
        seed=p.seed,
        register_prior=list(p.register_prior),
        proposals=p.proposals,
        proposal_seed=p.proposal_seed,
    )
