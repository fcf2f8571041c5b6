"""Models: shared Transformer blocks (`transformer`), task pre-nets (`prenets`), and one file
per model family built on them (AR teachers, NAR students, CoMMA). Every model trains with
`comma.engine.trainer.train` by implementing ``loss(batch) -> (loss, logs)``."""
