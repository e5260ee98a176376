"""Detection: restore a scan with the trained network and turn the residual into an anomaly map.

Three layers, from the maths to the user:

1. **Restoration of a batch of images** ``(B, 1, H, W)`` (METHOD.md, "Inference"):
   :func:`restore_ensemble` (v2, the default: the residuals ``|x - P(x, k)|`` averaged over
   fixed levels ``k``, all levels of a batch going through the network as *one* batch) and
   :func:`restore_multistep` (v1: cold-diffusion restoration from the most severe level down).
   :func:`restore` picks one from an :class:`~disyre.config.InferenceConfig`.
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
   to a :class:`DetectionResult` whose ``anomaly_map`` lies on the input's own grid (same
   array shape, orientation and affine).

All maps are float32 in [0, 1]; background is exactly 0.

Example:
    >>> import torch
    >>> from disyre.config import InferenceConfig, ModelConfig
    >>> from disyre.model import build_model
    >>> net = build_model(ModelConfig.from_preset("tiny")).eval()
    >>> x = torch.rand(2, 1, 32, 32)
    >>> amap, restored = restore(net, x, InferenceConfig(levels=[0, 40]))
    >>> amap.shape, bool(amap.min() >= 0)
    (torch.Size([2, 1, 32, 32]), True)
"""

from disyre.inference.detector import (
    SCORE_VOLUME_MM3,
    DetectionError,
    DetectionResult,
    Detector,
    load_checkpoint,
    sanity_warnings,
    save_overlay_png,
    volume_score,
    with_inference_overrides,
)
from disyre.inference.restoration import (
    InferenceInput,
    restore,
    restore_ensemble,
    restore_multistep,
)
from disyre.inference.windows import (
    SIGMA_SCALE,
    WEIGHTING_WINDOW,
    anomaly_map_slices,
    count_work,
    fitted_window,
    predict_slices,
    predict_volume,
    window_starts,
)

__all__ = [
    "SCORE_VOLUME_MM3", "SIGMA_SCALE", "WEIGHTING_WINDOW", "DetectionError", "DetectionResult",
    "Detector",
    "InferenceInput", "anomaly_map_slices", "count_work", "fitted_window", "load_checkpoint",
    "predict_slices", "predict_volume", "restore", "restore_ensemble", "restore_multistep",
    "sanity_warnings", "save_overlay_png", "volume_score", "window_starts",
    "with_inference_overrides",
]

# folder in, folder out (``disyre detect``) and the thresholds file
from disyre.inference.files import (  # noqa: E402
    DetectSummary,
    OutputWriteError,
    detect_files,
)
from disyre.inference.thresholds import (  # noqa: E402
    ThresholdError,
    ThresholdMismatchError,
    Thresholds,
    bind_thresholds,
    check_binding,
    load_thresholds,
    save_thresholds,
    thresholds_path,
)

__all__ += [
    "DetectSummary", "OutputWriteError", "ThresholdError", "ThresholdMismatchError",
    "Thresholds", "bind_thresholds", "check_binding", "detect_files", "load_thresholds",
    "save_thresholds", "thresholds_path",
]
