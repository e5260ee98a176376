"""The corruption-level schedule: ONE convention for training, sampling and inference.

The table follows the authors' figures: T = 100, betas linear from 1e-3 to 0.2,
``s_t = sqrt(prod_{i<=t}(1 - beta_i))`` (0.9995 at t=0 down to 0.0045 at t=99).

**Convention of this project: the level ``k`` grows with severity.** ``severity(k)`` is the
table read backwards, ``severity(k) = s_{T-1-k}``: level 0 is the mildest corruption
(severity 0.0045) and level 99 the most severe (0.9995). A synthetic anomaly of severity
``a`` in [0, 1] gets the level whose severity is closest to ``a``. The network is conditioned
on ``k``; the v1 sampler walks ``k`` downwards; the v2 ensemble uses fixed ``k`` values. (The
authors' code indexes the network by ``t`` but walks its sampler on the flipped table; here
both read this one table.)

For the Gaussian (DDPM-style) baseline the same severity is the noise standard deviation:
``x_k = sqrt(1 - a_k^2) * x0 + a_k * eps``.

Example:
    >>> import torch
    >>> level_of(torch.tensor([0.0045, 0.033, 0.15, 0.44, 0.82])).tolist()
    [0, 20, 40, 60, 80]
    >>> round(float(severity_of(torch.tensor(99))), 4)
    0.9995
"""

from __future__ import annotations

import torch

T: int = 100
BETA_START: float = 1e-3
BETA_END: float = 0.2

#: The authors' 5-level v2 ensemble (severities about 0.0045, 0.033, 0.15, 0.44, 0.82).
ENSEMBLE_LEVELS_5: tuple[int, ...] = (0, 20, 40, 60, 80)
#: The 4 levels of the authors' notebook (severities about 0.0045, 0.051, 0.27, 0.73).
ENSEMBLE_LEVELS_4: tuple[int, ...] = (0, 25, 50, 75)


def _signal_table() -> torch.Tensor:
    betas = torch.linspace(BETA_START, BETA_END, T, dtype=torch.float64)
    return torch.sqrt(torch.cumprod(1.0 - betas, dim=0))


#: severity of each level, increasing with the level (float32, shape (T,)).
SEVERITIES: torch.Tensor = _signal_table().flip(0).to(torch.float32)


def severity_of(level: torch.Tensor | int) -> torch.Tensor:
    """Severity in (0, 1) of integer level(s) ``level`` (any shape, any device)."""
    level = torch.as_tensor(level)
    if level.dtype.is_floating_point:
        raise TypeError("levels are integers")
    if (level < 0).any() or (level >= T).any():
        raise ValueError(f"levels must lie in [0, {T - 1}]")
    return SEVERITIES.to(level.device)[level.long()]


def level_of(severity: torch.Tensor | float) -> torch.Tensor:
    """Level (int64) whose severity is closest to ``severity`` (any shape, any device)."""
    a = torch.as_tensor(severity, dtype=torch.float32)
    table = SEVERITIES.to(a.device)
    return (a.unsqueeze(-1) - table).abs().argmin(dim=-1)


#: The first (most severe) level of the v1 walk: the most severe level of the v2 ensemble
#: (severity about 0.82). The authors' network is never queried at more severe levels.
MULTISTEP_START: int = max(ENSEMBLE_LEVELS_5)


def multistep_levels(steps: int, start: int = MULTISTEP_START) -> list[int]:
    """Levels of a v1 restoration with ``steps`` steps, most severe first.

    Evenly spaced from ``start`` (default level 80, severity about 0.82) down to level 0: five
    steps walk exactly the v2 ensemble's severities, ``[80, 60, 40, 20, 0]``.

    Example:
        >>> multistep_levels(5), multistep_levels(3), multistep_levels(1)
        ([80, 60, 40, 20, 0], [80, 40, 0], [80])
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if not 0 <= start < T:
        raise ValueError(f"start level must lie in [0, {T - 1}], got {start}")
    if steps == 1:
        return [start]
    return sorted({round(x) for x in torch.linspace(start, 0, steps).tolist()}, reverse=True)
