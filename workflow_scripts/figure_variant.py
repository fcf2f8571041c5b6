"""rules figure3 and figure4: R(p) of raw against a variant (kd, ac), one panel per task."""

import pandas as pd

from _workflow import rule_log
from comma.analysis.plots import plot_variant_comparison

with rule_log(snakemake):
    p = snakemake.params
    plot_variant_comparison(
        pd.read_csv(snakemake.input[0]),
        p.variant,
        list(p.tasks),
        [snakemake.output.pdf, snakemake.output.png],
        panel_notes=dict(p.notes),
        title=p.title,
        source=snakemake.input[0],
    )
