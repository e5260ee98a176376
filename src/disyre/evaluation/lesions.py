"""Lesion-wise detection (which lesions a thresholded map finds, its false-positive blobs) and
scan-level detection intervals (lesioned against healthy scans).

The protocol is the matching of the BraTS 2023 lesion-wise metrics (Saluja et al., the
challenge's evaluation code), with its dilation set to 0 and no minimum lesion size by
default:

- lesions are the connected components of the label, **26-connectivity** in 3D (two voxels
  touching by a face, an edge or a corner are one lesion);
- the prediction is ``map > t`` on the brain (and on the lesion voxels, so that it is the
  binary map the calibrated Dice is measured on); its connected components (26-connectivity)
  are the predicted blobs;
- a lesion is **detected** when at least one predicted voxel lies in it (with ``dilation=d``:
  in the lesion grown by ``d`` voxels, BraTS's tolerance, lesions closer than that merging
  into one as in BraTS);
- a predicted blob that touches no lesion is a **false positive** (every blob counts, however
  small, as in BraTS 2023); on a healthy scan every blob is one.

At each threshold: lesion recall (detected / all lesions, pooled), false-positive blobs per
scan (lesioned and healthy scans apart), lesion-wise F1 (the harmonic mean of lesion recall
and blob precision, blobs touching a lesion / all blobs, as in the MSSEG 2016 challenge's
lesion detection F1) and lesion recall by lesion volume (:data:`SIZE_BINS_ML`).

Example:
    >>> import numpy as np
    >>> lab = np.zeros((8, 8, 8), bool); lab[1:3, 1:3, 1:3] = True; lab[5:7, 5:7, 5:7] = True
    >>> amap = np.zeros(lab.shape, np.float32); amap[1, 1, 1] = 0.9; amap[4, 0, 7] = 0.8
    >>> c = case_lesions(amap, lab, None, [0.5])
    >>> c.n_lesions, c.detected[0].tolist(), c.n_blobs.tolist(), c.n_fp.tolist()
    (2, [True, False], [2], [1])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONNECTIVITY = 26
# lesion volume bins in mL: [low, high)
SIZE_BINS_ML: dict[str, tuple[float, float]] = {
    "small": (0.0, 1.0), "medium": (1.0, 10.0), "large": (10.0, float("inf"))}
PROTOCOL = ("BraTS 2023 lesion-wise matching: lesions = connected components of the label "
            "(26-connectivity); prediction = map > threshold on the brain and the lesion "
            "voxels, its connected components (26-connectivity) the predicted blobs; a lesion "
            "is detected when a predicted voxel lies in it (grown by `dilation` voxels); a "
            "blob touching no lesion is a false positive; F1 = harmonic mean of lesion recall "
            "and blob precision (MSSEG 2016)")


def _structure() -> np.ndarray:
    return np.ones((3, 3, 3), bool)  # 26-connectivity


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (26-connectivity) of a 3D boolean array: ``(labels, n)``.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((3, 3, 3), bool); m[0, 0, 0] = m[1, 1, 1] = m[2, 0, 2] = True
        >>> label_components(m)[1]   # corner-touching voxels are one component
        1
    """
    from scipy import ndimage

    lab, n = ndimage.label(np.asarray(mask, bool), structure=_structure())
    return lab.astype(np.int32, copy=False), int(n)


def lesion_components(label: np.ndarray, dilation: int = 0) -> tuple[np.ndarray, int]:
    """The lesions of a label: ``(ids, n)``, ids 1..n on the lesion voxels, 0 elsewhere.

    With ``dilation > 0`` lesions whose ``dilation``-voxel neighbourhoods touch are one lesion
    (BraTS 2023's grouping).
    """
    from scipy import ndimage

    lab = np.asarray(label) != 0
    if dilation <= 0:
        return label_components(lab)
    grown = ndimage.binary_dilation(lab, ndimage.generate_binary_structure(3, 2),
                                    iterations=int(dilation))
    groups, n = label_components(grown)
    ids = np.where(lab, groups, 0).astype(np.int32)
    # renumber (every group holds a lesion voxel, since it grew from one) to 1..n
    return ids, n


@dataclass
class CaseLesions:
    """Lesion-wise counts of one scan at each threshold.

    Attributes:
        volumes_ml: Volume of each lesion (mL), ``(n_lesions,)``.
        detected: ``(n_thresholds, n_lesions)``: lesion found at that threshold.
        n_blobs: ``(n_thresholds,)``: predicted connected components.
        n_fp: ``(n_thresholds,)``: predicted components touching no lesion.
    """

    volumes_ml: np.ndarray
    detected: np.ndarray
    n_blobs: np.ndarray
    n_fp: np.ndarray

    @property
    def n_lesions(self) -> int:
        """Number of lesions of the scan."""
        return int(len(self.volumes_ml))

    def size_bin(self, bins: Mapping[str, tuple[float, float]] = SIZE_BINS_ML) -> np.ndarray:
        """Index into ``bins`` of each lesion's volume bin."""
        out = np.full(self.n_lesions, -1, int)
        for b, (lo, hi) in enumerate(bins.values()):
            out[(self.volumes_ml >= lo) & (self.volumes_ml < hi)] = b
        return out


def case_lesions(amap: np.ndarray, label: np.ndarray | None, mask: np.ndarray | None,
                 thresholds: Sequence[float], voxel_mm3: float = 1.0,
                 dilation: int = 0,
                 binary_step: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> CaseLesions:
    """Lesion-wise counts of one scan (see the module docstring for the protocol).

    Args:
        amap: Anomaly map ``(D, H, W)``.
        label: Lesion label (non-zero = lesion); ``None`` or all zero for a healthy scan.
        mask: Brain mask; ``None`` = every voxel. The prediction is ``map > t`` on the brain
            and the lesion voxels (the voxels the calibrated Dice counts).
        thresholds: Thresholds ``t`` (a voxel is anomalous when ``map > t``).
        voxel_mm3: Voxel volume (for the lesion volumes).
        dilation: BraTS's tolerance in voxels (0: the map must overlap the lesion itself).
        binary_step: Applied to each thresholded volume before its blobs are counted (the
            removal of small connected components of a published post-processing).

    Returns:
        A :class:`CaseLesions`.
    """
    from scipy import ndimage

    amap = np.asarray(amap)
    lab = np.zeros(amap.shape, bool) if label is None else np.asarray(label) != 0
    where = lab | (np.ones(amap.shape, bool) if mask is None else np.asarray(mask) != 0)
    ids, n = lesion_components(lab, dilation)
    sizes = np.bincount(ids.ravel(), minlength=n + 1)[1:] if n else np.zeros(0, np.int64)
    vol_ml = sizes.astype(np.float64) * float(voxel_mm3) / 1000.0
    if dilation > 0 and n:
        st = ndimage.generate_binary_structure(3, 2)
        grown = np.zeros(amap.shape, np.int32)  # each lesion's tolerance zone
        zones = []
        for i, sl in enumerate(ndimage.find_objects(ids), 1):
            pad = tuple(slice(max(s.start - dilation, 0), s.stop + dilation) for s in sl)
            z = ndimage.binary_dilation(ids[pad] == i, st, iterations=int(dilation))
            zones.append((pad, z))
            grown[pad][z] = i
    det = np.zeros((len(thresholds), n), bool)
    n_blobs = np.zeros(len(thresholds), np.int64)
    n_fp = np.zeros(len(thresholds), np.int64)
    for j, t in enumerate(thresholds):
        pred = (amap > t) & where
        if binary_step is not None:
            pred = np.asarray(binary_step(pred), bool)
        blobs, nb = label_components(pred)
        n_blobs[j] = nb
        if n == 0:
            n_fp[j] = nb
            continue
        if dilation <= 0:
            hit = (ids > 0) & (blobs > 0)
            det[j, ids[hit] - 1] = True
            touching = np.unique(blobs[hit])
        else:
            touching_l = []
            for i, (pad, z) in enumerate(zones, 1):
                b = blobs[pad][z]
                b = np.unique(b[b > 0])
                if len(b):
                    det[j, i - 1] = True
                    touching_l.append(b)
            touching = np.unique(np.concatenate(touching_l)) if touching_l else np.zeros(0)
        n_fp[j] = nb - len(touching)
    return CaseLesions(volumes_ml=vol_ml, detected=det, n_blobs=n_blobs, n_fp=n_fp)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _f1(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Harmonic mean; no blob at all counts as precision 0; NaN where recall is."""
    r = np.asarray(recall, np.float64)
    p = np.where(np.isnan(precision), 0.0, np.asarray(precision, np.float64))
    s = r + p
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(s > 0, 2 * r * p / np.where(s > 0, s, 1), 0.0)
    return np.where(np.isnan(r), np.nan, f)


def _ci(x: np.ndarray, alpha: float) -> list[float]:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(x, (100 * alpha / 2, 100 * (1 - alpha / 2)))]


def _weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)


def summarize_lesions(lesioned: Sequence[CaseLesions], healthy: Mapping[str, Sequence[CaseLesions]],
                      thresholds: Sequence[tuple[float, float]], *, n_boot: int = 1000,
                      seed: int = 0, alpha: float = 0.05, dilation: int = 0,
                      bins: Mapping[str, tuple[float, float]] = SIZE_BINS_ML
                      ) -> dict[str, Any]:
    """Pool the lesion-wise counts of the test scans into the report's numbers.

    Args:
        lesioned: Counts of the scans with a lesion.
        healthy: Group name (``test``, ``heldout``, ``transfer``) -> counts of healthy scans.
        thresholds: ``(fpr, t)`` pairs, in the order of the counts' threshold axis.
        n_boot: Bootstrap resamples (0 = no intervals): lesioned scans resampled with
            replacement (recall, F1, FP per lesioned scan, recall by size), healthy scans
            resampled apart (FP per healthy scan).
        seed: Seed of the resampling.
        alpha: 1 - confidence level.
        dilation: Recorded with the protocol.
        bins: Lesion volume bins (mL).

    Returns:
        ``{"protocol", "connectivity", "dilation", "size_bins_ml", "n_lesions",
        "n_lesioned_scans", "n_healthy_scans", "at": {fpr_key: {...}}}``; per threshold:
        ``recall``, ``precision`` (blobs), ``f1``, ``fp_per_lesioned_scan``,
        ``fp_per_healthy_scan`` (all healthy scans; ``fp_per_healthy_scan_by_group``), and
        ``by_size`` (``{bin: {"n", "n_detected", "recall"}}``), each with ``*_ci`` when
        ``n_boot > 0``.

    Example:
        >>> import numpy as np
        >>> a = CaseLesions(np.array([0.5, 20.0]), np.array([[True, False]]), np.array([3]),
        ...                 np.array([2]))
        >>> h = CaseLesions(np.zeros(0), np.zeros((1, 0), bool), np.array([4]), np.array([4]))
        >>> s = summarize_lesions([a], {"heldout": [h]}, [(0.01, 0.3)], n_boot=0)["at"]["0.01"]
        >>> s["recall"], s["fp_per_lesioned_scan"], s["fp_per_healthy_scan"], s["by_size"]["small"]
        (0.5, 2.0, 4.0, {'n': 1, 'n_detected': 1, 'recall': 1.0})
    """
    from disyre.evaluation.thresholds import fpr_key

    nt, nb = len(thresholds), len(bins)
    nl = len(lesioned)
    # per scan: lesions, detected, blobs, fp, per-bin lesions and detections
    les = np.array([c.n_lesions for c in lesioned], np.float64)
    det = np.array([c.detected.sum(1) for c in lesioned], np.float64).reshape(nl, nt)
    blobs = np.array([c.n_blobs for c in lesioned], np.float64).reshape(nl, nt)
    fp = np.array([c.n_fp for c in lesioned], np.float64).reshape(nl, nt)
    bin_n = np.zeros((nl, nb))
    bin_det = np.zeros((nl, nt, nb))
    for i, c in enumerate(lesioned):
        b = c.size_bin(bins)
        for k in range(nb):
            bin_n[i, k] = (b == k).sum()
            bin_det[i, :, k] = c.detected[:, b == k].sum(1)
    groups = {g: np.array([c.n_fp for c in v], np.float64).reshape(len(v), nt)
              for g, v in healthy.items() if len(v)}
    hfp = np.concatenate(list(groups.values())) if groups else np.zeros((0, nt))

    def stats(w: np.ndarray, wh: np.ndarray | None) -> dict[str, np.ndarray]:
        """Pooled numbers for scan weights ``w`` (``(B, nl)``) and ``wh`` (``(B, nh)``)."""
        rec = _safe_div(w @ det, (w @ les)[:, None])
        prec = _safe_div(w @ (blobs - fp), w @ blobs)
        out = {"recall": rec, "precision": prec, "f1": _f1(rec, prec),
               "fp_per_lesioned_scan": _safe_div(w @ fp, w.sum(1)[:, None])}
        for k, name in enumerate(bins):
            out[f"recall_{name}"] = _safe_div(w @ bin_det[:, :, k], (w @ bin_n[:, k])[:, None])
        if wh is not None:
            out["fp_per_healthy_scan"] = _safe_div(wh @ hfp, wh.sum(1)[:, None])
        return out

    one = stats(np.ones((1, nl)), np.ones((1, len(hfp))) if len(hfp) else None)
    boot: dict[str, np.ndarray] = {}
    if n_boot > 0 and nl > 0:
        rng = np.random.default_rng(seed)
        wh = _weights(rng, len(hfp), n_boot) if len(hfp) else None
        boot = stats(_weights(rng, nl, n_boot), wh)
    at: dict[str, Any] = {}
    for j, (f, t) in enumerate(thresholds):
        d: dict[str, Any] = {"threshold": float(t)}
        for k in ("recall", "precision", "f1", "fp_per_lesioned_scan", "fp_per_healthy_scan"):
            if k not in one:
                continue
            d[k] = float(one[k][0, j])
            if k in boot:
                d[f"{k}_ci"] = _ci(boot[k][:, j], alpha)
        d["n_detected"] = int(det[:, j].sum())
        d["n_blobs_lesioned_scans"] = int(blobs[:, j].sum())
        d["n_fp_lesioned_scans"] = int(fp[:, j].sum())
        if groups:
            d["fp_per_healthy_scan_by_group"] = {g: float(v[:, j].mean())
                                                 for g, v in groups.items()}
        d["by_size"] = {}
        for k, name in enumerate(bins):
            e: dict[str, Any] = {"n": int(bin_n[:, k].sum()),
                                 "n_detected": int(bin_det[:, j, k].sum()),
                                 "recall": float(one[f"recall_{name}"][0, j])}
            if f"recall_{name}" in boot:
                e["recall_ci"] = _ci(boot[f"recall_{name}"][:, j], alpha)
            d["by_size"][name] = e
        at[fpr_key(f)] = d
    return {"protocol": PROTOCOL, "connectivity": CONNECTIVITY, "dilation": int(dilation),
            "size_bins_ml": {k: [lo, None if hi == float("inf") else hi]
                             for k, (lo, hi) in bins.items()},
            "n_lesions": int(les.sum()), "n_lesioned_scans": nl,
            "n_healthy_scans": {g: len(v) for g, v in healthy.items()},
            "bootstrap": (f"percentile {100 * (1 - alpha):g} % interval, {n_boot} resamples: "
                          "lesioned scans resampled with replacement, healthy scans apart")
            if n_boot > 0 else "none",
            "at": at}


# --------------------------------------------------------------------------------------------
# scan-level detection (lesioned against healthy scans)


def weighted_auroc_ap(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """AUROC (ties count 1/2) and AP (scikit-learn's step-wise sum) of scans with weights.

    Args:
        scores: ``(n,)`` scan scores.
        labels: ``(n,)`` True for a lesioned scan.
        weights: ``(B, n)`` sample weights (bootstrap counts); unit weights give
            scikit-learn's ``roc_auc_score`` and ``average_precision_score``.

    Returns:
        ``(auroc, ap)``, each ``(B,)``; NaN where a class has no weight.

    Example:
        >>> import numpy as np
        >>> a, p = weighted_auroc_ap(np.array([0.9, 0.4, 0.5, 0.1]),
        ...                          np.array([1, 1, 0, 0], bool), np.ones((1, 4)))
        >>> float(a[0]), round(float(p[0]), 4)
        (0.75, 0.8333)
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    pos, neg = s[y], s[~y]
    wp, wn = w[:, y], w[:, ~y]
    gt = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    npos, nneg = wp.sum(1), wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.einsum("bi,ij,bj->b", wp, gt, wn) / (npos * nneg)
        uniq, inv = np.unique(-s, return_inverse=True)  # distinct scores, descending
        g = np.zeros((len(s), len(uniq)))
        g[np.arange(len(s)), inv] = 1.0
        tp = np.cumsum((w * y) @ g, axis=1)
        fp = np.cumsum((w * ~y) @ g, axis=1)
        prec = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        rec = tp / npos[:, None]
        ap = (np.diff(rec, axis=1, prepend=0.0) * prec).sum(1)
    auroc = np.where((npos > 0) & (nneg > 0), auroc, np.nan)
    ap = np.where(npos > 0, ap, np.nan)
    return auroc, ap


def scan_level_ci(scores: np.ndarray, labels: np.ndarray, *, n_boot: int = 1000,
                  seed: int = 0, alpha: float = 0.05) -> dict[str, list[float]]:
    """Percentile intervals of scan-level AUROC and AP: lesioned and healthy scans resampled
    apart, with replacement (their numbers stay those of the test set).

    Returns:
        ``{"auroc_ci": [lo, hi], "ap_ci": [lo, hi]}`` (NaN without both classes).
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    if n_boot <= 0 or y.all() or not y.any():
        return {"auroc_ci": [float("nan")] * 2, "ap_ci": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, len(s)))
    w[:, y] = _weights(rng, int(y.sum()), n_boot)
    w[:, ~y] = _weights(rng, int((~y).sum()), n_boot)
    auroc, ap = weighted_auroc_ap(s, y, w)
    return {"auroc_ci": _ci(auroc, alpha), "ap_ci": _ci(ap, alpha)}
