"""rule tts_intelligibility: the ASR teacher's WER on the TTS teacher's test utterances."""

from pathlib import Path

from _workflow import rule_log
from comma.stages.intelligibility import evaluate_intelligibility

params, inputs = snakemake.params, snakemake.input
with rule_log(snakemake):
    evaluate_intelligibility(
        inputs.generated,
        Path(inputs.test).parent,
        inputs.ljspeech,
        inputs.asr_model,
        Path(inputs.asr_stats).parent,
        snakemake.output.metrics,
        features=dict(params.features),
        decoding=dict(params.decoding),
        griffin_lim_iters=int(params.griffin_lim_iters),
        seed=int(params.seed),
        threads=snakemake.threads,
    )
