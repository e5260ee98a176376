"""Intensity normalisation and crop / uncrop (disyre.data.intensity)."""

from __future__ import annotations

import numpy as np
import pytest

from disyre.config import IntensityConfig
from disyre.data.intensity import foreground_bbox, normalize, uncrop


def _brain_scaling() -> IntensityConfig:
    return IntensityConfig(scaling="brain")


def test_scaling_clipping_background_and_crop(brain_volume):
    vol = brain_volume((12, 14, 10))
    vol[0, 0, 0] = -5.0  # a negative background voxel: clipped, stays background
    pre = normalize(vol, cfg=_brain_scaling())
    pos = np.clip(vol, 0, None)
    fg = pos[pos > 0]
    assert pre.low == pytest.approx(np.percentile(fg, 0))
    assert pre.high == pytest.approx(np.percentile(fg, 98))
    assert pre.image.dtype == np.float32
    assert pre.image.min() == 0.0 and pre.image.max() == 1.0
    assert not pre.image[~pre.mask].any()  # background exactly 0
    # about 2 % of the brain saturates at 1
    assert 0.005 < (pre.image[pre.mask] == 1.0).mean() < 0.05
    # the crop is the foreground's box, and nothing of the brain is lost
    assert pre.mask.sum() == (pos > 0).sum()
    bb = foreground_bbox(pos > 0)
    assert pre.bbox == bb and pre.image.shape == pos[bb].shape
    assert pre.image.size < vol.size and pre.bbox[0].start > 0


def test_uncrop_is_exact_inverse_and_margin(brain_volume):
    vol = brain_volume((12, 14, 10))
    pre = normalize(vol, cfg=IntensityConfig(crop_margin=2, upper_percentile=99.5,
                                             scaling="brain"))
    full = uncrop(pre.image, pre)
    assert full.shape == vol.shape
    np.testing.assert_array_equal(full[pre.bbox], pre.image)
    assert not np.delete(full.ravel(), np.flatnonzero(vol.ravel() > 0)).any()
    np.testing.assert_array_equal(uncrop(pre.mask, pre), vol > 0)
    inner = foreground_bbox(vol > 0)
    for s, i in zip(pre.bbox, inner, strict=True):
        assert s.start == max(i.start - 2, 0)
    with pytest.raises(ValueError, match="does not match the crop"):
        uncrop(np.zeros((2, 2, 2)), pre)


def test_given_brain_mask_zeroes_outside(brain_volume):
    vol = brain_volume((12, 14, 10)) + 1.0  # non-zero everywhere: skull not stripped
    mask = np.zeros(vol.shape, bool)
    mask[3:9, 4:10, 2:8] = True
    pre = normalize(vol, mask)
    assert pre.image.shape == (6, 6, 6) and pre.mask.all()
    assert (pre.image > 0).mean() > 0.9


def test_constant_foreground_and_empty_volume():
    vol = np.zeros((4, 5, 6), np.float32)
    vol[1:3, 1:4, 2:5] = 7.0
    with pytest.warns(UserWarning, match="constant foreground"):
        pre = normalize(vol, cfg=_brain_scaling())
    assert (pre.image == 1.0).all()
    with pytest.raises(ValueError, match="empty foreground"):
        normalize(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="percentiles"):
        normalize(vol, cfg=IntensityConfig(lower_percentile=50, upper_percentile=10))
    with pytest.raises(ValueError, match="scaling"):
        normalize(vol, cfg=IntensityConfig(scaling="nope"))
    # whole-volume scaling of a constant brain: divided by that constant
    assert (normalize(vol).image == 1.0).all()


def _head(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A skull-stripped 'head' on a grid of ``shape`` voxels: an ellipsoid brain of about 16 %
    of the grid with a smooth intensity gradient and noise, zero outside."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape],
                        indexing="ij")
    r2 = sum((g / 0.67) ** 2 for g in grids)
    inside = r2 < 1
    vol = np.zeros(shape, np.float32)
    vol[inside] = (300 + 400 * (1 - r2[inside]) + 80 * rng.standard_normal(inside.sum())
                   ).astype(np.float32)
    return vol


def test_whole_volume_scaling_is_the_authors_percentile_on_their_grid():
    """Default scaling: the 98th percentile of the whole 240 x 240 x 155 (1 mm) volume,
    background included, exactly as numpy computes it on that volume; ~10 % of the brain
    saturates (the brain-voxel 98th percentile would saturate 2 %)."""
    vol = _head((155, 240, 240))
    whole_p98 = float(np.percentile(np.clip(vol, 0, None), 98))
    pre = normalize(vol)  # voxel size: 1 mm by default
    assert pre.low == 0.0
    assert pre.high == pytest.approx(whole_p98, rel=1e-6)
    sat = float((pre.image[pre.mask] == 1.0).mean())
    n_brain = int(pre.mask.sum())
    assert sat == pytest.approx(0.02 * vol.size / n_brain, rel=0.02)
    assert 0.08 < sat < 0.16
    # no lower percentile: the intensities are only divided (the darkest brain voxel stays > 0)
    dark = np.unravel_index(np.argmin(np.where(pre.mask, pre.image, np.inf)), pre.image.shape)
    assert pre.image[dark] == pytest.approx(pre.image.dtype.type(
        max(vol[pre.bbox][dark], 0) / whole_p98), rel=1e-5)
    # the project's brain scaling on the same volume: 2 % saturates
    legacy = normalize(vol, cfg=IntensityConfig(scaling="brain"))
    assert float((legacy.image[legacy.mask] == 1.0).mean()) == pytest.approx(0.02, abs=0.002)


def test_whole_volume_scaling_ignores_cropping_and_voxel_size():
    """The reference grid is a volume (ml): cropping the file, or padding it with more
    background, or imaging it at 2 mm gives the scaling of the full reference grid."""
    cfg = IntensityConfig(reference_volume_ml=60 * 64 * 40 / 1000)  # a 60x64x40 mm grid
    vol = _head((40, 64, 60), seed=1)
    ref = float(np.percentile(vol, 98))
    cropped = vol[4:-4, 6:-6, 5:-5]
    padded = np.pad(vol, 10)
    for v in (vol, cropped, padded):
        assert normalize(v, cfg=cfg).high == pytest.approx(ref, rel=1e-6)
    coarse = vol[::2, ::2, ::2]  # the same grid at 2 mm: 30 x 32 x 20 voxels of 8 mm^3
    got = normalize(np.pad(coarse, 3), cfg=cfg, spacing=(2.0, 2.0, 2.0)).high
    assert got == pytest.approx(float(np.percentile(coarse, 98)), rel=1e-6)
    # a brain under 2 % of the reference grid falls back to its maximum
    tiny = np.zeros((4, 5, 6), np.float32)
    tiny[1:3, 1:4, 2:5] = np.arange(1, 19).reshape(2, 3, 3)
    assert normalize(tiny).high == 18.0


def test_whole_volume_percentile_matches_numpy():
    from disyre.data.intensity import whole_volume_percentile

    rng = np.random.default_rng(3)
    for n, total, q in [(10, 50, 90), (100, 100, 98), (37, 1000, 98), (500, 600, 2.5)]:
        v = rng.random(n) + 0.1
        padded = np.concatenate([np.zeros(total - n), v])
        assert whole_volume_percentile(v, total, q) == pytest.approx(np.percentile(padded, q))
