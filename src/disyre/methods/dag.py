"""DISYRE (``dag``): restoration of disentangled synthetic anomalies of graded severity, and
its detection: the v2 ensembled single-step score (``ensemble``) and the v1 multi-step
restoration (``multistep``) (docs/method.md).

The ablations (``fpi``, ``bias``: :mod:`disyre.methods.ablations`) and the noising methods that
restore in one pass (``gaussian``, ``dae``) detect with these procedures too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from disyre.config import (
    MIN_CORRUPTION_WINDOW,
    ConfigError,
    CorruptionConfig,
    InferenceConfig,
    RunConfig,
)
from disyre.corruption.base import Corruption
from disyre.corruption.dag import SyntheticAnomaly
from disyre.corruption.schedule import multistep_levels, severity_of
from disyre.methods.base import (
    InferenceInput,
    Method,
    forward,
    register,
    register_restoration,
    steps_rule,
)

DISYRE_V1 = ("S. Naval Marimont et al., DISYRE: Diffusion-Inspired SYnthetic REstoration for "
             "Unsupervised Anomaly Detection, ISBI 2024, arXiv:2311.15453")
DISYRE_V2 = ("S. Naval Marimont et al., Ensembled Cold-Diffusion Restorations for Unsupervised "
             "Anomaly Detection, MICCAI 2024, arXiv:2407.06635")
#: the default inference of DISYRE and its ablations (the v2 ensemble over the authors' 5 levels)
ENSEMBLE_INFERENCE = {"method": "ensemble", "levels": [0, 20, 40, 60, 80], "steps": 5}


def _net_input(
    x: torch.Tensor,
    level: torch.Tensor,
    corruption: InferenceInput | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if corruption is None:
        return x
    return corruption.inference_input(x, level, generator)


def restore_ensemble(
    model: nn.Module,
    x: torch.Tensor,
    levels: Sequence[int],
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    batch_levels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensembled single-step restoration (DISYRE v2).

    The map is ``mean_k |x - P(x_k, k)|`` where ``x_k`` is the network input at level ``k``
    (``x`` itself for synthetic-anomaly corruptions; noised ``x`` for the Gaussian baseline).

    Args:
        model: Network with ``forward(x (B,1,H,W), level (B,) long) -> x0_hat``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        levels: Corruption levels of the ensemble (see :mod:`disyre.corruption.schedule`).
        corruption: Gives the network input at a level; ``None`` = identity.
        generator: Randomness for noising corruptions.
        precision: ``fp32`` | ``bf16`` | ``auto`` (autocast of the forward pass).
        channels_last: Feed the network channels-last tensors.
        batch_levels: Send the ``B x n`` (image, level) pairs through the network as one
            batch (default); ``False`` loops over the levels (same result, for testing).

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32; the map lies in [0, 1]
        for images in [0, 1] and ``restored`` is the mean prediction over the levels.
    """
    if len(levels) == 0:
        raise ConfigError("inference.levels must hold at least one level")
    b = x.shape[0]
    n = len(levels)
    lv = torch.as_tensor(list(levels), dtype=torch.long, device=x.device)
    if batch_levels:
        # level-major tiling: rows [i*b:(i+1)*b] are level i
        xs = x.repeat(n, 1, 1, 1)
        ls = lv.repeat_interleave(b)
        pred = forward(model, _net_input(xs, ls, corruption, generator), ls, precision,
                        channels_last)
        pred = pred.clamp(0, 1).view(n, b, *x.shape[1:])
    else:
        outs = []
        for k in lv:
            ls = k.expand(b)
            outs.append(forward(model, _net_input(x, ls, corruption, generator), ls,
                                 precision, channels_last).clamp(0, 1))
        pred = torch.stack(outs)
    amap = (x.unsqueeze(0) - pred).abs().mean(0)
    return amap, pred.mean(0)


def restore_multistep(
    model: nn.Module,
    x: torch.Tensor,
    steps: int,
    corruption: InferenceInput | None = None,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step cold-diffusion restoration (DISYRE v1).

    Starting from ``x_T = x`` at the most severe level of
    :func:`~disyre.corruption.schedule.multistep_levels` (level 80, severity about 0.82: the
    most severe level of the v2 ensemble, as the authors'; the network is never queried at
    more severe levels), walking down evenly to level 0 (five steps: the v2 levels
    ``[80, 60, 40, 20, 0]``), each step predicts
    ``x0_hat = P(x_t, t)`` and moves to the next milder level with
    ``x_prev = x0_hat + (a_prev / a_t) (x_t - x0_hat)`` (``a`` = severity, ``a_prev = 0`` after
    the last level), clipped to [0, 1]. The map is the mean of ``|x_t - x0_hat|`` over the steps.

    Args:
        model: Network with ``forward(x, level)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        steps: Number of levels walked.
        corruption: Gives the network input at the first level (noising for ``gaussian``).
        generator: Randomness for noising corruptions.
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32; ``restored`` is the last
        ``x0_hat``.
    """
    levels = multistep_levels(steps)
    b = x.shape[0]
    first = torch.full((b,), levels[0], dtype=torch.long, device=x.device)
    xt = _net_input(x, first, corruption, generator)
    amap = torch.zeros_like(x)
    x0 = x
    for i, t in enumerate(levels):
        lt = torch.full((b,), t, dtype=torch.long, device=x.device)
        x0 = forward(model, xt, lt, precision, channels_last).clamp(0, 1)
        amap += (xt - x0).abs()
        a_t = float(severity_of(t))
        a_prev = float(severity_of(levels[i + 1])) if i + 1 < len(levels) else 0.0
        xt = (x0 + (a_prev / a_t) * (xt - x0)).clamp(0, 1)
    return (amap / len(levels)).clamp(0, 1), x0


def synthetic_anomalies(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                        bank_size: int = 512) -> Corruption:
    """The synthetic anomalies of ``cfg.name`` (``dag``, ``fpi`` or ``bias``), from
    :class:`~disyre.corruption.dag.SyntheticAnomaly`."""
    cb = codebook if codebook is not None else cfg.codebook
    return SyntheticAnomaly(cfg.name, window=cfg.window, codebook=cb, bank_size=bank_size,
                            shapes=cfg.shapes, bias_selection=cfg.bias_selection)


def anomaly_window_rule(cfg: RunConfig) -> list[str]:
    """``corruption.window`` of a synthetic anomaly: at least ``MIN_CORRUPTION_WINDOW``."""
    if cfg.corruption.window >= MIN_CORRUPTION_WINDOW:
        return []
    return [f"corruption.window must be >= {MIN_CORRUPTION_WINDOW}, "
            f"got {cfg.corruption.window!r}"]


def _ensemble(model: nn.Module, x: torch.Tensor, cfg: InferenceConfig,
              corruption: InferenceInput | None, generator: torch.Generator | None,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return restore_ensemble(model, x, cfg.levels, corruption, generator, cfg.precision,
                            channels_last)


def _multistep(model: nn.Module, x: torch.Tensor, cfg: InferenceConfig,
               corruption: InferenceInput | None, generator: torch.Generator | None,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return restore_multistep(model, x, cfg.steps, corruption, generator, cfg.precision,
                             channels_last)


register_restoration("ensemble", _ensemble, steps_rule)
register_restoration("multistep", _multistep, steps_rule)

DAG = register(Method(
    name="dag",
    title="DISYRE v2 (DAG)",
    publication=DISYRE_V2,
    sources=(DISYRE_V2, DISYRE_V1, "docs/method.md"),
    make_corruption=synthetic_anomalies,
    restorations=("ensemble", "multistep"),
    inference=ENSEMBLE_INFERENCE,
    anomaly_window=True,
    codebook=True,
    validate=anomaly_window_rule,
))
