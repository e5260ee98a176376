"""Raw scans -> template space and back: N4, skull stripping, registration, inverse mapping.

The stage before everything else (``disyre preprocess``): a raw head scan in native space is
bias-corrected (antspyx N4), skull-stripped (deepbet), registered to a skull-stripped template
(antspyx: rigid, affine or SyN) and resampled onto the template's grid; the transforms are
kept so that an anomaly map computed on the template grid goes back onto the raw scan's own
grid (:func:`predict_raw`, ``disyre detect --preprocess``).

Modules: :mod:`~disyre.preprocessing.recipe` (the recipe a checkpoint records; no heavy
imports), :mod:`~disyre.preprocessing.template`, :mod:`~disyre.preprocessing.steps` (the
antspyx/deepbet wrappers), :mod:`~disyre.preprocessing.pipeline` (one scan),
:mod:`~disyre.preprocessing.batch` (many scans, in parallel, resumable),
:mod:`~disyre.preprocessing.qc` (the QC figure), :mod:`~disyre.preprocessing.inverse`
(the way back).

antspyx and deepbet come with ``pip install 'disyre[preprocess]'``.

Example:
    >>> from disyre.preprocessing import PreprocessConfig, jobs_from_input, preprocess_many
    >>> cfg = PreprocessConfig(template="mni152", spacing=1.0, registration="affine")
    >>> # preprocess_many(jobs_from_input("raw/"), "prep/", cfg, workers=2)
"""

from __future__ import annotations

from disyre.preprocessing.batch import (
    Job,
    Summary,
    jobs_from_input,
    jobs_from_rows,
    preprocess_many,
)
from disyre.preprocessing.inverse import predict_raw
from disyre.preprocessing.recipe import (
    RECIPE_FILE,
    PreprocessConfig,
    PreprocessError,
    find_recipe,
    read_recipe,
)

__all__ = ["PreprocessConfig", "PreprocessError", "RECIPE_FILE", "find_recipe", "read_recipe",
           "Job", "Summary", "jobs_from_input", "jobs_from_rows", "preprocess_many",
           "predict_raw"]

