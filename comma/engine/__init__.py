"""Training and inference machinery: the one trainer (`trainer`), torchrun launch (`launch`),
batched decoding of the AR teachers (`decode`). Imports models, never stages."""
