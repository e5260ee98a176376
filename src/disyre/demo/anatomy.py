"""Real brain anatomy for the demo: the MNI152 2009 templates shipped inside nilearn's wheel.

Everything here works offline: nilearn bundles the T1 template, its grey- and white-matter
probability maps and a brain mask at 1 mm and 2 mm. Arrays are in the templates' own layout
``(X, Y, Z)`` with an RAS affine (the layout a NIfTI file stores); the rest of disyre reads
the files this package writes like any user's data. The lateral ventricles are found in the
CSF map (CSF = brain - GM - WM) by position, so that the cohort can resize them.

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
        ventricles: Lateral ventricles: the CSF map inside the ventricles' segmentation
            (dilated by one voxel to keep their partial-volume rim), 0 elsewhere.
        affine: 4x4 voxel-to-world (mm) matrix.
        voxel_mm: Isotropic voxel size in mm.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    affine: np.ndarray
    voxel_mm: float


def lateral_ventricles(csf: np.ndarray, affine: np.ndarray,
                       within: np.ndarray | None = None) -> np.ndarray:
    """Binary mask of the lateral ventricles in an MNI152-space CSF map.

    The largest connected component of ``csf > 0.5`` (inside ``within`` if given) whose
    centre lies where the lateral ventricles are in MNI space (|x| < 25 mm, -45 < y < 25 mm,
    -5 < z < 35 mm) and that is not mostly the interhemispheric fissure (under 30 % of it
    within one voxel of x = 0).

    Raises:
        ValueError: No such component (not an MNI152-space map).
    """
    from scipy import ndimage

    fluid = csf > 0.5
    if within is not None:
        fluid &= within
    lab, n = ndimage.label(fluid)
    if n == 0:
        raise ValueError("no CSF in the map: cannot find the lateral ventricles")
    vox = float(abs(affine[0, 0]))
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(csf.shape), lab, idx)
    centres = np.asarray(ndimage.center_of_mass(np.ones(csf.shape), lab, idx))
    centres_mm = centres @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    x_mm = (np.arange(csf.shape[0]) * affine[0, 0] + affine[0, 3])[:, None, None]
    midline = ndimage.sum_labels(np.broadcast_to(np.abs(x_mm) <= vox, csf.shape), lab, idx)
    best, best_size = 0, 0.0
    for i, (size, (x, y, z), mid) in enumerate(zip(sizes, centres_mm, midline, strict=True)):
        if (abs(x) < 25 and -45 < y < 25 and -5 < z < 35 and mid < 0.3 * size
                and size > best_size):
            best, best_size = i + 1, size
    if not best:
        raise ValueError("no CSF component where the lateral ventricles should be")
    return lab == best


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
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    from scipy import ndimage

    within = None
    if resolution == 1:
        # at 1 mm the ventricles touch the third ventricle and the cisterns: segment at 2 mm
        coarse = ndimage.binary_dilation(load_templates(2).ventricles > 0)
        ix = [np.clip(np.round(np.arange(n) / 2).astype(int), 0, m - 1)
              for n, m in zip(csf.shape, coarse.shape, strict=True)]
        within = coarse[np.ix_(*ix)]
    seg = lateral_ventricles(csf, affine, within)
    vent = (csf * ndimage.binary_dilation(seg)).astype(np.float32)
    for a in (t1, gm, wm, csf, brain, vent):
        a.setflags(write=False)
    return Templates(t1=t1, gm=gm, wm=wm, csf=csf, brain=brain, ventricles=vent, affine=affine,
                     voxel_mm=float(abs(affine[0, 0])))
