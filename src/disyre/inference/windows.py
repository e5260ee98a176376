"""Whole slices and volumes: overlapping windows blended with a Gaussian weight, foreground
weighting, background zeroing, optional median filter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from disyre.config import ConfigError, InferenceConfig
from disyre.inference.postprocess import PostProcessing, median_filter_map
from disyre.inference.restoration import InferenceInput, restore
from disyre.runtime import resolve_device

log = logging.getLogger(__name__)

#: Window side used for the foreground weighting in whole-slice mode (``window=0``).
WEIGHTING_WINDOW: int = 128

#: Gaussian sigma of the window blending, as a fraction of the window side.
SIGMA_SCALE: float = 0.125

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


def fitted_window(h: int, w: int, window: int, stride: int, size_multiple: int = 32
                  ) -> tuple[int, int]:
    """The ``(window, stride)`` used on slices of ``h x w`` pixels.

    A window that fits the slices is used as configured. A larger one shrinks to the largest
    multiple of the network's ``size_multiple`` that fits the smaller side (at least one
    multiple), and the stride shrinks by the same factor (same overlap).

    Why adapt rather than pad the slice or refuse: slices are cropped to the brain, so those
    of a 2 mm scan (about 80 x 100 px) are smaller than the default 128-px window (the
    authors', at 1 mm). Padded to the window, most of every window would be empty and the
    foreground weighting would scale the whole map down (about 10x on a test volume). The
    network is fully convolutional, so a window that fits sees the same pixels at the same
    scale, mostly brain, as its training patches did; refusing would instead make every 2 mm
    scan fail with the default settings.

    Example:
        >>> fitted_window(200, 180, 128, 32)
        (128, 32)
        >>> fitted_window(99, 117, 128, 32, size_multiple=8)
        (96, 24)
    """
    if window <= min(h, w):
        return window, stride
    m = max(1, size_multiple)
    win = max(m, min(h, w) // m * m)
    return win, max(1, min(win, round(stride * win / window)))


def _centre_pad(size: int, target: int) -> tuple[int, int]:
    diff = max(target - size, 0)
    return diff // 2, diff - diff // 2


def _validate_cfg(cfg: InferenceConfig) -> None:
    if cfg.window < 0 or cfg.stride < 1 or (cfg.window > 0 and cfg.stride > cfg.window):
        raise ConfigError(
            f"inference.window={cfg.window}, inference.stride={cfg.stride}: need stride >= 1 "
            "and window = 0 (whole slices) or stride <= window"
        )
    if cfg.batch_size < 1:
        raise ConfigError(f"inference.batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.median_filter < 0:
        raise ConfigError(f"inference.median_filter must be >= 0, got {cfg.median_filter}")


def _weighting(cfg: InferenceConfig) -> bool:
    """``cfg.foreground_weighting``; ``None`` (left to the method, which the
    :class:`~disyre.inference.Detector` resolves) counts as on, the shared default."""
    return cfg.foreground_weighting is None or bool(cfg.foreground_weighting)


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
    win: int,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sliding-window maps of padded slices ``vol (N, H, W)`` (all ``>= win``)."""
    n, h, w = vol.shape
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
                    jobs.append((k, y, x, f if _weighting(cfg) else 1.0))
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
    win: int = 0,
    stride: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-slice maps of padded slices ``vol (N, H, W)`` (multiples of the network's size)."""
    amap = torch.empty(vol.shape, device=vol.device)
    rest = torch.empty(vol.shape, device=vol.device)
    per = _inputs_per_pass(cfg)
    for s in range(0, vol.shape[0], per):
        a, r = restore(model, vol[s:s + per].unsqueeze(1), cfg, corruption,
                       generator, channels_last)
        n = a.shape[0]
        amap[s:s + n] = a[:, 0]  # the pass's outputs do not outlive it
        rest[s:s + n] = r[:, 0]
        del a, r
        if progress is not None:
            progress(n)
    if _weighting(cfg):
        # the authors' per-window weighting, applied as its Gaussian-blended field
        win = min(WEIGHTING_WINDOW, *vol.shape[1:])
        stride = min(cfg.stride, win) if cfg.stride > 0 else win // 4
        amap = amap * _foreground_field(msk, win, stride, _gaussian_importance(win, vol.device))
    return amap, rest


def count_work(mask_dhw: np.ndarray, cfg: InferenceConfig, size_multiple: int = 32) -> int:
    """Number of network inputs (windows, or whole slices when ``window=0``) of a volume.

    Args:
        mask_dhw: Brain mask ``(D, H, W)``.
        cfg: Windowing settings.
        size_multiple: Spatial sizes the network accepts are multiples of this (it sizes the
            window of slices smaller than ``cfg.window``, see :func:`fitted_window`).

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
    win, stride = fitted_window(h, w, cfg.window, cfg.stride, size_multiple)
    ph, pw = _centre_pad(h, win), _centre_pad(w, win)
    sub = np.pad(sub, ((0, 0), ph, pw))
    total = 0
    for y in window_starts(sub.shape[1], win, stride):
        for x in window_starts(sub.shape[2], win, stride):
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
    m = _size_multiple(model)
    win, stride = 0, 0
    if cfg.window > 0:
        win, stride = fitted_window(h, w, cfg.window, cfg.stride, m)
        if win != cfg.window:
            log.info("slices of %dx%d px are smaller than inference.window=%d: using %d-px "
                     "windows, stride %d", h, w, cfg.window, win, stride)
        th, tw = max(h, win), max(w, win)
    else:
        th, tw = math.ceil(h / m) * m, math.ceil(w / m) * m
    (py0, py1), (px0, px1) = _centre_pad(h, th), _centre_pad(w, tw)
    vol = nn.functional.pad(vol, (px0, px1, py0, py1))
    sub = nn.functional.pad(sub, (px0, px1, py0, py1))
    fn = _windowed if cfg.window > 0 else _whole_slices
    with torch.inference_mode():
        a, r = fn(model, vol, sub, cfg, corruption, generator, channels_last, progress, win,
                  stride)
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
    post: PostProcessing | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Anomaly map of a whole volume: :func:`predict_slices` plus its post-processing: the
    optional median filter, or ``post``.

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
        post: The map's post-processing (:meth:`PostProcessing.apply
            <disyre.inference.postprocess.PostProcessing.apply>`: erosion of the brain mask,
            median filter) in place of ``cfg.median_filter``; ``IDENTITY`` gives the raw map.

    Returns:
        The float32 ``(D, H, W)`` map in [0, 1] (and the restored volume if asked).
    """
    amap, rest = predict_slices(model, image_dhw, mask_dhw, cfg, corruption, generator, device,
                                channels_last, progress)
    if cfg.median_filter > 0 or post is not None:
        cpu = torch.device("cpu")
        fg = (_tensor(image_dhw, torch.float32, cpu) != 0 if mask_dhw is None
              else _tensor(mask_dhw, torch.bool, cpu)).numpy()
        amap = (median_filter_map(amap, fg, cfg.median_filter) if post is None
                else post.apply(amap, fg))
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


