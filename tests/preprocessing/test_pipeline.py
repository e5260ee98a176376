"""Raw head -> template grid and back, on a synthetic head with a known answer.

Measured on the 3 mm synthetic head (seed 1; see conftest.py): skull-strip Dice 0.983 against
the true brain mask, registered brain-mask Dice 0.98 with the template's, and a blob planted in
template space lands within 0.15 voxel of where the known transform puts it on the raw grid.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from disyre.preprocessing.inverse import warp_to_raw
from disyre.preprocessing.steps import Transform, dice
from disyre.preprocessing.template import load_template

VOXEL_MM = 3.0  # the fixtures' raw and template voxel size (conftest.py)


def centroid(weights: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (voxel coordinates)."""
    idx = np.indices(weights.shape).reshape(3, -1)
    w = weights.ravel().astype(float)
    return (idx * w).sum(1) / w.sum()


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_run_writes_every_output(t1_run):
    assert t1_run.rc == 0
    f = t1_run.folder
    rec = json.loads((f / "head.json").read_text())
    for name in rec["outputs"].values():
        assert (f / name).is_file(), name
    assert set(rec["outputs"]) == {"image", "mask", "native_mask", "qc"}
    assert "mask" in rec["outputs"]["mask"] and "mask" in rec["outputs"]["native_mask"]
    assert (f / "head_qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in rec["transform"]["forward"] + rec["transform"]["inverse"]:
        assert (f / name).is_file() and name.startswith("head_to_template_")
    assert rec["recipe"]["steps"] == ["reorient", "n4", "skull_strip:deepbet",
                                      "register:affine", "resample"]
    assert set(rec["seconds"]) >= {"n4", "skull_strip", "register", "resample"}
    # the native mask lies on the raw file's grid, the rest on the template's
    raw = nib.load(str(t1_run.path))
    native = nib.load(str(f / "head_native_mask.nii.gz"))
    assert native.shape == raw.shape and np.allclose(native.affine, raw.affine)
    tpl = load_template("mni152", VOXEL_MM)
    for key in ("image", "mask"):
        img = nib.load(str(f / rec["outputs"][key]))
        assert img.shape == tpl.shape and np.allclose(img.affine, tpl.affine)
    image, _ = _load(f / "head.nii.gz")
    mask, _ = _load(f / "head_mask.nii.gz")
    assert (image[mask == 0] == 0).all() and (image[mask > 0] > 0).mean() > 0.99
    # the manifest and the recipe for training
    man = (t1_run.out / "manifest.csv").read_text().splitlines()
    assert man[1].startswith("head,head/head.nii.gz,,head/head_mask.nii.gz,train,t1")
    recipe = json.loads((t1_run.out / "preprocessing.json").read_text())
    assert recipe["template"] == "mni152" and recipe["spacing"] == VOXEL_MM
    assert recipe["grid"]["shape"] == list(tpl.shape)


def test_skull_strip_recovers_the_brain(t1_run):
    mask, _ = _load(t1_run.folder / "head_native_mask.nii.gz")
    d = dice(mask > 0, t1_run.head.brain)
    assert d >= 0.9, f"skull-strip Dice {d:.3f}"


def test_registration_recovers_the_transform(t1_run):
    tpl = load_template("mni152", VOXEL_MM)
    mask, _ = _load(t1_run.folder / "head_mask.nii.gz")
    d = dice(mask > 0, tpl.mask)
    assert d >= 0.9, f"template-grid brain-mask Dice {d:.3f}"
    rec = json.loads((t1_run.folder / "head.json").read_text())
    assert abs(rec["dice_template"] - d) < 1e-3


def test_inverse_warp_puts_a_template_blob_back_where_it_belongs(t1_run):
    tpl = load_template("mni152", VOXEL_MM)
    head = t1_run.head
    ijk = np.array([40, 30, 38])  # a voxel of the template's brain (left temporo-parietal)
    assert tpl.mask[tuple(ijk)]
    grid = np.indices(tpl.shape).transpose(1, 2, 3, 0)
    blob = (np.linalg.norm((grid - ijk) * VOXEL_MM, axis=-1) <= 12).astype(np.float32)
    rec = json.loads((t1_run.folder / "head.json").read_text())
    tf = Transform.from_dict(rec["transform"], base=t1_run.folder)
    raw = nib.load(str(t1_run.path))
    back = warp_to_raw(blob, tpl.affine, raw.shape, raw.affine, tf)
    assert back.shape == raw.shape and back.max() > 0.9
    world = (tpl.affine @ np.r_[centroid(blob), 1])[:3]
    expected = head.template_to_raw_voxel(world)[0]
    err = np.linalg.norm(centroid(back) - expected)
    assert err <= 2.0, f"centroid {err:.2f} voxels away"


def test_rerun_skips_the_done_subject_and_reports_a_failed_one_by_name(t1_run, tmp_path,
                                                                       capsys, monkeypatch):
    """A folder with the processed head and two broken scans: the head is skipped (same
    inputs, same recipe; a check's threshold is no new recipe), the others fail by name in a
    pool of two, the rest stands; run from another folder, the manifest still names the
    head relative to its own folder."""
    from disyre.cli import main
    from disyre.data.manifest import read_manifest

    folder = t1_run.path.parent
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)),
             str(folder / "fourd.nii.gz"))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    before = (t1_run.folder / "head.json").stat().st_mtime_ns
    monkeypatch.chdir(t1_run.work.parent)
    work = t1_run.work.name
    try:
        rc = main(["preprocess", "-i", f"{work}/raw", "-o", f"{work}/prep_raw", "--spacing",
                   str(VOXEL_MM), "--jobs", "2", "--min-dice", "0.85", "--no-progress"])
    finally:
        (folder / "fourd.nii.gz").unlink()
        (folder / "broken.nii.gz").unlink()
    out = capsys.readouterr().out
    assert rc == 1
    assert "0 processed, 1 up to date, 2 failed" in out
    assert "fourd: " in out and "4D image with 3 frames" in out
    assert "broken: " in out and "gzip" in out
    assert (t1_run.folder / "head.json").stat().st_mtime_ns == before
    assert (t1_run.out / "manifest.csv").read_text().count("\n") == 2  # header + head
    monkeypatch.chdir(tmp_path)
    (row,) = read_manifest(t1_run.out / "manifest.csv")
    assert row.image == t1_run.folder / "head.nii.gz" and row.image.is_file()


@pytest.mark.slow
def test_one_mm_head_full_recipe(tmp_path):
    """The default recipe on a 1 mm 256^3 head onto the 1 mm MNI152 grid (CI runs the same
    steps at 3 mm above; speed and memory are in benchmarks/speed/bench_preprocessing.py)."""
    from disyre.demo.raw_head import make_raw_head
    from disyre.preprocessing.pipeline import preprocess_scan
    from disyre.preprocessing.recipe import PreprocessConfig

    head = make_raw_head(seed=0, voxel_mm=1.0, shape=(256, 256, 256))
    path = tmp_path / "head1mm.nii.gz"
    nib.save(head.nifti(), str(path))
    pre = preprocess_scan(path, PreprocessConfig(), load_template(), tmp_path / "w")
    d = dice(pre.native_mask, head.brain)
    print(f"1 mm head: skull-strip Dice {d:.3f}, template Dice {pre.dice:.3f}")
    assert d >= 0.9 and pre.dice >= 0.9
