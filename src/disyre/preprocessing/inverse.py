"""The way back: detect on the template grid, return the map on the raw scan's own grid.

:func:`predict_raw` runs the recipe a checkpoint recorded (``data.preprocessing`` in its
``config.json``) on a raw scan, maps the brain on the template grid with the detector, and
warps the anomaly map and the restoration back through the inverse transform onto the raw
scan's grid and affine: the MOOD contract (same shape, same affine as the input) holds for raw
input too, and a model trained at 2 mm maps a 1 mm raw head.

Example::

    det = Detector.from_checkpoint("runs/t1")
    res = predict_raw(det, "raw/sub-01_T1w.nii.gz")
    res.save_map("maps/sub-01_T1w.nii.gz")   # on the raw scan's grid
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from disyre.data.nifti import InputError, Scan, to_canonical

__all__ = ["predict_raw", "to_raw_grid", "warp_to_raw", "template_scan"]


def template_scan(pre: Any) -> Scan:
    """The preprocessed brain as a :class:`~disyre.data.nifti.Scan` on the template grid."""
    import nibabel as nib

    tpl = pre.template
    ornt = nib.io_orientation(tpl.affine)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    return Scan(data=np.ascontiguousarray(to_canonical(pre.image, ornt), dtype=np.float32),
                affine=np.asarray(tpl.affine, float), header=hdr, path=pre.scan.path,
                native_shape=tpl.shape, ornt=ornt)


def to_raw_grid(arr: np.ndarray, pre: Any, interpolator: str = "linear") -> np.ndarray:
    """Warp an ``(X, Y, Z)`` array on the template grid onto the raw scan's own grid.

    Args:
        arr: Array on ``pre.template``'s grid (its file layout).
        pre: The :class:`~disyre.preprocessing.pipeline.Preprocessed` scan.
        interpolator: ANTs interpolator (``linear``, ``nearestNeighbor``, ...).

    Returns:
        float32 array in the raw file's own layout (``pre.scan.native_shape``).
    """
    return warp_to_raw(arr, pre.template.affine, pre.scan.native_shape, pre.scan.affine,
                       pre.transform, interpolator)


def warp_to_raw(arr: np.ndarray, template_affine: np.ndarray, raw_shape: tuple[int, ...],
                raw_affine: np.ndarray, transform: Any,
                interpolator: str = "linear") -> np.ndarray:
    """Warp an array on a template grid onto a raw grid through a transform's inverse.

    Args:
        arr: ``(X, Y, Z)`` array on the template grid.
        template_affine: The template grid's RAS affine.
        raw_shape: The raw file's array shape.
        raw_affine: The raw file's RAS affine.
        transform: The raw -> template :class:`~disyre.preprocessing.steps.Transform` (e.g.
            ``Transform.from_dict(record["transform"], base=subject_folder)``).
        interpolator: ANTs interpolator.

    Returns:
        float32 array of ``raw_shape``.
    """
    from disyre.preprocessing import steps

    fixed = steps.to_ants(np.zeros(raw_shape, np.float32), raw_affine)
    moving = steps.to_ants(np.asarray(arr, np.float32), template_affine)
    return steps.apply(fixed, moving, transform, inverse=True,
                       interpolator=interpolator).numpy().astype(np.float32)


def predict_raw(detector: Any, scan: str | Path | Scan,
                progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> Any:
    """Anomaly map of a raw scan (with skull, native space) on that scan's own grid.

    Args:
        detector: A :class:`~disyre.inference.detector.Detector` whose checkpoint records a
            preprocessing recipe.
        scan: The raw NIfTI scan (path or loaded :class:`~disyre.data.nifti.Scan`).
        progress, on_total: As for :meth:`disyre.inference.Detector.predict`.

    Returns:
        A :class:`~disyre.inference.result.DetectionResult` on the raw grid (its ``score``
        is computed on the template grid, like the training data's).

    Raises:
        InputError: No recipe in the checkpoint, a bad scan, or a failed preprocessing check.
    """
    from disyre.data.intensity import NormalizedVolume
    from disyre.inference.result import DetectionResult
    from disyre.preprocessing.pipeline import preprocess_scan
    from disyre.preprocessing.recipe import PreprocessConfig
    from disyre.preprocessing.template import load_template

    path = scan.path if isinstance(scan, Scan) else Path(scan)
    recipe = detector.reference.get("preprocessing")
    if not recipe:
        raise InputError(f"{path}: the model records no preprocessing recipe (it was trained "
                         "on scans not made by `disyre preprocess`); preprocess the scan the "
                         "way its training data were, then detect without --preprocess")
    cfg = PreprocessConfig.from_dict(recipe)
    template = load_template(cfg.template, cfg.spacing, expect_sha1=cfg.template_sha1)
    grid = recipe.get("grid") or {}
    if grid.get("shape") and list(grid["shape"]) != list(template.shape):
        raise InputError(f"{path}: the recipe's grid {grid['shape']} differs from the "
                         f"template's {list(template.shape)} ({cfg.template})")
    contrast = (detector.reference.get("contrast") or "t1").split(",")[0]
    dev = str(getattr(detector, "device", "cpu"))
    with tempfile.TemporaryDirectory(prefix="disyre_pre_") as work:
        pre = preprocess_scan(path, cfg, template, work, contrast=contrast, device=dev)
        tscan = template_scan(pre)
        res = detector.predict(tscan, mask=to_canonical(pre.mask, tscan.ornt),
                               progress=progress, on_total=on_total)
        amap = np.clip(to_raw_grid(res.anomaly_map, pre), 0, 1) * pre.native_mask
        rest = np.clip(to_raw_grid(res.restored, pre), 0, 1) * pre.native_mask
    raw = pre.scan
    inside = pre.corrected[pre.native_mask]
    hi = float(np.percentile(inside, 99.5)) if inside.size else 1.0
    shown = np.clip(pre.corrected / max(hi, 1e-6), 0, 1).astype(np.float32)

    def canon(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(to_canonical(a, raw.ornt))

    mask_c = canon(pre.native_mask)
    full = tuple(slice(0, s) for s in raw.data.shape)
    vol = NormalizedVolume(image=canon(shown), mask=mask_c, bbox=full,  # type: ignore[arg-type]
                           full_shape=tuple(raw.data.shape), low=0.0, high=hi)
    return DetectionResult(
        anomaly_map=amap.astype(np.float32), restored=rest.astype(np.float32), score=res.score,
        map_cropped=canon(amap.astype(np.float32)), restored_cropped=canon(rest),
        image_cropped=vol.image, mask_cropped=mask_c, scan=raw, pre=vol,
        warnings=list(res.warnings) + list(pre.warnings))
