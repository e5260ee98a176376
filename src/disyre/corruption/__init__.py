"""Synthetic corruption of clean patches: schedule, shapes, texture, intensity bias, DAG.

The building blocks of the methods' training corruptions (each method picks and configures
its own: :mod:`disyre.methods`, :func:`disyre.methods.make_corruption`). Public entry points:
:func:`augment` / :func:`augment_pair` (pre-corruption augmentation, with the brain mask),
:func:`fit_codebook` (intensity codebook of the bias anomaly), and the level table in
:mod:`disyre.corruption.schedule`.
"""

from disyre.corruption.augment import AugmentRecipe, augment, augment_pair
from disyre.corruption.base import Corruption, CorruptionResult
from disyre.corruption.bias import AUTHORS_CODEBOOK, fit_codebook

__all__ = [
    "AUTHORS_CODEBOOK",
    "AugmentRecipe",
    "Corruption",
    "CorruptionResult",
    "augment",
    "augment_pair",
    "fit_codebook",
]
