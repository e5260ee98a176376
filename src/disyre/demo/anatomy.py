"""Real brain anatomy for the demo: the MNI152 2009 templates shipped inside nilearn's wheel.

Everything here works offline: nilearn bundles the T1 template, its grey- and white-matter
probability maps and a brain mask at 1 mm and 2 mm. Arrays are in the templates' own layout
``(X, Y, Z)`` with an RAS affine (the layout a NIfTI file stores); the rest of disyre reads
the files this package writes like any user's data.

Example:
    >>> tpl = load_templates(resolution=2)
    >>> tpl.t1.shape, float(tpl.voxel_mm)
    ((99, 117, 95), 2.0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Templates:
    """MNI152 maps on one grid, ``(X, Y, Z)`` float32, with their RAS affine.

    Attributes:
        t1: T1-weighted template in [0, 1], zero outside the brain.
        gm: Grey-matter probability in [0, 1].
        wm: White-matter probability in [0, 1].
        csf: Cerebrospinal fluid, ``brain - gm - wm`` clipped to [0, 1].
        brain: Brain mask (float 0/1).
        affine: 4x4 voxel-to-world (mm) matrix.
        voxel_mm: Isotropic voxel size in mm.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    voxel_mm: float


@functools.lru_cache(maxsize=2)
def load_templates(resolution: int = 2) -> Templates:
    """Load the MNI152 templates bundled with nilearn (no download).

    Args:
        resolution: 1 or 2 (mm).

    Returns:
        The :class:`Templates` on that grid (cached; do not modify the arrays).

    Raises:
        ImportError: nilearn is not installed (``pip install 'disyre[demo]'``).
        ValueError: ``resolution`` is neither 1 nor 2.
    """
    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 (mm), got {resolution!r}")
    try:
        from nilearn import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the demo cohort needs nilearn (its wheel ships the MNI152 templates): "
            "pip install 'disyre[demo]'"
        ) from e

    def arr(img) -> np.ndarray:
        return np.clip(np.asarray(img.dataobj, dtype=np.float32), 0.0, 1.0)

    t1_img = datasets.load_mni152_template(resolution=resolution)
    brain = (arr(datasets.load_mni152_brain_mask(resolution=resolution)) > 0).astype(np.float32)
    gm = arr(datasets.load_mni152_gm_template(resolution=resolution)) * brain
    wm = arr(datasets.load_mni152_wm_template(resolution=resolution)) * brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    t1 = arr(t1_img) * brain
    for a in (t1, gm, wm, csf, brain):
        a.setflags(write=False)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    return Templates(t1=t1, gm=gm, wm=wm, csf=csf, brain=brain, affine=affine,
                     voxel_mm=float(abs(affine[0, 0])))
