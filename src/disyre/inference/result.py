"""What detection returns for one scan: :class:`DetectionResult` (numpy only at import time).

Example:
    >>> import numpy as np
    >>> z = np.zeros((2, 3, 3), np.float32)
    >>> r = DetectionResult(anomaly_map=z, restored=z, score=0.0, map_cropped=z,
    ...                     restored_cropped=z, image_cropped=z, mask_cropped=z > 0,
    ...                     scan=None, pre=None)
    >>> r.warnings
    []
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DetectionResult"]


@dataclass
class DetectionResult:
    """What :meth:`disyre.inference.Detector.predict` returns for one scan.

    Attributes:
        anomaly_map: float32 map in [0, 1] on the input file's own voxel grid (same shape,
            orientation and affine as the file; write it with
            ``disyre.data.nifti.save_like(result.map_dhw_full, result.scan, path)`` or
            :meth:`save_map`).
        restored: The restored image, float32 in [0, 1] (intensity-normalised), native grid.
        score: Volume-level anomaly score in [0, 1]: the mean of the highest map values of
            the brain that together make up 1 cm^3 (voxels counted by volume: 1,000 at 1 mm,
            125 at 2 mm; the whole brain if smaller), i.e. the typical residual in the most
            abnormal 1 cm^3 of brain; the same number as ``score_1cm3`` in the evaluation's
            ``cases.csv``. Higher = more likely to hold an anomaly.
        map_cropped: The map on the cropped axial-first grid ``(d, h, w)``.
        restored_cropped: The restoration on the same grid.
        image_cropped: The normalised input on the same grid.
        mask_cropped: The brain mask on the same grid.
        scan: The loaded :class:`~disyre.data.nifti.Scan`.
        pre: The :class:`~disyre.data.intensity.NormalizedVolume` volume (holds the crop box).
        warnings: Sanity-check messages (contrast, orientation) raised for this scan.
        postprocessing: The :class:`~disyre.inference.postprocess.PostProcessing` the map
            went through; its step after thresholding applies to :meth:`save_mask`
            (``None``: none).
    """

    anomaly_map: np.ndarray
    restored: np.ndarray
    score: float
    map_cropped: np.ndarray
    restored_cropped: np.ndarray
    image_cropped: np.ndarray
    mask_cropped: np.ndarray
    scan: Any
    pre: Any
    warnings: list[str] = field(default_factory=list)
    postprocessing: Any = None

    def full(self, arr_cropped: np.ndarray) -> np.ndarray:
        """Put a cropped ``(d, h, w)`` array back on the scan's full axial-first grid."""
        from disyre.data.intensity import uncrop

        return uncrop(arr_cropped, self.pre)

    def save_map(self, path: str | Path) -> None:
        """Write the anomaly map as a float32 NIfTI on the input's grid (atomic)."""
        from disyre.data.nifti import save_like

        save_like(self.full(self.map_cropped), self.scan, path, dtype=np.float32)

    def save_restored(self, path: str | Path) -> None:
        """Write the restored image as a float32 NIfTI on the input's grid (atomic)."""
        from disyre.data.nifti import save_like

        save_like(self.full(self.restored_cropped), self.scan, path, dtype=np.float32)

    def save_mask(self, path: str | Path, threshold: float) -> None:
        """Write ``map > threshold`` (brain only) as a uint8 NIfTI on the input's grid.

        The rule ``score > threshold`` is the one of :mod:`disyre.evaluation.thresholds`;
        then the step of :attr:`postprocessing` after thresholding (the removal of small
        connected components, where the method's published recipe has it).
        """
        from disyre.data.nifti import save_like

        m = (self.map_cropped > threshold) & self.mask_cropped
        if self.postprocessing is not None:  # its step after thresholding (small components)
            m = self.postprocessing.apply_binary(m)
        save_like(self.full(m.astype(np.uint8)), self.scan, path, dtype=np.uint8)
