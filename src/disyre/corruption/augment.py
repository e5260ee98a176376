"""Pre-corruption augmentation of clean patches, batched with per-sample parameters.

The authors' values (METHOD.md): with p = 0.1 each, elastic deformation, rotation by
U(-15, 15) degrees and scaling by U(0.75, 1.25); random left-right mirroring (p = 0.5); with
p = 0.15 each, brightness x U(0.9, 1.1), gamma U(0.5, 2), inverted gamma
``1 - (1 - x)^gamma``, additive Gaussian noise with variance U(0, 0.05) and Gaussian blur with
sigma U(0.5, 1.5); clip to [0, 1]. Background (pixels that are 0 after the spatial transforms)
stays exactly 0. Mirroring is left-right only (axial slices are roughly symmetric about the
mid-sagittal plane; upside-down anatomy is never seen at test time).

Example:
    >>> import torch
    >>> x = torch.zeros(8, 1, 64, 64); x[:, :, 16:48, 16:48] = 0.5
    >>> y = augment(x, torch.Generator().manual_seed(0))
    >>> tuple(y.shape), bool(((y >= 0) & (y <= 1)).all()), bool(y[:, :, 0].eq(0).all())
    ((8, 1, 64, 64), True, True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from disyre.corruption.shapes import gaussian_blur, rand, randn


def augment(x: torch.Tensor, generator: torch.Generator, *, p_spatial: float = 0.1,
            p_mirror: float = 0.5, p_intensity: float = 0.15,
            elastic_px: float = 3.0) -> torch.Tensor:
    """Randomly augment clean patches.

    Args:
        x: (B, 1, H, W) clean patches in [0, 1], background 0.
        generator: Source of randomness.
        p_spatial: Probability of each of elastic deformation, rotation and scaling.
        p_mirror: Probability of a left-right flip.
        p_intensity: Probability of each intensity transform.
        elastic_px: Standard deviation (pixels) of the smooth elastic displacement
            (a 5x5 random field interpolated bilinearly).

    Returns:
        (B, 1, H, W) augmented patches in [0, 1] with background 0 (a new tensor).
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected patches of shape (B, 1, H, W), got {tuple(x.shape)}")
    B, _, H, W = x.shape
    dev, dt = x.device, x.dtype
    u = rand((B, 16), generator, dev)
    coarse = randn((B, 2, 5, 5), generator, dev)

    # spatial: rotation, scaling, elastic -- only on the samples that get one
    do_el, do_rot, do_sc = u[:, 0] < p_spatial, u[:, 1] < p_spatial, u[:, 2] < p_spatial
    idx = torch.nonzero(do_el | do_rot | do_sc).flatten()
    x = x.clone()
    if idx.numel():
        ang = torch.where(do_rot, (u[:, 3] * 2 - 1) * math.radians(15.0), 0.0)[idx]
        scale = torch.where(do_sc, 0.75 + 0.5 * u[:, 4], 1.0)[idx]
        c, s = torch.cos(ang) / scale, torch.sin(ang) / scale
        zero = torch.zeros_like(c)
        theta = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)
        grid = F.affine_grid(theta.to(dt), [idx.numel(), 1, H, W], align_corners=False)
        el = torch.nonzero(do_el[idx]).flatten()
        if el.numel():
            disp = F.interpolate(coarse[idx[el]], size=(H, W), mode="bilinear",
                                 align_corners=True)
            scale_px = torch.tensor([2.0 * elastic_px / W, 2.0 * elastic_px / H], device=dev)
            grid[el] = grid[el] + (disp * scale_px[None, :, None, None]).permute(0, 2, 3, 1
                                                                                ).to(dt)
        x[idx] = F.grid_sample(x[idx], grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
    flip = (u[:, 5] < p_mirror)[:, None, None, None]
    x = torch.where(flip, x.flip(-1), x)
    brain = x > 0

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
    return x.clamp(0.0, 1.0) * brain
