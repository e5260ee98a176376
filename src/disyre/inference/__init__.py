"""Detection: restore a scan with the trained network and turn the residual into an anomaly map.

Three layers, from the maths to the user:

1. **Restoration of a batch of images** ``(B, 1, H, W)`` (docs/method.md#inference):
   :func:`restore` runs the procedure that ``inference.method`` names, registered by its
   method (:mod:`disyre.methods`): DISYRE's ``ensemble`` (v2, the default: the residuals
   ``|x - P(x, k)|`` averaged over fixed levels ``k``, all levels of a batch going through
   the network as *one* batch) and ``multistep`` (v1: cold-diffusion restoration from the
   most severe level down), both in :mod:`disyre.methods.dag`; the baselines' ``walk`` and
   ``patched``.
2. **Whole slices and volumes**: :func:`predict_volume` runs every axial slice that holds
   brain through overlapping windows (``window`` x ``window``, ``stride``) blended with MONAI's
   Gaussian importance map (sigma = 0.125 x window), multiplies each window's map by its
   fraction of foreground pixels (the authors' weighting), zeroes the background and can
   median-filter the result. Windows from many slices are batched together, windows without
   brain are skipped and no window is computed twice; the result equals MONAI's
   ``sliding_window_inference(mode="gaussian", sigma_scale=0.125, overlap=1 - stride/window)``
   on the brain. ``window=0`` runs whole slices through the fully convolutional U-Net instead
   (much cheaper; see docs/detection.md). :func:`anomaly_map_slices` does the same for a
   batch of 2D slices.
3. **The user's API**: :class:`Detector` loads a checkpoint and maps a NIfTI scan (or its path)
   to a :class:`DetectionResult` (:mod:`~disyre.inference.result`) whose ``anomaly_map`` lies
   on the input's own grid (same array shape, orientation and affine); its ``score`` is the
   1 cm^3 rule of :mod:`~disyre.inference.scoring`. A raw head goes through
   :func:`disyre.preprocessing.predict_raw` (the preprocessing stage builds on this one).
4. **Folders and thresholds**: :func:`detect_files` (:mod:`~disyre.inference.files`) is
   ``disyre detect`` as a function: folder in, folder out, thresholds, output collisions,
   ``--continue`` and shards; :mod:`~disyre.inference.thresholds` holds the calibrated
   thresholds and their binding to the inference settings and checkpoint they were fitted on.

The names below are imported on first use, so that :mod:`~disyre.inference.result` and
:mod:`~disyre.inference.scoring` (numpy only) stay light for the stages that read results.

All maps are float32 in [0, 1]; background is exactly 0.

Example:
    >>> import torch
    >>> from disyre.inference import restore
    >>> from disyre.config import InferenceConfig, ModelConfig
    >>> from disyre.model import build_model
    >>> net = build_model(ModelConfig.from_preset("tiny")).eval()
    >>> x = torch.rand(2, 1, 32, 32)
    >>> amap, restored = restore(net, x, InferenceConfig(levels=[0, 40]))
    >>> amap.shape, bool(amap.min() >= 0)
    (torch.Size([2, 1, 32, 32]), True)
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("DetectionError", "Detector", "load_checkpoint", "sanity_warnings",
                     "save_overlay_png", "with_inference_overrides"), "detector"),
    "DetectionResult": "result",
    **dict.fromkeys(("SCORE_VOLUME_MM3", "VOLUME_SCORE", "top_volume_mean", "volume_score"),
                    "scoring"),
    **dict.fromkeys(("InferenceInput", "restore"), "restoration"),
    **dict.fromkeys(("DetectSummary", "OutputWriteError", "detect_files"), "files"),
    **dict.fromkeys(("ThresholdError", "ThresholdMismatchError", "Thresholds", "bind_thresholds",
                     "check_binding", "load_thresholds", "save_thresholds", "thresholds_path"),
                    "thresholds"),
    **dict.fromkeys(("SIGMA_SCALE", "WEIGHTING_WINDOW", "anomaly_map_slices", "count_work",
                     "fitted_window", "predict_slices", "predict_volume", "window_starts"),
                    "windows"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
