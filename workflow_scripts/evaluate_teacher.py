"""rules evaluate_teacher and evaluate_teacher_tts: decode a teacher's test set and score it."""

from pathlib import Path

from _workflow import rule_log
from comma.stages.teacher import evaluate_teacher

params, output = snakemake.params, snakemake.output
# Only the TTS rule has these (mel distances and Griffin-Lim samples)
evaluation = getattr(params, "evaluation", None)
features = getattr(params, "features", None)
with rule_log(snakemake):
    evaluate_teacher(
        params.task,
        snakemake.input.model,
        Path(snakemake.input.test).parent,
        output.metrics,
        output.hypotheses,
        decoding=dict(params.decoding),
        evaluation=None if evaluation is None else dict(evaluation),
        features=None if features is None else dict(features),
        samples_dir=getattr(output, "samples", None),
        seed=int(params.seed),
        threads=snakemake.threads,
    )
