"""Training patch sampler (disyre.data.sampler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disyre.config import SamplerConfig
from disyre.data.sampler import PatchSampler, slice_boxes


def _volumes(brain_volume):
    a = brain_volume((12, 40, 50), seed=1)
    a /= a.max()
    b = brain_volume((9, 20, 24), seed=2)  # smaller than the patch: needs padding
    b /= b.max()
    c = np.zeros((8, 48, 48), np.float32)  # brain in two slices; slice 4: two distant blobs
    c[3, 2:10, 2:10] = 0.7
    c[4, 30:34, 30:34] = 0.4
    c[4, 44:46, 2:4] = 0.4
    return [a, b, c]


def test_slice_boxes_are_the_brain_extent(brain_volume):
    vol = _volumes(brain_volume)[2]
    b = slice_boxes(vol)
    assert b[:, 0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert b[3].tolist() == [1, 2, 9, 2, 9] and b[4].tolist() == [1, 30, 45, 2, 33]


def test_shapes_values_and_brain_content(brain_volume):
    vols = _volumes(brain_volume)
    cfg = SamplerConfig(n_volumes=3, n_slices=5, patch_size=32)
    s = PatchSampler(vols, cfg, seed=0)
    for _ in range(20):
        x = s.sample()
        assert x.shape == (15, 1, 32, 32) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert (x.flatten(1) > 0).any(dim=1).all()  # every patch contains brain
    # a volume smaller than the patch is zero-padded around its whole slice box
    only_b = PatchSampler([vols[1]], SamplerConfig(1, 4, 32), seed=1).sample_numpy()
    per_slice = set((vols[1] > 0).sum(axis=(1, 2)).tolist())
    for p in only_b[:, 0]:
        assert (p > 0).sum() in per_slice  # the slice's whole brain is inside the patch
        assert (p == 0).mean() > 0.5


def test_patch_values_come_from_the_volume(brain_volume):
    vols = _volumes(brain_volume)
    s = PatchSampler([vols[0]], SamplerConfig(1, 8, 16), seed=5)
    x = s.sample_numpy()
    for p in x[:, 0]:
        vals = p[p > 0]
        assert np.isin(vals, vols[0]).all()
        assert (p > 0).mean() > 0.2  # inside the box of an ellipsoid: mostly brain


def test_disjoint_brain_parts_are_found(brain_volume):
    vol = _volumes(brain_volume)[2]
    s = PatchSampler([vol], SamplerConfig(1, 64, 8), seed=0)
    x = s.sample_numpy()
    assert (x.reshape(64, -1) > 0).any(axis=1).all()
    vals = np.unique(x)
    assert np.isclose(vals, 0.7).any() and np.isclose(vals, 0.4).any()


def test_determinism_per_seed_and_generator(brain_volume):
    vols = _volumes(brain_volume)
    cfg = SamplerConfig(2, 3, 24)
    a = [PatchSampler(vols, cfg, seed=7).sample() for _ in range(2)]
    assert torch.equal(a[0], a[1])
    s1, s2 = PatchSampler(vols, cfg, seed=7), PatchSampler(vols, cfg, seed=8)
    assert not torch.equal(s1.sample(), s2.sample())
    g = np.random.default_rng(7)
    assert torch.equal(PatchSampler(vols, cfg, generator=g).sample(), a[0])
    stream = iter(PatchSampler(vols, cfg, seed=7))
    assert torch.equal(next(stream), a[0]) and not torch.equal(next(stream), a[0])


def test_memory_mapped_volumes(brain_volume, tmp_path):
    vol = _volumes(brain_volume)[0]
    np.save(tmp_path / "v.npy", vol)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    x = PatchSampler([mm], SamplerConfig(1, 4, 32), seed=3).sample()
    y = PatchSampler([vol], SamplerConfig(1, 4, 32), seed=3).sample()
    assert torch.equal(x, y)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least one volume"):
        PatchSampler([], SamplerConfig())
    with pytest.raises(ValueError, match="volume 1: no slice contains brain"):
        PatchSampler([np.ones((2, 4, 4)), np.zeros((2, 4, 4))], SamplerConfig())
    with pytest.raises(ValueError, match=r"volume 0: expected \(d, h, w\)"):
        PatchSampler([np.ones((4, 4))], SamplerConfig())
