"""A scan at another voxel size than the training data's: resampled to it, the map back."""

from __future__ import annotations

import logging
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from disyre.inference import Detector
from tests.helpers import write_nifti_cohort


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A lesioned 2 mm test scan of the tiny cohort and its 1 mm copy (same anatomy)."""
    root = tmp_path_factory.mktemp("resample")
    manifest = write_nifti_cohort(root / "cohort", n_val=0, n_test_lesion=1, n_test_healthy=0,
                                  seed=5)
    two = manifest.parent / "s0.nii.gz"
    img = nib.load(two)
    data = np.asarray(img.dataobj, np.float32)
    one_mm = ndimage.zoom(data, 2, order=1, grid_mode=True, mode="nearest")
    one_mm *= ndimage.zoom(data > 0, 2, order=0, grid_mode=True, mode="nearest")  # its brain
    aff = img.affine.copy()
    aff[:3, :3] /= 2
    aff[:3, 3] -= 0.5  # the same field of view: voxel centres a quarter of 2 mm inwards
    one = root / "s0_1mm.nii.gz"
    nib.save(nib.Nifti1Image(one_mm, aff), one)
    return two, one


def test_a_1mm_scan_is_mapped_at_the_training_spacing_and_back(tiny_run, scans, caplog):
    two, one = scans
    det = Detector.from_checkpoint(tiny_run.path, device="cpu")
    assert det.reference["spacing"] == [2.0, 2.0, 2.0]
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r1 = det.predict(one)
    r2 = det.predict(two)
    assert r1.anomaly_map.shape == nib.load(one).shape  # the map is on the 1 mm grid
    assert r2.anomaly_map.shape == nib.load(two).shape
    assert abs(r1.score - r2.score) < 0.02, (r1.score, r2.score)
    assert [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert not [w for w in caught if "voxel size" in str(w.message)]
    # the map back on 1 mm: the 2 mm map upsampled, up to interpolation
    up = ndimage.zoom(r2.anomaly_map, 2, order=1, grid_mode=True, mode="nearest")
    brain = np.asarray(nib.load(one).dataobj) > 0
    assert np.abs(r1.anomaly_map - up)[brain].mean() < 0.02


def test_no_resample_keeps_the_scan_grid_with_its_warning(tiny_run, scans):
    _two, one = scans
    det = Detector.from_checkpoint(tiny_run.path, device="cpu")
    det.resample = False
    with pytest.warns(UserWarning, match="voxel size"):
        r = det.predict(one)
    assert r.anomaly_map.shape == nib.load(one).shape


def test_unknown_training_spacing_is_warned_once(tiny_run_copy, scans):
    """A checkpoint of an earlier release (no training spacing): mapped as it is, said once."""
    import json

    from disyre.training.checkpoint import CONFIG_FILE, latest_checkpoint

    two, one = scans
    cfg_file = latest_checkpoint(tiny_run_copy) / CONFIG_FILE
    meta = json.loads(cfg_file.read_text())
    del meta["data"]["spacing"]
    cfg_file.write_text(json.dumps(meta))
    det = Detector.from_checkpoint(tiny_run_copy, device="cpu")
    said = "records no voxel size"
    with pytest.warns(UserWarning, match=said) as rec:
        r = det.predict(one)
    assert len([w for w in rec if said in str(w.message)]) == 1
    assert r.anomaly_map.shape == nib.load(one).shape
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        det.predict(two)
    assert not [w for w in again if said in str(w.message)]


def test_resample_check_script_on_the_tiny_run(tiny_run, tmp_path, capsys):
    from benchmarks.experiments import resample_check

    manifest = write_nifti_cohort(tmp_path / "cohort", n_val=0, n_test_lesion=2,
                                  n_test_healthy=0, seed=7)
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit, match="--scans -1"):
        resample_check.main(["--run", str(tiny_run.path), "--manifest", str(manifest),
                             "--scans", "-1", "--json", str(out)])
    with pytest.raises(SystemExit, match="--mm 0"):
        resample_check.main(["--run", str(tiny_run.path), "--manifest", str(manifest),
                             "--mm", "0"])
    assert resample_check.main(["--run", str(tiny_run.path), "--manifest", str(manifest),
                                "--device", "cpu", "--json", str(out)]) == 0
    res = __import__("json").loads(out.read_text())
    assert [r["subject"] for r in res["rows"]] == ["s0", "s1"]
    # 6-slice toy brains at 6 x 40 x 40 voxels: the 0.02 holds for demo-sized scans
    # (docs/detection.md) and for the round trip above; this asserts the script's plumbing
    assert res["max_score_difference"] < 0.03
    assert res["ap_difference"] < 0.05 and res["ap"]["native"] > 0.5
    assert "pixel AP" in capsys.readouterr().out


def test_the_brain_at_the_training_spacing_is_the_scans_own_brain():
    """A 1 mm copy of a 2 mm brain, back at 2 mm: the same brain voxels, the image zero
    outside them."""
    from disyre.data.intensity import brain_mask
    from disyre.inference.resampling import image_and_brain_to_shape, zoom_to_shape

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:20, :24, :20]
    brain = ((zz - 10) / 7) ** 2 + ((yy - 12) / 9) ** 2 + ((xx - 10) / 7) ** 2 < 1
    two = np.where(brain, 0.5 + rng.random(brain.shape), 0).astype(np.float32)
    # the same head at 1 mm: its brain is the 2 mm brain, image zero outside
    one = ndimage.zoom(two, 2, order=1, grid_mode=True, mode="nearest")
    one *= ndimage.zoom(brain, 2, order=0, grid_mode=True, mode="nearest")
    img, back = image_and_brain_to_shape(one, brain_mask(one), two.shape)
    assert (back == brain).all()
    assert not img[~back].any()
    # a copy interpolated without its brain (a rim of dim voxels around it): the rim does
    # not enter the brain at 2 mm, the image alone would take it in
    rimmed = ndimage.zoom(two, 2, order=1, grid_mode=True, mode="nearest")
    _, back = image_and_brain_to_shape(rimmed, brain_mask(rimmed), two.shape)
    naive = zoom_to_shape(rimmed, two.shape, order=1) > 0
    assert (back != brain).sum() < 0.5 * (naive != brain).sum()
