"""Scans at another voxel size than the training data's: resampled to it, the map back.

A network trained on 2 mm slices sees structures twice as large in a 1 mm scan, and its map
changes with it. As nnU-Net does, :class:`~disyre.inference.Detector` resamples such a scan
to the training spacing (trilinear for the image, nearest neighbour for a brain mask), maps
it there and interpolates the map back onto the scan's own grid (trilinear). Grids are
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

__all__ = ["RESAMPLE_TOLERANCE", "needs_resampling", "resampled_shape", "zoom_to_shape"]

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
        order: 1 (trilinear: images, maps) or 0 (nearest neighbour: masks).

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
