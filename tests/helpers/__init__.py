"""Shared test helpers: a tiny synthetic cohort and tiny networks that output something.

A freshly built MONAI ``DiffusionModelUNet`` outputs exactly zero (its last convolution, and
the last convolution of every residual block, start at zero), so a test that runs an untrained
network compares the image with itself and cannot fail. Tests that run a network use
:func:`reinit_tiny_net` (every layer re-initialised: the output depends on the image, its
context and the level) or the session's trained checkpoint (``tests/conftest.py``).
"""

from tests.helpers.cohort import phantom, synthetic_cohort, write_nifti, write_nifti_cohort
from tests.helpers.nets import (
    reinit_tiny_net,
    save_tiny_checkpoint,
    tiny_config,
    train_tiny_run,
)

__all__ = ["phantom", "reinit_tiny_net", "save_tiny_checkpoint", "synthetic_cohort",
           "tiny_config", "train_tiny_run", "write_nifti", "write_nifti_cohort"]
