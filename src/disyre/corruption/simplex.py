"""Simplex noise in octaves: the structured noise of the diffusion baselines.

AnoDDPM (Wyatt et al., CVPRW 2022) replaces the Gaussian noise of a DDPM by simplex noise
summed over octaves, so that the forward process hides blobs of the size of a lesion rather
than grain; the patched DDPM (Behrendt et al., MIDL 2023) uses the same noise. Their recipe:
:data:`OCTAVES` (6) octaves, the first with a feature size of :data:`FEATURE` (64) pixels (the
coordinates divided by 64), the feature size halved and the amplitude multiplied by
:data:`PERSISTENCE` (0.8) from one octave to the next; the sum is not rescaled to unit variance.

Here the simplex noise is Perlin's 2D simplex noise in Gustavson's formulation (skewed
triangular lattice, a kernel ``(0.5 - r^2)^4`` around each of a point's three corners, random
unit gradients at the lattice points), scaled by 70 as the classic formulation is: one octave
has a standard deviation of about 0.38 and stays within [-1, 1]. The publications used the
OpenSimplex library; the two are the same kind of noise (smooth, isotropic, band-limited
around the feature size), not the same numbers. Every sample gets its own gradients and a
random offset per octave.

Example:
    >>> import torch
    >>> n = simplex_octaves((2, 1, 64, 64), torch.Generator().manual_seed(0))
    >>> tuple(n.shape), bool(n.abs().max() < 4)
    ((2, 1, 64, 64), True)
"""

from __future__ import annotations

import math

import torch

from disyre.corruption.shapes import rand

#: octaves of the sum (AnoDDPM's and pDDPM's default)
OCTAVES: int = 6
#: feature size in pixels of the first (coarsest) octave, halved per octave
FEATURE: float = 64.0
#: amplitude factor from one octave to the next
PERSISTENCE: float = 0.8
#: gradients per sample (lattice points hash into this table)
_TABLE: int = 256
_F2 = 0.5 * (math.sqrt(3.0) - 1.0)
_G2 = (3.0 - math.sqrt(3.0)) / 6.0
#: the classic formulation's scale of the summed kernel contributions
_SCALE = 70.0


def simplex(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, perm: torch.Tensor
            ) -> torch.Tensor:
    """2D simplex noise at coordinates ``x, y`` (``(B, H, W)``, lattice units).

    Args:
        x: First coordinate, ``(B, H, W)`` float.
        y: Second coordinate, same shape.
        grad: ``(B, 256, 2)`` unit gradients of each sample.
        perm: ``(B, 256)`` permutation of each sample (hashes lattice points to gradients).

    Returns:
        ``(B, H, W)`` noise within [-1, 1] (std about 0.38), 0 at every lattice point.
    """
    b = x.shape[0]
    s = (x + y) * _F2
    i, j = torch.floor(x + s), torch.floor(y + s)
    t = (i + j) * _G2
    x0, y0 = x - (i - t), y - (j - t)
    upper = (x0 > y0).to(x.dtype)  # which of the cell's two triangles
    corners = [(0.0, 0.0, x0, y0),
               (upper, 1.0 - upper, x0 - upper + _G2, y0 - (1.0 - upper) + _G2),
               (1.0, 1.0, x0 - 1.0 + 2 * _G2, y0 - 1.0 + 2 * _G2)]
    ii, jj = i.long() % _TABLE, j.long() % _TABLE
    flat = perm.reshape(b, -1)
    out = torch.zeros_like(x)
    for di, dj, dx, dy in corners:
        ci = (ii + torch.as_tensor(di).long()) % _TABLE
        cj = (jj + torch.as_tensor(dj).long()) % _TABLE
        h = torch.gather(flat, 1, ((ci + torch.gather(flat, 1, cj.reshape(b, -1)).reshape(
            cj.shape)) % _TABLE).reshape(b, -1)).reshape(x.shape)
        g = torch.gather(grad, 1, h.reshape(b, -1, 1).expand(-1, -1, 2)).reshape(*x.shape, 2)
        k = (0.5 - dx * dx - dy * dy).clamp(min=0)
        out = out + k ** 4 * (g[..., 0] * dx + g[..., 1] * dy)
    return _SCALE * out


def simplex_octaves(shape: tuple[int, ...], generator: torch.Generator,
                    device: torch.device | str = "cpu", *, octaves: int = OCTAVES,
                    feature: float = FEATURE, persistence: float = PERSISTENCE) -> torch.Tensor:
    """Octave sum of simplex noise: ``sum_o persistence^o * simplex(p / (feature / 2^o))``.

    Args:
        shape: ``(B, C, H, W)``; each sample and channel gets its own noise.
        generator: Source of randomness (gradients, permutation, offsets).
        device: Where the noise is computed.
        octaves: Number of octaves.
        feature: Feature size in pixels of the first octave.
        persistence: Amplitude factor per octave.

    Returns:
        float32 noise of ``shape``, not rescaled: its std is one octave's (about 0.38) times
        ``sqrt(sum_o persistence^(2 o))``, about 0.61 for the defaults.
    """
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W), got {shape}")
    if octaves < 1 or feature <= 0:
        raise ValueError(f"octaves must be >= 1 and feature > 0, got {octaves}, {feature}")
    b, c, h, w = shape
    n = b * c
    angle = rand((n, _TABLE), generator, device) * (2 * math.pi)
    grad = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    perm = torch.argsort(rand((n, _TABLE), generator, device), dim=1)
    offset = rand((n, octaves, 2), generator, device) * _TABLE
    py = torch.arange(h, device=device, dtype=torch.float32)[:, None].expand(h, w)
    px = torch.arange(w, device=device, dtype=torch.float32)[None, :].expand(h, w)
    out = torch.zeros((n, h, w), device=device)
    for o in range(octaves):
        size = feature / 2 ** o
        xs = px / size + offset[:, o, 0, None, None]
        ys = py / size + offset[:, o, 1, None, None]
        out += persistence ** o * simplex(xs, ys, grad, perm)
    return out.reshape(shape)
