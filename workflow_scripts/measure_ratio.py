"""rule measure_ratio: R(p) of one trained CoMMA on the test set, overall and per sentence."""

from _workflow import rule_log
from comma.stages.comma import measure_ratio

with rule_log(snakemake):
    p = snakemake.params
    w = snakemake.wildcards
    measure_ratio(
        snakemake.input.model,
        snakemake.input.test,
        snakemake.output.ratio,
        snakemake.output.heads,
        labels={"task": w.task, "variant": snakemake.params.variant, "seed": int(w.seed)},
        p_grid=list(p.p_grid),
        mask_seed=p.mask_seed,
        bootstrap=p.bootstrap,
        layers=p.layers,
        heads=p.heads,
        batch_sentences=p.batch_sentences,
        sentences_csv=snakemake.output.sentences,
    )
