"""Intensity normalisation and foreground cropping of ``(D, H, W)`` volumes (METHOD.md).

Steps, in order: negatives clipped to 0; brain mask = non-zero voxels unless a mask is given
(voxels outside a given mask are set to 0); intensities scaled so that the ``lower`` and
``upper`` percentiles of the *foreground* voxels (0 and 98 by default) map to 0 and 1; clipped
to [0, 1]; background set to exactly 0; cropped to the foreground bounding box (plus
``crop_margin`` voxels). :func:`uncrop` is the exact inverse of the crop, so maps computed on
the cropped array go back onto the full grid (and from there to the file with
:func:`disyre.data.nifti.save_like`).

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

import warnings
from dataclasses import dataclass

import numpy as np

from disyre.config import IntensityConfig

__all__ = ["NormalizedVolume", "normalize", "uncrop", "foreground_bbox"]

BBox = tuple[slice, slice, slice]


@dataclass
class NormalizedVolume:
    """A normalised, foreground-cropped volume.

    Attributes:
        image: ``(d, h, w)`` float32 in [0, 1], exactly 0 outside ``mask``.
        mask: ``(d, h, w)`` bool brain mask.
        bbox: Three slices locating the crop in the full ``(D, H, W)`` array.
        full_shape: Shape of the full array.
        low: Intensity mapped to 0 (the lower percentile of the foreground).
        high: Intensity mapped to 1 (the upper percentile of the foreground).
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


def normalize(
    data_dhw: np.ndarray,
    mask: np.ndarray | None = None,
    cfg: IntensityConfig | None = None,
) -> NormalizedVolume:
    """Normalise intensities and crop to the foreground.

    Args:
        data_dhw: ``(D, H, W)`` volume (any real dtype; NaN/Inf must already be handled).
        mask: Optional ``(D, H, W)`` brain mask; default = voxels > 0 after clipping negatives.
        cfg: Percentiles and crop margin; defaults to :class:`IntensityConfig`.

    Returns:
        The :class:`NormalizedVolume` volume.

    Raises:
        ValueError: Wrong shapes, or no foreground voxel.
    """
    cfg = cfg or IntensityConfig()
    if data_dhw.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {data_dhw.shape}")
    if not 0 <= cfg.lower_percentile < cfg.upper_percentile <= 100:
        raise ValueError(
            "percentiles must satisfy 0 <= lower < upper <= 100, got "
            f"{cfg.lower_percentile} and {cfg.upper_percentile}"
        )
    x = np.maximum(np.asarray(data_dhw, dtype=np.float32), np.float32(0))
    if mask is None:
        mask = x > 0
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != x.shape:
            raise ValueError(f"mask shape {mask.shape} differs from volume shape {x.shape}")
    bbox = foreground_bbox(mask, int(cfg.crop_margin))
    x = x[bbox].copy()
    m = mask[bbox].copy()
    fg = x[m]
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
