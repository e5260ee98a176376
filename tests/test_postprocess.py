"""The publications' post-processing steps (``disyre.inference.postprocess``), each on a
crafted map."""

from __future__ import annotations

import numpy as np
import pytest

from disyre.inference.postprocess import (
    DAE,
    DAE_CC,
    IDENTITY,
    PDDPM,
    PostProcessing,
    erode_mask,
    median_filter_map,
    remove_small_components,
)


def _brain(shape: tuple[int, int, int] = (7, 20, 20)) -> np.ndarray:
    """A box of brain with 2 voxels of background around it in-plane."""
    m = np.zeros(shape, bool)
    m[:, 2:-2, 2:-2] = True
    return m


def test_median_removes_an_isolated_bright_voxel_and_keeps_a_blob() -> None:
    brain = _brain()
    m = np.zeros(brain.shape, np.float32)
    m[3, 6, 6] = 1.0  # isolated
    m[2:5, 11:16, 11:16] = 0.5  # 3 slices of 5 x 5: wider than the median's half
    for dim in (2, 3):
        out = median_filter_map(m, brain, 5, dim=dim)
        assert out[3, 6, 6] == 0.0, dim
        assert out[3, 13, 13] == pytest.approx(0.5), dim
        assert not out[~brain].any()


def test_2d_and_3d_median_differ_where_they_should() -> None:
    # a thin sheet: one axial slice lit over a wide area. In-plane (2D) the sheet is its own
    # majority and survives; in 3D its 5 x 5 x 5 cube holds 1 lit slice of 5 and it goes.
    brain = _brain()
    m = np.zeros(brain.shape, np.float32)
    m[3, 4:16, 4:16] = 1.0
    flat = median_filter_map(m, brain, 5, dim=2)
    cube = median_filter_map(m, brain, 5, dim=3)
    assert flat[3, 10, 10] == 1.0 and cube[3, 10, 10] == 0.0
    # the converse: a 9 x 9 lesion lit in slices 1-5 but for slice 3. In-plane, slice 3 has
    # nothing to keep; its 5 x 5 x 5 cube holds 4 lit slices of 5 and 3D fills the gap.
    gap = np.zeros(brain.shape, np.float32)
    gap[1:6, 6:15, 6:15] = 1.0
    gap[3] = 0.0
    assert median_filter_map(gap, brain, 5, dim=2)[3, 10, 10] == 0.0
    assert median_filter_map(gap, brain, 5, dim=3)[3, 10, 10] == 1.0
    with pytest.raises(ValueError, match="dim"):
        median_filter_map(m, brain, 5, dim=4)


def test_erosion_removes_a_rim_at_the_brain_edge() -> None:
    brain = _brain()
    m = np.zeros(brain.shape, np.float32)
    m[:, 2, 2:-2] = 1.0  # bright rim along the brain's first row (the edge)
    m[:, 10, 10] = 0.7  # deep inside
    out = PostProcessing(erosion_iterations=1).apply(m, brain)
    assert not out[:, 2].any()
    assert (out[:, 10, 10] == 0.7).all()
    # 2D erosion leaves the top and bottom slices whole; 3D erodes them too
    e2, e3 = erode_mask(brain, 1, dim=2), erode_mask(brain, 1, dim=3)
    assert e2[0, 10, 10] and not e3[0, 10, 10] and e3[3, 10, 10]
    # the structuring element: around a one-voxel hole the cross erodes the 4 face
    # neighbours, the square also the 4 diagonal ones
    holed = brain.copy()
    holed[:, 10, 10] = False
    cross2 = erode_mask(holed, 1, dim=2, connectivity=1)
    square2 = erode_mask(holed, 1, dim=2, connectivity=2)
    assert not cross2[3, 9, 10] and cross2[3, 9, 9]
    assert not square2[3, 9, 10] and not square2[3, 9, 9] and square2[3, 8, 8]
    assert np.array_equal(erode_mask(holed, 1), cross2)  # the cross is the default


def test_small_components_removed_after_thresholding() -> None:
    b = np.zeros((6, 12, 12), bool)
    b[0:2, 0:2, 0:2] = True  # a blob of 8 voxels: kept with max 7
    seven = [(4, 8, 8), (4, 8, 9), (4, 9, 8), (4, 9, 9), (5, 8, 8), (5, 8, 9), (5, 9, 8)]
    for z, y, x in seven:  # a blob of 7 voxels: removed
        b[z, y, x] = True
    b[3, 5, 5] = b[2, 4, 4] = True  # two voxels touching at a corner only
    out = remove_small_components(b, 7)
    assert out[0:2, 0:2, 0:2].all()
    assert not out[4:, 8:10, 8:10].any()
    assert not out[3, 5, 5] and not out[2, 4, 4]
    # connectivity: the corner pair plus the 8-blob joined at a corner is one component of 10
    b2 = b.copy()
    b2[2, 2, 2] = True  # touches the 8-blob's corner (1, 1, 1) and nothing else
    assert remove_small_components(b2, 8, connectivity=3)[2, 2, 2]
    assert not remove_small_components(b2, 8, connectivity=1)[2, 2, 2]
    assert (remove_small_components(b, 0) == b).all()
    assert PDDPM.apply_binary(b).sum() == 8
    assert DAE_CC.apply_binary(b).sum() == 0  # at most 20 voxels: everything here
    assert (DAE.apply_binary(b) == b).all()  # the cc step is optional and off in DAE


def test_identity_recipe_leaves_the_map_unchanged() -> None:
    rng = np.random.default_rng(0)
    brain = _brain()
    m = (rng.random(brain.shape) * brain).astype(np.float32)
    assert np.array_equal(IDENTITY.apply(m, brain), m)
    b = m > 0.9
    assert np.array_equal(IDENTITY.apply_binary(b), b)
    # the published recipes do change it
    assert not np.array_equal(PDDPM.apply(m, brain), m)
    assert not np.array_equal(DAE.apply(m, brain), m)


def test_recipe_errors() -> None:
    with pytest.raises(ValueError, match="median_dim"):
        PostProcessing(median_dim=1)
    with pytest.raises(ValueError, match="cc_max_voxels"):
        PostProcessing(cc_max_voxels=-1)
    with pytest.raises(ValueError, match="differ in shape"):
        IDENTITY.apply(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
