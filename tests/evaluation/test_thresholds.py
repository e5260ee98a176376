"""Healthy-data thresholds: requested FPR on the fitting data, file round trip, counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from disyre.evaluation import thresholds as T


def _healthy(rng: np.random.Generator, n: int = 4, tied: bool = False):
    out = []
    for _ in range(n):
        m = rng.beta(2, 8, size=(6, 20, 20)).astype(np.float32)
        if tied:
            m = np.round(m * 50) / 50
        mask = rng.random(m.shape) < 0.7
        out.append((m, mask))
    return out


@pytest.mark.parametrize("max_exact", [50_000_000, 500])
def test_thresholds_give_requested_fpr_on_fitting_data(max_exact: int) -> None:
    healthy = _healthy(np.random.default_rng(0))
    th = T.fit_thresholds(healthy, source="synthetic", max_exact_voxels=max_exact)
    assert th.method == ("exact" if max_exact > 1000 else "histogram")
    vals = np.concatenate([m[k] for m, k in healthy])
    assert th.n_voxels == vals.size and th.n_volumes == 4
    for f, t in th.fpr.items():
        got = (vals > t).mean()
        assert got <= f
        # continuous scores: within one voxel (exact) or within the histogram's resolution
        assert got >= f - (1.5 / vals.size if th.method == "exact" else 2e-3)
    assert th.fpr[0.01] > th.fpr[0.05] > th.fpr[0.1]


def test_thresholds_with_ties_never_exceed_fpr() -> None:
    healthy = _healthy(np.random.default_rng(1), tied=True)
    th = T.fit_thresholds(healthy)
    vals = np.concatenate([m[k] for m, k in healthy])
    for f, t in th.fpr.items():
        assert (vals > t).mean() <= f
        assert (vals >= t).mean() > f  # no lower threshold would satisfy the rate


def test_save_load_round_trip_and_format(tmp_path) -> None:
    th = T.fit_thresholds(_healthy(np.random.default_rng(2)), source="val.csv")
    p = T.save_thresholds(tmp_path / "thresholds.json", th)
    d = json.loads(p.read_text())
    assert set(d["fpr"]) == {"0.01", "0.05", "0.1"}
    assert d["n_volumes"] == 4 and d["source"] == "val.csv" and d["rule"] == "score > threshold"
    back = T.load_thresholds(p)
    assert back.fpr == th.fpr and back.n_voxels == th.n_voxels


def test_load_rejects_bad_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        T.load_thresholds(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"thresholds": 1}')
    with pytest.raises(ValueError, match="bad.json"):
        T.load_thresholds(bad)


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no healthy"):
        T.fit_thresholds([])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        T.fit_thresholds([(np.ones((2, 2, 2)), None)], fprs=(1.5,))


def test_counts_and_summary() -> None:
    s = np.array([[[0.2, 0.6, 0.9, 0.4]]])
    lab = np.array([[[0, 1, 1, 0]]], bool)
    c = T.counts_at(s, lab, None, [0.5, 0.6])
    np.testing.assert_array_equal(c, [[2, 0, 0, 2], [1, 0, 1, 2]])
    summ = T.summarize_counts(c[1])
    assert summ["recall"] == 0.5 and summ["precision"] == 1.0 and summ["fpr"] == 0.0
    assert summ["dice"] == pytest.approx(2 / 3)
    healthy = T.counts_at(s, None, None, [0.5])
    assert T.summarize_counts(healthy[0])["fpr"] == 0.5


def test_bootstrap_thresholds_refit_exactly_on_each_resample() -> None:
    rng = np.random.default_rng(4)
    vols = [rng.random(500 + 100 * i).astype(np.float32) * s
            for i, s in enumerate((0.5, 1.0, 0.8, 0.9))]
    boot = T.bootstrap_thresholds(vols, (0.01, 0.1), n_boot=6, seed=3)
    draws = np.random.default_rng(3)  # the same resamples, fitted by the calibrator
    for b in range(6):
        idx = draws.integers(0, len(vols), size=len(vols))
        th = T.fit_thresholds([(vols[i], None) for i in idx], fprs=(0.01, 0.1))
        assert boot[b].tolist() == [th.fpr[0.01], th.fpr[0.1]]
    assert boot[:, 0].min() < boot[:, 0].max()  # different volumes, different thresholds
    with pytest.raises(ValueError, match="no healthy volumes"):
        T.bootstrap_thresholds([], (0.01,))


# ---- the file binds to the maps it was fitted on (disyre.inference.thresholds) --------------

def _fake_detector(seed: int = 0, **inference):
    """What binding reads of a Detector: its inference settings and its network."""
    from types import SimpleNamespace

    import torch

    from disyre.config import InferenceConfig

    torch.manual_seed(seed)
    return SimpleNamespace(inference=InferenceConfig(**inference),
                           model=torch.nn.Conv2d(1, 2, 3))


def test_binding_round_trip_and_old_files(tmp_path) -> None:
    from disyre.inference import thresholds as IT

    det = _fake_detector(levels=[0, 25, 50, 75])
    th = IT.bind_thresholds(T.fit_thresholds(_healthy(np.random.default_rng(2))), det)
    p = T.save_thresholds(tmp_path / "thresholds.json", th)
    d = json.loads(p.read_text())
    assert d["inference"] == {"method": "ensemble", "levels": [0, 25, 50, 75], "window": 0,
                              "stride": 32, "foreground_weighting": None, "median_filter": 3,
                              "postprocessing": "published"}
    assert len(d["checkpoint"]["weights_sha256"]) == 64
    back = T.load_thresholds(p)
    assert back.inference == d["inference"] and back.checkpoint == d["checkpoint"]
    assert IT.check_binding(back, det) == []  # the same settings and weights: nothing to say
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"fpr": {"0.01": 0.3}}))
    warned = IT.check_binding(T.load_thresholds(old), det, source=old)
    assert len(warned) == 1 and "old.json" in warned[0] and "cannot check" in warned[0]


def test_binding_refuses_other_settings_or_weights_naming_both() -> None:
    from disyre.inference import thresholds as IT

    th = IT.bind_thresholds(T.Thresholds({0.01: 0.3}, 1, 10), _fake_detector(levels=[0, 50]))
    with pytest.raises(IT.ThresholdMismatchError,
                       match=r"levels=\[0, 50\].*levels=\[0\].*--allow-threshold-mismatch"):
        IT.check_binding(th, _fake_detector(levels=[0]), source="t.json")
    with pytest.raises(IT.ThresholdMismatchError, match=r"median_filter=3.*median_filter=0"):
        IT.check_binding(th, _fake_detector(levels=[0, 50], median_filter=0))
    # batch size and precision change a map by rounding at most: not bound
    assert IT.check_binding(th, _fake_detector(levels=[0, 50], batch_size=4,
                                               precision="bf16")) == []
    with pytest.raises(IT.ThresholdMismatchError, match="checkpoint"):
        IT.check_binding(th, _fake_detector(seed=1, levels=[0, 50]))  # other weights
    warned = IT.check_binding(th, _fake_detector(levels=[0]), allow_mismatch=True)
    assert len(warned) == 1 and "applied anyway" in warned[0] and "levels=[0]" in warned[0]


def test_weights_hash_ignores_memory_layout_and_sees_every_value() -> None:
    import torch

    from disyre.inference.thresholds import weights_sha256

    net = _fake_detector().model
    h = weights_sha256(net)
    assert weights_sha256(net.to(memory_format=torch.channels_last)) == h
    with torch.no_grad():
        net.weight[0, 0, 0, 0] += 1e-6
    assert weights_sha256(net) != h


def test_thresholds_live_in_the_run_folder() -> None:
    from pathlib import Path

    from disyre.inference.thresholds import thresholds_path

    run = Path("runs/t2")
    assert thresholds_path(run) == run / "thresholds.json"
    for ckpt in ("step_0001000", "last"):
        assert thresholds_path(run / "checkpoints" / ckpt) == run / "thresholds.json"
    assert thresholds_path("models/step_0001000") == Path("models/step_0001000/thresholds.json")
