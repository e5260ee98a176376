"""Demo cohort: deterministic per seed, subjects differ, intensities in range, sane files."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn")

from disyre.data.manifest import COLUMNS  # noqa: E402
from disyre.demo.cohort import CohortSpec, build_cohort, make_subject  # noqa: E402
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
    from disyre.demo.anatomy import load_templates
    from disyre.demo.cohort import deform_anatomy, synthesise_contrast

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
