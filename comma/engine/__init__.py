"""Training and inference machinery: the one trainer (`trainer`), the device, process group and
precision (`device`), RNG states, checkpoints and run fingerprints (`checkpoint`), torchrun
launch (`launch`), batched decoding of the AR teachers (`decode`). Imports models, never
stages."""
