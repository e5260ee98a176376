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
    assert len(rows[1]["peak_mib_each"]) == 2  # each scan's own peak in the folder run
    lone = rows[0]["peak_mib_alone"]  # each scan mapped alone; the row is the highest
    assert len(lone) == 2 and max(lone) == pytest.approx(rows[0]["peak_rss_gib"] * 1024, abs=0.1)
    assert "| 2 |" in capsys.readouterr().out

