"""Training and inference machinery: the one trainer (`trainer`) with its settings
(`train_config`) and learning-rate schedule (`schedule`), the device, process group and
precision (`device`), RNG states, checkpoints and run fingerprints (`checkpoint`), torchrun
launch (`launch`), batched decoding of the AR teachers (`decode`). Imports models, never
stages."""
