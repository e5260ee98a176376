"""Intensity-bias anomalies: a K-level codebook, random level picking, blurred bias.

For a window ``x``, its shape ``m`` and a codebook, two level selections
(``CorruptionConfig.bias_selection``):

- ``authors`` (default): quantise the *texture-blended* window ``x1`` to the codebook's
  nearest level; pick each level independently with probability ``n_k / (n + 1000)``, where
  ``n_k`` counts the pixels of level ``k`` with ``m > 0`` and ``n`` all of them (1000 is in
  pixels of a 64 px window; it scales with the window's area); if no level is picked, pick
  them ALL. ``b = m * GaussianBlur_sigma=1([level picked])`` (sigma in px at a 64 px window,
  reflecting borders). For shapes of a few hundred to a few thousand pixels the
  "none picked" rule fires about half the time, so half the bias anomalies cover the whole
  shape.
- ``single``: quantise the *clean* window ``x``; pick each level with probability equal to its
  share of the weight of ``m``; if none is picked, pick one (with probability = its share);
  ``b = GaussianBlur_sigma=1(m * [level picked])``.

Then with ``a_bias ~ U(0, 1)`` and a random sign ``x2 = clip(x1 + sign * a_bias * b, 0, 1)``
on brain pixels.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> vol = rng.choice([0.2, 0.5, 0.8], size=(4, 20, 20)) + rng.normal(0, 0.01, (4, 20, 20))
    >>> [round(c, 1) for c in fit_codebook([vol], k=3)]
    [0.2, 0.5, 0.8]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from disyre.config import BIAS_SELECTIONS
from disyre.corruption.shapes import gaussian_blur, rand

log = logging.getLogger(__name__)

#: the authors' codebook (k-means centres of foreground intensities), used when none is fitted
AUTHORS_CODEBOOK: tuple[float, ...] = (0.00565, 0.38284, 0.61224, 0.76921, 0.93855)
#: sigma of the blur applied to the bias mask (px at a 64 px window for ``authors``)
BIAS_SIGMA: float = 1.0
#: pixels added to the shape's pixel count in the authors' picking probability (64 px window)
AUTHORS_PICK_OFFSET: float = 1000.0


def fit_codebook(volumes: Sequence[np.ndarray], k: int = 5, seed: int = 0,
                 max_samples: int = 200_000,
                 masks: Sequence[np.ndarray] | None = None) -> list[float]:
    """Fit a ``k``-level intensity codebook by k-means on foreground intensities.

    Args:
        volumes: Arrays (any shape) in [0, 1] with background exactly 0 (e.g. the training
            volumes, memory-mapped arrays are fine).
        k: Number of levels.
        seed: Seed of the voxel subsample and of k-means.
        max_samples: Foreground voxels used at most (an equal share drawn uniformly from
            each volume, so memory stays bounded for large cohorts).
        masks: Brain masks of the volumes (default: the non-zero voxels).

    Returns:
        ``k`` centres in increasing order. If the volumes hold fewer than ``10 * k`` foreground
        voxels, the authors' codebook :data:`AUTHORS_CODEBOOK` (when ``k == 5``) with a warning.
    """
    from sklearn.cluster import KMeans

    if k < 1:
        raise ValueError("codebook size k must be >= 1")
    rng = np.random.default_rng(seed)
    volumes = list(volumes)
    if masks is not None and len(masks) != len(volumes):
        raise ValueError(f"{len(masks)} masks for {len(volumes)} volumes")
    per_volume = max(1, -(-max_samples // max(len(volumes), 1)))
    fg = []
    for i, v in enumerate(volumes):  # one volume in memory at a time; per_volume voxels kept
        a = np.asarray(v, dtype=np.float32)
        brain = (a > 0) if masks is None else np.asarray(masks[i], bool)
        vals = a[brain & np.isfinite(a)]
        if vals.size > per_volume:
            vals = rng.choice(vals, size=per_volume, replace=False)
        fg.append(vals)
    values = np.concatenate(fg) if fg else np.zeros(0, np.float32)
    if values.size < 10 * k:
        if k != len(AUTHORS_CODEBOOK):
            raise ValueError(f"too few foreground voxels ({values.size}) to fit {k} levels")
        log.warning("too few foreground voxels (%d) to fit a codebook; using the authors' values",
                    values.size)
        return list(AUTHORS_CODEBOOK)
    if values.size > max_samples:
        values = rng.choice(values, size=max_samples, replace=False)
    init = np.quantile(values, (np.arange(k) + 0.5) / k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed)
    km.fit(values.reshape(-1, 1))
    return sorted(float(c) for c in km.cluster_centers_.ravel())


def quantise(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index (int64, same shape as ``x``) of the nearest codebook level (codebook sorted)."""
    mids = ((codebook[1:] + codebook[:-1]) / 2).tolist()
    if len(mids) > 254:
        return torch.bucketize(x.contiguous(), torch.tensor(mids, device=x.device))
    idx = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for mid in mids:  # K - 1 comparisons beat a binary search for a handful of levels
        idx += x > mid
    return idx.long()


def bias_field(x: torch.Tensor, m: torch.Tensor, codebook: torch.Tensor,
               generator: torch.Generator, selection: str = "authors") -> torch.Tensor:
    """Blurred bias mask ``b`` in [0, 1] for windows ``x`` and shapes ``m``.

    Args:
        x: (B, 1, S, S) windows to quantise with ``codebook`` (``authors``: the
            texture-blended window; ``single``: the clean one).
        m: (B, 1, S, S) shape weights.
        codebook: (K,) sorted levels.
        generator: Source of randomness.
        selection: ``authors`` or ``single`` (see the module docstring).

    Returns:
        (B, 1, S, S) bias mask.
    """
    if selection not in BIAS_SELECTIONS:
        raise ValueError(f"unknown bias selection {selection!r}; choose from "
                         f"{list(BIAS_SELECTIONS)}")
    b, K = x.shape[0], codebook.numel()
    idx = quantise(x, codebook).flatten(1)  # (B, N)
    if selection == "authors":
        f = x.shape[-1] / 64.0
        count = torch.zeros(b, K, device=x.device).scatter_add_(
            1, idx, (m.flatten(1) > 0).to(torch.float32))
        p = count / (count.sum(1, keepdim=True) + AUTHORS_PICK_OFFSET * f * f)
        picked = rand((b, K), generator, x.device) < p
        picked = picked | ~picked.any(1, keepdim=True)  # none picked: all of them
        sel = picked.gather(1, idx).to(m.dtype).view_as(m)
        smooth = gaussian_blur(sel, BIAS_SIGMA * f, max_sigma=BIAS_SIGMA * f,
                               padding="reflect", truncate=4.0)
        return (m * smooth).clamp_(0.0, 1.0)
    mf = m.flatten(1).to(torch.float32)
    cov = torch.zeros(b, K, device=x.device).scatter_add_(1, idx, mf)
    share = cov / cov.sum(1, keepdim=True).clamp_min(1e-12)
    u = rand((b, K + 1), generator, x.device)
    picked = u[:, :K] < share
    # at least one level: if none was picked, pick one with probability = its share
    csum = share.cumsum(1)
    one = torch.searchsorted(csum, (u[:, K:] * csum[:, -1:]).contiguous()).clamp(max=K - 1)
    none = ~picked.any(1, keepdim=True)
    picked = picked | (none & (torch.arange(K, device=x.device)[None] == one))
    sel = picked.gather(1, idx).to(m.dtype).view_as(m)
    return gaussian_blur(m * sel, BIAS_SIGMA, max_sigma=BIAS_SIGMA).clamp_(0.0, 1.0)


def apply_bias(x1: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, sign: torch.Tensor,
               brain: torch.Tensor) -> torch.Tensor:
    """``clip(x1 + sign * alpha * b, 0, 1)`` on brain pixels (background stays 0)."""
    w = (sign * alpha).to(x1.dtype)[:, None, None, None]
    return (x1 + w * b).clamp(0.0, 1.0) * brain
