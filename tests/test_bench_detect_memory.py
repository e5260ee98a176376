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
    assert rows[1]["median_s_per_scan"] > 0
    assert "| 2 |" in capsys.readouterr().out


def test_children_run_without_kernel_caches_unless_kept(monkeypatch) -> None:
    """The children see the environment detection sees (no cache variables: the detector turns
    the caches off), or the variables a user sets to keep them (``--caches on``)."""
    from disyre.runtime import KERNEL_CACHE_ENV

    for name in KERNEL_CACHE_ENV:
        monkeypatch.setenv(name, "7")
    assert not set(KERNEL_CACHE_ENV) & set(bench._child_env(False))
    kept = bench._child_env(True)
    assert all(kept[name] == "1024" for name in KERNEL_CACHE_ENV)

