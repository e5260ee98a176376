"""Lesion simulator: masks match the lesions, contrast-appropriate signs, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nilearn")

from disyre.demo.anatomy import load_templates  # noqa: E402
from disyre.demo.lesions import Tissues, simulate_lesion, tumour  # noqa: E402


@pytest.fixture(scope="module")
def anatomy():
    t = load_templates(2)
    tis = Tissues(gm=t.gm, wm=t.wm, csf=t.csf, brain=t.brain > 0)
    t2 = (t.csf + 0.6 * t.gm + 0.4 * t.wm).astype(np.float32)
    return tis, {"t2": t2, "t1": np.asarray(t.t1)}


CUBE = np.ones((3, 3, 3), dtype=bool)


def _ring(mask: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Voxels between ``inner`` and ``outer`` voxels (Chebyshev distance) from ``mask``."""
    return ndimage.binary_dilation(mask, CUBE, iterations=outer) & ~ndimage.binary_dilation(
        mask, CUBE, iterations=inner)


@pytest.mark.parametrize("kind", ["stroke", "ms"])
def test_change_inside_mask_not_far_outside(anatomy, kind):
    tis, imgs = anatomy
    r = simulate_lesion(imgs["t2"], tis, kind, "t2", 7)
    diff = np.abs(r.image - imgs["t2"])
    assert r.mask.any()
    assert diff[r.mask].mean() > 0.1
    far = ~ndimage.binary_dilation(r.mask, CUBE, iterations=3)
    assert diff[far].max() < 1e-4  # float rounding only


def test_tumour_mass_effect_displaces_neighbours_only_with_mass_effect(anatomy):
    tis, imgs = anatomy
    img = imgs["t2"]
    plain = tumour(img, tis, "t2", np.random.default_rng(2), mass_effect=False)
    pushed = tumour(img, tis, "t2", np.random.default_rng(2), mass_effect=True)
    ring = _ring(plain.mask, 3, 8) & tis.brain
    # without mass effect the tissue around the tumour is untouched ...
    assert np.abs(plain.image - img)[ring].max() < 1e-4
    # ... with it, the neighbouring tissue has moved
    moved = np.abs(pushed.image - img)[ring]
    assert moved.mean() > 0.003 and np.percentile(moved, 99) > 0.03
    # and the brain outline stays where it was
    assert not pushed.image[~tis.brain].any()


@pytest.mark.parametrize("kind", ["tumour", "stroke", "ms"])
def test_t2_lesions_are_hyperintense(anatomy, kind):
    tis, imgs = anatomy
    r = simulate_lesion(imgs["t2"], tis, kind, "t2", 11)
    assert r.image[r.mask].mean() > imgs["t2"][r.mask].mean() + 0.05


@pytest.mark.parametrize("kind", ["stroke", "tumour", "ms"])
def test_t1_lesions_are_hypointense(anatomy, kind):
    tis, imgs = anatomy
    r = simulate_lesion(imgs["t1"], tis, kind, "t1", 11)
    assert r.image[r.mask].mean() < imgs["t1"][r.mask].mean() - 0.05


def test_tumour_mask_is_whole_tumour_with_necrosis_and_oedema(anatomy):
    tis, imgs = anatomy
    for seed in range(6):
        r = simulate_lesion(imgs["t2"], tis, "tumour", "t2", seed)
        if r.info["necrosis"]:
            break
    assert r.info["necrosis"]
    assert r.info["oedema_radius_mm"] > r.info["core_radius_mm"]
    vals = r.image[r.mask]
    # necrosis (near CSF) brighter than the rest: a heterogeneous lesion, not a flat fill
    assert np.percentile(vals, 95) - np.percentile(vals, 5) > 0.1
    assert r.mask.sum() * 8 / 1000 == pytest.approx(r.info["volume_ml"], rel=0.01)


def test_ms_lesions_lie_in_white_matter(anatomy):
    tis, imgs = anatomy
    r = simulate_lesion(imgs["t2"], tis, "ms", "t2", 3)
    assert (tis.wm[r.mask] > 0.3).all()
    n_components = ndimage.label(r.mask)[1]
    assert n_components >= 2


def test_stroke_in_one_hemisphere(anatomy):
    tis, imgs = anatomy
    r = simulate_lesion(imgs["t2"], tis, "stroke", "t2", 5)
    mid = ndimage.center_of_mass(tis.brain)[0]
    xs = np.nonzero(r.mask)[0]
    assert (xs > mid).all() or (xs < mid).all()


def test_deterministic_and_seed_dependent(anatomy):
    tis, imgs = anatomy
    a = simulate_lesion(imgs["t2"], tis, "ms", "t2", 1)
    b = simulate_lesion(imgs["t2"], tis, "ms", "t2", 1)
    c = simulate_lesion(imgs["t2"], tis, "ms", "t2", 2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)


def test_bad_kind_or_contrast(anatomy):
    tis, imgs = anatomy
    with pytest.raises(ValueError, match="unknown lesion kind"):
        simulate_lesion(imgs["t2"], tis, "polyp", "t2", 0)
    with pytest.raises(ValueError, match="contrast"):
        simulate_lesion(imgs["t2"], tis, "ms", "flair", 0)
