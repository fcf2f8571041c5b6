"""Models: one file per model family (the AR teachers `teacher` on their base `teacher_base`,
CoMMA `comma`, the NAR students `nat`, `nar_asr` and `fastspeech` on their base `nar_base`),
built from the blocks and pre-nets of `comma.nn`; the `registry` (family -> config class,
build, saved format, load) and the checks every family's config shares (`config_checks`).
Every model trains with `comma.engine.trainer.train` by implementing
``loss(batch) -> (loss, logs)``."""
