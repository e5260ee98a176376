"""Intensity normalisation and crop / uncrop (disyre.data.intensity)."""

from __future__ import annotations

import numpy as np
import pytest

from disyre.config import IntensityConfig
from disyre.data.intensity import foreground_bbox, normalize, uncrop


def test_scaling_clipping_background_and_crop(brain_volume):
    vol = brain_volume((12, 14, 10))
    vol[0, 0, 0] = -5.0  # a negative background voxel: clipped, stays background
    pre = normalize(vol)
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
    pre = normalize(vol, cfg=IntensityConfig(crop_margin=2, upper_percentile=99.5))
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
        pre = normalize(vol)
    assert (pre.image == 1.0).all()
    with pytest.raises(ValueError, match="empty foreground"):
        normalize(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="percentiles"):
        normalize(vol, cfg=IntensityConfig(lower_percentile=50, upper_percentile=10))
