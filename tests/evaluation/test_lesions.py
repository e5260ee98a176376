"""Lesion-wise and scan-level detection against hand-built volumes and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from disyre.evaluation import Case, evaluate_cases
from disyre.evaluation.lesions import (
    CaseLesions,
    case_lesions,
    label_components,
    lesion_components,
    scan_level_ci,
    summarize_lesions,
    weighted_auroc_ap,
)

SHAPE = (12, 20, 20)


def _two_lesions() -> tuple[np.ndarray, np.ndarray]:
    """Label with two lesions (a 2x3x3 block and a 3x4x4 block); a map that finds only the
    first one, plus one false-positive blob of two voxels far from both."""
    lab = np.zeros(SHAPE, bool)
    lab[1:3, 2:5, 2:5] = True       # lesion A: 18 voxels
    lab[6:9, 10:14, 10:14] = True   # lesion B: 48 voxels
    amap = np.full(SHAPE, 0.1, np.float32)
    amap[2, 3, 4] = 0.9             # one voxel inside A (at its edge)
    amap[2, 3, 5] = 0.9             # its neighbour just outside A: same blob, touches A
    amap[10, 1:3, 17] = 0.8         # a 2-voxel false-positive blob
    amap[6, 9, 9] = 0.7             # edge-adjacent to B but outside it: not a detection
    return amap, lab


def test_connectivity_is_26():
    m = np.zeros((4, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner neighbours: one component in 26-connectivity
    m[3, 3, 3] = True
    assert label_components(m)[1] == 2


def test_two_lesions_one_found_and_one_false_positive_blob():
    amap, lab = _two_lesions()
    c = case_lesions(amap, lab, None, [0.5, 0.75, 0.95], voxel_mm3=1.0)
    assert c.n_lesions == 2
    assert c.volumes_ml.tolist() == pytest.approx([0.018, 0.048])
    # t = 0.5: A found (its blob reaches outside A: still one blob touching A); B missed
    # (the 0.7 voxel touches B's edge from outside, no overlap); blobs: A's, the FP pair,
    # the 0.7 voxel -> 2 false positives
    assert c.detected[0].tolist() == [True, False]
    assert c.n_blobs[0] == 3 and c.n_fp[0] == 2
    # t = 0.75: the 0.7 voxel is gone
    assert c.detected[1].tolist() == [True, False] and c.n_blobs[1] == 2 and c.n_fp[1] == 1
    # t = 0.95: nothing above
    assert c.detected[2].tolist() == [False, False] and c.n_blobs[2] == 0 and c.n_fp[2] == 0


def test_dilation_tolerance_follows_brats_grouping():
    amap, lab = _two_lesions()
    c = case_lesions(amap, lab, None, [0.5], dilation=1)
    # grown by one voxel, B's zone now holds the 0.7 voxel: found, and that blob is no FP
    assert c.detected[0].tolist() == [True, True] and c.n_fp[0] == 1
    two = np.zeros((3, 10, 10), bool)
    two[1, 1, 1] = two[1, 1, 4] = True  # two voxels 3 apart
    assert lesion_components(two, 0)[1] == 2
    assert lesion_components(two, 1)[1] == 1  # within BraTS's dilation: one lesion


def test_prediction_is_limited_to_the_brain():
    amap, lab = _two_lesions()
    brain = np.zeros(SHAPE, bool)
    brain[:, :, :15] = True  # the FP pair lies at x = 17, outside
    c = case_lesions(amap, lab, brain, [0.75])
    assert c.n_fp[0] == 0 and c.detected[0].tolist() == [True, False]


def test_healthy_scan_blobs_are_all_false_positives():
    amap = np.zeros(SHAPE, np.float32)
    amap[1, 1, 1] = amap[5, 5, 5] = amap[5, 5, 6] = 1.0
    c = case_lesions(amap, None, None, [0.5])
    assert c.n_lesions == 0 and c.n_blobs[0] == 2 and c.n_fp[0] == 2


def test_summary_pools_recall_fp_f1_and_size_bins():
    amap, lab = _two_lesions()
    # voxel 20 mm^3: A = 0.36 mL (small), B = 0.96 mL (small); voxel 30 mm^3: B = 1.44 mL
    big = case_lesions(amap, lab, None, [0.75], voxel_mm3=30.0)
    assert big.size_bin().tolist() == [0, 1]  # small, medium
    large = np.zeros(SHAPE, bool)
    large[1:11, 1:11, 1:11] = True  # 1000 voxels of 30 mm^3 = 30 mL: large, found
    lmap = np.where(large, 0.9, 0.1).astype(np.float32)
    third = case_lesions(lmap, large, None, [0.75], voxel_mm3=30.0)
    healthy = case_lesions(np.where(large, 0.9, 0.0).astype(np.float32), None, None, [0.75])
    s = summarize_lesions([big, third], {"heldout": [healthy], "transfer": []},
                          [(0.01, 0.75)], n_boot=0)
    at = s["at"]["0.01"]
    assert s["n_lesions"] == 3 and s["connectivity"] == 26
    assert at["n_detected"] == 2 and at["recall"] == pytest.approx(2 / 3)
    # blobs on lesioned scans: big has 2 (A's and the FP pair), third has 1 (its lesion)
    assert at["n_blobs_lesioned_scans"] == 3 and at["n_fp_lesioned_scans"] == 1
    assert at["fp_per_lesioned_scan"] == pytest.approx(0.5)
    assert at["precision"] == pytest.approx(2 / 3)
    assert at["f1"] == pytest.approx(2 / 3)  # recall = precision = 2/3
    assert at["fp_per_healthy_scan"] == 1.0
    assert at["fp_per_healthy_scan_by_group"] == {"heldout": 1.0}
    assert at["by_size"]["small"] == {"n": 1, "n_detected": 1, "recall": 1.0}
    assert at["by_size"]["medium"] == {"n": 1, "n_detected": 0, "recall": 0.0}
    assert at["by_size"]["large"] == {"n": 1, "n_detected": 1, "recall": 1.0}
    assert s["size_bins_ml"] == {"small": [0.0, 1.0], "medium": [1.0, 10.0],
                                 "large": [10.0, None]}


def test_summary_bootstrap_intervals_bracket_the_estimate():
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(8):
        n = int(rng.integers(1, 4))
        cases.append(CaseLesions(rng.random(n) * 3, rng.random((1, n)) < 0.6,
                                 np.array([5]), np.array([int(rng.integers(0, 4))])))
    h = [CaseLesions(np.zeros(0), np.zeros((1, 0), bool), np.array([k]), np.array([k]))
         for k in (1, 3, 0)]
    at = summarize_lesions(cases, {"heldout": h}, [(0.01, 0.5)], n_boot=300)["at"]["0.01"]
    for k in ("recall", "f1", "fp_per_lesioned_scan", "fp_per_healthy_scan"):
        lo, hi = at[f"{k}_ci"]
        assert lo <= at[k] <= hi and lo < hi, k


def test_no_blob_means_f1_zero_not_nan():
    c = CaseLesions(np.array([0.5]), np.array([[False]]), np.array([0]), np.array([0]))
    at = summarize_lesions([c], {}, [(0.01, 0.5)], n_boot=0)["at"]["0.01"]
    assert at["recall"] == 0.0 and at["f1"] == 0.0 and "fp_per_healthy_scan" not in at


def test_scan_level_auroc_ap_equal_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.random(25) < 0.5
        y[:2] = [True, False]
        s = np.round(rng.random(25) + 0.3 * y, 1)  # rounded: ties
        a, p = weighted_auroc_ap(s, y, np.ones((1, 25)))
        assert a[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert p[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        w = rng.integers(0, 3, size=25).astype(float)
        w[:2] = 1
        a, p = weighted_auroc_ap(s, y, w[None])
        assert a[0] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        assert p[0] == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)
    ci = scan_level_ci(s, y, n_boot=200)
    assert ci["auroc_ci"][0] <= roc_auc_score(y, s) <= ci["auroc_ci"][1]


def _brain_cases(n_les: int, n_healthy: int, seed: int):
    rng = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, bool)
    brain[1:-1, 2:-2, 2:-2] = True
    for i in range(n_les + n_healthy):
        lab = np.zeros(SHAPE, bool)
        if i < n_les:
            lab[4:7, 6:10, 6:10] = True
        amap = (0.4 * rng.random(SHAPE) + 0.5 * lab) * brain
        yield Case(f"s{i}", amap.astype(np.float32), lab, brain)


def test_evaluate_cases_scan_level_joins_healthy_scans_and_matches_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from disyre.evaluation import metrics as M

    rng = np.random.default_rng(5)
    brain = next(iter(_brain_cases(1, 0, 0))).brain_mask
    held = [((0.45 * rng.random(SHAPE)) * brain, brain) for _ in range(3)]
    transfer = [Case(f"old{i}", ((0.6 * rng.random(SHAPE)) * brain).astype(np.float32), None,
                     brain) for i in range(2)]
    cases = list(_brain_cases(4, 1, 2))
    res = evaluate_cases(iter(cases), healthy_maps=[((0.4 * rng.random(SHAPE)) * brain, brain)
                                                    for _ in range(2)],
                         healthy_test_maps=held, healthy_transfer_maps=transfer, n_boot=100)
    maps = [c.anomaly_map for c in cases] + [h[0] for h in held] + [t.anomaly_map
                                                                   for t in transfer]
    y = np.array([True] * 4 + [False] * 6)
    s = np.array([M.volume_scores(m, brain)["max"] for m in maps])
    v = res.volume_level["max"]
    assert v["n"] == 10 and v["n_positive"] == 4
    assert v["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert v["ap"] == pytest.approx(average_precision_score(y, s))
    assert v["n_healthy_by_group"] == {"test": 1, "heldout": 3, "transfer": 2}
    assert v["auroc_ci"][0] <= v["auroc"] <= v["auroc_ci"][1]
    assert set(res.volume_level_by_group) == {"test", "heldout", "transfer"}
    assert res.volume_level_by_group["transfer"]["n"] == 6
    # lesion-wise: every lesioned case has one lesion; FP blobs counted on every healthy scan
    lw = res.lesion_wise
    assert lw["n_lesions"] == 4 and lw["n_healthy_scans"] == {"test": 1, "heldout": 3,
                                                              "transfer": 2}
    at = lw["at"]["0.01"]
    assert at["recall"] == 1.0  # lesions score 0.5 above the healthy range
    exp = np.mean([case_lesions(m, None, brain, [at["threshold"]]).n_fp[0]
                   for m in [cases[4].anomaly_map, *[h[0] for h in held],
                             *[t.anomaly_map for t in transfer]]])
    assert at["fp_per_healthy_scan"] == pytest.approx(exp)
    assert [r.group for r in res.healthy_cases] == ["heldout"] * 3 + ["transfer"] * 2
    assert res.healthy_cases[3].subject == "old0"
    d = res.to_dict()
    assert d["lesion_wise"]["at"]["0.01"]["recall"] == 1.0
    assert d["volume_level"]["max"]["n"] == 10
