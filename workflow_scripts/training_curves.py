"""rule training_curves: training loss against step for every trained model."""

from _workflow import rule_log
from comma.analysis.curves import Curve, plot_training_curves

with rule_log(snakemake):
    plot_training_curves(
        [Curve(**run) for run in snakemake.params.runs],
        snakemake.output[0],
        title="Training loss (light: per step; dark: running mean over 25 steps)",
    )
