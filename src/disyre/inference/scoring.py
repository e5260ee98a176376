"""The volume score of a map: the mean of its most abnormal 1 cm^3 (numpy only).

Detection reports it (``DetectionResult.score``) and the evaluation uses the same rule
(``score_1cm3`` in ``cases.csv``), so both import it from here.

Example:
    >>> import numpy as np
    >>> volume_score(np.r_[np.zeros(5000), np.full(1000, 0.5)])
    0.5
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SCORE_VOLUME_MM3", "VOLUME_SCORE", "top_volume_mean", "volume_score"]

#: the volume score of ``disyre detect`` and ``cases.csv`` (see :func:`top_volume_mean`)
VOLUME_SCORE = "top_1cm3"
#: tissue volume (mm^3) averaged by :data:`VOLUME_SCORE`
SCORE_VOLUME_MM3 = 1000.0


def top_volume_mean(values: np.ndarray, voxel_mm3: float = 1.0,
                    volume_mm3: float = SCORE_VOLUME_MM3) -> float:
    """Mean of the highest values that together make up ``volume_mm3`` of tissue.

    Voxels are counted by volume: ``k = volume_mm3 / voxel_mm3`` voxels (1,000 at 1 mm,
    125 at 2 mm), the last one with its fractional weight, so the score means the same for any
    voxel size. With fewer voxels than that, the mean of all of them.

    Example:
        >>> top_volume_mean(np.r_[np.zeros(990), np.ones(10)], voxel_mm3=8.0, volume_mm3=100)
        0.8
    """
    if not (math.isfinite(voxel_mm3) and voxel_mm3 > 0):
        raise ValueError(f"voxel volume must be positive, got {voxel_mm3}")
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return float("nan")
    k = volume_mm3 / voxel_mm3
    if v.size <= k:
        return float(v.mean())
    n = int(math.floor(k))
    frac = k - n
    top = np.sort(np.partition(v, v.size - n - 1)[v.size - n - 1:])  # n + 1 largest, sorted
    return float((top[1:].sum() + frac * top[0]) / k)


def volume_score(amap: np.ndarray, top_k: int | None = None, *, voxel_mm3: float = 1.0
                 ) -> float:
    """A volume's score: the mean of its highest values making up 1 cm^3 of ``voxel_mm3``
    voxels (:func:`top_volume_mean`), or of its ``top_k`` highest values when ``top_k`` is
    given. In [0, 1] for maps in [0, 1]."""
    flat = np.asarray(amap, np.float32).ravel()
    if flat.size == 0:
        return 0.0
    if top_k is None:
        return float(np.clip(top_volume_mean(flat, voxel_mm3, SCORE_VOLUME_MM3), 0, 1))
    k = min(top_k, flat.size)
    return float(np.clip(np.partition(flat, flat.size - k)[flat.size - k:].mean(), 0, 1))
