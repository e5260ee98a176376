"""``disyre benchmark --post-processing``: every method through the shared pipeline and
through its own, side by side, from maps computed once."""

from __future__ import annotations

import csv
import json

import pytest

from disyre.benchmark import benchmark_protocols, protocol_rows, run_benchmark
from disyre.config import ConfigError
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    pytest.importorskip("nilearn")
    from tests.helpers.cohort import small_benchmark_cache

    return small_benchmark_cache(tmp_path_factory.mktemp("bench_pp"))


def _count_network_passes(monkeypatch) -> list[bool]:
    """Record each ``Detector.map_preprocessed`` call (``raw=`` of each) from now on."""
    from disyre.inference import Detector

    calls: list[bool] = []
    orig = Detector.map_preprocessed

    def counted(self, *a, **k):
        calls.append(bool(k.get("raw")))
        return orig(self, *a, **k)

    monkeypatch.setattr(Detector, "map_preprocessed", counted)
    return calls


def test_protocol_choices() -> None:
    assert benchmark_protocols("both") == ["published", "shared"]
    with pytest.raises(ConfigError, match="post-processing must be one of"):
        benchmark_protocols("mine")


def test_the_benchmark_writes_both_protocols_from_maps_computed_once(small_cache,
                                                                     monkeypatch) -> None:
    root, _, cache = small_cache
    calls = _count_network_passes(monkeypatch)
    cfg = tiny_config(steps=4)
    cfg.inference.window = 0
    res = run_benchmark(["dae", "reference"], cache, root / "both", cfg=cfg, n_boot=5,
                        device="cpu", progress=False)
    n_scans = 1 + 2 + 1 + 1  # val, lesioned, healthy test, older healthy
    assert calls == [True] * n_scans  # the network ran once per scan, for both protocols
    assert list(res.metrics) == ["dae (published)", "dae (shared)", "reference"]
    pub, shared = res.metrics["dae (published)"], res.metrics["dae (shared)"]
    assert pub["post_processing"]["protocol"] == "published"
    assert pub["post_processing"]["median_size"] == 5 and pub["post_processing"][
        "median_dim"] == 2
    assert shared["post_processing"]["median_filter"] == 3
    # thresholds calibrated per protocol on that protocol's healthy maps
    assert pub["thresholds"]["fpr"]["0.01"] != shared["thresholds"]["fpr"]["0.01"]
    assert pub["pixel"]["ap"] != shared["pixel"]["ap"]
    out = root / "both"
    assert (out / "dae" / "report" / "metrics.json").is_file()
    assert json.loads((out / "dae" / "report_shared" / "metrics.json").read_text())[
        "post_processing"]["protocol"] == "shared"
    assert not (out / "dae" / "raw_maps").exists()  # the raw maps are not left behind
    md = res.comparison.read_text()
    assert "dae (published)" in md and "dae (shared)" in md and "reference: the same" in md
    with open(res.comparison.parent / "comparison.csv") as f:
        rows = [r["method"] for r in csv.DictReader(f)]
    assert rows == ["dae (published)", "dae (shared)", "reference"]
    html = (res.comparison.parent / "comparison.html").read_text()
    assert "dae (shared)" in html
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["post_processing"] == ["published", "shared"]
    assert set(meta["timings"]) == set(res.metrics)


def test_a_method_with_one_recipe_gets_one_row() -> None:
    class _M:
        def __init__(self, same: bool) -> None:
            self.same = same

        def recipe(self, protocol: str) -> object:
            return 1 if self.same or protocol == "shared" else 2

    assert protocol_rows("dag", _M(True), ["published", "shared"]) == [
        ("dag", "published", "report")]
    assert protocol_rows("pddpm", _M(False), ["published", "shared"]) == [
        ("pddpm (published)", "published", "report"),
        ("pddpm (shared)", "shared", "report_shared")]
    assert protocol_rows("pddpm", _M(False), ["shared"]) == [("pddpm", "shared", "report")]


def test_evaluate_run_protocols_gives_the_benchmarks_rows_from_one_pass(small_cache,
                                                                      monkeypatch) -> None:
    """A finished benchmark's run re-evaluated under both protocols (larger_test_set's
    ``--post-processing both``): the benchmark's figures, the network once per scan."""
    from disyre.benchmark import evaluate_run_protocols

    root, _, cache = small_cache
    cfg = tiny_config(steps=4)
    cfg.inference.window = 0
    res = run_benchmark(["dae"], cache, root / "again", cfg=cfg, n_boot=5, device="cpu",
                        progress=False)
    calls = _count_network_passes(monkeypatch)
    out = evaluate_run_protocols(root / "again" / "dae" / "run", cache,
                                 ["published", "shared"], n_boot=5, device="cpu",
                                 progress=False)
    assert calls == [True] * (1 + 2 + 1 + 1)
    for protocol in ("published", "shared"):
        got, _ = out[protocol]
        assert got.to_dict()["post_processing"]["protocol"] == protocol
        assert got.pixel.ap == pytest.approx(res.metrics[f"dae ({protocol})"]["pixel"]["ap"],
                                             abs=1e-9)
