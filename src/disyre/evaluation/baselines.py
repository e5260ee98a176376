"""The non-learned reference: voxel-wise deviation from the healthy training population.

The volumes of a cohort registered to a common template (MNI152 for the usual public data
sets), after the same intensity preprocessing, share one voxel grid. Per voxel, the healthy
training volumes give a mean ``mu`` and a standard deviation ``sigma``; a test volume's map is

    z = |x - mu| / max(sigma, min_std),    map = z / (z + k)   inside the brain mask, 0 outside

a score in ``[0, 1)`` that grows monotonically with the voxel's absolute z-score (``k``
standard deviations, default 3, score 0.5). Being monotone and not clipped, it ranks voxels
exactly as the z-score does (no ties from saturation), so AP and AUROC are those of the
z-score. ``min_std`` keeps voxels where the population barely varies (the background, the
border of the template) from dominating.

Volumes are full-grid, axial-first ``(D, H, W)`` arrays (not the per-subject foreground crop:
use ``disyre.data.intensity.uncrop`` on a preprocessed crop).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = fit_reference(0.5 + 0.01 * rng.standard_normal((20, 4, 8, 8)))
    >>> x = np.full((4, 8, 8), 0.5); x[1, 2, 2] = 0.9
    >>> m = ref.predict(x)
    >>> bool(m[1, 2, 2] == m.max() > 0.8)
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disyre.io_utils import atomic_path


@dataclass
class ReferenceModel:
    """Per-voxel healthy mean and standard deviation.

    Attributes:
        mean: ``(D, H, W)`` float32.
        std: ``(D, H, W)`` float32.
        n_volumes: Healthy volumes fitted on.
        k: Standard deviations that map to a score of 0.5.
        min_std: Floor of ``std``.
    """

    mean: np.ndarray
    std: np.ndarray
    n_volumes: int
    k: float = 3.0
    min_std: float = 0.02

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid of the model."""
        return tuple(self.mean.shape)

    def predict(self, volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Anomaly map in ``[0, 1]`` of one ``(D, H, W)`` volume.

        Args:
            volume: NormalizedVolume volume on the model's grid.
            mask: Brain mask; ``None`` = non-zero voxels of ``volume``.

        Returns:
            float32 ``(D, H, W)`` map, 0 outside the mask.
        """
        volume = np.asarray(volume, np.float32)
        if volume.shape != self.shape:
            raise ValueError(f"volume shape {volume.shape} differs from the reference grid "
                             f"{self.shape}; the reference needs volumes on one common grid")
        m = volume != 0 if mask is None else np.asarray(mask) != 0
        if m.shape != self.shape:
            raise ValueError(f"mask shape {m.shape} differs from the volume shape {self.shape}")
        z = np.abs(volume - self.mean) / np.maximum(self.std, self.min_std)
        out = (z / (z + self.k)).astype(np.float32)
        out[~m] = 0.0
        return out

    def save(self, path: str | Path) -> Path:
        """Write the model as ``.npz`` atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: reference model files end in .npz")
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, mean=self.mean, std=self.std,
                                n_volumes=np.int64(self.n_volumes), k=np.float64(self.k),
                                min_std=np.float64(self.min_std))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceModel:
        """Read a model written by :meth:`save` (the error names the file if it is not one)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference model not found")
        try:
            with np.load(path) as z:
                return cls(mean=z["mean"].astype(np.float32), std=z["std"].astype(np.float32),
                           n_volumes=int(z["n_volumes"]), k=float(z["k"]),
                           min_std=float(z["min_std"]))
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{path}: not a reference model file ({e})") from e


def fit_reference(volumes: Iterable[np.ndarray], k: float = 3.0,
                  min_std: float = 0.02) -> ReferenceModel:
    """Fit per-voxel mean and std on healthy volumes (streamed, float64 accumulators).

    Args:
        volumes: Healthy ``(D, H, W)`` volumes on one grid (an iterable: each is read once).
        k: Standard deviations that map to a score of 0.5.
        min_std: Floor of the standard deviation.

    Returns:
        The fitted :class:`ReferenceModel`.
    """
    n = 0
    mean = m2 = None
    for i, v in enumerate(volumes):
        v = np.asarray(v, np.float64)
        if mean is None:
            mean = np.zeros_like(v)
            m2 = np.zeros_like(v)
        elif v.shape != mean.shape:
            raise ValueError(f"healthy volume {i} has shape {v.shape}, the first one "
                             f"{mean.shape}: the reference needs volumes on one common grid")
        n += 1
        d = v - mean  # Welford's update
        mean += d / n
        m2 += d * (v - mean)
    if n < 2:
        raise ValueError(f"the reference needs at least 2 healthy volumes, got {n}")
    std = np.sqrt(m2 / (n - 1))
    return ReferenceModel(mean=mean.astype(np.float32), std=std.astype(np.float32),
                          n_volumes=n, k=float(k), min_std=float(min_std))
