"""data stage: NIfTI I/O, validation, preprocessing, manifests, cache, batch sampler."""
