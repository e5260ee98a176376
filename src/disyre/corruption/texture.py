"""Foreign patch interpolation: texture from another image blended into the anomaly shape.

``x1 = x * (1 - a_tex * m) + f * a_tex * m`` with ``f`` a brain patch of another image
(another image of the batch, or a :class:`PatchBank` of patches from earlier batches, i.e.
mostly other subjects). The DAG variant first rescales ``f`` to the min-max range of ``x``
inside ``m``; plain FPI blends ``f`` as it is.

Example:
    >>> import torch
    >>> x = torch.full((2, 1, 8, 8), 0.5); f = torch.rand(2, 1, 8, 8); m = torch.ones_like(x)
    >>> y = blend(x, f, m, torch.tensor([0.0, 1.0]))
    >>> bool(torch.equal(y[0], x[0])), bool(torch.equal(y[1], f[1]))
    (True, True)
"""

from __future__ import annotations

import torch

from disyre.corruption.shapes import rand


class PatchBank:
    """Ring buffer of foreign texture patches (the authors keep 512).

    Args:
        capacity: Number of patches kept; the oldest are replaced first.

    Example:
        >>> bank = PatchBank(capacity=4)
        >>> bank.add(torch.rand(6, 1, 8, 8)); len(bank)
        4
    """

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1:
            raise ValueError("PatchBank capacity must be >= 1")
        self.capacity = capacity
        self._data: torch.Tensor | None = None
        self._count = 0
        self._next = 0

    def __len__(self) -> int:
        return self._count

    def add(self, patches: torch.Tensor) -> None:
        """Store (N, 1, S, S) patches (a detached copy), overwriting the oldest when full."""
        patches = patches.detach()
        if self._data is None or self._data.shape[1:] != patches.shape[1:] \
                or self._data.device != patches.device:
            self._data = torch.zeros((self.capacity, *patches.shape[1:]), dtype=patches.dtype,
                                     device=patches.device)
            self._count = self._next = 0
        n = patches.shape[0]
        if n >= self.capacity:
            patches, n = patches[-self.capacity:], self.capacity
        idx = (self._next + torch.arange(n, device=patches.device)) % self.capacity
        self._data[idx] = patches
        self._next = (self._next + n) % self.capacity
        self._count = min(self.capacity, self._count + n)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str
               ) -> torch.Tensor:
        """``n`` stored patches drawn uniformly with replacement, on ``device``."""
        if self._data is None or self._count == 0:
            raise RuntimeError("PatchBank is empty")
        idx = (rand((n,), generator, self._data.device) * self._count).floor().long()
        return self._data[idx.clamp(max=self._count - 1)].to(device)


def donor_index(batch: int, generator: torch.Generator, device: torch.device | str
                ) -> torch.Tensor:
    """For each sample, the index of a different sample of the batch (itself if ``batch`` is 1).

    Each donor is drawn uniformly among the other ``batch - 1`` samples.
    """
    i = torch.arange(batch, device=device)
    if batch == 1:
        return i
    off = 1 + (rand((batch,), generator, device) * (batch - 1)).floor().long().clamp(max=batch - 2)
    return (i + off) % batch


def match_range(f: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Rescale ``f`` linearly so that its min-max under ``m > 0`` is that of ``x`` there.

    Args:
        f: (B, 1, S, S) foreign patches.
        x: (B, 1, S, S) target windows.
        m: (B, 1, S, S) shape weights.

    Returns:
        The rescaled ``f`` (samples with an empty ``m`` are returned unchanged).
    """
    inside = (m > 0).flatten(1)
    big = torch.finfo(f.dtype).max
    ff, xf = f.flatten(1), x.flatten(1)
    fmin = torch.where(inside, ff, big).amin(1)
    fmax = torch.where(inside, ff, -big).amax(1)
    xmin = torch.where(inside, xf, big).amin(1)
    xmax = torch.where(inside, xf, -big).amax(1)
    empty = ~inside.any(1)
    fmin, fmax = torch.where(empty, 0.0, fmin), torch.where(empty, 1.0, fmax)
    xmin, xmax = torch.where(empty, 0.0, xmin), torch.where(empty, 1.0, xmax)
    scale = (xmax - xmin) / (fmax - fmin).clamp_min(1e-6)
    out = (f - fmin[:, None, None, None]) * scale[:, None, None, None] + xmin[:, None, None, None]
    return out.clamp(xmin[:, None, None, None], xmax[:, None, None, None])


def blend(x: torch.Tensor, f: torch.Tensor, m: torch.Tensor, alpha: torch.Tensor
          ) -> torch.Tensor:
    """``x * (1 - alpha * m) + f * alpha * m`` with a per-sample ``alpha`` (B,)."""
    w = alpha.to(x.dtype)[:, None, None, None] * m
    return x * (1 - w) + f * w
