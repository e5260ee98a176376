"""``disyre evaluate --maps`` end to end on tiny NIfTI files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from disyre.cli import main
from disyre.data.manifest import ManifestRow, write_manifest
from tests.helpers import reinit_tiny_net, write_nifti

SHAPE = (20, 18, 8)  # native (X, Y, Z)


def _save(arr: np.ndarray, path) -> None:
    write_nifti(path, arr, np.diag([1.0, 1.0, 2.0, 1.0]), np.float32)


def _ball_and_dirs(tmp_path, radius: float):
    """A brain-like ellipsoid on SHAPE and empty image/map folders under ``tmp_path``."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    img_dir, map_dir = tmp_path / "img", tmp_path / "maps"
    img_dir.mkdir()
    map_dir.mkdir()
    return (x**2 + y**2 + 0.5 * z**2) < radius, img_dir, map_dir


@pytest.fixture()
def cohort(tmp_path):
    rng = np.random.default_rng(0)
    brain, img_dir, map_dir = _ball_and_dirs(tmp_path, 0.8)
    rows = []
    for i in range(6):
        split = "val" if i < 2 else "test"
        img = brain * (0.5 + 0.1 * rng.random(SHAPE))
        lab = np.zeros(SHAPE, bool)
        if split == "test" and i < 5:
            lab[6:12, 6:11, 2:5] = True
            img[lab] += 0.4
        _save(img, img_dir / f"s{i}.nii.gz")
        _save(0.4 * rng.random(SHAPE) * brain + 0.5 * lab, map_dir / f"s{i}.nii.gz")
        les = None
        if lab.any():
            _save(lab, img_dir / f"s{i}_seg.nii.gz")
            les = img_dir / f"s{i}_seg.nii.gz"
        rows.append(ManifestRow(f"s{i}", img_dir / f"s{i}.nii.gz", les, None, split, "t2"))
    write_manifest(rows, tmp_path / "m.csv")
    return tmp_path


def test_evaluate_maps_writes_report(cohort, capsys) -> None:
    out = cohort / "rep"
    rc = main(["evaluate", "--manifest", str(cohort / "m.csv"), "--maps", str(cohort / "maps"),
               "-o", str(out), "--bootstrap", "50"])
    assert rc == 0
    assert "pixel AP" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_cases"] == 4 and m["n_cases_with_lesion"] == 3
    assert m["pixel"]["ap"] == 1.0  # lesions score >= 0.5, healthy voxels < 0.4
    assert m["thresholds"]["n_volumes"] == 2
    th = json.loads((out / "thresholds.json").read_text())
    assert set(th["fpr"]) == {"0.01", "0.05", "0.1"}
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text()):
        assert (out / link).is_file()
    # refuses to overwrite, one clear line
    rc = main(["evaluate", "--manifest", str(cohort / "m.csv"), "--maps", str(cohort / "maps"),
               "-o", str(out)])
    assert rc == 1 and "--overwrite" in capsys.readouterr().err


def test_evaluate_missing_map_names_file(cohort, capsys) -> None:
    (cohort / "maps" / "s3.nii.gz").unlink()
    rc = main(["evaluate", "--manifest", str(cohort / "m.csv"), "--maps", str(cohort / "maps"),
               "-o", str(cohort / "rep2"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "s3.nii.gz" in err and "no map" in err


def test_save_thresholds_requires_checkpoint(cohort, capsys) -> None:
    rc = main(["evaluate", "--manifest", str(cohort / "m.csv"), "--maps", str(cohort / "maps"),
               "-o", str(cohort / "rep3"), "--save-thresholds"])
    assert rc == 1 and "--checkpoint" in capsys.readouterr().err


def test_healthy_manifest_prefers_val_rows():
    from types import SimpleNamespace as R

    from disyre.cli.evaluate import _split_rows

    test = [R(subject="t1", split="test", lesion_mask="l.nii.gz")]
    healthy = [R(subject="a", split="train", lesion_mask=""),
               R(subject="b", split="val", lesion_mask=""),
               R(subject="c", split="val", lesion_mask="")]
    t, h = _split_rows(test, healthy)
    assert [r.subject for r in t] == ["t1"]
    assert [r.subject for r in h] == ["b", "c"], "training scans must not calibrate thresholds"
    _, h = _split_rows(test, healthy[:1])
    assert [r.subject for r in h] == ["a"]


def test_maps_and_checkpoint_routes_give_identical_metrics(tmp_path) -> None:
    """One brain definition and one grid for both routes: evaluating a model directly, or the
    maps it wrote, gives the same numbers, also with negative background voxels and a lesion
    that leaves the brain (and its crop)."""
    import torch

    from disyre.config import InferenceConfig, ModelConfig, RunConfig
    from disyre.inference import Detector
    from disyre.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    cfg.inference = InferenceConfig(levels=[0, 50], window=0, batch_size=64, device="cpu")
    net = reinit_tiny_net()  # a freshly built network outputs 0
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints", step=1, model=net, cfg=cfg, codebook=None, state={})

    rng = np.random.default_rng(4)
    brain, img_dir, map_dir = _ball_and_dirs(tmp_path, 0.6)
    rows = []
    for i in range(6):
        split = "val" if i < 2 else "test"
        img = np.where(brain, 0.5 + 0.2 * rng.random(SHAPE), -0.01 * rng.random(SHAPE))
        lab = np.zeros(SHAPE, bool)
        les = None
        if split == "test":
            lab[5:11, 6:10, 2:5] = True
            lab[0:2, 0:3, 0:2] = True  # outside the brain and its crop
            img[lab & brain] += 0.3
            _save(lab, img_dir / f"s{i}_seg.nii.gz")
            les = img_dir / f"s{i}_seg.nii.gz"
        _save(img, img_dir / f"s{i}.nii.gz")
        rows.append(ManifestRow(f"s{i}", img_dir / f"s{i}.nii.gz", les, None, split, "t2"))
    write_manifest(rows, tmp_path / "m.csv")
    det = Detector.from_checkpoint(run, device="cpu")
    for r in rows:
        det.predict(r.image).save_map(map_dir / r.image.name)

    outs = {}
    for name, src in (("ckpt", ["--checkpoint", str(run)]), ("maps", ["--maps", str(map_dir)])):
        outs[name] = tmp_path / name
        assert main(["evaluate", "--manifest", str(tmp_path / "m.csv"), *src, "-o",
                     str(outs[name]), "--bootstrap", "30", "--device", "cpu"]) == 0
    a, b = (json.loads((outs[k] / "metrics.json").read_text()) for k in ("ckpt", "maps"))
    for key in ("pixel", "calibrated", "healthy_heldout", "slice_level", "volume_level",
                "bootstrap_ci", "n_cases", "thresholds"):
        if key == "thresholds":
            assert a[key]["fpr"] == b[key]["fpr"]
        else:
            assert a[key] == b[key], key
    assert a["pixel"]["n_lesion_voxels_outside_brain"] == 4 * 2 * 3 * 2
    assert a["pixel"]["ap"] < 1.0  # the voxels outside the brain are misses
    assert (outs["ckpt"] / "cases.csv").read_text() == (outs["maps"] / "cases.csv").read_text()


def _rewrite_manifest(src, dst, drop: str | None = None, split: str | None = None) -> None:
    """Copy a manifest CSV, without column ``drop`` or with every split set to ``split``."""
    import csv

    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c != drop]
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, **({"split": split} if split else {})})


def test_manifest_without_split_column_is_named(cohort, capsys) -> None:
    _rewrite_manifest(cohort / "m.csv", cohort / "nosplit.csv", drop="split")
    rc = main(["evaluate", "--manifest", str(cohort / "nosplit.csv"), "--maps",
               str(cohort / "maps"), "-o", str(cohort / "rep"), "--bootstrap", "0"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and not (cohort / "rep" / "metrics.json").exists()
    assert "nosplit.csv" in err and "'split'" in err and len(err.splitlines()) == 1


def test_validation_rows_are_never_pooled_into_the_test_set(cohort, capsys) -> None:
    _rewrite_manifest(cohort / "m.csv", cohort / "val.csv", split="val")
    rc = main(["evaluate", "--manifest", str(cohort / "val.csv"), "--maps",
               str(cohort / "maps"), "--healthy-manifest", str(cohort / "m.csv"),
               "-o", str(cohort / "rep"), "--bootstrap", "0"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and not (cohort / "rep" / "metrics.json").exists()
    assert "val.csv" in err and "'val'" in err and len(err.splitlines()) == 1


def test_empty_and_outside_labels_are_warned_and_the_group_is_the_manifests(cohort, caplog
                                                                           ) -> None:
    """s2's label is emptied (the manifest still calls it lesioned), s3's lies mostly outside
    the brain: both named on the terminal; s2 stays a lesioned scan at the volume level."""
    _save(np.zeros(SHAPE, bool), cohort / "img" / "s2_seg.nii.gz")
    outside = np.zeros(SHAPE, bool)
    outside[:3, :, :] = True  # the ellipsoid brain does not reach the first columns
    outside[8:10, 8:10, 3] = True
    _save(outside, cohort / "img" / "s3_seg.nii.gz")
    out = cohort / "rep"
    with caplog.at_level("WARNING"):
        assert main(["evaluate", "--manifest", str(cohort / "m.csv"), "--maps",
                     str(cohort / "maps"), "-o", str(out), "--bootstrap", "0"]) == 0
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith(str(cohort / "img" / "s2_seg.nii.gz")) and "empty" in m
               for m in msgs), msgs
    assert any(m.startswith(str(cohort / "img" / "s3_seg.nii.gz")) and "outside the brain" in m
               for m in msgs), msgs
    m = json.loads((out / "metrics.json").read_text())
    # s2..s4 are lesioned in the manifest, s5 is the one healthy test case
    assert m["volume_level"]["top_1cm3"]["n_healthy_by_group"] == {"test": 1}
    assert "s2" in m["cases_with_empty_label"]
    assert "outside the brain" in (out / "report.md").read_text()
