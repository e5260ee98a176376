"""What each corruption does to one slice at increasing severity (tensors for a figure).

Example:
    >>> import torch
    >>> x = torch.zeros(3, 1, 96, 96); x[:, :, 8:88, 12:84] = torch.rand(3, 1, 80, 72) + 0.1
    >>> rows = gallery_rows(x.clamp(max=1), seed=0, alphas=(0.0, 0.5, 1.0))
    >>> list(rows), tuple(rows["dag"].shape)
    (['dag', 'fpi', 'bias', 'gaussian', 'dag mask'], (3, 96, 96))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from disyre.corruption.dag import SyntheticAnomaly
from disyre.corruption.gaussian import GaussianNoise
from disyre.runtime import make_generator

#: severities shown in the columns of the gallery
GALLERY_ALPHAS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def gallery_rows(slices: torch.Tensor, seed: int = 0,
                 alphas: Sequence[float] = GALLERY_ALPHAS,
                 codebook: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Corrupt ``slices[0]`` by each variant at each fixed alpha.

    Every column reuses the same seed, so one variant shows the same anomaly (location,
    shape, donor, bias sign) growing in strength from left to right.

    Args:
        slices: (N, 1, H, W) slices in [0, 1], background 0, ``H, W >= 64``; slice 0 is shown,
            the others serve as texture donors (with ``N = 1`` the donor is slice 0 itself).
        seed: Seed of every column.
        alphas: Fixed strengths (texture and bias alphas; for ``gaussian`` the severity).
        codebook: Intensity codebook of the bias anomaly (default: the authors').

    Returns:
        ``{"dag", "fpi", "bias", "gaussian", "dag mask"}`` -> (len(alphas), H, W) images.
    """
    out: dict[str, list[torch.Tensor]] = {k: [] for k in
                                          ("dag", "fpi", "bias", "gaussian", "dag mask")}
    for a in alphas:
        for name in ("dag", "fpi", "bias"):
            res = SyntheticAnomaly(name, codebook=codebook, bank_size=0)(
                slices, make_generator(seed), alpha=float(a))
            out[name].append(res.corrupted[0, 0])
            if name == "dag":
                out["dag mask"].append(res.mask[0, 0])
        res = GaussianNoise()(slices, make_generator(seed), alpha=float(a))
        out["gaussian"].append(res.corrupted[0, 0])
    return {k: torch.stack(v) for k, v in out.items()}
