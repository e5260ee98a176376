"""The recipe: written by ``preprocess``, found beside the scans (recorded by ``train`` and run
again by ``detect``: test_readme_workflow.py); ``prepare --preprocess``; the layouts' T1
column."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from disyre.cli import main
from disyre.data.manifest import from_camcan, from_ixi, read_manifest, write_manifest
from disyre.data.nifti import InputError
from disyre.preprocessing.recipe import RECIPE_FILE, PreprocessConfig, find_recipe, write_recipe
from tests.helpers import write_nifti

TINY = np.pad(np.ones((4, 4, 4), np.float32), 2)


def _nii(path, data=TINY, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(path, data, affine)


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(spacing=2, registration="syn", n4=False)
    d = cfg.to_dict()
    assert d["steps"] == ["reorient", "skull_strip:deepbet", "register:syn", "resample"]
    assert PreprocessConfig.from_dict(json.loads(json.dumps(d))) == cfg
    with pytest.raises(ValueError, match="registration must be one of"):
        PreprocessConfig(registration="bspline")
    with pytest.raises(ValueError, match="spacing must be in"):
        PreprocessConfig(spacing=0)


def test_find_recipe(tmp_path):
    grid = {"shape": [2, 2, 2]}
    a = _nii(tmp_path / "a" / "s1" / "s1.nii.gz")
    b = _nii(tmp_path / "a" / "s2" / "s2.nii.gz")
    c = _nii(tmp_path / "c" / "s3.nii.gz")
    assert find_recipe([a, b]) is None
    write_recipe(tmp_path / "a", PreprocessConfig(spacing=2.0), grid)
    rec = find_recipe([a, b])
    assert rec["spacing"] == 2.0 and rec["grid"] == grid and "provenance" not in rec
    with pytest.raises(InputError, match=rf"s3\.nii\.gz: has no {RECIPE_FILE} beside it"):
        find_recipe([a, c])
    write_recipe(tmp_path / "c", PreprocessConfig(spacing=1.0), grid)
    with pytest.raises(InputError, match="come from different preprocessing recipes"):
        find_recipe([a, c])


def test_layouts_name_each_subjects_t1(tmp_path):
    for s in ("CC110033", "CC110037"):
        for c in ("T1w", "T2w"):
            _nii(tmp_path / "cc" / f"sub-{s}" / "anat" / f"sub-{s}_{c}.nii.gz")
    rows = from_camcan(tmp_path / "cc", contrast="t2")
    assert [r.t1.name for r in rows] == ["sub-CC110033_T1w.nii.gz", "sub-CC110037_T1w.nii.gz"]
    assert all(r.t1 is None for r in from_camcan(tmp_path / "cc", contrast="t1"))
    for c in ("T1", "PD"):
        _nii(tmp_path / "ixi" / f"IXI-{c}" / f"IXI002-Guys-0828-{c}.nii.gz")
    (row,) = from_ixi(tmp_path / "ixi", contrast="pd")
    assert row.t1.name == "IXI002-Guys-0828-T1.nii.gz"
    write_manifest(rows, tmp_path / "m.csv")
    assert [r.t1 for r in read_manifest(tmp_path / "m.csv")] == [r.t1.resolve() for r in rows]


def test_prepare_preprocess_builds_the_manifest_over_preprocessed_scans(tmp_path):
    """``prepare --layout atlas --preprocess`` on skull-stripped synthetic brains with lesion
    masks (N4 and skull stripping off: this checks the plumbing, the steps are tested
    elsewhere): the manifest lists the preprocessed scans, and each lesion lands where the
    known transform puts it on the template grid."""
    from disyre.demo.raw_head import make_raw_head
    from disyre.preprocessing.template import load_template

    heads = {}
    for i, sub in enumerate(("r001s001", "r001s002")):
        h = make_raw_head(seed=10 + i, voxel_mm=3.0, shape=(64, 64, 64), noise=0.0)
        anat = tmp_path / "atlas" / "R001" / f"sub-{sub}" / "ses-1" / "anat"
        stem = f"sub-{sub}_ses-1_space-MNI152NLin2009aSym"
        _nii(anat / f"{stem}_T1w.nii.gz", np.where(h.brain, h.image, 0).astype(np.float32),
             h.affine)
        centre = np.round(np.argwhere(h.brain).mean(0) + [4, -3, 2]).astype(int)
        lesion = np.linalg.norm(np.indices(h.brain.shape).transpose(1, 2, 3, 0) - centre,
                                axis=-1) <= 3
        _nii(anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz", lesion.astype(np.uint8),
             h.affine)
        heads[f"sub-{sub}_ses-1"] = (h, centre)
    out = tmp_path / "prep"
    assert main(["prepare", "--layout", "atlas", "--root", str(tmp_path / "atlas"), "-o",
                 str(out), "--preprocess", "--spacing", "3", "--no-n4", "--no-skull-strip",
                 "--jobs", "1"]) == 0
    rows = read_manifest(out / "manifest.csv")
    assert [r.subject for r in rows] == list(heads)
    tpl = load_template("mni152", 3.0)
    for r in rows:
        assert r.image == out / "preprocessed" / r.subject / f"{r.subject}.nii.gz"
        assert r.split == "test" and r.lesion_mask.name == f"{r.subject}_lesion_mask.nii.gz"
        les = np.asarray(nib.load(str(r.lesion_mask)).dataobj) > 0
        assert les.shape == tpl.shape and les.sum() > 0
        h, centre = heads[r.subject]
        world = h.to_template @ h.affine @ np.r_[centre, 1]
        expected = (np.linalg.inv(tpl.affine) @ world)[:3]
        assert np.linalg.norm(np.argwhere(les).mean(0) - expected) <= 1.5
    assert find_recipe(r.image for r in rows)["steps"] == ["reorient", "register:affine",
                                                           "resample"]
    assert (out / "cache" / "index.json").is_file()
    # --preprocess never replaces the manifest it reads
    assert main(["prepare", "--manifest", str(out / "manifest.csv"), "--preprocess"]) == 1


def test_input_folder_names_a_broken_symbolic_link(tmp_path, caplog):
    from disyre.preprocessing import jobs_from_input

    _nii(tmp_path / "raw" / "a.nii.gz")
    (tmp_path / "raw" / "b.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    with caplog.at_level("WARNING", logger="disyre.data.nifti"):
        jobs = jobs_from_input(tmp_path / "raw")
    assert [j.subject for j in jobs] == ["a"]
    assert "b.nii.gz: broken symbolic link" in caplog.text and "gone.nii.gz" in caplog.text
