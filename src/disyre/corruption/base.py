"""The corruption interface shared by training and inference.

A corruption turns clean patches ``x`` (B, 1, H, W) in [0, 1] into a
:class:`CorruptionResult` holding the corrupted patches, the clean target, an anomaly-weight
mask, the severity of each sample and its level (``schedule.level_of``).

Example:
    >>> import torch
    >>> from disyre.config import CorruptionConfig
    >>> from disyre.corruption.dag import SyntheticAnomaly
    >>> corr = SyntheticAnomaly("fpi")
    >>> x = torch.zeros(2, 1, 64, 64); x[:, :, 8:56, 8:56] = 0.5
    >>> res = corr(x, torch.Generator().manual_seed(0))
    >>> tuple(res.corrupted.shape), res.level.dtype
    ((2, 1, 64, 64), torch.int64)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


def check_patches(x: torch.Tensor) -> None:
    """Refuse anything but a batch of single-channel patches ``(B, 1, H, W)``."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected patches of shape (B, 1, H, W), got {tuple(x.shape)}")


@dataclass
class CorruptionResult:
    """One corrupted batch.

    Attributes:
        corrupted: (B, 1, H, W) network input.
        clean: (B, 1, H, W) restoration target.
        mask: (B, 1, H, W) anomaly weight in [0, 1] (where the anomaly was placed, whatever
            its strength; all ones for ``gaussian``).
        severity: (B,) float severity in [0, 1].
        level: (B,) int64 level, ``schedule.level_of(severity)``.
        params: The random draws behind the batch (e.g. ``a_tex``, ``a_bias``, ``top``,
            ``left``), for inspection and tests.
        target: What the network learns to output when it is not ``clean``: the noise, for
            the noise-predicting ``anoddpm``; ``None`` = ``clean``.
    """

    corrupted: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor
    severity: torch.Tensor
    level: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)
    target: torch.Tensor | None = None


@runtime_checkable
class Corruption(Protocol):
    """What training and inference need from a corruption."""

    name: str

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        """Corrupt clean patches ``x`` (B, 1, H, W); ``alpha`` fixes the strengths; ``brain``
        is their brain mask (default: the non-zero pixels)."""
        ...

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The network input at test time for ``level`` (identity for synthetic anomalies)."""
        ...
