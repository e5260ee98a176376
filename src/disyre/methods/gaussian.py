"""The Gaussian-noise foil (``gaussian``): the same network trained to undo DDPM-style
Gaussian noising on DISYRE's level table, detected with DISYRE's procedures on noised inputs.
The project's own comparison, not a published recipe (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

from disyre.config import CorruptionConfig
from disyre.corruption.base import Corruption
from disyre.corruption.gaussian import GaussianNoise
from disyre.methods.base import Method, register
from disyre.methods.dag import DISYRE_V1, ENSEMBLE_INFERENCE


def gaussian_noise(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                   bank_size: int = 512) -> Corruption:
    """DDPM-style Gaussian noising (:class:`~disyre.corruption.gaussian.GaussianNoise`)."""
    return GaussianNoise()


GAUSSIAN = register(Method(
    name="gaussian",
    title="Gaussian-noise baseline",
    publication="in-house foil (DDPM-style Gaussian noise on the level table), not published",
    sources=(DISYRE_V1, "docs/methods.md"),
    make_corruption=gaussian_noise,
    restorations=("ensemble", "multistep"),
    inference=ENSEMBLE_INFERENCE,
    inference_input=True,
))
