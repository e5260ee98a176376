"""Pre-corruption augmentation of clean patches, batched with per-sample parameters.

Two recipes (``CorruptionConfig.augment_recipe``); both keep the background (outside the brain
mask, after the spatial transforms) exactly 0 and clip to [0, 1].

``authors`` (default, the authors' batchgenerators pipeline: docs/method.md#augmentation), in order:

1. spatial, each with p = 0.1: elastic deformation (a uniform random field smoothed by a
   Gaussian of sigma ``s * P`` with ``s ~ U(0, 0.25)``, ``P`` the patch side, rescaled so that
   its largest displacement is U(sigma / 8, sigma / 2): at most 16 px on a 128 px patch),
   rotation by U(-15, 15) degrees, scaling by U(0.75, 1.25);
2. mirroring along each in-plane axis with p = 0.5;
3. with p = 0.15 each: brightness x U(0.9, 1.1); gamma; inverted gamma; Gaussian noise of
   standard deviation U(0, 0.05) (the "variance" of batchgenerators is used as a standard
   deviation); then, with p = 0.075, Gaussian blur of sigma U(0.5, 1.5). Gamma (and inverted
   gamma) draw ``gamma`` from U(0.5, 1) or U(1, 2) with equal probability and act on the
   patch's own range: ``((x - min) / (max - min)) ** gamma * (max - min) + min`` (inverted:
   the same on ``-x``).

The noise lands on the clean patch before the anomaly is added, so the network's input and
its target carry the same noise.

``legacy``: the same probabilities, but a weaker elastic field (a 5x5 random field of 3 px
standard deviation, interpolated), left-right mirroring only, gamma U(0.5, 2) on [0, 1],
inverted gamma ``1 - (1 - x) ** gamma``, noise of standard deviation ``sqrt(U(0, 0.05))`` and
blur with p = 0.15.

The brain mask travels with the patch (:func:`augment_pair`): it goes through the same
spatial transforms (bilinear, then > 0.5) and flips, and defines the background afterwards;
without a mask the brain is the non-zero pixels after the spatial transforms.

Example:
    >>> import torch
    >>> x = torch.zeros(8, 1, 64, 64); x[:, :, 16:48, 16:48] = 0.5
    >>> y = augment(x, torch.Generator().manual_seed(0))
    >>> tuple(y.shape), bool(((y >= 0) & (y <= 1)).all()), bool(y[:, :, 0].eq(0).all())
    ((8, 1, 64, 64), True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from disyre.config import AUGMENT_RECIPES
from disyre.corruption.base import check_patches
from disyre.corruption.shapes import gaussian_blur, rand, randn


@dataclass(frozen=True)
class AugmentRecipe:
    """Probabilities and ranges of the ``authors`` augmentation.

    Attributes:
        p_elastic, p_rotation, p_scale: Probability of each spatial transform.
        max_rotation_deg: Rotation drawn from U(-max, max) degrees.
        scale_range: Scaling factor range.
        elastic_scale: Range of the deformation scale ``s``, a fraction of the patch side:
            the field's smoothing sigma is ``s * P`` and its largest displacement
            U(sigma / 8, sigma / 2).
        p_mirror: Probability of a flip along each of ``mirror_axes``.
        mirror_axes: Flipped axes (-1: left-right, -2: anterior-posterior).
        p_brightness, brightness_range: Multiplicative brightness.
        p_gamma, p_inverted_gamma: Probability of gamma and of inverted gamma.
        gamma_range: ``(low, high)``: gamma is U(low, 1) or U(1, high), half the time each.
        p_noise: Probability of additive Gaussian noise.
        noise_std: Its standard deviation is U(0, noise_std).
        p_blur: Probability of a Gaussian blur (sigma U(``blur_sigma``)).
        blur_sigma: Blur sigma range.
    """

    p_elastic: float = 0.1
    p_rotation: float = 0.1
    p_scale: float = 0.1
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.75, 1.25)
    elastic_scale: tuple[float, float] = (0.0, 0.25)
    p_mirror: float = 0.5
    mirror_axes: tuple[int, ...] = (-1, -2)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.9, 1.1)
    p_gamma: float = 0.15
    p_inverted_gamma: float = 0.15
    gamma_range: tuple[float, float] = (0.5, 2.0)
    p_noise: float = 0.15
    noise_std: float = 0.05
    p_blur: float = 0.075
    blur_sigma: tuple[float, float] = (0.5, 1.5)


#: the authors' augmentation
AUTHORS_AUGMENT = AugmentRecipe()


def augment(x: torch.Tensor, generator: torch.Generator, *,
            recipe: str | AugmentRecipe = "authors", brain: torch.Tensor | None = None,
            **legacy: float) -> torch.Tensor:
    """Randomly augment clean patches (see the module docstring).

    Args:
        x: (B, 1, H, W) clean patches in [0, 1], background 0.
        generator: Source of randomness.
        recipe: ``"authors"``, ``"legacy"`` or an :class:`AugmentRecipe` (authors' mechanics
            with other probabilities or ranges).
        brain: (B, 1, H, W) brain mask of the patches (default: the non-zero pixels).
        **legacy: Options of the legacy recipe (:func:`legacy_augment`).

    Returns:
        (B, 1, H, W) augmented patches in [0, 1] with background 0 (a new tensor).
    """
    return augment_pair(x, brain, generator, recipe=recipe, **legacy)[0]


def augment_pair(x: torch.Tensor, brain: torch.Tensor | None, generator: torch.Generator, *,
                 recipe: str | AugmentRecipe = "authors", **legacy: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment patches and their brain mask together.

    Args:
        x: (B, 1, H, W) clean patches in [0, 1], background 0.
        brain: (B, 1, H, W) brain mask, or ``None`` (the non-zero pixels).
        generator: Source of randomness.
        recipe: ``"authors"``, ``"legacy"`` or an :class:`AugmentRecipe`.
        **legacy: Options of :func:`legacy_augment`.

    Returns:
        ``(patches, brain)``: the augmented patches (0 outside the brain) and the transformed
        boolean brain mask.
    """
    check_patches(x)
    if brain is not None and brain.shape != x.shape:
        raise ValueError(f"brain mask of shape {tuple(brain.shape)} for patches of shape "
                         f"{tuple(x.shape)}")
    if isinstance(recipe, str):
        if recipe not in AUGMENT_RECIPES:
            raise ValueError(f"unknown augmentation recipe {recipe!r}; choose from "
                             f"{list(AUGMENT_RECIPES)}")
        if recipe == "legacy":
            return legacy_augment(x, generator, brain=brain, **legacy)
        recipe = AUTHORS_AUGMENT
    if legacy:
        raise TypeError(f"options {sorted(legacy)} belong to the legacy recipe")
    return _authors(x, brain, generator, recipe)


def _warp(x: torch.Tensor, brain: torch.Tensor | None, idx: torch.Tensor, grid: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x.clone()
    x[idx] = F.grid_sample(x[idx], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    if brain is not None:
        bf = brain.to(x.dtype)
        bf[idx] = F.grid_sample(bf[idx], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        brain = bf > 0.5
    return x, brain


def elastic_offsets(n: int, h: int, w: int, generator: torch.Generator,
                    device: torch.device | str, scale: tuple[float, float] = (0.0, 0.25)
                    ) -> torch.Tensor:
    """Displacement fields (pixels) of the authors' elastic deformation.

    Per sample, ``s ~ U(scale)``; per axis, a field of U(-1, 1) noise smoothed by a Gaussian
    of sigma ``s * side`` (zero borders), rescaled so that its largest absolute value is
    U(sigma / 8, sigma / 2) pixels.

    Returns:
        (n, 2, h, w) displacements along ``(x, y)`` = (columns, rows), in pixels.
    """
    s = scale[0] + (scale[1] - scale[0]) * rand((n,), generator, device)
    mag_u = rand((n, 2), generator, device)
    noise = rand((n, 2, h, w), generator, device) * 2 - 1
    out = torch.empty_like(noise)
    for ax, side in enumerate((w, h)):
        sigma = s * side
        field = gaussian_blur(noise[:, ax:ax + 1], sigma.clamp_min(1e-2),
                              max_sigma=float(sigma.max().clamp_min(1e-2)))[:, 0]
        peak = field.flatten(1).abs().amax(1).clamp_min(1e-12)
        mag = sigma * (0.125 + 0.375 * mag_u[:, ax])
        out[:, ax] = field * (mag / peak)[:, None, None]
    return out


def _gamma_on_range(x: torch.Tensor, gamma: torch.Tensor, invert: bool) -> torch.Tensor:
    """batchgenerators' gamma: on the patch's own [min, max] (of ``-x`` when inverted)."""
    y = -x if invert else x
    mn = y.flatten(1).amin(1)[:, None, None, None]
    rng = y.flatten(1).amax(1)[:, None, None, None] - mn
    y = ((y - mn) / (rng + 1e-7)).clamp_min(0) ** gamma[:, None, None, None] * rng + mn
    return -y if invert else y


def _draw_gamma(u_side: torch.Tensor, u_val: torch.Tensor, lo: float, hi: float
                ) -> torch.Tensor:
    """Gamma from U(lo, 1) or U(1, hi), half the time each."""
    return torch.where(u_side < 0.5, lo + (1 - lo) * u_val, 1 + (hi - 1) * u_val)


def _authors(x: torch.Tensor, brain: torch.Tensor | None, generator: torch.Generator,
             r: AugmentRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    B, _, H, W = x.shape
    dev, dt = x.device, x.dtype
    u = rand((B, 24), generator, dev)
    brain = None if brain is None else brain.to(dev).bool()

    # spatial: elastic, rotation, scaling -- only on the samples that get one
    do_el, do_rot, do_sc = u[:, 0] < r.p_elastic, u[:, 1] < r.p_rotation, u[:, 2] < r.p_scale
    idx = torch.nonzero(do_el | do_rot | do_sc).flatten()
    if idx.numel():
        ang = torch.where(do_rot, (u[:, 3] * 2 - 1) * math.radians(r.max_rotation_deg), 0.0)[idx]
        lo, hi = r.scale_range
        scale = torch.where(do_sc, lo + (hi - lo) * u[:, 4], 1.0)[idx]
        grid = _rotation_scale_grid(ang, scale, H, W, dt)
        el = torch.nonzero(do_el[idx]).flatten()
        if el.numel():
            disp = elastic_offsets(el.numel(), H, W, generator, dev, r.elastic_scale)
            px = torch.tensor([2.0 / W, 2.0 / H], device=dev)
            grid[el] = grid[el] + (disp * px[None, :, None, None]).permute(0, 2, 3, 1).to(dt)
        x, brain = _warp(x, brain, idx, grid)
    else:
        x = x.clone()
    for k, axis in enumerate(r.mirror_axes[:4]):
        flip = (u[:, 5 + k] < r.p_mirror)[:, None, None, None]
        x = torch.where(flip, x.flip(axis), x)
        if brain is not None:
            brain = torch.where(flip, brain.flip(axis), brain)
    if brain is None:
        brain = x > 0

    # intensity
    idx = torch.nonzero(u[:, 9] < r.p_brightness).flatten()
    if idx.numel():
        lo, hi = r.brightness_range
        x[idx] = x[idx] * (lo + (hi - lo) * u[idx, 10])[:, None, None, None]
    glo, ghi = r.gamma_range
    idx = torch.nonzero(u[:, 11] < r.p_gamma).flatten()
    if idx.numel():
        x[idx] = _gamma_on_range(x[idx], _draw_gamma(u[idx, 12], u[idx, 13], glo, ghi), False)
    idx = torch.nonzero(u[:, 14] < r.p_inverted_gamma).flatten()
    if idx.numel():
        x[idx] = _gamma_on_range(x[idx], _draw_gamma(u[idx, 15], u[idx, 16], glo, ghi), True)
    idx = torch.nonzero(u[:, 17] < r.p_noise).flatten()
    if idx.numel():
        std = (r.noise_std * u[idx, 18])[:, None, None, None]
        x[idx] = x[idx] + std * randn((idx.numel(), 1, H, W), generator, dev).to(dt)
    idx = torch.nonzero(u[:, 19] < r.p_blur).flatten()
    if idx.numel():
        lo, hi = r.blur_sigma
        x[idx] = gaussian_blur(x[idx], lo + (hi - lo) * u[idx, 20], max_sigma=hi,
                               padding="reflect", truncate=4.0)
    return x.clamp(0.0, 1.0) * brain, brain


def legacy_augment(x: torch.Tensor, generator: torch.Generator, *,
                   brain: torch.Tensor | None = None, p_spatial: float = 0.1,
                   p_mirror: float = 0.5, p_intensity: float = 0.15,
                   elastic_px: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``legacy`` recipe (see the module docstring).

    Args:
        x: (B, 1, H, W) clean patches in [0, 1], background 0.
        generator: Source of randomness.
        brain: (B, 1, H, W) brain mask (default: the non-zero pixels after the spatial
            transforms).
        p_spatial: Probability of each of elastic deformation, rotation and scaling.
        p_mirror: Probability of a left-right flip.
        p_intensity: Probability of each intensity transform.
        elastic_px: Standard deviation (pixels) of the smooth elastic displacement
            (a 5x5 random field interpolated bilinearly).

    Returns:
        ``(patches, brain)``.
    """
    B, _, H, W = x.shape
    dev, dt = x.device, x.dtype
    u = rand((B, 16), generator, dev)
    coarse = randn((B, 2, 5, 5), generator, dev)
    brain = None if brain is None else brain.to(dev).bool()

    # spatial: rotation, scaling, elastic -- only on the samples that get one
    do_el, do_rot, do_sc = u[:, 0] < p_spatial, u[:, 1] < p_spatial, u[:, 2] < p_spatial
    idx = torch.nonzero(do_el | do_rot | do_sc).flatten()
    if idx.numel():
        ang = torch.where(do_rot, (u[:, 3] * 2 - 1) * math.radians(15.0), 0.0)[idx]
        scale = torch.where(do_sc, 0.75 + 0.5 * u[:, 4], 1.0)[idx]
        grid = _rotation_scale_grid(ang, scale, H, W, dt)
        el = torch.nonzero(do_el[idx]).flatten()
        if el.numel():
            disp = F.interpolate(coarse[idx[el]], size=(H, W), mode="bilinear",
                                 align_corners=True)
            scale_px = torch.tensor([2.0 * elastic_px / W, 2.0 * elastic_px / H], device=dev)
            grid[el] = grid[el] + (disp * scale_px[None, :, None, None]).permute(0, 2, 3, 1
                                                                                ).to(dt)
        x, brain = _warp(x, brain, idx, grid)
    else:
        x = x.clone()
    flip = (u[:, 5] < p_mirror)[:, None, None, None]
    x = torch.where(flip, x.flip(-1), x)
    brain = x > 0 if brain is None else torch.where(flip, brain.flip(-1), brain)

    # intensity
    p = p_intensity
    idx = torch.nonzero(u[:, 6] < p).flatten()
    if idx.numel():
        x[idx] = (x[idx] * (0.9 + 0.2 * u[idx, 7])[:, None, None, None]).clamp(0.0, 1.0)
    idx = torch.nonzero(u[:, 8] < p).flatten()
    if idx.numel():
        x[idx] = x[idx] ** (0.5 + 1.5 * u[idx, 9])[:, None, None, None]
    idx = torch.nonzero(u[:, 10] < p).flatten()
    if idx.numel():
        x[idx] = 1 - (1 - x[idx]) ** (0.5 + 1.5 * u[idx, 11])[:, None, None, None]
    idx = torch.nonzero(u[:, 12] < p).flatten()
    if idx.numel():
        std = torch.sqrt(0.05 * u[idx, 13])[:, None, None, None]
        x[idx] = x[idx] + std * randn((idx.numel(), 1, H, W), generator, dev).to(dt)
    idx = torch.nonzero(u[:, 14] < p).flatten()
    if idx.numel():
        x[idx] = gaussian_blur(x[idx], 0.5 + u[idx, 15], max_sigma=1.5)
    return x.clamp(0.0, 1.0) * brain, brain


def _rotation_scale_grid(ang: torch.Tensor, scale: torch.Tensor, H: int, W: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """Sampling grid ``(n, H, W, 2)`` that rotates by ``ang`` (radians) and zooms by ``scale``."""
    c, s = torch.cos(ang) / scale, torch.sin(ang) / scale
    zero = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)
    return F.affine_grid(theta.to(dtype), [ang.numel(), 1, H, W], align_corners=False)
