"""Simplex noise in octaves: the structured noise of the diffusion baselines.

AnoDDPM (Wyatt et al., CVPRW 2022) replaces the Gaussian noise of a DDPM by simplex noise
summed over octaves, so that the forward process hides blobs of the size of a lesion rather
than grain; the patched DDPM (Behrendt et al., MIDL 2023) uses the same noise. Their recipe:
:data:`OCTAVES` (6) octaves, the first with a feature size of :data:`FEATURE` (64) pixels (the
coordinates divided by 64), the feature size halved and the amplitude multiplied by
:data:`PERSISTENCE` (0.8) from one octave to the next; the sum is not rescaled to unit variance.

Here the noise is OpenSimplex's 2D noise (K. Spencer, 2014; the algorithm the publications
called through the ``opensimplex`` package), written from its description: the input plane is
mapped to a lattice of rhombi by ``p + (x + y) * (1/sqrt(3) - 1) / 2`` (each rhombus two
equilateral triangles of edge sqrt(2) in input units); every lattice vertex within a radius
sqrt(2) of a point adds ``(2 - r^2)^4 (g . d)`` (``d`` the displacement from the vertex, ``g``
one of eight gradients pointing near the vertices of an octagon, ``(+-5, +-2)`` and
``(+-2, +-5)``); the sum is divided by 47. Each point has four such vertices: the three of its
triangle and one beyond it. One octave has a standard deviation of about 0.37 and stays within
[-1, 1]; at a feature size of 64 px its autocorrelation is about 0.95 at 8 px, 0.83 at 16 px,
0.43 at 32 px and -0.14 at 64 px, as the ``opensimplex`` package's
(``tests/corruption/test_simplex.py``). Every sample gets its own random hash of lattice
vertices to gradients and a random offset per octave.

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
#: size of each sample's hash table (lattice vertices hash into it)
_TABLE: int = 256
#: input plane -> rhombic lattice (OpenSimplex's "stretch")
_STRETCH = (1.0 / math.sqrt(3.0) - 1.0) / 2
#: rhombic lattice -> input plane (the inverse, "squish")
_SQUISH = (math.sqrt(3.0) - 1.0) / 2
#: OpenSimplex's normalisation of the summed contributions
_NORM = 47.0
#: the eight gradients (near the vertices of an octagon)
_GRADIENTS = ((5.0, 2.0), (2.0, 5.0), (-5.0, 2.0), (-2.0, 5.0),
              (5.0, -2.0), (2.0, -5.0), (-5.0, -2.0), (-2.0, -5.0))


def simplex(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """OpenSimplex 2D noise at coordinates ``x, y`` (``(B, H, W)``, in feature units).

    Args:
        x: First coordinate, ``(B, H, W)`` float.
        y: Second coordinate, same shape.
        perm: ``(B, 256)`` permutation of each sample (hashes lattice vertices to gradients).

    Returns:
        ``(B, H, W)`` noise within [-1, 1] (std about 0.37).
    """
    b = x.shape[0]
    s = (x + y) * _STRETCH
    xs, ys = x + s, y + s  # lattice coordinates
    xb, yb = torch.floor(xs), torch.floor(ys)
    fx, fy = xs - xb, ys - yb  # position inside the rhombus, [0, 1)^2
    q = (xb + yb) * _SQUISH
    dx0, dy0 = x - (xb + q), y - (yb + q)  # displacement from the rhombus' origin vertex
    ib, jb = xb.long() % _TABLE, yb.long() % _TABLE
    flat = perm.reshape(b, -1)
    # each sample's gradient components, looked up by hash position
    g = torch.tensor(_GRADIENTS, dtype=x.dtype, device=x.device)[flat % len(_GRADIENTS)]
    gx, gy = g[..., 0].contiguous(), g[..., 1].contiguous()
    # the three vertices of the point's triangle and a fourth one beyond the edge it is
    # nearest to: (1, -1) / (-1, 1) / (1, 1) below the rhombus' diagonal, (2, 0) / (0, 2) /
    # (0, 0) above it (every other vertex lies out of reach)
    lower = fx + fy <= 1
    third = (~lower).to(x.dtype)
    z = torch.where(lower, 1 - fx - fy, 2 - fx - fy)
    xwin = fx > fy
    corner = torch.where(lower, (z > fx) | (z > fy), (z < fx) | (z < fy))
    far_i = torch.where(lower, torch.where(xwin, 1.0, -1.0), torch.where(xwin, 2.0, 0.0))
    far_j = torch.where(lower, -far_i, 2.0 - far_i)
    fi = torch.where(corner, far_i.to(x.dtype), 1 - third)
    fj = torch.where(corner, far_j.to(x.dtype), 1 - third)
    out = torch.zeros_like(x)
    for di, dj in ((1.0, 0.0), (0.0, 1.0), (third, third), (fi, fj)):
        d = (di + dj) * _SQUISH
        dx, dy = dx0 - di - d, dy0 - dj - d
        ci = (ib + torch.as_tensor(di).long()) % _TABLE
        cj = (jb + torch.as_tensor(dj).long()) % _TABLE
        at = ((ci + torch.gather(flat, 1, cj.reshape(b, -1)).reshape(cj.shape)) % _TABLE
              ).reshape(b, -1)
        k = (2.0 - dx * dx - dy * dy).clamp(min=0)
        dot = (torch.gather(gx, 1, at).reshape(x.shape) * dx
               + torch.gather(gy, 1, at).reshape(x.shape) * dy)
        out = out + (k * k) ** 2 * dot
    return out / _NORM


#: the noise lattices :func:`simplex_octaves` knows (``corruption.simplex``)
LATTICES: tuple[str, ...] = ("opensimplex", "perlin")
_PERLIN_F2 = 0.5 * (math.sqrt(3.0) - 1.0)
_PERLIN_G2 = (3.0 - math.sqrt(3.0)) / 6.0
#: the classic formulation's scale of the summed kernel contributions
_PERLIN_SCALE = 70.0


def perlin_simplex(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, perm: torch.Tensor
                   ) -> torch.Tensor:
    """Perlin's 2D simplex noise (Gustavson's formulation) at ``x, y`` (``(B, H, W)``).

    The noise of the previous release (``corruption.simplex=perlin``): its lattice is sqrt(3)
    times finer than OpenSimplex's at the same coordinates, so its features are about 1.75x
    smaller. Kept so that checkpoints trained with it detect as they did.

    Args:
        x: First coordinate, ``(B, H, W)`` float.
        y: Second coordinate, same shape.
        grad: ``(B, 256, 2)`` unit gradients of each sample.
        perm: ``(B, 256)`` permutation of each sample (hashes lattice points to gradients).

    Returns:
        ``(B, H, W)`` noise within [-1, 1] (std about 0.38), 0 at every lattice point.
    """
    b = x.shape[0]
    s = (x + y) * _PERLIN_F2
    i, j = torch.floor(x + s), torch.floor(y + s)
    t = (i + j) * _PERLIN_G2
    x0, y0 = x - (i - t), y - (j - t)
    upper = (x0 > y0).to(x.dtype)  # which of the cell's two triangles
    corners = [(0.0, 0.0, x0, y0),
               (upper, 1.0 - upper, x0 - upper + _PERLIN_G2, y0 - (1.0 - upper) + _PERLIN_G2),
               (1.0, 1.0, x0 - 1.0 + 2 * _PERLIN_G2, y0 - 1.0 + 2 * _PERLIN_G2)]
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
    return _PERLIN_SCALE * out


def simplex_octaves(shape: tuple[int, ...], generator: torch.Generator,
                    device: torch.device | str = "cpu", *, octaves: int = OCTAVES,
                    feature: float = FEATURE, persistence: float = PERSISTENCE,
                    lattice: str = "opensimplex") -> torch.Tensor:
    """Octave sum of simplex noise: ``sum_o persistence^o * simplex(p / (feature / 2^o))``.

    Args:
        shape: ``(B, C, H, W)``; each sample and channel gets its own noise.
        generator: Source of randomness (hash permutation, offsets).
        device: Where the noise is computed.
        octaves: Number of octaves.
        feature: Feature size in pixels of the first octave.
        persistence: Amplitude factor per octave.
        lattice: ``opensimplex`` (the publications' noise) or ``perlin`` (the previous
            release's, :func:`perlin_simplex`, with its own random draws).

    Returns:
        float32 noise of ``shape``, not rescaled: its std is one octave's (about 0.37) times
        ``sqrt(sum_o persistence^(2 o))``, about 0.59 for the defaults.
    """
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W), got {shape}")
    if octaves < 1 or feature <= 0:
        raise ValueError(f"octaves must be >= 1 and feature > 0, got {octaves}, {feature}")
    if lattice not in LATTICES:
        raise ValueError(f"lattice must be one of {', '.join(LATTICES)}, got {lattice!r}")
    b, c, h, w = shape
    n = b * c
    grad = None
    if lattice == "perlin":  # the previous release's draws, in its order
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
        out += persistence ** o * (simplex(xs, ys, perm) if grad is None
                                   else perlin_simplex(xs, ys, grad, perm))
    return out.reshape(shape)
