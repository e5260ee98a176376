"""Coarse noise: the corruption of the denoising-autoencoder baseline (variant ``dae``).

Kascenas, Pugeault and O'Neil (MIDL 2022) train a U-Net to remove Gaussian noise that is
drawn on a coarse grid and upsampled, so that the "noise" looks like blobs of brighter and
darker tissue rather than grain; at test time the network restores the scan itself and the
anomaly map is ``|x - restored|``. Their recipe: noise of std 0.2 drawn on a 16 x 16 grid
for 128 x 128 slices (one grid cell per 8.5 pixels), bilinear upsampling with the grid
values on the corner pixels, a random shift, and the noise kept to the foreground (added to
the unclipped image). Here:

- the grid has one cell per :data:`CELL` (8) pixels at any patch size, so a 64 px patch of a
  2 mm scan gets the same cell size in millimetres as their 128 px slices of about 1.9 mm;
- each sample gets its own random shift of the grid (the authors shift the whole batch by one
  wrap-around roll): a larger grid is drawn and a patch-sized window cut from it;
- the foreground is the non-zero voxels of the clean patch (the background is exactly 0).

The network is conditioned on level 0 throughout (``level`` all 0), and detection restores
the unnoised scan once (``inference.levels=[0]``): :meth:`CoarseNoise.inference_input` is
the identity. docs/methods.md lists every difference from the published recipe.

Example:
    >>> import torch
    >>> x = torch.zeros(2, 1, 64, 64); x[:, :, 8:56, 8:56] = 0.5
    >>> res = CoarseNoise()(x, torch.Generator().manual_seed(0))
    >>> bool((res.corrupted[x == 0] == 0).all()), int(res.level.sum())
    (True, 0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from disyre.corruption.base import CorruptionResult, check_patches
from disyre.corruption.shapes import rand, randn

#: standard deviation of the coarse noise (Kascenas et al. 2022)
STD: float = 0.2
#: pixels per cell of the coarse grid (their 16 x 16 grid on 128 px slices: about 8.5)
CELL: int = 8


def coarse_noise(shape: tuple[int, ...], generator: torch.Generator,
                 device: torch.device | str = "cpu", *, std: float = STD,
                 cell: int = CELL) -> torch.Tensor:
    """Gaussian noise of std ``std`` on a grid of ``cell``-pixel cells, bilinearly
    interpolated between the grid points, each sample on its own randomly shifted grid.

    Args:
        shape: ``(B, C, H, W)``.
        generator: Source of randomness.
        device: Where to draw.
        std: Standard deviation at the grid points.
        cell: Grid spacing in pixels (1 = white noise).

    Returns:
        float32 noise of ``shape``.

    Example:
        >>> n = coarse_noise((1, 1, 32, 32), torch.Generator().manual_seed(0))
        >>> tuple(n.shape), bool(n.abs().max() < 2)
        ((1, 1, 32, 32), True)
    """
    b, c, h, w = shape
    if cell < 1:
        raise ValueError(f"cell must be >= 1, got {cell}")
    gh, gw = math.ceil(h / cell) + 2, math.ceil(w / cell) + 2  # room for the shift
    grid = randn((b, c, gh, gw), generator, device) * std
    # grid values on pixels 0, cell, 2 cell, ...: every cell exactly ``cell`` pixels wide
    fine = F.interpolate(grid, size=((gh - 1) * cell + 1, (gw - 1) * cell + 1),
                         mode="bilinear", align_corners=True)
    dy = (rand((b,), generator) * cell).long().clamp(max=cell - 1)
    dx = (rand((b,), generator) * cell).long().clamp(max=cell - 1)
    return torch.stack([fine[i, :, int(dy[i]):int(dy[i]) + h, int(dx[i]):int(dx[i]) + w]
                        for i in range(b)])


class CoarseNoise:
    """Coarse-noise corruption of the denoising autoencoder (variant ``dae``)."""

    name = "dae"

    def __init__(self, std: float = STD, cell: int = CELL) -> None:
        self.std = float(std)
        self.cell = int(cell)

    def __repr__(self) -> str:
        return f"CoarseNoise(std={self.std}, cell={self.cell})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Add coarse noise to the foreground of each patch.

        Args:
            x: (B, 1, H, W) clean patches.
            generator: Source of randomness.
            alpha: Scales the noise's std (``alpha * std``; default 1: the recipe's).
            brain: Accepted for the common interface; the foreground is ``x > 0``.

        Returns:
            The :class:`CorruptionResult` (``mask``: the foreground, ``level`` and
            ``severity`` 0: the network is not conditioned on a strength).
        """
        check_patches(x)
        scale = 1.0 if alpha is None else torch.as_tensor(alpha, dtype=torch.float32,
                                                           device=x.device).reshape(-1, 1, 1, 1)
        fg = (x > 0).to(x.dtype)
        noise = coarse_noise(tuple(x.shape), generator, x.device, std=self.std,
                             cell=self.cell).to(x.dtype)
        b = x.shape[0]
        zeros = torch.zeros(b, device=x.device)
        return CorruptionResult(corrupted=x + scale * noise * fg, clean=x, mask=fg,
                                severity=zeros, level=zeros.long(),
                                params={"std": self.std, "cell": self.cell})

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The scan itself: the autoencoder restores it unnoised."""
        return x
