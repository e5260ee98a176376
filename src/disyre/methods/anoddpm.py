"""AnoDDPM (``anoddpm``, Wyatt et al., CVPR Workshops 2022): the network predicts simplex noise
on a 1000-step linear schedule (:class:`~disyre.corruption.diffusion.SimplexDiffusion`);
detection noises the scan to one step and walks back (``walk``) (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from disyre.config import ConfigError, CorruptionConfig, InferenceConfig
from disyre.corruption.base import Corruption
from disyre.corruption.diffusion import SimplexDiffusion, from_signed
from disyre.methods.base import InferenceInput, Method, forward, register, register_restoration

PUBLICATION = ("J. Wyatt, A. Leach, S. M. Schmon, C. G. Willcocks, AnoDDPM: Anomaly Detection "
               "with Denoising Diffusion Probabilistic Models using Simplex Noise, CVPR "
               "Workshops 2022")


def walk_steps(start: int, steps: int) -> list[int]:
    """Diffusion steps of a walk of ``steps`` network passes from step ``start`` down to 0,
    evenly strided (``steps = start + 1``: every step, the full walk).

    Example:
        >>> walk_steps(249, 250)[:3], walk_steps(249, 5)
        ([249, 248, 247], [249, 187, 124, 62, 0])
    """
    if not 1 <= steps <= start + 1:
        raise ConfigError(f"inference.steps must lie in [1, {start + 1}] for a walk from "
                          f"step {start}, got {steps}")
    if steps == 1:
        return [start]
    return sorted({round(v) for v in torch.linspace(start, 0, steps).tolist()}, reverse=True)


def restore_walk(
    model: nn.Module,
    x: torch.Tensor,
    start: int,
    steps: int,
    corruption: SimplexDiffusion,
    generator: torch.Generator | None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AnoDDPM's partial diffusion: noise the scan to step ``start`` in one shot, walk back.

    Each of the :func:`walk_steps` predicts the noise, derives the clean image from it
    (clipped to [-1, 1]) and takes the ancestral step to the next step walked
    (:meth:`~disyre.corruption.diffusion.SimplexDiffusion.step`, fresh simplex noise); the
    last step lands on the clean image. The map is ``|x - restored|`` (the publication's
    squared error ranks the voxels the same).

    Args:
        model: Noise-predicting network ``forward(x_t, t)``.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        start: The step the scan is noised to (249: lambda = 250).
        steps: Network passes (``start + 1``: the full walk).
        corruption: The ``anoddpm`` forward process.
        generator: Randomness of the noise (required).
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32 in [0, 1].
    """
    if generator is None:
        raise ValueError("the walk needs a generator for its noise")
    ts = walk_steps(start, steps)
    b = x.shape[0]
    xt = corruption.inference_input(x, ts[0], generator)
    for i, t in enumerate(ts):
        lt = torch.full((b,), t, dtype=torch.long, device=x.device)
        eps = forward(model, xt, lt, precision, channels_last)
        x0 = corruption.x0_from_eps(xt, t, eps)
        xt = corruption.step(x0, xt, t, ts[i + 1] if i + 1 < len(ts) else -1, generator)
    restored = from_signed(xt).clamp(0, 1)
    return (x - restored).abs(), restored


def _walk(model: nn.Module, x: torch.Tensor, cfg: InferenceConfig,
          corruption: InferenceInput | None, generator: torch.Generator | None,
          channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(corruption, SimplexDiffusion):
        raise ConfigError("inference.method=walk needs the anoddpm corruption")
    return restore_walk(model, x, cfg.levels[0], cfg.steps, corruption, generator,
                        cfg.precision, channels_last)


def walk_rule(f: InferenceConfig) -> list[str]:
    """One level (the step the scan is noised to) and at most one pass per step below it."""
    bad = []
    if len(f.levels) != 1:
        bad.append("inference.levels must be one level for method=walk (the step the scan is "
                   f"noised to), got {f.levels!r}")
    start = f.levels[0] if f.levels else 0
    if not 1 <= f.steps <= start + 1:
        bad.append(f"inference.steps must be in [1, {start + 1}] (network passes of the walk "
                   f"from step {start}), got {f.steps!r}")
    return bad


def simplex_diffusion(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                      bank_size: int = 512) -> Corruption:
    """AnoDDPM's forward process (:class:`~disyre.corruption.diffusion.SimplexDiffusion`)."""
    return SimplexDiffusion(lattice=cfg.simplex)


register_restoration("walk", _walk, walk_rule)

#: AnoDDPM noises the scan to step 249 (lambda = 250) and walks back in 25 strided steps
#: (``inference.steps=250`` is the full walk)
ANODDPM = register(Method(
    name="anoddpm",
    title="AnoDDPM (simplex DDPM, strided walk)",
    publication=PUBLICATION,
    sources=(PUBLICATION, "the authors' public code (MIT; facts only)"),
    make_corruption=simplex_diffusion,
    restorations=("walk",),
    inference={"method": "walk", "levels": [249], "steps": 25},
    own_inference=True,
    # neither the paper nor the authors' code augments or weights maps by foreground
    augment=False,
    foreground_weighting=False,
    target="noise",
    max_level=999,
    inference_input=True,
))
