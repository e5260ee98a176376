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

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from disyre.config import ConfigError, InferenceConfig, RunConfig
from disyre.corruption.schedule import multistep_levels, severity_of
from disyre.runtime import autocast, resolve_device

log = logging.getLogger(__name__)

#: Window side used for the foreground weighting in whole-slice mode (``window=0``).
WEIGHTING_WINDOW: int = 128
#: Gaussian sigma of the window blending, as a fraction of the window side.
SIGMA_SCALE: float = 0.125
#: Number of highest map values averaged into a volume's score (see :class:`DetectionResult`).
SCORE_TOP_K: int = 1000


class InferenceInput(Protocol):
    """What restoration needs from a corruption: the network input at a given level."""

    def inference_input(
        self, x: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------
# 1. Restoration of a batch of images
# --------------------------------------------------------------------------------------------


def _net_input(
    x: torch.Tensor,
    level: torch.Tensor,
    corruption: InferenceInput | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if corruption is None:
        return x
    return corruption.inference_input(x, level, generator)


def _forward(
    model: nn.Module, x: torch.Tensor, level: torch.Tensor, precision: str, channels_last: bool
) -> torch.Tensor:
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        out = model(x, level)
    return out.float().contiguous()


def restore_ensemble(
    model: nn.Module,
    x: torch.Tensor,
    levels: Sequence[int],
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    batch_levels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensembled single-step restoration (DISYRE v2).

    The map is ``mean_k |x - P(x_k, k)|`` where ``x_k`` is the network input at level ``k``
    (``x`` itself for synthetic-anomaly corruptions; noised ``x`` for the Gaussian baseline).

    Args:
        model: Network with ``forward(x (B,1,H,W), level (B,) long) -> x0_hat``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        levels: Corruption levels of the ensemble (see :mod:`disyre.corruption.schedule`).
        corruption: Gives the network input at a level; ``None`` = identity.
        generator: Randomness for noising corruptions.
        precision: ``fp32`` | ``bf16`` | ``auto`` (autocast of the forward pass).
        channels_last: Feed the network channels-last tensors.
        batch_levels: Send the ``B x n`` (image, level) pairs through the network as one
            batch (default); ``False`` loops over the levels (same result, for testing).

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32; the map lies in [0, 1]
        for images in [0, 1] and ``restored`` is the mean prediction over the levels.
    """
    if len(levels) == 0:
        raise ConfigError("inference.levels must hold at least one level")
    b = x.shape[0]
    n = len(levels)
    lv = torch.as_tensor(list(levels), dtype=torch.long, device=x.device)
    if batch_levels:
        # level-major tiling: rows [i*b:(i+1)*b] are level i
        xs = x.repeat(n, 1, 1, 1)
        ls = lv.repeat_interleave(b)
        pred = _forward(model, _net_input(xs, ls, corruption, generator), ls, precision,
                        channels_last)
        pred = pred.clamp(0, 1).view(n, b, *x.shape[1:])
    else:
        outs = []
        for k in lv:
            ls = k.expand(b)
            outs.append(_forward(model, _net_input(x, ls, corruption, generator), ls,
                                 precision, channels_last).clamp(0, 1))
        pred = torch.stack(outs)
    amap = (x.unsqueeze(0) - pred).abs().mean(0)
    return amap, pred.mean(0)


def restore_multistep(
    model: nn.Module,
    x: torch.Tensor,
    steps: int,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step cold-diffusion restoration (DISYRE v1).

    Starting from ``x_T = x`` at the most severe level of
    :func:`~disyre.corruption.schedule.multistep_levels`, each step predicts
    ``x0_hat = P(x_t, t)`` and moves to the next milder level with
    ``x_prev = x0_hat + (a_prev / a_t) (x_t - x0_hat)`` (``a`` = severity, ``a_prev = 0`` after
    the last level), clipped to [0, 1]. The map is the mean of ``|x_t - x0_hat|`` over the steps.

    Args:
        model: Network with ``forward(x, level)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        steps: Number of levels walked.
        corruption: Gives the network input at the first level (noising for ``gaussian``).
        generator: Randomness for noising corruptions.
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32; ``restored`` is the last
        ``x0_hat``.
    """
    levels = multistep_levels(steps)
    b = x.shape[0]
    first = torch.full((b,), levels[0], dtype=torch.long, device=x.device)
    xt = _net_input(x, first, corruption, generator)
    amap = torch.zeros_like(x)
    x0 = x
    for i, t in enumerate(levels):
        lt = torch.full((b,), t, dtype=torch.long, device=x.device)
        x0 = _forward(model, xt, lt, precision, channels_last).clamp(0, 1)
        amap += (xt - x0).abs()
        a_t = float(severity_of(t))
        a_prev = float(severity_of(levels[i + 1])) if i + 1 < len(levels) else 0.0
        xt = (x0 + (a_prev / a_t) * (xt - x0)).clamp(0, 1)
    return (amap / len(levels)).clamp(0, 1), x0


def restore(
    model: nn.Module,
    x: torch.Tensor,
    cfg: InferenceConfig,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restore a batch with the method of ``cfg`` (``ensemble`` = v2, ``multistep`` = v1).

    Args:
        model: Network with ``forward(x, level)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        cfg: ``method``, ``levels``, ``steps`` and ``precision`` are read.
        corruption: Gives the network input at a level; ``None`` = identity.
        generator: Randomness for noising corruptions.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32.
    """
    if cfg.method == "ensemble":
        return restore_ensemble(model, x, cfg.levels, corruption, generator, cfg.precision,
                                channels_last)
    if cfg.method == "multistep":
        return restore_multistep(model, x, cfg.steps, corruption, generator, cfg.precision,
                                 channels_last)
    raise ConfigError(f"inference.method must be 'ensemble' or 'multistep', got {cfg.method!r}")


# --------------------------------------------------------------------------------------------
# 2. Whole slices and volumes
# --------------------------------------------------------------------------------------------


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows along one axis, as MONAI's sliding-window inference places them.

    Windows step by ``stride``; the last one is moved back to end at ``size``. ``size`` must be
    at least ``window``.

    Example:
        >>> window_starts(162, 128, 32)
        [0, 32, 34]
    """
    if size < window:
        raise ValueError(f"axis of size {size} is smaller than the window {window}")
    if size == window:
        return [0]
    n = math.ceil((size - window) / stride) + 1
    return sorted({min(i * stride, size - window) for i in range(n)})


def _centre_pad(size: int, target: int) -> tuple[int, int]:
    diff = max(target - size, 0)
    return diff // 2, diff - diff // 2


def _validate_cfg(cfg: InferenceConfig) -> None:
    if cfg.window < 0 or (cfg.window > 0 and not 0 < cfg.stride <= cfg.window):
        raise ConfigError(
            f"inference.window={cfg.window}, inference.stride={cfg.stride}: need window = 0 "
            "(whole slices) or 0 < stride <= window"
        )
    if cfg.batch_size < 1:
        raise ConfigError(f"inference.batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.median_filter < 0:
        raise ConfigError(f"inference.median_filter must be >= 0, got {cfg.median_filter}")


def _size_multiple(model: nn.Module) -> int:
    m = getattr(model, "min_size", None)
    if isinstance(m, int) and m > 0:
        return m
    return 32


def _gaussian_importance(window: int, device: torch.device) -> torch.Tensor:
    from monai.data.utils import compute_importance_map

    return compute_importance_map(
        (window, window), mode="gaussian", sigma_scale=SIGMA_SCALE, device=device
    ).float()


def _foreground_field(
    mask: torch.Tensor, window: int, stride: int, importance: torch.Tensor
) -> torch.Tensor:
    """Gaussian blend of the windows' foreground fractions, ``(N, H, W)`` for ``mask (N,H,W)``."""
    n, h, w = mask.shape
    num = torch.zeros((n, h, w), device=mask.device)
    den = torch.zeros((h, w), device=mask.device)
    for y in window_starts(h, window, stride):
        for x in window_starts(w, window, stride):
            frac = mask[:, y:y + window, x:x + window].float().mean((1, 2))
            num[:, y:y + window, x:x + window] += importance * frac[:, None, None]
            den[y:y + window, x:x + window] += importance
    return num / den


def _inputs_per_pass(cfg: InferenceConfig) -> int:
    """Windows (or slices) per network pass: ``batch_size`` counts network inputs, and the
    v2 ensemble sends every window once per level in the same pass."""
    n = len(cfg.levels) if cfg.method == "ensemble" else 1
    return max(1, cfg.batch_size // max(n, 1))


def _windowed(
    model: nn.Module,
    vol: torch.Tensor,
    msk: torch.Tensor,
    cfg: InferenceConfig,
    corruption: InferenceInput | None,
    generator: torch.Generator | None,
    channels_last: bool,
    progress: Callable[[int], None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sliding-window maps of padded slices ``vol (N, H, W)`` (all ``>= window``)."""
    n, h, w = vol.shape
    win, stride = cfg.window, cfg.stride
    imp = _gaussian_importance(win, vol.device)
    ys, xs = window_starts(h, win, stride), window_starts(w, win, stride)
    den = torch.zeros((h, w), device=vol.device)
    for y in ys:
        for x in xs:
            den[y:y + win, x:x + win] += imp
    # foreground fraction of every window of every slice; skip those without brain
    jobs: list[tuple[int, int, int, float]] = []
    fr = torch.stack([torch.stack([msk[:, y:y + win, x:x + win].float().mean((1, 2))
                                   for x in xs]) for y in ys])  # (ny, nx, N)
    fr_cpu = fr.cpu().numpy()
    for k in range(n):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                f = float(fr_cpu[iy, ix, k])
                if f > 0:
                    jobs.append((k, y, x, f if cfg.foreground_weighting else 1.0))
    num = torch.zeros((n, h, w), device=vol.device)
    rnum = torch.zeros((n, h, w), device=vol.device)
    per = _inputs_per_pass(cfg)
    for s in range(0, len(jobs), per):
        chunk = jobs[s:s + per]
        batch = torch.stack([vol[k, y:y + win, x:x + win] for k, y, x, _ in chunk]).unsqueeze(1)
        amap, rest = restore(model, batch, cfg, corruption, generator, channels_last)
        for (k, y, x, f), a, r in zip(chunk, amap[:, 0], rest[:, 0], strict=True):
            num[k, y:y + win, x:x + win] += imp * (f * a)
            rnum[k, y:y + win, x:x + win] += imp * r
        if progress is not None:
            progress(len(chunk))
    return num / den, rnum / den


def _whole_slices(
    model: nn.Module,
    vol: torch.Tensor,
    msk: torch.Tensor,
    cfg: InferenceConfig,
    corruption: InferenceInput | None,
    generator: torch.Generator | None,
    channels_last: bool,
    progress: Callable[[int], None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-slice maps of padded slices ``vol (N, H, W)`` (multiples of the network's size)."""
    amaps, rests = [], []
    per = _inputs_per_pass(cfg)
    for s in range(0, vol.shape[0], per):
        a, r = restore(model, vol[s:s + per].unsqueeze(1), cfg, corruption,
                       generator, channels_last)
        amaps.append(a[:, 0])
        rests.append(r[:, 0])
        if progress is not None:
            progress(a.shape[0])
    amap = torch.cat(amaps)
    if cfg.foreground_weighting:
        # the authors' per-window weighting, applied as its Gaussian-blended field
        win = min(WEIGHTING_WINDOW, *vol.shape[1:])
        stride = min(cfg.stride, win) if cfg.stride > 0 else win // 4
        amap = amap * _foreground_field(msk, win, stride, _gaussian_importance(win, vol.device))
    return amap, torch.cat(rests)


def count_work(mask_dhw: np.ndarray, cfg: InferenceConfig, size_multiple: int = 32) -> int:
    """Number of network inputs (windows, or whole slices when ``window=0``) of a volume.

    Args:
        mask_dhw: Brain mask ``(D, H, W)``.
        cfg: Windowing settings.
        size_multiple: Unused for windows; kept for symmetry with whole-slice mode.

    Returns:
        Windows with brain (or slices with brain) that :func:`predict_volume` will compute.
    """
    mask = np.asarray(mask_dhw, bool)
    keep = mask.reshape(mask.shape[0], -1).any(1)
    if cfg.window == 0:
        return int(keep.sum())
    sub = mask[keep]
    if sub.size == 0:
        return 0
    h, w = sub.shape[1:]
    ph, pw = _centre_pad(h, cfg.window), _centre_pad(w, cfg.window)
    sub = np.pad(sub, ((0, 0), ph, pw))
    win = cfg.window
    total = 0
    for y in window_starts(sub.shape[1], win, cfg.stride):
        for x in window_starts(sub.shape[2], win, cfg.stride):
            total += int(sub[:, y:y + win, x:x + win].any((1, 2)).sum())
    return total


def _tensor(a: np.ndarray | torch.Tensor, dtype: torch.dtype, device: torch.device
            ) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), device=device).to(dtype)


def predict_slices(
    model: nn.Module,
    image_dhw: np.ndarray | torch.Tensor,
    mask_dhw: np.ndarray | torch.Tensor | None,
    cfg: InferenceConfig,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly map and restoration of every axial slice of a volume (no median filter).

    Args:
        model: Network with ``forward(x, level)`` (put in eval mode by the caller).
        image_dhw: Volume ``(D, H, W)`` in [0, 1], axial-first.
        mask_dhw: Brain mask ``(D, H, W)``; ``None`` = non-zero voxels.
        cfg: Inference settings.
        corruption: Gives the network input at a level; ``None`` = identity.
        generator: Randomness for noising corruptions.
        device: Where to compute; default = the model's device.
        channels_last: Feed the network channels-last tensors.
        progress: Called with the number of windows (or slices) done after each batch.

    Returns:
        ``(anomaly_map, restored)``, float32 ``(D, H, W)`` numpy arrays; background is 0 and
        slices without brain are all 0.
    """
    _validate_cfg(cfg)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = resolve_device(device)
    img = _tensor(image_dhw, torch.float32, device)
    if img.dim() != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {tuple(img.shape)}")
    msk = (img != 0) if mask_dhw is None else _tensor(mask_dhw, torch.bool, device)
    if msk.shape != img.shape:
        raise ValueError(f"mask shape {tuple(msk.shape)} differs from image {tuple(img.shape)}")
    d, h, w = img.shape
    amap = torch.zeros((d, h, w), device=device)
    rest = torch.zeros((d, h, w), device=device)
    keep = torch.nonzero(msk.reshape(d, -1).any(1)).flatten()
    if len(keep) == 0:
        return amap.cpu().numpy(), rest.cpu().numpy()
    vol = img[keep] * msk[keep]
    sub = msk[keep]
    if cfg.window > 0:
        th, tw = max(h, cfg.window), max(w, cfg.window)
    else:
        m = _size_multiple(model)
        th, tw = math.ceil(h / m) * m, math.ceil(w / m) * m
    (py0, py1), (px0, px1) = _centre_pad(h, th), _centre_pad(w, tw)
    vol = nn.functional.pad(vol, (px0, px1, py0, py1))
    sub = nn.functional.pad(sub, (px0, px1, py0, py1))
    fn = _windowed if cfg.window > 0 else _whole_slices
    with torch.inference_mode():
        a, r = fn(model, vol, sub, cfg, corruption, generator, channels_last, progress)
    a = a[:, py0:py0 + h, px0:px0 + w]
    r = r[:, py0:py0 + h, px0:px0 + w]
    fg = msk[keep]
    amap[keep] = torch.where(fg, a.clamp(0, 1), 0.0)
    rest[keep] = torch.where(fg, r.clamp(0, 1), 0.0)
    return amap.cpu().numpy(), rest.cpu().numpy()


def predict_volume(
    model: nn.Module,
    image_dhw: np.ndarray | torch.Tensor,
    mask_dhw: np.ndarray | torch.Tensor | None,
    cfg: InferenceConfig,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
    return_restored: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Anomaly map of a whole volume: :func:`predict_slices` plus the optional median filter.

    Args:
        model: Network with ``forward(x, level)``.
        image_dhw: Volume ``(D, H, W)`` in [0, 1], axial-first.
        mask_dhw: Brain mask; ``None`` = non-zero voxels.
        cfg: Inference settings (``median_filter`` > 0 applies a 3D median filter of that
            size to the map, then re-zeroes the background).
        corruption: Gives the network input at a level; ``None`` = identity.
        generator: Randomness for noising corruptions.
        device: Where to compute; default = the model's device.
        channels_last: Feed the network channels-last tensors.
        progress: Called with the number of windows (or slices) done after each batch.
        return_restored: Also return the restored volume.

    Returns:
        The float32 ``(D, H, W)`` map in [0, 1] (and the restored volume if asked).
    """
    amap, rest = predict_slices(model, image_dhw, mask_dhw, cfg, corruption, generator, device,
                                channels_last, progress)
    if cfg.median_filter > 0:
        from scipy.ndimage import median_filter

        cpu = torch.device("cpu")
        fg = (_tensor(image_dhw, torch.float32, cpu) != 0 if mask_dhw is None
              else _tensor(mask_dhw, torch.bool, cpu)).numpy()
        amap = np.where(fg, median_filter(amap, size=cfg.median_filter), 0).astype(np.float32)
    return (amap, rest) if return_restored else amap


def anomaly_map_slices(
    model: nn.Module,
    x: torch.Tensor,
    cfg: InferenceConfig,
    corruption: InferenceInput | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Anomaly maps of a batch of whole 2D slices ``(B, 1, H, W)`` (sliding windows or whole).

    Args:
        model: Network with ``forward(x, level)``.
        x: Slices ``(B, 1, H, W)`` in [0, 1].
        cfg: Inference settings (the median filter is not applied).
        corruption: Gives the network input at a level; ``None`` = identity.
        mask: Brain mask ``(B, 1, H, W)``; ``None`` = non-zero pixels.
        generator: Randomness for noising corruptions.
        channels_last: Feed the network channels-last tensors.

    Returns:
        Maps ``(B, 1, H, W)`` float32 in [0, 1] on ``x``'s device.
    """
    m = None if mask is None else mask[:, 0]
    amap, _ = predict_slices(model, x[:, 0], m, cfg, corruption, generator, x.device,
                             channels_last)
    return torch.from_numpy(amap).unsqueeze(1).to(x.device)


# --------------------------------------------------------------------------------------------
# 3. The user's API
# --------------------------------------------------------------------------------------------


@dataclass
class DetectionResult:
    """What :meth:`Detector.predict` returns for one scan.

    Attributes:
        anomaly_map: float32 map in [0, 1] on the input file's own voxel grid (same shape,
            orientation and affine as the file; write it with
            ``disyre.data.nifti.save_like(result.map_dhw_full, result.scan, path)`` or
            :meth:`save_map`).
        restored: The restored image, float32 in [0, 1] (intensity-normalised), native grid.
        score: Volume-level anomaly score in [0, 1]: the mean of the ``SCORE_TOP_K`` (1000)
            highest map values (all of them for smaller brains), i.e. the typical residual in
            the most abnormal ~1 cm^3 of brain. Higher = more likely to hold an anomaly.
        map_cropped: The map on the cropped axial-first grid ``(d, h, w)``.
        restored_cropped: The restoration on the same grid.
        image_cropped: The normalised input on the same grid.
        mask_cropped: The brain mask on the same grid.
        scan: The loaded :class:`~disyre.data.nifti.Scan`.
        pre: The :class:`~disyre.data.preprocess.Preprocessed` volume (holds the crop box).
        warnings: Sanity-check messages (contrast, orientation) raised for this scan.
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

    def full(self, arr_cropped: np.ndarray) -> np.ndarray:
        """Put a cropped ``(d, h, w)`` array back on the scan's full axial-first grid."""
        from disyre.data.preprocess import uncrop

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

        The rule ``score > threshold`` is the one of :mod:`disyre.evaluation.thresholds`.
        """
        from disyre.data.nifti import save_like

        m = (self.map_cropped > threshold) & self.mask_cropped
        save_like(self.full(m.astype(np.uint8)), self.scan, path, dtype=np.uint8)


def volume_score(amap: np.ndarray, top_k: int = SCORE_TOP_K) -> float:
    """Mean of the ``top_k`` highest values of a map (in [0, 1] for maps in [0, 1])."""
    flat = np.asarray(amap, np.float32).ravel()
    if flat.size == 0:
        return 0.0
    k = min(top_k, flat.size)
    return float(np.clip(np.partition(flat, flat.size - k)[flat.size - k:].mean(), 0, 1))


#: Deciles used to compare a scan's foreground intensities with the training data's.
SIGNATURE_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Largest tolerated difference between a scan's and the training data's intensity deciles.
SIGNATURE_TOLERANCE: float = 0.15


def intensity_signature(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """Quantiles (:data:`SIGNATURE_QUANTILES`) of a normalised volume's brain intensities.

    Training records the mean signature of its volumes in the checkpoint's ``config.json``
    (``"data": {"intensity_quantiles": [...]}``); :class:`Detector` compares each scan with it.
    """
    fg = np.asarray(image)[np.asarray(mask, bool)]
    if fg.size == 0:
        return [0.0] * len(SIGNATURE_QUANTILES)
    return [float(v) for v in np.quantile(fg, SIGNATURE_QUANTILES)]


def sanity_warnings(scan: Any, image: np.ndarray, mask: np.ndarray,
                    reference: dict[str, Any]) -> list[str]:
    """Warnings that a scan looks unlike the model's training data (header and intensities).

    Checks: (1) voxel size very anisotropic (slices > 3x thicker than in-plane) or an
    oblique affine (> 20 degrees from the nearest axis-aligned orientation): the axial
    slices are then not what the model saw; (2) when ``reference`` holds
    ``intensity_quantiles`` (training data), a decile of the scan's normalised brain
    intensities differs by more than :data:`SIGNATURE_TOLERANCE` — typically another
    contrast (T1 vs T2) or a badly skull-stripped scan; (3) ``reference["spacing"]``
    differing by more than 50 %.

    Args:
        scan: The loaded scan (``affine``, ``spacing``, ``path``).
        image: Its normalised cropped volume.
        mask: Its brain mask.
        reference: Training-data description from the checkpoint (may be empty).

    Returns:
        Messages, each starting with the scan's path.
    """
    out: list[str] = []
    name = str(getattr(scan, "path", "scan"))
    aff = np.asarray(scan.affine, float)[:3, :3]
    norms = np.sqrt((aff ** 2).sum(0))
    if norms.min() > 0 and norms.max() / norms.min() > 3:
        out.append(f"{name}: voxel size {tuple(np.round(norms, 2))} mm is very anisotropic; "
                   "the model was trained on near-isotropic axial slices")
    if norms.min() > 0:
        cosines = np.abs(aff / norms).max(0)
        angle = float(np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))))
        if angle > 20:
            out.append(f"{name}: oblique orientation ({angle:.0f} degrees from the nearest "
                       "axis); axial slices are only approximately axial")
    ref_spacing = reference.get("spacing")
    if ref_spacing is not None:
        sp = np.asarray(getattr(scan, "spacing", norms), float)
        rs = np.asarray(ref_spacing, float)
        if np.any(np.abs(sp - rs) > 0.5 * rs):
            out.append(f"{name}: voxel size {tuple(np.round(sp, 2))} mm differs from the "
                       f"training data's {tuple(np.round(rs, 2))} mm")
    ref_q = reference.get("intensity_quantiles")
    if ref_q is not None:
        q = np.asarray(intensity_signature(image, mask))
        diff = float(np.abs(q - np.asarray(ref_q, float)).max())
        if diff > SIGNATURE_TOLERANCE:
            contrast = reference.get("contrast") or "the training data"
            out.append(f"{name}: brain intensity distribution differs from {contrast} "
                       f"(decile difference {diff:.2f} > {SIGNATURE_TOLERANCE}); is it the "
                       "same contrast and skull-stripped? the map may be unreliable")
    return out


class Detector:
    """A trained model ready to map scans: ``Detector.from_checkpoint(path).predict(scan)``.

    Args:
        model: Network with ``forward(x, level)``.
        cfg: Run config of the model (its ``inference`` section is used, its ``preprocess``
            section normalises scans, its ``corruption`` gives the network inputs).
        device: Where to compute (``"auto"``: CUDA if available).
        reference: Training-data description for the sanity checks (``contrast``,
            ``intensity_quantiles``, ``spacing``); see :func:`sanity_warnings`.
        channels_last: Feed the network channels-last tensors (default: on CUDA only).
        seed: Seed of the generator for noising corruptions (the Gaussian baseline).

    Example:
        >>> # det = Detector.from_checkpoint("runs/t2", device="auto", levels=[0, 25, 50, 75])
        >>> # res = det.predict("sub-01_T2w.nii.gz")
        >>> # res.save_map("maps/sub-01_T2w.nii.gz"); print(res.score)
    """

    def __init__(self, model: nn.Module, cfg: RunConfig, device: str | torch.device = "auto",
                 reference: dict[str, Any] | None = None, channels_last: bool | None = None,
                 seed: int = 0) -> None:
        self.device = resolve_device(device)
        self.cfg = cfg
        self.channels_last = (self.device.type == "cuda") if channels_last is None \
            else channels_last
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.reference = dict(reference or {})
        self.seed = seed
        self.corruption = _inference_corruption(cfg)

    @property
    def inference(self) -> InferenceConfig:
        """The inference settings in use."""
        return self.cfg.inference

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        **overrides: Any) -> Detector:
        """Load a trained model (a run folder or a checkpoint folder).

        Args:
            path: Run folder (its newest checkpoint) or checkpoint folder.
            device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
            **overrides: Fields of :class:`~disyre.config.InferenceConfig` to change
                (``levels=[0, 25, 50, 75]``, ``method="multistep"``, ``window=0``, ...).

        Returns:
            The detector.

        Raises:
            FileNotFoundError: Nothing at ``path``.
            ValueError: ``path`` is not a disyre checkpoint, or an override is unknown.
        """
        model, cfg, meta = load_checkpoint(path, device)
        cfg = with_inference_overrides(cfg, overrides)
        reference = dict(meta.get("data") or {})
        if "contrast" not in reference:
            reference["contrast"] = meta.get("contrast")
        return cls(model, cfg, device=device, reference=reference)

    def predict(self, scan: Any, mask: Any = None,
                progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> DetectionResult:
        """Anomaly map of one scan, on the scan's own grid.

        Args:
            scan: A :class:`~disyre.data.nifti.Scan` or a NIfTI path.
            mask: Optional brain mask: a NIfTI path on the scan's grid, or a bool ``(D, H, W)``
                axial-first array; default = non-zero voxels.
            progress: Called with the number of windows done after each network pass.
            on_total: Called once, before the network runs, with the number of windows (or
                slices, for ``window=0``) this scan needs (to size a progress bar).

        Returns:
            The :class:`DetectionResult`.

        Raises:
            disyre.data.nifti.InputError: The file is unreadable or invalid.
        """
        from disyre.data.nifti import InputError, Scan, load_mask, load_scan
        from disyre.data.preprocess import preprocess

        if not isinstance(scan, Scan):
            scan = load_scan(scan, nan_policy=self.cfg.preprocess.nan_policy)
        if isinstance(mask, str | Path):
            mask = load_mask(mask, like=scan)
        try:
            pre = preprocess(scan.data, mask, self.cfg.preprocess)
        except ValueError as e:
            raise InputError(f"{scan.path}: {e}") from e
        msgs = sanity_warnings(scan, pre.image, pre.mask, self.reference)
        for m in msgs:
            warnings.warn(m, stacklevel=2)
        if on_total is not None:
            on_total(count_work(pre.mask, self.inference))
        gen = None
        if self.corruption is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.seed)
        amap, rest = predict_volume(self.model, pre.image, pre.mask, self.inference,
                                    self.corruption, gen, self.device, self.channels_last,
                                    progress, return_restored=True)
        res = DetectionResult(
            anomaly_map=np.empty(0, np.float32), restored=np.empty(0, np.float32),
            score=volume_score(amap[pre.mask]), map_cropped=amap, restored_cropped=rest,
            image_cropped=pre.image, mask_cropped=pre.mask, scan=scan, pre=pre, warnings=msgs)
        from disyre.data.nifti import to_native

        res.anomaly_map = to_native(res.full(amap), scan).astype(np.float32)
        res.restored = to_native(res.full(rest), scan).astype(np.float32)
        return res

    def work(self, pre_mask: np.ndarray) -> int:
        """Number of network inputs (windows or slices) :meth:`predict` runs for a brain mask."""
        return count_work(pre_mask, self.inference)


def with_inference_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Copy of ``cfg`` with fields of its ``inference`` section replaced (validated)."""
    from disyre.config import apply_overrides

    if not overrides:
        return cfg
    names = {f.name for f in dataclasses.fields(InferenceConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown inference setting(s) {unknown}; choose from {sorted(names)}")
    import json

    return apply_overrides(cfg, [f"inference.{k}={json.dumps(v)}" for k, v in overrides.items()])


def load_checkpoint(path: str | Path, device: str | torch.device = "auto"
                    ) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """Load a disyre checkpoint: ``(model in eval mode, RunConfig, config.json contents)``.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        ValueError: ``path`` exists but is not a disyre model (message names the path).
    """
    try:
        from disyre.training import load_model, read_checkpoint_meta  # type: ignore[attr-defined]
    except ImportError:
        from disyre.training.checkpoint import load_model, read_checkpoint_meta
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        _, meta = read_checkpoint_meta(p)
        model, cfg = load_model(p, device)
    except FileNotFoundError as e:
        raise ValueError(f"{p}: not a disyre model ({e})") from e
    except (RuntimeError, KeyError, ConfigError, OSError) as e:
        raise ValueError(f"{p}: not a disyre model or a damaged checkpoint ({e})") from e
    if not isinstance(meta, dict) or "run" not in meta:
        raise ValueError(f"{p}: not a disyre model (config.json has no 'run' section)")
    return model, cfg, meta


def _inference_corruption(cfg: RunConfig) -> InferenceInput | None:
    """The corruption whose ``inference_input`` feeds the network; ``None`` = the image itself."""
    if cfg.corruption.name != "gaussian":
        return None  # synthetic anomalies: the network sees the image as it is
    from disyre.corruption import make_corruption  # type: ignore[attr-defined]

    return make_corruption(cfg.corruption)


def save_overlay_png(result: DetectionResult, path: str | Path, threshold: float | None = None,
                     n_slices: int = 3) -> None:
    """PNG of a few axial slices: the scan, the map as a heat overlay, the thresholded contour.

    The slices are those with the highest map values (spread over the volume). Images are
    shown in neurological convention: the patient's left on the left, anterior at the top.

    Args:
        result: A detection result.
        path: Output ``.png`` (written atomically).
        threshold: Contour level; default = half the map's maximum.
        n_slices: Number of axial slices (rows).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from disyre.io_utils import atomic_path

    amap, img = result.map_cropped, result.image_cropped
    d = amap.shape[0]
    per_slice = amap.reshape(d, -1).max(1)
    order = [int(k) for k in np.argsort(-per_slice, kind="stable")]
    chosen: list[int] = []
    for k in order:  # highest slices first, at least d / (2 n) apart
        if all(abs(k - c) >= max(1, d // (2 * n_slices)) for c in chosen):
            chosen.append(k)
        if len(chosen) == n_slices:
            break
    chosen.sort()
    level = threshold if threshold is not None else 0.5 * float(amap.max() or 1.0)
    vmax = max(float(amap.max()), 1e-6)
    fig, axes = plt.subplots(len(chosen), 3, figsize=(9, 3 * len(chosen)), squeeze=False)
    for row, k in zip(axes, chosen, strict=True):
        for ax in row:
            ax.imshow(img[k][::-1], cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        row[0].set_title(f"slice {k}: scan")
        heat = np.ma.masked_where(amap[k] <= 0, amap[k])[::-1]
        im = row[1].imshow(heat, cmap="inferno", alpha=0.7, vmin=0, vmax=vmax)
        row[1].set_title("anomaly map")
        if (amap[k] > level).any() and (amap[k] <= level).any():
            row[2].contour(amap[k][::-1], levels=[level], colors="red", linewidths=1)
        row[2].set_title(f"map > {level:.3g}")
        fig.colorbar(im, ax=row[1], fraction=0.046)
    fig.suptitle(f"{Path(str(result.scan.path)).name}  score {result.score:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
