"""``disyre prepare`` end to end on small fake dataset trees."""

from __future__ import annotations

import numpy as np

from disyre.cli import main
from disyre.data.cache import VolumeCache
from disyre.data.manifest import read_manifest


def _camcan(write_nifti, brain_volume, n=5):
    for i in range(n):
        s = f"sub-CC1100{i:02d}"
        write_nifti(f"camcan/{s}/anat/{s}_T1w.nii.gz", brain_volume((10, 12, 9), seed=i))


def test_prepare_camcan_writes_manifest_and_cache(write_nifti, brain_volume, tmp_path, capsys):
    _camcan(write_nifti, brain_volume)
    out = tmp_path / "prep"
    args = ["prepare", "--layout", "camcan", "--root", str(tmp_path / "camcan"),
            "--contrast", "t1", "--val-fraction", "0.2", "-o", str(out)]
    assert main(args) == 0
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 5 and sorted(r.split for r in rows).count("val") == 1
    cache = VolumeCache.open(out / "cache")
    assert len(cache) == 5 and all(v.max() == 1.0 for v in cache.volumes())
    # refuses to overwrite the manifest; --overwrite reuses the unchanged cache
    assert main(args) == 1
    assert "manifest.csv: manifest already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--set", "intensity.upper_percentile=99"]) == 0
    assert main(["prepare", "--manifest", str(out / "manifest.csv")]) == 0
    again = VolumeCache.open(out / "cache")
    assert all(np.isclose(v.max(), 1.0) for v in again.volumes())


def test_prepare_reports_bad_input_in_one_line(write_nifti, brain_volume, tmp_path, capsys):
    write_nifti("scans/good.nii.gz", brain_volume())
    write_nifti("scans/empty.nii.gz", np.zeros((6, 6, 6), np.float32))
    out = tmp_path / "prep"
    rc = main(["prepare", "--layout", "folder", "--root", str(tmp_path / "scans"), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "empty.nii.gz: all voxels are zero" in err
    rc = main(["prepare", "--manifest", str(out / "manifest.csv"), "--skip-bad"])
    assert rc == 0 and VolumeCache.open(out / "cache").subjects() == ["good"]
    assert main(["prepare", "--layout", "brats", "--root", str(tmp_path / "none"),
                 "-o", str(tmp_path / "x")]) == 1
    assert "none: dataset folder not found" in capsys.readouterr().err
