"""Intensity normalisation and foreground cropping of ``(D, H, W)`` volumes (docs/method.md#data).

Steps, in order: negatives clipped to 0; brain mask = non-zero voxels unless a mask is given
(voxels outside a given mask are set to 0); intensities scaled (below); clipped to [0, 1];
background set to exactly 0; cropped to the foreground bounding box (plus ``crop_margin``
voxels). :func:`uncrop` is the exact inverse of the crop, so maps computed on the cropped array
go back onto the full grid (and from there to the file with
:func:`disyre.data.nifti.save_like`).

Two scalings (``IntensityConfig.scaling``):

- ``whole_volume`` (default, the authors'): divide by the 98th percentile of the *whole
  volume, background included*, with no lower percentile subtracted. So that the scaling does
  not depend on how much background a file holds (on whether it was cropped), the whole volume
  is a fixed *reference grid*: ``reference_volume_ml`` (8,928 ml = 240 x 240 x 155 mm, the
  SRI24 / BraTS grid at 1 mm) counted in voxels of the scan's size. The percentile is that of
  the brain voxels' values plus ``N_ref - n_brain`` zeros, ``N_ref = reference volume / voxel
  volume``: with linear interpolation between order statistics (numpy's default), exactly
  what the authors get on a 240 x 240 x 155 volume at 1 mm. Equivalently it is the brain
  voxels' percentile ``100 - (100 - 98) * N_ref / n_brain`` (about the 88th for a 1.5 l
  brain), so about 12 % of the brain saturates at 1. A brain smaller than 2 % of the
  reference grid (a partial scan, a toy volume) would get a percentile of 0: it is divided
  by its maximum instead (with a logged warning).
- ``brain``: the ``lower_percentile`` and ``upper_percentile`` of the brain voxels (0 and
  98) map to 0 and 1 (the darkest brain voxel becomes exactly 0).

Example:
    >>> import numpy as np
    >>> vol = np.zeros((6, 8, 8), np.float32); vol[1:5, 2:6, 3:7] = np.arange(64).reshape(4, 4, 4)
    >>> pre = normalize(vol)
    >>> pre.image.shape, float(pre.image.max()), pre.full_shape
    ((4, 4, 4), 1.0, (6, 8, 8))
    >>> uncrop(pre.mask, pre).shape
    (6, 8, 8)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from disyre.config import SCALINGS, IntensityConfig

__all__ = ["NormalizedVolume", "normalize", "uncrop", "foreground_bbox", "SCALINGS",
           "whole_volume_percentile", "reference_voxels", "brain_mask"]

log = logging.getLogger(__name__)


BBox = tuple[slice, slice, slice]


@dataclass
class NormalizedVolume:
    """A normalised, foreground-cropped volume.

    Attributes:
        image: ``(d, h, w)`` float32 in [0, 1], exactly 0 outside ``mask``.
        mask: ``(d, h, w)`` bool brain mask.
        bbox: Three slices locating the crop in the full ``(D, H, W)`` array.
        full_shape: Shape of the full array.
        low: Intensity mapped to 0 (0 for ``whole_volume`` scaling, the lower percentile of
            the brain for ``brain``).
        high: Intensity mapped to 1.
    """

    image: np.ndarray
    mask: np.ndarray
    bbox: BBox
    full_shape: tuple[int, int, int]
    low: float
    high: float


def foreground_bbox(mask: np.ndarray, margin: int = 0) -> BBox:
    """Bounding box of the ``True`` voxels of a 3D mask, grown by ``margin`` (clipped).

    Raises:
        ValueError: The mask is empty.
    """
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            raise ValueError("empty foreground: no brain voxels to crop to")
        lo = max(int(idx[0]) - margin, 0)
        hi = min(int(idx[-1]) + 1 + margin, mask.shape[ax])
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def brain_mask(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The brain of a scan: the given mask, or else its voxels > 0 (negatives count as
    background). The one definition used by :func:`normalize`, detection and evaluation."""
    if mask is not None:
        return np.asarray(mask, dtype=bool)
    return np.asarray(data) > 0


def reference_voxels(cfg: IntensityConfig, spacing: Sequence[float] | None) -> int:
    """Voxels of the ``whole_volume`` reference grid for a scan of voxel size ``spacing`` (mm).

    Example:
        >>> [reference_voxels(IntensityConfig(), (s, s, s)) for s in (1.0, 2.0)]
        [8928000, 1116000]
    """
    voxel_mm3 = 1.0 if spacing is None else float(np.prod(np.asarray(spacing, np.float64)))
    if not math.isfinite(voxel_mm3) or voxel_mm3 <= 0:
        raise ValueError(f"invalid voxel size {spacing}")
    return max(1, round(cfg.reference_volume_ml * 1000.0 / voxel_mm3))


def whole_volume_percentile(brain_values: np.ndarray, n_total: int, q: float) -> float:
    """``q``-th percentile of ``brain_values`` padded with zeros to ``n_total`` values.

    The same number as ``np.percentile(np.concatenate([zeros(n_total - n), brain_values]), q)``
    (linear interpolation) for non-negative values, without building the padded array.

    Example:
        >>> v = np.arange(1.0, 11.0)
        >>> bool(whole_volume_percentile(v, 50, 90) == np.percentile(np.r_[np.zeros(40), v], 90))
        True
    """
    v = np.asarray(brain_values, np.float64).ravel()
    n = v.size
    N = max(int(n_total), n)
    if n == 0:
        return 0.0
    h = (N - 1) * q / 100.0
    lo = int(math.floor(h))
    hi = min(lo + 1, N - 1)
    frac = h - lo
    pad = N - n
    kth = sorted({max(i - pad, 0) for i in (lo, hi)})
    part = np.partition(v, kth)

    def at(i: int) -> float:
        return 0.0 if i < pad else float(part[i - pad])

    return at(lo) + frac * (at(hi) - at(lo))


def normalize(
    data_dhw: np.ndarray,
    mask: np.ndarray | None = None,
    cfg: IntensityConfig | None = None,
    spacing: Sequence[float] | None = None,
) -> NormalizedVolume:
    """Normalise intensities and crop to the foreground.

    Args:
        data_dhw: ``(D, H, W)`` volume (any real dtype; NaN/Inf must already be handled).
        mask: Optional ``(D, H, W)`` brain mask; default = voxels > 0 after clipping negatives.
        cfg: Scaling, percentiles and crop margin; defaults to :class:`IntensityConfig`.
        spacing: Voxel size in mm (``Scan.spacing``); it sizes the reference grid of
            ``whole_volume`` scaling. ``None``: 1 mm isotropic.

    Returns:
        The :class:`NormalizedVolume` volume.

    Raises:
        ValueError: Wrong shapes, an unknown scaling, or no foreground voxel.
    """
    cfg = cfg or IntensityConfig()
    if data_dhw.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {data_dhw.shape}")
    if cfg.scaling not in SCALINGS:
        raise ValueError(f"intensity.scaling must be one of {list(SCALINGS)}, got "
                         f"{cfg.scaling!r}")
    if not 0 <= cfg.lower_percentile < cfg.upper_percentile <= 100:
        raise ValueError(
            "percentiles must satisfy 0 <= lower < upper <= 100, got "
            f"{cfg.lower_percentile} and {cfg.upper_percentile}"
        )
    x = np.maximum(np.asarray(data_dhw, dtype=np.float32), np.float32(0))
    mask = brain_mask(x, mask)
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {x.shape}")
    bbox = foreground_bbox(mask, int(cfg.crop_margin))
    x = x[bbox].copy()
    m = mask[bbox].copy()
    fg = x[m]
    if cfg.scaling == "whole_volume":
        low = 0.0
        n_ref = reference_voxels(cfg, spacing)
        high = whole_volume_percentile(fg, n_ref, cfg.upper_percentile)
        if high <= 0:
            log.warning("the brain fills %.2f %% of the %.0f ml reference grid: scaled by its "
                        "maximum instead of the whole-volume percentile %g",
                        100.0 * fg.size / n_ref, cfg.reference_volume_ml,
                        cfg.upper_percentile)
            high = float(fg.max())
        if high <= 0:
            warnings.warn("no positive intensity in the brain: brain set to 0", stacklevel=2)
            high = 1.0
    else:
        low, high = (float(v) for v in np.percentile(fg, [cfg.lower_percentile,
                                                            cfg.upper_percentile]))
        if high - low <= 1e-12 * max(abs(high), 1.0):
            high = float(fg.max())
            if high - low <= 1e-12 * max(abs(high), 1.0):
                warnings.warn("constant foreground intensity: brain set to 1", stacklevel=2)
                low, high = high - 1.0, high
    x -= np.float32(low)
    x *= np.float32(1.0 / (high - low))
    np.clip(x, 0.0, 1.0, out=x)
    x[~m] = 0.0
    return NormalizedVolume(image=x, mask=m, bbox=bbox,
                            full_shape=tuple(int(s) for s in mask.shape), low=low, high=high)


def uncrop(arr: np.ndarray, pre: NormalizedVolume, fill: float = 0) -> np.ndarray:
    """Put a cropped ``(d, h, w)`` array back onto the full ``(D, H, W)`` grid.

    Args:
        arr: Array with the crop's shape (``pre.image.shape``).
        pre: The preprocessing result that defined the crop (or anything with ``bbox`` and
            ``full_shape``).
        fill: Value outside the crop.

    Returns:
        Array of shape ``pre.full_shape`` and ``arr``'s dtype.
    """
    crop_shape = tuple(s.stop - s.start for s in pre.bbox)
    if tuple(arr.shape) != crop_shape:
        raise ValueError(f"array of shape {arr.shape} does not match the crop {crop_shape}")
    out = np.full(pre.full_shape, fill, dtype=arr.dtype)
    out[tuple(pre.bbox)] = arr
    return out


#: Deciles used to compare a scan's foreground intensities with the training data's.
SIGNATURE_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


def intensity_signature(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """Quantiles (:data:`SIGNATURE_QUANTILES`) of a normalised volume's brain intensities.

    Training records the mean signature of its volumes in the checkpoint's ``config.json``
    (``"data": {"intensity_quantiles": [...]}``); :class:`Detector` compares each scan with it.
    """
    fg = np.asarray(image)[np.asarray(mask, bool)]
    if fg.size == 0:
        return [0.0] * len(SIGNATURE_QUANTILES)
    return [float(v) for v in np.quantile(fg, SIGNATURE_QUANTILES)]
