"""Scans at another voxel size than the training data's: resampled to it, the map back.

A network trained on 2 mm slices sees structures twice as large in a 1 mm scan, and its map
changes with it. As nnU-Net does, :class:`~disyre.inference.Detector` resamples such a scan
to the training spacing (cubic splines for the image; the brain mask resampled as the share of
each new voxel inside it, the image zero outside it), maps it there and interpolates the map
back onto the scan's own grid (trilinear). Grids are
aligned by their outer edges (``scipy.ndimage.zoom(..., grid_mode=True)``): the resampled
volume covers the scan's field of view.

Example:
    >>> import numpy as np
    >>> needs_resampling((1.0, 1.0, 1.0), [2.0, 2.0, 2.0])
    True
    >>> resampled_shape((12, 80, 80), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    (6, 40, 40)
    >>> zoom_to_shape(np.ones((6, 40, 40), np.float32), (12, 80, 80)).shape
    (12, 80, 80)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RESAMPLE_TOLERANCE", "image_and_brain_to_shape", "needs_resampling",
           "resampled_shape", "zoom_to_shape"]

#: A scan is resampled when a voxel side differs from the training data's by more than this
#: fraction (a 2.1 mm scan for a 2 mm model is mapped as it is).
RESAMPLE_TOLERANCE: float = 0.05


def needs_resampling(spacing: Sequence[float], target: Sequence[float] | None) -> bool:
    """Whether a scan of voxel size ``spacing`` (mm along D, H, W) differs from ``target``
    (the training spacing; ``None``: unknown, never resampled) by more than the tolerance."""
    if target is None:
        return False
    sp, tg = np.asarray(spacing, float), np.asarray(target, float)
    return bool(np.any(np.abs(sp / tg - 1) > RESAMPLE_TOLERANCE))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target: Sequence[float]) -> tuple[int, int, int]:
    """Shape of a ``shape`` volume of voxel size ``spacing`` resampled to ``target``: the same
    field of view, at least one voxel per axis."""
    out = np.asarray(shape, float) * np.asarray(spacing, float) / np.asarray(target, float)
    return tuple(max(1, int(round(v))) for v in out)  # type: ignore[return-value]


def zoom_to_shape(arr: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample ``arr`` to exactly ``shape`` over the same field of view.

    Args:
        arr: A ``(D, H, W)`` volume.
        shape: The output shape.
        order: 3 (cubic splines: images), 1 (trilinear: maps, shares of masks) or 0
            (nearest neighbour: labels).

    Returns:
        The resampled volume, of ``arr``'s dtype (bool stays bool).
    """
    from scipy import ndimage

    if tuple(arr.shape) == tuple(shape):
        return arr.copy()
    factors = np.asarray(shape, float) / np.asarray(arr.shape, float)
    src = arr.astype(np.float32) if arr.dtype == bool else arr
    out = ndimage.zoom(src, factors, order=order, grid_mode=True, mode="nearest")
    if tuple(out.shape) != tuple(shape):  # zoom rounds the shape; never off by more than one
        out = out[tuple(slice(0, s) for s in shape)]
        out = np.pad(out, [(0, s - o) for s, o in zip(shape, out.shape, strict=True)],
                     mode="edge")
    return out > 0.5 if arr.dtype == bool else out.astype(arr.dtype, copy=False)


def image_and_brain_to_shape(image: np.ndarray, brain: np.ndarray, shape: Sequence[int]
                             ) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped ``image`` and its ``brain`` mask resampled to ``shape``.

    The image is resampled with cubic splines (nnU-Net's order for images: a trilinear round
    trip 2 mm -> 1 mm -> 2 mm blurs the demo's brains to an error of 0.45 of their intensity
    spread, cubic to 0.18), clipped to its range. The brain there is the voxels more than
    half inside ``brain`` (its trilinear resampling above 1/2) and the image is zero outside
    it. Interpolating the image alone would spread the brain's edge over a rim of dim
    background voxels, which the default brain mask (the non-zero voxels) would then count
    as brain.

    Example:
        >>> brain = np.zeros((8, 8, 8), bool); brain[2:6, 2:6, 2:6] = True
        >>> img, b = image_and_brain_to_shape(brain * 1.0, brain, (4, 4, 4))
        >>> int(b.sum()), float(img[~b].max())
        (8, 0.0)
    """
    inside = zoom_to_shape(np.asarray(brain, np.float32), shape, order=1) > 0.5
    # splines overshoot at edges: kept within the image's range (a new maximum would move
    # intensity scalings that use it)
    out = np.clip(zoom_to_shape(image, shape, order=3), np.min(image), np.max(image))
    return np.where(inside, out, 0).astype(out.dtype, copy=False), inside
