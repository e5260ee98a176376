"""benchmarks.speed.bench_detect_memory at tiny size (the full run is 30 scans of a real size)."""

from __future__ import annotations

import pytest

from benchmarks.speed import bench_detect_memory as bench


@pytest.mark.parametrize("argv, said", [(["--scans", "0"], "--scans 0"),
                                        (["--shape", "10,10"], "--shape"),
                                        (["--run", "/nonexistent/run"], "--run")])
def test_arguments_are_checked_before_any_work(argv, said, tmp_path) -> None:
    out = tmp_path / "m.json"
    with pytest.raises(SystemExit, match=said):
        bench.main([*argv, "--json", str(out)])
    assert not out.exists()


def test_peaks_of_one_and_of_several_scans(tmp_path, capsys) -> None:
    import json

    out = tmp_path / "m.json"
    assert bench.main(["--scans", "2", "--shape", "24,32,24", "--preset", "tiny",
                       "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["n"] for r in rows] == [1, 2]
    assert all(r["peak_rss_gib"] > 0 for r in rows)
    assert len(rows[-1]["rss_mib_after_each"]) == 2
    assert len(rows[0]["scans"]) == 1 and rows[0]["scans"][0] in rows[1]["scans"]
    each = rows[1]["peak_mib_each"]  # each scan's own peak; the one alone is the highest
    assert len(each) == 2 and rows[0]["scans"][0] == rows[1]["scans"][each.index(max(each))]
    assert "| 2 |" in capsys.readouterr().out


def test_the_one_scan_baseline_is_the_largest_scan(tmp_path) -> None:
    """Scans of a folder differ in size: one scan's peak is that of the largest."""
    import nibabel as nib
    import numpy as np

    for name, shape in (("a.nii.gz", (20, 30, 20)), ("b.nii.gz", (24, 30, 24)),
                        ("c.nii.gz", (16, 30, 16))):
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), tmp_path / name)
    assert bench.largest_scan(sorted(tmp_path.glob("*.nii.gz"))).name == "b.nii.gz"
