"""Synthetic corruption of clean patches: schedule, shapes, texture, intensity bias, DAG.

Public entry points: :func:`make_corruption` (``dag``, ``fpi``, ``bias``, ``gaussian`` and the
baselines ``dae``, ``anoddpm``, ``pddpm``),
:func:`augment` / :func:`augment_pair` (pre-corruption augmentation, with the brain mask),
:func:`fit_codebook` (intensity codebook of the bias anomaly), and the level table in
:mod:`disyre.corruption.schedule`.
"""

from disyre.corruption.augment import AugmentRecipe, augment, augment_pair
from disyre.corruption.base import VARIANTS, Corruption, CorruptionResult
from disyre.corruption.bias import AUTHORS_CODEBOOK, fit_codebook
from disyre.corruption.factory import make_corruption

__all__ = [
    "AUTHORS_CODEBOOK",
    "AugmentRecipe",
    "VARIANTS",
    "Corruption",
    "CorruptionResult",
    "augment",
    "augment_pair",
    "fit_codebook",
    "make_corruption",
]
