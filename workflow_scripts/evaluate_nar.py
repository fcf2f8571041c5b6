"""rules evaluate_nar and evaluate_nar_tts: score one NAR model on the test set."""

from pathlib import Path

from _workflow import rule_log
from comma.stages.nar import evaluate_nar

with rule_log(snakemake):
    samples = snakemake.output.get("samples")
    evaluate_nar(
        snakemake.wildcards.task,
        snakemake.input.model,
        Path(snakemake.input.test).parent,
        snakemake.output.metrics,
        snakemake.output.hypotheses,
        batch_sentences=int(snakemake.params.batch_sentences),
        evaluation=snakemake.params.get("evaluation"),
        features=snakemake.params.get("features"),
        samples_dir=samples,
        seed=int(snakemake.params.seed),
        threads=snakemake.threads,
        **snakemake.params.get("decoding", {}),
    )
