"""Build a corruption from its config: :func:`make_corruption` (``dag``, ``fpi``, ``bias``,
``gaussian``, ``dae``, ``anoddpm``, ``pddpm``).

Example:
    >>> from disyre.config import CorruptionConfig
    >>> make_corruption(CorruptionConfig(name="gaussian")).name
    'gaussian'
"""

from __future__ import annotations

from collections.abc import Sequence

from disyre.config import VARIANTS, CorruptionConfig
from disyre.corruption.base import Corruption
from disyre.corruption.coarse_noise import CoarseNoise
from disyre.corruption.dag import SyntheticAnomaly
from disyre.corruption.diffusion import PatchedDiffusion, SimplexDiffusion
from disyre.corruption.gaussian import GaussianNoise

__all__ = ["make_corruption"]


def make_corruption(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                    bank_size: int = 512) -> Corruption:
    """Build the corruption named by ``cfg.name``.

    Args:
        cfg: Corruption config (``name`` in :data:`VARIANTS`, ``window``, ``codebook``,
            ``shapes``, ``bias_selection``).
        codebook: Fitted intensity codebook (from :func:`~disyre.corruption.bias.fit_codebook`);
            it overrides ``cfg.codebook``. With neither, the authors' codebook is used.
        bank_size: Foreign-patch bank of the texture variants; 0 makes the corruption
            stateless (textures from the other images of each batch), so that a batch depends
            on its generator only.

    Returns:
        A :class:`~disyre.corruption.base.Corruption`. Pre-corruption augmentation
        (``cfg.augment``) is not part of it: call :func:`disyre.corruption.augment.augment`
        on the clean patches first.
    """
    if cfg.name not in VARIANTS:
        raise ValueError(f"unknown corruption {cfg.name!r}; choose from {list(VARIANTS)}")
    if cfg.name == "gaussian":
        return GaussianNoise()
    if cfg.name == "dae":
        return CoarseNoise()
    if cfg.name == "anoddpm":
        return SimplexDiffusion()
    if cfg.name == "pddpm":
        return PatchedDiffusion(box=cfg.window)
    cb = codebook if codebook is not None else cfg.codebook
    return SyntheticAnomaly(cfg.name, window=cfg.window, codebook=cb, bank_size=bank_size,
                            shapes=cfg.shapes, bias_selection=cfg.bias_selection)
