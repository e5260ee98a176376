"""The cached brain mask is the brain for training: sampler, augmentation, corruption and the
intensity signature (scaling can map the darkest brain voxels to exactly 0)."""

from __future__ import annotations

import numpy as np
import torch

from disyre.config import RunConfig, SamplerConfig
from disyre.data.sampler import PatchSampler
from disyre.training.batches import BatchSource
from disyre.training.loop import describe_training_data


def _dark_brains(n: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Volumes whose brain mask is an ellipsoid; the lower half of every slice's brain and
    the first three slices entirely are exactly 0 (dark tissue scaled to 0)."""
    rng = np.random.default_rng(0)
    vols, masks = [], []
    for _ in range(n):
        zz, yy, xx = np.meshgrid(np.linspace(-1, 1, 10), np.linspace(-1, 1, 48),
                                 np.linspace(-1, 1, 48), indexing="ij")
        brain = zz ** 2 / 1.2 + yy ** 2 / 0.8 + xx ** 2 / 0.8 < 1
        vol = np.where(brain, 0.3 + 0.6 * rng.random(brain.shape), 0).astype(np.float32)
        vol[:, 24:] = 0.0
        vol[:3] = 0.0
        vols.append(vol)
        masks.append(brain)
    return vols, masks


def test_sampler_takes_brain_from_the_mask() -> None:
    vols, masks = _dark_brains()
    cfg = SamplerConfig(n_volumes=3, n_slices=8, patch_size=32)
    s = PatchSampler(vols, cfg, seed=0, masks=masks)
    seen_dark_slice = 0
    for _ in range(20):
        x, b = s.sample_pair()
        assert x.shape == b.shape and b.dtype == torch.bool
        assert b.flatten(1).any(1).all()  # every patch holds brain
        assert (x[~b] == 0).all()
        seen_dark_slice += int(((x.flatten(1) == 0).all(1) & b.flatten(1).any(1)).sum())
    # slices whose brain is all 0 are brain slices too (a third of the brain slices)
    assert seen_dark_slice > 0.15 * 20 * 24
    plain = PatchSampler(vols, cfg, seed=0)
    assert all((plain.sample().flatten(1) > 0).any(1).all() for _ in range(5))


def test_training_batches_use_the_mask_for_corruption_and_augmentation() -> None:
    """Anomalies land in zero-valued brain too: with ``x > 0`` as the brain they never can
    (the shape is cut to the brain, and the bias and texture act only under it)."""
    vols, masks = _dark_brains()
    cfg = RunConfig()
    cfg.sampler = SamplerConfig(n_volumes=3, n_slices=1, patch_size=32)
    cfg.corruption.window = 16
    in_dark = total = 0
    for src in (BatchSource(vols, cfg, masks=masks), BatchSource(vols, cfg)):
        in_dark, total = 0, 0
        for step in range(40):
            s = src.shard(seed=0, step=step, index=0)
            assert s.clean.shape == (3, 1, 32, 32)
            changed = (s.corrupted - s.clean).abs() > 1e-6
            in_dark += int((changed & (s.clean == 0)).sum())
            total += int(changed.sum())
        assert total > 0
        if src.masks is not None:
            assert in_dark > 0.1 * total
        else:
            assert in_dark == 0


def test_intensity_signature_counts_zero_valued_brain() -> None:
    vols, masks = _dark_brains()
    with_mask = describe_training_data(vols, masks=masks)["intensity_quantiles"]
    without = describe_training_data(vols)["intensity_quantiles"]
    assert with_mask[0] == 0.0 and with_mask[1] == 0.0  # half the brain is 0
    assert without[0] > 0.3  # the non-zero voxels only
