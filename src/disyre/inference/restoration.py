"""Restoration of a batch of images: the v2 ensembled single-step score and v1 multi-step
restoration (docs/method.md#inference), and the diffusion baselines' walk and patched
restorations (docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from disyre.config import METHODS, ConfigError, InferenceConfig
from disyre.corruption.diffusion import PatchedDiffusion, SimplexDiffusion, from_signed
from disyre.corruption.schedule import multistep_levels, severity_of
from disyre.runtime import autocast


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
    :func:`~disyre.corruption.schedule.multistep_levels` (level 80, severity about 0.82: the
    most severe level of the v2 ensemble, as the authors'; the network is never queried at
    more severe levels), walking down evenly to level 0 (five steps: the v2 levels
    ``[80, 60, 40, 20, 0]``), each step predicts
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


def walk_steps(start: int, steps: int) -> list[int]:
    """Diffusion steps of a walk of ``steps`` network passes from step ``start`` down to 0,
    evenly strided (``steps = start + 1``: every step, the full walk).

    Example:
        >>> walk_steps(249, 250)[:3], walk_steps(249, 5)
        ([249, 248, 247], [249, 187, 124, 62, 0])
    """
    if not 1 <= steps <= start + 1:
        raise ConfigError(f"inference.steps must lie in [1, {start + 1}] for a walk from "
                          f"step {start}, got {steps}")
    if steps == 1:
        return [start]
    return sorted({round(v) for v in torch.linspace(start, 0, steps).tolist()}, reverse=True)


def restore_walk(
    model: nn.Module,
    x: torch.Tensor,
    start: int,
    steps: int,
    corruption: SimplexDiffusion,
    generator: torch.Generator | None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AnoDDPM's partial diffusion: noise the scan to step ``start`` in one shot, walk back.

    Each of the :func:`walk_steps` predicts the noise, derives the clean image from it
    (clipped to [-1, 1]) and takes the ancestral step to the next step walked
    (:meth:`~disyre.corruption.diffusion.SimplexDiffusion.step`, fresh simplex noise); the
    last step lands on the clean image. The map is ``|x - restored|`` (the publication's
    squared error ranks the voxels the same).

    Args:
        model: Noise-predicting network ``forward(x_t, t)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        start: The step the scan is noised to (249: lambda = 250).
        steps: Network passes (``start + 1``: the full walk).
        corruption: The ``anoddpm`` forward process.
        generator: Randomness of the noise (required).
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32 in [0, 1].
    """
    if generator is None:
        raise ValueError("the walk needs a generator for its noise")
    ts = walk_steps(start, steps)
    b = x.shape[0]
    xt = corruption.inference_input(x, ts[0], generator)
    for i, t in enumerate(ts):
        lt = torch.full((b,), t, dtype=torch.long, device=x.device)
        eps = _forward(model, xt, lt, precision, channels_last)
        x0 = corruption.x0_from_eps(xt, t, eps)
        xt = corruption.step(x0, xt, t, ts[i + 1] if i + 1 < len(ts) else -1, generator)
    restored = from_signed(xt).clamp(0, 1)
    return (x - restored).abs(), restored


def restore_patched(
    model: nn.Module,
    x: torch.Tensor,
    levels: Sequence[int],
    corruption: PatchedDiffusion,
    generator: torch.Generator | None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patched DDPM's restoration: each box of the grid noised in turn, stitched.

    For each step ``t`` of ``levels`` one simplex noise image is drawn per image; for each box
    of :meth:`~disyre.corruption.diffusion.PatchedDiffusion.boxes` the box alone is noised to
    ``t`` (the rest of the image clean), the network predicts the clean image in one pass,
    and the box's region of that prediction goes into the restoration (no overlap). Boxes
    without any foreground in the batch are not run (their restoration is the image). With
    several steps the restorations are averaged. The map is ``|x - restored|``.

    Args:
        model: Network ``forward(x, t)`` predicting the clean image.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        levels: Diffusion steps (``[499]``: t_test = 500).
        corruption: The ``pddpm`` forward process.
        generator: Randomness of the noise (required).
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32 in [0, 1].
    """
    if generator is None:
        raise ValueError("the patched restoration needs a generator for its noise")
    b, _, h, w = x.shape
    k = corruption.box
    recs = []
    for t in levels:
        eps = corruption.noise(x, generator)
        rec = x.clone()
        lt = torch.full((b,), int(t), dtype=torch.long, device=x.device)
        for y0, x0 in corruption.boxes(h, w):
            if not (x[..., y0:y0 + k, x0:x0 + k] > 0).any():
                continue
            corner = torch.tensor([[y0, x0]], device=x.device).expand(b, 2)
            inp, _ = corruption.noise_box(x, int(t), eps, corner)
            pred = _forward(model, inp, lt, precision, channels_last).clamp(0, 1)
            rec[..., y0:y0 + k, x0:x0 + k] = pred[..., y0:y0 + k, x0:x0 + k]
        recs.append(rec)
    restored = torch.stack(recs).mean(0)
    return (x - restored).abs(), restored


def restore(
    model: nn.Module,
    x: torch.Tensor,
    cfg: InferenceConfig,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restore a batch with the method of ``cfg`` (``ensemble`` = v2, ``multistep`` = v1,
    ``walk`` = AnoDDPM, ``patched`` = the patched DDPM).

    Args:
        model: Network with ``forward(x, level)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        cfg: ``method``, ``levels``, ``steps`` and ``precision`` are read.
        corruption: Gives the network input at a level; ``None`` = identity (the diffusion
            baselines' own forward process for ``walk`` and ``patched``).
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
    if cfg.method == "walk":
        if not isinstance(corruption, SimplexDiffusion):
            raise ConfigError("inference.method=walk needs the anoddpm corruption")
        return restore_walk(model, x, cfg.levels[0], cfg.steps, corruption, generator,
                            cfg.precision, channels_last)
    if cfg.method == "patched":
        if not isinstance(corruption, PatchedDiffusion):
            raise ConfigError("inference.method=patched needs the pddpm corruption")
        return restore_patched(model, x, cfg.levels, corruption, generator, cfg.precision,
                               channels_last)
    raise ConfigError(f"inference.method must be one of {list(METHODS)}, got {cfg.method!r}")


