"""Restoration of a batch of images with the procedure that ``inference.method`` names.

The procedures belong to the methods that detect with them and are registered by
:mod:`disyre.methods`: the v2 ensembled single-step score and v1 multi-step restoration
(:mod:`disyre.methods.dag`, docs/method.md#inference), AnoDDPM's walk
(:mod:`disyre.methods.anoddpm`) and the patched DDPM's restoration
(:mod:`disyre.methods.pddpm`) (docs/methods.md).
"""

from __future__ import annotations

import torch
from torch import nn

from disyre.config import InferenceConfig
from disyre.methods import get_restoration
from disyre.methods.base import InferenceInput

__all__ = ["InferenceInput", "restore"]


def restore(
    model: nn.Module,
    x: torch.Tensor,
    cfg: InferenceConfig,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restore a batch with the procedure of ``cfg.method`` (``ensemble`` = v2,
    ``multistep`` = v1, ``walk`` = AnoDDPM, ``patched`` = the patched DDPM, or any other
    registered one).

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

    Raises:
        ConfigError: An unknown procedure, or one that needs another method's corruption.
    """
    return get_restoration(cfg.method).run(model, x, cfg, corruption, generator, channels_last)
