"""The Gaussian-noise baseline: classic DDPM forward noising on the same level table.

Level ``k ~ U{0, ..., 99}``, severity ``a_k = schedule.severity_of(k)`` and
``x_k = sqrt(1 - a_k^2) * x0 + a_k * eps`` over the whole patch, background included (as a
DDPM does). The result is **not clipped**: it leaves [0, 1] and the background is noise too;
the network's target stays the clean patch, whose background is 0. At test time
:meth:`GaussianNoise.inference_input` noises the input at the requested level.

Example:
    >>> import torch
    >>> x = torch.rand(4, 1, 32, 32)
    >>> res = GaussianNoise()(x, torch.Generator().manual_seed(0))
    >>> bool(torch.equal(res.severity, schedule.severity_of(res.level)))
    True
"""

from __future__ import annotations

import torch

from disyre.corruption import schedule
from disyre.corruption.base import CorruptionResult, check_patches
from disyre.corruption.shapes import rand, randn


def noise(x: torch.Tensor, severity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``sqrt(1 - a^2) * x + a * eps`` with per-sample ``a`` (B,) and ``eps ~ N(0, 1)``."""
    a = severity.to(device=x.device, dtype=x.dtype)[:, None, None, None]
    eps = randn(tuple(x.shape), generator, x.device).to(x.dtype)
    return torch.sqrt(1 - a * a) * x + a * eps


class GaussianNoise:
    """DDPM-style noising baseline (variant ``gaussian``)."""

    name = "gaussian"

    def __repr__(self) -> str:
        return "GaussianNoise()"

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Noise each patch at a random level.

        Args:
            x: (B, 1, H, W) clean patches.
            generator: Source of randomness.
            alpha: Fix the severity (scalar or (B,)): the level is ``level_of(alpha)`` and the
                noise that level's severity. Default: level uniform in [0, T - 1].
            brain: Accepted for the common interface; the whole patch is noised.

        Returns:
            The :class:`CorruptionResult` (``mask`` all ones, ``severity`` the table's value).
        """
        check_patches(x)
        b = x.shape[0]
        if alpha is None:
            u = rand((b,), generator, x.device)
            level = (u * schedule.T).floor().long().clamp(max=schedule.T - 1)
        else:
            a = torch.as_tensor(alpha, dtype=torch.float32, device=x.device).expand(b)
            if (a < 0).any() or (a > 1).any():
                raise ValueError("alpha must lie in [0, 1]")
            level = schedule.level_of(a)
        severity = schedule.severity_of(level)
        return CorruptionResult(
            corrupted=noise(x, severity, generator), clean=x, mask=torch.ones_like(x),
            severity=severity, level=level, params={},
        )

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` noised at ``level`` (scalar or (B,)); a generator is required."""
        if generator is None:
            raise ValueError("the gaussian corruption needs a generator to noise its input")
        lv = torch.as_tensor(level, device=x.device).long().expand(x.shape[0])
        return noise(x, schedule.severity_of(lv), generator)
