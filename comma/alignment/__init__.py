"""Teacher alignments: pure calculators on attention tensors (`calculators`: focus rate,
durations, expected positions, the ASR window) and the per-corpus store (`store`). Extraction,
which runs the teacher, is a stage: `comma.stages.align`."""
