"""Exactness of the streaming metrics against scikit-learn and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from disyre.evaluation import metrics as M


def _volumes(rng: np.random.Generator, n: int, shape=(6, 12, 10), tied: bool = False,
             signal: float = 0.6):
    vols = []
    for _ in range(n):
        lab = rng.random(shape) < 0.08
        s = rng.random(shape) + signal * lab
        s = np.clip(s / (1 + signal), 0, 1)
        if tied:
            s = np.round(s * 7) / 7  # many ties, across and within classes
        mask = rng.random(shape) < 0.85
        vols.append((s.astype(np.float32), lab, mask))
    return vols


def _pooled(vols):
    """Labels and scores of the voxels that count: brain voxels and every lesion voxel."""
    ys, ss = [], []
    for s, lab, m in vols:
        counted = m | lab
        ys.append(lab[counted])
        ss.append(s[counted].astype(np.float64))
    return np.concatenate(ys), np.concatenate(ss)


@pytest.mark.parametrize("tied", [False, True])
def test_streamed_ap_auroc_equal_sklearn(tied: bool) -> None:
    rng = np.random.default_rng(1 + tied)
    vols = _volumes(rng, 5, tied=tied)
    acc = M.PixelAccumulator(chunk=97)  # many small chunks exercise the chunked pass
    for v in vols:
        acc.update(*v)
    res = acc.compute()
    y, s = _pooled(vols)
    assert res.n_pos == y.sum() and res.n_neg == (~y).sum()
    assert res.ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert res.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_spill_file_removed(tmp_path) -> None:
    acc = M.PixelAccumulator(spill_dir=tmp_path)
    acc.update(*_volumes(np.random.default_rng(0), 1)[0])
    assert len(list(tmp_path.iterdir())) == 1
    acc.compute()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tied", [False, True])
def test_best_dice_equals_brute_force(tied: bool) -> None:
    rng = np.random.default_rng(5 + tied)
    vols = _volumes(rng, 3, shape=(4, 8, 8), tied=tied, signal=0.3)
    res = M.pixel_metrics(vols)
    y, s = _pooled(vols)
    brute = max(2 * (y & (s >= t)).sum() / ((s >= t).sum() + y.sum()) for t in np.unique(s))
    assert res.best_dice == pytest.approx(brute, abs=1e-12)
    pred = s >= res.best_threshold
    assert 2 * (pred & y).sum() / (pred.sum() + y.sum()) == pytest.approx(res.best_dice)


def test_perfect_and_random_maps() -> None:
    rng = np.random.default_rng(3)
    shape = (8, 32, 32)
    lab = np.zeros(shape, bool)
    lab[2:5, 10:20, 8:18] = True
    mask = np.ones(shape, bool)
    perfect = M.pixel_metrics([(lab.astype(np.float32) * 0.9, lab, mask)])
    assert perfect.ap == 1.0 and perfect.auroc == 1.0 and perfect.best_dice == 1.0
    rand = M.pixel_metrics([(rng.random(shape).astype(np.float32), lab, mask)])
    prevalence = lab.mean()
    assert rand.ap == pytest.approx(prevalence, abs=0.02)
    assert rand.auroc == pytest.approx(0.5, abs=0.03)


def test_dice_at_and_binary_counts() -> None:
    s = np.array([[[0.1, 0.5, 0.9, 0.7]]], np.float32)
    lab = np.array([[[0, 1, 1, 0]]], bool)
    mask = np.array([[[1, 1, 1, 0]]], bool)  # the false positive 0.7 is outside the brain
    assert M.dice_at(s, lab, mask, 0.5) == pytest.approx(1.0)
    assert M.dice_at(s, lab, mask, 0.5, strict=True) == pytest.approx(2 / 3)
    assert M.dice_at(s, lab, None, 0.6) == pytest.approx(2 * 1 / (2 + 1 + 1))
    assert M.dice_at(np.zeros_like(s), np.zeros_like(lab), mask, 0.5) == 1.0
    c = M.binary_counts(s, lab, mask, [0.05, 0.5, 0.95])
    np.testing.assert_array_equal(c, [[2, 1, 0, 0], [1, 0, 1, 1], [0, 0, 2, 1]])


def test_slice_and_volume_level_against_sklearn() -> None:
    rng = np.random.default_rng(7)
    shape = (10, 16, 16)
    s = rng.random(shape).astype(np.float32)
    lab = np.zeros(shape, bool)
    lab[3:6, 4:8, 4:8] = True
    s[lab] += 0.5
    mask = np.ones(shape, bool)
    mask[0] = False  # a slice without brain is left out
    scores, labels = M.slice_scores(s, lab, mask, k=10)
    assert len(labels) == 9 and labels.sum() == 3
    z = np.arange(1, 10)
    explicit = {
        "mean": [s[i][mask[i]].mean() for i in z],
        "max": [s[i][mask[i]].max() for i in z],
        "topk": [np.sort(s[i][mask[i]].ravel())[-10:].mean() for i in z],
    }
    det = M.detection_metrics(scores, labels)
    for r, vals in explicit.items():
        np.testing.assert_allclose(scores[r], vals, rtol=1e-6)
        assert det[r]["auroc"] == pytest.approx(roc_auc_score(labels, vals))
        assert det[r]["ap"] == pytest.approx(average_precision_score(labels, vals))
    assert det["max"]["auroc"] == 1.0
    v = M.volume_scores(s, mask, k=10)
    assert v["max"] == pytest.approx(s[mask].max())
    assert v["topk"] == pytest.approx(np.sort(s[mask])[-10:].mean())


def test_histogram_metrics_match_exact_on_grid_values() -> None:
    rng = np.random.default_rng(11)
    bins = 64
    # scores at bin centres: the binned metrics are then exact
    pos = (rng.integers(20, 64, 300) + 0.5) / bins
    neg = (rng.integers(0, 50, 3000) + 0.5) / bins
    ap, auc, dice = M.hist_metrics(M.histogram(pos, bins), M.histogram(neg, bins))
    y = np.r_[np.ones(300, bool), np.zeros(3000, bool)]
    sc = np.r_[pos, neg]
    assert ap == pytest.approx(average_precision_score(y, sc))
    assert auc == pytest.approx(roc_auc_score(y, sc))
    assert dice == pytest.approx(M.best_dice(M.curve_counts(pos, neg))[0])


def test_bootstrap_ci_brackets_estimate_and_shrinks() -> None:
    rng = np.random.default_rng(2)
    vols = _volumes(rng, 30, shape=(4, 10, 10))
    acc = M.PixelAccumulator()
    for v in vols:
        acc.update(*v)
    ph, nh = np.stack(acc.pos_hist), np.stack(acc.neg_hist)
    res = acc.compute()
    dices = rng.random(30)
    ci = M.bootstrap_ci(ph, nh, n_boot=300, seed=0, per_volume={"dice": dices})
    lo, hi = ci["ap"]
    assert lo < res.ap < hi and hi - lo < 0.2
    assert ci["auroc"][0] < res.auroc < ci["auroc"][1]
    assert ci["mean_dice"][0] < dices.mean() < ci["mean_dice"][1]
    # same seed, same interval; fewer volumes, wider interval
    assert M.bootstrap_ci(ph, nh, n_boot=300, seed=0)["ap"] == ci["ap"]
    ci5 = M.bootstrap_ci(ph[:5], nh[:5], n_boot=300, seed=0)
    assert ci5["ap"][1] - ci5["ap"][0] > hi - lo


def test_shape_mismatch_and_nan_rejected() -> None:
    acc = M.PixelAccumulator()
    with pytest.raises(ValueError, match="shape mismatch"):
        acc.update(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)), None)
    bad = np.zeros((2, 3, 3))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        acc.update(bad, np.zeros((2, 3, 3)), None)
    acc.close()


def test_lesion_voxels_outside_the_brain_count_as_misses() -> None:
    """A lesion that leaves the brain mask: the voxels outside keep the map's value there (0)
    and stay positives, so a map perfect inside the brain no longer gets AP 1."""
    shape = (6, 20, 20)
    mask = np.zeros(shape, bool)
    mask[:, 2:18, 2:14] = True
    lab = np.zeros(shape, bool)
    lab[2:4, 8:12, 10:18] = True  # columns 14-17 lie outside the brain mask
    amap = np.where(lab & mask, 0.9, 0.1).astype(np.float32) * (mask | lab)
    res = M.pixel_metrics([(amap, lab, mask)])
    outside = int((lab & ~mask).sum())
    assert outside == 2 * 4 * 4
    assert res.n_pos == lab.sum() and res.n_pos_outside == outside
    assert res.as_dict()["n_lesion_voxels_outside_brain"] == outside
    y, sc = _pooled([(amap, lab, mask)])
    assert res.ap == pytest.approx(average_precision_score(y, sc), abs=1e-12)
    inside = (lab & mask).sum()
    assert res.best_dice == pytest.approx(2 * inside / (inside + lab.sum()))
    assert res.ap < 0.75  # half the lesion is missed


def test_volume_score_counts_voxels_by_volume() -> None:
    """The mean of the highest-scoring 1 cm^3: the same physical map at 1 mm and at 2 mm
    gives the same score (1,000 voxels of 1 mm^3 or 125 of 8 mm^3)."""
    from disyre.inference import volume_score

    fine = np.full((40, 40, 40), 0.1, np.float32)
    fine[10:22, 10:22, 10:22] = 0.8  # a 12 mm cube: 1.7 cm^3
    coarse = fine.reshape(20, 2, 20, 2, 20, 2).mean((1, 3, 5))
    assert M.top_volume_mean(fine.ravel(), 1.0) == pytest.approx(0.8)
    assert M.top_volume_mean(coarse.ravel(), 8.0) == pytest.approx(0.8)
    assert volume_score(coarse, voxel_mm3=8.0) == pytest.approx(0.8)
    # fractional voxel counts: 1 cm^3 of 3 mm voxels is 37.04 voxels
    v = np.arange(100, dtype=np.float64)
    k = 1000 / 27
    want = (v[-37:].sum() + (k - 37) * v[-38]) / k
    assert M.top_volume_mean(v, 27.0) == pytest.approx(want)
    assert M.top_volume_mean(v[:10], 1.0) == pytest.approx(v[:10].mean())
    vs = M.volume_scores(coarse, np.ones(coarse.shape, bool), voxel_mm3=8.0)
    assert vs[M.VOLUME_SCORE] == pytest.approx(0.8)


def test_whole_slice_mean_is_the_authors_slice_score() -> None:
    rng = np.random.default_rng(8)
    s = rng.random((5, 12, 12)).astype(np.float32)
    mask = np.zeros(s.shape, bool)
    mask[:, 3:9, 3:9] = True
    mask[0] = False
    lab = np.zeros(s.shape, bool)
    lab[0, 1, 1] = True  # a lesion voxel in a slice without brain: the slice still counts
    lab[2, 4:6, 4:6] = True
    scores, labels = M.slice_scores(s, lab, mask)
    assert labels.tolist() == [True, False, True, False, False]
    np.testing.assert_allclose(scores[M.WHOLE_SLICE_MEAN], s.reshape(5, -1).mean(1), rtol=1e-6)
    np.testing.assert_allclose(scores["mean"][1:], [s[z][mask[z]].mean() for z in range(1, 5)],
                               rtol=1e-6)


def test_paired_bootstrap_ap_of_two_maps_of_the_same_volumes() -> None:
    rng = np.random.default_rng(0)
    n, bins = 12, 64
    labels = [rng.random((8, 8, 8)) < 0.1 for _ in range(n)]
    noise = [rng.random((8, 8, 8)) for _ in range(n)]
    a = [0.6 * z + 0.3 * y for z, y in zip(noise, labels, strict=True)]  # weakly separating map
    b = [0.6 * z + 0.4 * y for z, y in zip(noise, labels, strict=True)]  # lesions brighter

    def hists(maps):
        pos = np.stack([M.histogram(m[y], bins) for m, y in zip(maps, labels, strict=True)])
        neg = np.stack([M.histogram(m[~y], bins) for m, y in zip(maps, labels, strict=True)])
        return pos, neg

    ha, hb = hists(a), hists(b)
    same = M.paired_bootstrap_ap(*ha, *ha, n_boot=200)
    assert same["diff"] == 0 and same["diff_low"] == 0 and same["diff_high"] == 0
    r = M.paired_bootstrap_ap(*ha, *hb, n_boot=200)
    assert r["ap_a"] == pytest.approx(M.hist_metrics(ha[0].sum(0), ha[1].sum(0))[0])
    assert r["ap_b"] > r["ap_a"] and 0 < r["diff_low"] <= r["diff"] <= r["diff_high"]
    # paired: narrower than the two unpaired intervals would suggest
    ci_a = M.bootstrap_ci(*ha, n_boot=200)["ap"]
    assert r["diff_high"] - r["diff_low"] < ci_a[1] - ci_a[0]
    back = M.paired_bootstrap_ap(*hb, *ha, n_boot=200)
    assert back["diff"] == pytest.approx(-r["diff"]) and back["diff_high"] < 0
    with pytest.raises(ValueError, match="same volumes"):
        M.paired_bootstrap_ap(ha[0][:5], ha[1][:5], *hb)
