"""The patched DDPM (``pddpm``, Behrendt et al., MIDL 2023): the network restores one noised
box of the slice (:class:`~disyre.corruption.diffusion.PatchedDiffusion`, ``corruption.window``
the box); detection noises each box in turn, predicts it in one step and stitches the boxes
(``patched``) (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from disyre.config import ConfigError, CorruptionConfig, InferenceConfig, RunConfig
from disyre.corruption.base import Corruption
from disyre.corruption.diffusion import PatchedDiffusion
from disyre.methods.base import (
    InferenceInput,
    Method,
    forward,
    register,
    register_restoration,
    steps_rule,
)

PUBLICATION = ("F. Behrendt, D. Bhattacharya, J. Krüger, R. Opfer, A. Schlaefer, Patched "
               "Diffusion Models for Unsupervised Anomaly Detection in Brain MRI, MIDL 2023")


def restore_patched(
    model: nn.Module,
    x: torch.Tensor,
    levels: Sequence[int],
    corruption: PatchedDiffusion,
    generator: torch.Generator | None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patched DDPM's restoration: each box of the grid noised in turn, stitched.

    For each step ``t`` of ``levels`` one simplex noise image is drawn per image; for each box
    of :meth:`~disyre.corruption.diffusion.PatchedDiffusion.boxes` the box alone is noised to
    ``t`` (the rest of the image clean), the network predicts the clean image in one pass,
    and the box's region of that prediction goes into the restoration (no overlap). Boxes
    without any foreground in the batch are not run (their restoration is the image). With
    several steps the restorations are averaged. The map is ``|x - restored|``.

    Args:
        model: Network ``forward(x, t)`` predicting the clean image.
        x: Images ``(B, 1, H, W)`` in [0, 1].
        levels: Diffusion steps (``[499]``: t_test = 500).
        corruption: The ``pddpm`` forward process.
        generator: Randomness of the noise (required).
        precision: Autocast precision of the forward passes.
        channels_last: Feed the network channels-last tensors.

    Returns:
        ``(anomaly_map, restored)``, both ``(B, 1, H, W)`` float32 in [0, 1].
    """
    if generator is None:
        raise ValueError("the patched restoration needs a generator for its noise")
    b, _, h, w = x.shape
    k = corruption.box
    recs = []
    for t in levels:
        eps = corruption.noise(x, generator)
        rec = x.clone()
        lt = torch.full((b,), int(t), dtype=torch.long, device=x.device)
        for y0, x0 in corruption.boxes(h, w):
            if not (x[..., y0:y0 + k, x0:x0 + k] > 0).any():
                continue
            corner = torch.tensor([[y0, x0]], device=x.device).expand(b, 2)
            inp, _ = corruption.noise_box(x, int(t), eps, corner)
            pred = forward(model, inp, lt, precision, channels_last).clamp(0, 1)
            rec[..., y0:y0 + k, x0:x0 + k] = pred[..., y0:y0 + k, x0:x0 + k]
        recs.append(rec)
    restored = torch.stack(recs).mean(0)
    return (x - restored).abs(), restored


def _patched(model: nn.Module, x: torch.Tensor, cfg: InferenceConfig,
             corruption: InferenceInput | None, generator: torch.Generator | None,
             channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(corruption, PatchedDiffusion):
        raise ConfigError("inference.method=patched needs the pddpm corruption")
    return restore_patched(model, x, cfg.levels, corruption, generator, cfg.precision,
                           channels_last)


def patched_diffusion(cfg: CorruptionConfig, codebook: Sequence[float] | None = None, *,
                      bank_size: int = 512) -> Corruption:
    """The patched forward process, ``cfg.window`` the box side."""
    return PatchedDiffusion(box=cfg.window, lattice=cfg.simplex)


def box_rule(cfg: RunConfig) -> list[str]:
    """The noised box (``corruption.window``) fits in the training patch."""
    w, p = cfg.corruption.window, cfg.sampler.patch_size
    if 1 <= w <= p:
        return []
    return [f"corruption.window must be in [1, sampler.patch_size={p}] for pddpm (the noised "
            f"box), got {w!r}"]


register_restoration("patched", _patched, steps_rule)

#: the patched DDPM noises each box to step 499 (t_test = 500) and predicts it in one step
PDDPM = register(Method(
    name="pddpm",
    title="patched DDPM (simplex)",
    publication=PUBLICATION,
    sources=(PUBLICATION, "the authors' public code (no licence file: facts only)",
             "F. Behrendt et al., arXiv:2312.04215 (the same group's follow-up)"),
    make_corruption=patched_diffusion,
    restorations=("patched",),
    inference={"method": "patched", "levels": [499]},
    own_inference=True,
    # the public code's IXI config has every augmentation flag off; no foreground weighting
    augment=False,
    foreground_weighting=False,
    # x0 prediction, L1 on the noised box only (the clean context is not in the loss)
    loss="l1",
    loss_region="box",
    # trained on whole slices with one box of detection's grid, as published
    whole_slices=True,
    max_level=999,
    inference_input=True,
    validate=box_rule,
))
