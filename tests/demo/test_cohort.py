"""Demo cohort: deterministic per seed, subjects differ, intensities in range, sane files;
each anatomy knob moves the anatomy the way it says."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nilearn")

from disyre.data.manifest import COLUMNS  # noqa: E402
from disyre.demo.anatomy import lateral_ventricles, load_templates  # noqa: E402
from disyre.demo.cohort import (  # noqa: E402
    ANATOMY_PROFILES,
    Anatomy,
    CohortSpec,
    build_cohort,
    deform_anatomy,
    draw_anatomy,
    make_subject,
    subject_tissue_maps,
    synthesise_contrast,
)
from disyre.io_utils import OutputExistsError  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    return make_subject(1, seed=3, contrast="t2"), make_subject(2, seed=3, contrast="t2")


def test_deterministic_per_seed_and_index(pair):
    a, _ = pair
    again = make_subject(1, seed=3, contrast="t2")
    np.testing.assert_array_equal(a.image, again.image)
    other_seed = make_subject(1, seed=4, contrast="t2")
    assert not np.array_equal(a.image, other_seed.image)


def test_subjects_differ_in_anatomy_and_acquisition(pair):
    a, b = pair
    assert a.params != b.params
    # the brains themselves differ in shape (deformation + head size), not just in noise
    dice = 2 * (a.brain & b.brain).sum() / (a.brain.sum() + b.brain.sum())
    assert 0.8 < dice < 0.99
    assert abs(int(a.brain.sum()) - int(b.brain.sum())) > 100


def test_intensities_in_range_and_skull_stripped(pair):
    for s in pair:
        assert s.image.dtype == np.float32
        assert np.isfinite(s.image).all()
        assert s.image.min() >= 0
        assert not s.image[~s.brain].any()  # background exactly 0
        assert (s.image[s.brain] > 0).mean() > 0.99
        assert 100 < s.image.max() < 5000  # scanner-like units, not pre-normalised


def test_t2_contrast_csf_bright_gm_over_wm():
    tpl = load_templates(2)
    rng = np.random.default_rng(0)
    maps, _ = deform_anatomy(tpl, rng)
    t2, _ = synthesise_contrast(maps, "t2", rng)
    t1, _ = synthesise_contrast(maps, "t1", rng)
    csf, gm, wm = maps["csf"] > 0.8, maps["gm"] > 0.7, maps["wm"] > 0.9
    assert np.median(t2[csf]) > np.median(t2[gm]) > np.median(t2[wm])
    assert np.median(t1[wm]) > np.median(t1[gm]) > np.median(t1[csf])


def test_affine_is_ras_2mm_and_brain_centred(pair):
    a, _ = pair
    aff = a.affine
    np.testing.assert_allclose(np.diag(aff)[:3], [2.0, 2.0, 2.0])
    centre_vox = np.array(np.nonzero(a.brain)).mean(axis=1)
    centre_mm = aff[:3, :3] @ centre_vox + aff[:3, 3]
    assert np.all(np.abs(centre_mm) < 30)  # the brain sits near the MNI origin


def test_build_cohort_files_manifest_and_reuse(tmp_path):
    spec = CohortSpec(n_train=1, n_val=1, n_test_healthy=1, n_test_lesion=1,
                      lesion_kinds=["ms"], seed=5)
    c = build_cohort(spec, tmp_path / "cohort", progress=False)
    assert not c.reused
    with open(c.manifest) as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["train", "val", "test", "test"]
    meta = (c.root / "cohort.json").read_text()
    assert '"profile": "typical"' in meta and '"profile": "older"' not in meta
    assert tuple(rows[0]) == COLUMNS  # the data layer's manifest format
    lesioned = [r for r in rows if r["lesion_mask"]]
    assert len(lesioned) == 1
    img = nib.load(c.root / lesioned[0]["image"])
    lab = nib.load(c.root / lesioned[0]["lesion_mask"])
    assert img.shape == lab.shape == (99, 117, 95)
    np.testing.assert_allclose(img.affine, lab.affine)
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1}
    mtime = (c.root / rows[0]["image"]).stat().st_mtime_ns
    again = build_cohort(spec, tmp_path / "cohort", progress=False)
    assert again.reused
    assert (c.root / rows[0]["image"]).stat().st_mtime_ns == mtime


def test_build_cohort_refuses_foreign_folder(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="cohort.json"):
        build_cohort(CohortSpec(n_train=1, n_val=1, n_test_healthy=0, n_test_lesion=1),
                     tmp_path, progress=False)


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="contrast"):
        CohortSpec(contrast="flair").validate()
    with pytest.raises(ValueError, match="lesion_kinds"):
        CohortSpec(lesion_kinds=["polyp"]).validate()


# --------------------------------------------------------------------------------------------
# the anatomy knobs, one at a time (the others neutral)


@pytest.fixture(scope="module")
def tpl():
    return load_templates(2)


def _ventricle_ml(csf: np.ndarray, tpl) -> float:
    """Lateral-ventricle volume segmented afresh from a CSF map (mL)."""
    return float(lateral_ventricles(csf, tpl.affine).sum()) * tpl.voxel_mm ** 3 / 1000


def test_template_lateral_ventricles_are_found(tpl):
    ml = tpl.ventricles.sum() * tpl.voxel_mm ** 3 / 1000
    assert 12 < ml < 25  # a young adult's lateral ventricles (the template's age range)
    x_mm = np.argwhere(tpl.ventricles > 0.5)[:, 0] * tpl.affine[0, 0] + tpl.affine[0, 3]
    assert (x_mm < -4).sum() > 0.3 * len(x_mm) and (x_mm > 4).sum() > 0.3 * len(x_mm)


@pytest.mark.parametrize("ratio", [0.6, 2.2, 3.5])
def test_ventricle_knob_scales_lateral_ventricle_volume(tpl, ratio):
    base = _ventricle_ml(tpl.csf, tpl)
    maps, _ = deform_anatomy(tpl, Anatomy(ventricles=ratio))
    # the ventricles segmented from the subject's own CSF map have the requested volume
    assert _ventricle_ml(maps["csf"], tpl) / base == pytest.approx(ratio, rel=0.15)
    assert maps["ventricles"].sum() / tpl.ventricles.sum() == pytest.approx(ratio, rel=0.1)
    # and only around the ventricles: the brain outline and the cortex far away are unchanged
    np.testing.assert_array_equal(maps["brain"] > 0, tpl.brain > 0)
    far = ~ndimage.binary_dilation(tpl.ventricles > 0.05, iterations=15)
    assert np.abs(maps["gm"] - tpl.gm)[far].max() < 0.02


def test_cohort_ventricles_vary_several_fold_and_older_lie_beyond(tpl):
    typical = [draw_anatomy(np.random.default_rng([0, i])).ventricles for i in range(60)]
    older = [draw_anatomy(np.random.default_rng([1, i]), "older").ventricles
             for i in range(60)]
    lo, hi = ANATOMY_PROFILES["typical"].ventricles
    assert lo <= min(typical) and max(typical) <= hi and max(typical) / min(typical) > 3
    assert min(older) > max(typical)
    t_lo, t_hi = ANATOMY_PROFILES["typical"].thinning_mm
    assert ANATOMY_PROFILES["older"].thinning_mm[0] > t_hi >= t_lo >= 0


def test_thinning_turns_pial_grey_matter_into_csf(tpl):
    ref, _ = deform_anatomy(tpl, Anatomy())
    lost = []
    for mm in (0.25, 0.5):
        maps, _ = deform_anatomy(tpl, Anatomy(thinning_mm=mm))
        d_gm = ref["gm"] - maps["gm"]
        assert d_gm.min() >= -1e-6  # grey matter only shrinks ...
        np.testing.assert_allclose(maps["csf"] - ref["csf"], d_gm, atol=1e-5)  # ... into CSF
        np.testing.assert_array_equal(maps["wm"], ref["wm"])
        lost.append(d_gm.sum() / ref["gm"].sum())
        # on the CSF side of the cortex: next to (sulcal or outer) CSF, not next to WM
        near_csf = ndimage.binary_dilation(ref["csf"] > 0.1, iterations=1)
        assert d_gm[near_csf].sum() > 0.85 * d_gm.sum()
        # the ventricles are their own knob: no change at their walls
        walls = ndimage.binary_dilation(ref["ventricles"] > 0.05, iterations=1)
        np.testing.assert_array_equal(maps["csf"][walls], ref["csf"][walls])
    assert 0.02 < lost[0] < lost[1] < 0.15  # a few % of the GM per 0.25 mm, growing with it


def test_head_scale_and_rotation(tpl):
    vol0 = float(tpl.brain.sum())
    for s in (0.85, 1.05):
        maps, _ = deform_anatomy(tpl, Anatomy(scale=(s, s, s)))
        assert maps["brain"].sum() / vol0 == pytest.approx(s ** 3, rel=0.03)

    def yz_angle(brain: np.ndarray) -> float:
        idx = np.argwhere(brain > 0)[:, 1:].astype(float)  # (Y, Z) voxel coordinates
        w, v = np.linalg.eigh(np.cov(idx.T))
        y, z = v[:, np.argmax(w)]  # long (anterior-posterior) axis of the brain
        return float(np.degrees(np.arctan2(z * np.sign(y), abs(y))))

    a0 = yz_angle(tpl.brain)
    for deg in (-8.0, 8.0):
        maps, _ = deform_anatomy(tpl, Anatomy(rotation_deg=(deg, 0.0, 0.0)))
        assert yz_angle(maps["brain"]) - a0 == pytest.approx(deg, abs=1.5)


def test_neutral_anatomy_and_levels_reproduce_the_template(tpl):
    from disyre.demo.cohort import _template_t1_levels

    maps, _ = deform_anatomy(tpl, Anatomy())
    np.testing.assert_allclose(maps["gm"], tpl.gm, atol=1e-6)
    t1, _ = synthesise_contrast(maps, "t1", _template_t1_levels(2))
    np.testing.assert_allclose(t1, np.clip(tpl.t1, 0, 1), atol=1e-5)


@pytest.mark.parametrize("contrast,a,b", [("t2", (1.0, 0.52, 0.40), (1.0, 0.64, 0.34)),
                                          ("t1", (0.2, 0.6, 0.88), (0.37, 0.72, 0.88))])
def test_tissue_levels_set_each_tissue_intensity(tpl, contrast, a, b):
    maps, _ = deform_anatomy(tpl, Anatomy())
    pure = {"csf": maps["csf"] > 0.9, "gm": maps["gm"] > 0.9, "wm": maps["wm"] > 0.95}
    img_a, _ = synthesise_contrast(maps, contrast, a)
    img_b, _ = synthesise_contrast(maps, contrast, b)
    for i, tissue in enumerate(("csf", "gm", "wm")):
        shift = np.median(img_b[pure[tissue]] - img_a[pure[tissue]])
        assert shift == pytest.approx(b[i] - a[i], abs=0.02), tissue


def test_older_subjects_have_larger_ventricles_than_typical_ones(tpl):
    # same seed and index: the same draws, mapped into each profile's ranges
    typ = make_subject(0, seed=2, contrast="t1")
    old = make_subject(0, seed=2, contrast="t1", anatomy="older")
    assert typ.params["anatomy"]["profile"] == "typical"
    assert old.params["anatomy"]["profile"] == "older"

    def csf(s) -> np.ndarray:
        anat = {k: v for k, v in s.params["anatomy"].items() if k != "profile"}
        return deform_anatomy(tpl, Anatomy(**anat))[0]["csf"]

    c_t, c_o = csf(typ), csf(old)
    # where the ventricles grew, the older subject's T1 image is dark (CSF), not tissue
    grown = (c_o > 0.9) & (c_t < 0.1) & typ.brain & old.brain
    assert grown.sum() > 100
    assert np.median(old.image[grown]) < 0.6 * np.median(typ.image[grown])


def test_subject_tissue_maps_are_the_imaged_anatomy():
    for profile in ("typical", "older"):
        s = make_subject(4, seed=2, contrast="t2", anatomy=profile)
        maps = subject_tissue_maps(4, seed=2, anatomy=profile)
        np.testing.assert_array_equal(maps["brain"] > 0, s.brain)
        # the ventricles imaged are the ventricles returned: bright (CSF) on T2
        vent = (maps["ventricles"] > 0.9) & s.brain
        wm = (maps["wm"] > 0.9) & s.brain
        assert vent.sum() > 100
        assert np.median(s.image[vent]) > 1.5 * np.median(s.image[wm])
    other = subject_tissue_maps(5, seed=2)
    assert not np.array_equal(other["brain"] > 0, s.brain)


def test_brain_stays_inside_the_field_of_view():
    r = ANATOMY_PROFILES["typical"]
    big = Anatomy(scale=(r.head_scale[1] * (1 + r.head_aniso),) * 3,
                  rotation_deg=r.rotation_deg, deformation_mm=r.deformation_mm[1], field_seed=3)
    maps, _ = deform_anatomy(load_templates(2), big)
    b = maps["brain"] > 0
    assert not (b[0].any() or b[-1].any() or b[:, 0].any() or b[:, -1].any() or b[:, :, -1].any())
