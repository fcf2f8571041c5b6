"""rule figure2: R(p) against p for every task (the paper's Figure 2)."""

import pandas as pd

from _workflow import rule_log
from comma.analysis.plots import plot_ratio_curves

with rule_log(snakemake):
    plot_ratio_curves(
        pd.read_csv(snakemake.input[0]),
        [(task, "raw") for task in snakemake.params.tasks],
        [snakemake.output.pdf, snakemake.output.png],
        panels="single",
        title="Attention density ratio R(p) by task (CoMMA, raw data)",
    )
