"""Exact, streaming evaluation metrics for anomaly maps (docs/method.md#evaluation).

Everything here takes numpy arrays: an anomaly map, a lesion label and a brain mask, all
``(D, H, W)`` of the same shape. Negatives are the healthy brain voxels; positives are EVERY
labelled lesion voxel: one outside the brain mask keeps the map's value there (normally 0, so
a miss) instead of being dropped, which would inflate recall (docs/method.md#evaluation).

Pixel-wise AP and AUROC (:class:`PixelAccumulator`) are computed *exactly* over all brain
voxels of all test volumes pooled, streaming one volume at a time:

* lesion (positive) voxel scores are kept in memory (lesions are a small fraction of the brain);
* healthy (negative) voxel scores are spilled to a temporary float32 file (4 bytes per voxel,
  deleted afterwards), so RAM holds one volume plus the positives;
* at the end, the sorted distinct positive scores ``p`` are the only thresholds at which recall
  changes. Counting, for each ``p``, the negatives ``>= p`` and ``== p`` (``np.searchsorted`` +
  ``np.bincount``, chunk by chunk over the spilled negatives) gives AP exactly as
  scikit-learn's ``average_precision_score`` (step-wise sum over distinct thresholds, no
  interpolation), AUROC exactly as ``roc_auc_score`` (ties count 1/2), and the best Dice over
  every distinct threshold.

Best Dice is an ORACLE: its threshold is chosen on the test labels. The sweep covers every
distinct score value (the range comes from the scores, never from the labels).

Bootstrap confidence intervals resample volumes with replacement; to stay cheap they are
computed from per-volume histograms of the scores on a fine grid over ``[0, 1]`` (maps are in
``[0, 1]``; values outside are clipped into the end bins), so the interval is exact up to the
grid resolution while the point estimates are exact.

Example:
    >>> import numpy as np
    >>> acc = PixelAccumulator()
    >>> m = np.zeros((2, 4, 4), np.float32); lab = np.zeros_like(m, bool)
    >>> m[0, :2, :2] = 1.0; lab[0, :2, :2] = True
    >>> acc.update(m, lab, np.ones_like(lab))
    >>> res = acc.compute()
    >>> res.ap, res.auroc, res.best_dice
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the 1 cm^3 volume score is detection's rule (disyre.inference.scoring); re-exported here
from disyre.inference.scoring import SCORE_VOLUME_MM3, VOLUME_SCORE, top_volume_mean  # noqa: F401

#: default number of bins of the per-volume histograms used by the bootstrap
HIST_BINS = 4096
#: default k of the top-k-mean reduction
TOP_K = 100
#: reductions of a slice's (or volume's) brain voxels to one score
REDUCTIONS = ("mean", "max", "topk")
#: the authors' slice score: the mean over the WHOLE slice, background included
WHOLE_SLICE_MEAN = "mean_slice"


# --------------------------------------------------------------------------------------------
# small helpers


def _check_shapes(score: np.ndarray, label: np.ndarray, mask: np.ndarray | None,
                  name: str = "map") -> None:
    if score.shape != label.shape or (mask is not None and mask.shape != score.shape):
        raise ValueError(
            f"{name}: shape mismatch: map {score.shape}, label {label.shape}, "
            f"mask {None if mask is None else mask.shape}"
        )


def brain_values(score: np.ndarray, label: np.ndarray,
                 mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the lesion voxels and of the healthy brain voxels of one volume.

    Args:
        score: Anomaly map.
        label: Lesion label (non-zero = lesion).
        mask: Brain mask (non-zero = brain); ``None`` = every voxel.

    Returns:
        ``(positives, negatives)`` as 1-D float64 arrays: every lesion voxel (inside the brain
        mask or not) and the brain voxels without lesion.
    """
    _check_shapes(score, label, mask)
    lab = np.asarray(label) != 0
    s = np.asarray(score)
    if mask is None:
        return s[lab].astype(np.float64), s[~lab].astype(np.float64)
    m = np.asarray(mask) != 0
    return s[lab].astype(np.float64), s[m & ~lab].astype(np.float64)


def lesion_outside_brain(label: np.ndarray, mask: np.ndarray | None) -> int:
    """Number of lesion voxels outside the brain mask (they count, as lesion, with the map's
    value there)."""
    if mask is None:
        return 0
    return int(np.count_nonzero((np.asarray(label) != 0) & (np.asarray(mask) == 0)))


def histogram(values: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of ``values`` on ``bins`` equal bins over ``[0, 1]`` (outside values clipped)."""
    idx = np.clip((np.asarray(values, np.float64) * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(idx, minlength=bins).astype(np.int64)


@dataclass
class CurveCounts:
    """Cumulative counts at each distinct positive score (descending), for ``score >= t``.

    Attributes:
        thresholds: Distinct positive scores, descending.
        tp: Positives with score ``>= t``.
        fp: Negatives with score ``>= t``.
        n_pos: Total positives.
        n_neg: Total negatives.
        auroc: AUROC (ties count 1/2), exact.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_pos: int
    n_neg: int
    auroc: float


def _counts_from(pos_sorted_unique: np.ndarray, pos_count: np.ndarray, ge: np.ndarray,
                 eq: np.ndarray, n_neg: int) -> CurveCounts:
    """Assemble :class:`CurveCounts` from per-positive-value negative counts (ascending input)."""
    n_pos = int(pos_count.sum())
    if n_pos and n_neg:
        lt = n_neg - ge
        auroc = float((pos_count * (lt + 0.5 * eq)).sum() / (n_pos * float(n_neg)))
    else:
        auroc = float("nan")
    # descending order: thresholds from the highest score down
    t = pos_sorted_unique[::-1]
    tp = np.cumsum(pos_count[::-1])
    fp = ge[::-1].astype(np.int64)
    return CurveCounts(thresholds=t, tp=tp, fp=fp, n_pos=n_pos, n_neg=int(n_neg), auroc=auroc)


def _neg_counts(uniq: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each value of sorted ``uniq``: negatives ``>=`` it and ``==`` it (one chunk)."""
    n = len(uniq)
    # index of the first positive value strictly greater than each negative
    right = np.searchsorted(uniq, neg, side="right")
    # negatives are >= uniq[j] for j < right  -> histogram of right, then reverse cumsum
    hist_r = np.bincount(right, minlength=n + 1)
    ge = np.cumsum(hist_r[::-1])[::-1][1:]  # ge[j] = #{right > j}
    left = np.searchsorted(uniq, neg, side="left")
    is_eq = left < right
    eq = np.bincount(left[is_eq], minlength=n)[:n]
    return ge.astype(np.int64), eq.astype(np.int64)


def curve_counts(pos: np.ndarray, neg: np.ndarray) -> CurveCounts:
    """Exact :class:`CurveCounts` of in-memory positive and negative scores."""
    uniq, cnt = np.unique(np.asarray(pos, np.float64), return_counts=True)
    ge, eq = _neg_counts(uniq, np.asarray(neg, np.float64))
    return _counts_from(uniq, cnt, ge, eq, len(neg))


def average_precision(c: CurveCounts) -> float:
    """AP = sum over distinct thresholds of (recall step) x precision (scikit-learn's)."""
    if c.n_pos == 0:
        return float("nan")
    d_tp = np.diff(np.concatenate([[0], c.tp]))
    prec = c.tp / (c.tp + c.fp)
    return float((d_tp * prec).sum() / c.n_pos)


def best_dice(c: CurveCounts) -> tuple[float, float]:
    """Best Dice over every distinct threshold (``score >= t``); an ORACLE.

    Between two consecutive distinct positive scores the true positives are constant and the
    false positives only fall as the threshold rises, so the best threshold is always one of
    the positive scores: the maximum over them is the maximum over all thresholds.

    Returns:
        ``(dice, threshold)``; ``(0.0, nan)`` without positives.
    """
    if c.n_pos == 0:
        return 0.0, float("nan")
    dice = 2.0 * c.tp / (c.tp + c.fp + c.n_pos)
    i = int(np.argmax(dice))
    return float(dice[i]), float(c.thresholds[i])


def dice_at(score: np.ndarray, label: np.ndarray, mask: np.ndarray | None,
            threshold: float, strict: bool = False) -> float:
    """Dice of ``score >= threshold`` (``>`` if ``strict``) against ``label`` inside the brain.

    Returns 1.0 when both the prediction and the label are empty.
    """
    pos, neg = brain_values(score, label, mask)
    op = np.greater if strict else np.greater_equal
    tp = int(op(pos, threshold).sum())
    fp = int(op(neg, threshold).sum())
    fn = len(pos) - tp
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2.0 * tp / den


def binary_counts(score: np.ndarray, label: np.ndarray, mask: np.ndarray | None,
                  thresholds: Sequence[float], strict: bool = True) -> np.ndarray:
    """TP, FP, FN, TN of ``score > t`` (``>=`` if not ``strict``) at each threshold.

    Returns:
        int64 array ``(len(thresholds), 4)``.
    """
    pos, neg = brain_values(score, label, mask)
    op = np.greater if strict else np.greater_equal
    out = np.zeros((len(thresholds), 4), np.int64)
    for i, t in enumerate(thresholds):
        tp = int(np.count_nonzero(op(pos, t)))
        fp = int(np.count_nonzero(op(neg, t)))
        out[i] = (tp, fp, len(pos) - tp, len(neg) - fp)
    return out


# --------------------------------------------------------------------------------------------
# streaming pixel metrics


@dataclass
class PixelMetrics:
    """Pooled pixel-wise metrics (exact).

    Attributes:
        ap: Average precision.
        auroc: Area under the ROC curve (ties count 1/2).
        best_dice: Best Dice over all thresholds (ORACLE: chosen on the test labels).
        best_threshold: The threshold (``score >= t``) giving ``best_dice``.
        n_pos: Lesion voxels (all of them, inside the brain mask or not).
        n_neg: Healthy brain voxels.
        curve: Exact counts at each distinct positive score (for PR / ROC curves).
        n_pos_outside: Lesion voxels outside the brain mask (part of ``n_pos``).
    """

    ap: float
    auroc: float
    best_dice: float
    best_threshold: float
    n_pos: int
    n_neg: int
    curve: CurveCounts | None = field(default=None, repr=False)
    n_pos_outside: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly summary (no curve)."""
        return {"ap": self.ap, "auroc": self.auroc, "best_dice_oracle": self.best_dice,
                "best_threshold_oracle": self.best_threshold, "n_lesion_voxels": self.n_pos,
                "n_lesion_voxels_outside_brain": self.n_pos_outside,
                "n_healthy_voxels": self.n_neg,
                "prevalence": self.n_pos / max(self.n_pos + self.n_neg, 1)}


class PixelAccumulator:
    """Streams volumes and computes exact pooled pixel AP / AUROC / best Dice.

    Args:
        spill_dir: Folder of the temporary file holding healthy-voxel scores (default: the
            system temp folder). The file is removed by :meth:`compute` / :meth:`close`.
        chunk: Negatives processed per chunk at the end (bounds memory).
        hist_bins: Bins of the per-volume histograms kept for the bootstrap.
    """

    def __init__(self, spill_dir: str | Path | None = None, chunk: int = 1 << 21,
                 hist_bins: int = HIST_BINS) -> None:
        fd, name = tempfile.mkstemp(prefix="disyre-neg-", suffix=".f32",
                                    dir=None if spill_dir is None else str(spill_dir))
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._pos: list[np.ndarray] = []
        self.n_neg = 0
        self.n_pos_outside = 0
        self.chunk = int(chunk)
        self.hist_bins = int(hist_bins)
        #: per-volume histograms (n_volumes, bins) of lesion / healthy voxel scores
        self.pos_hist: list[np.ndarray] = []
        self.neg_hist: list[np.ndarray] = []

    def update(self, score: np.ndarray, label: np.ndarray, mask: np.ndarray | None) -> None:
        """Add one volume (``score``, ``label``, ``mask`` of equal shape)."""
        if self._file.closed:
            raise RuntimeError("accumulator already computed/closed")
        pos, neg = brain_values(score, label, mask)
        if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
            raise ValueError("anomaly map holds NaN or Inf inside the brain")
        self.n_pos_outside += lesion_outside_brain(label, mask)
        self._pos.append(pos.astype(np.float32))
        neg32 = neg.astype(np.float32)
        self._file.write(neg32.tobytes())
        self.n_neg += len(neg32)
        self.pos_hist.append(histogram(pos, self.hist_bins))
        self.neg_hist.append(histogram(neg, self.hist_bins))

    def close(self) -> None:
        """Remove the temporary file."""
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)

    def __del__(self) -> None:  # pragma: no cover - best effort cleanup
        try:
            self.close()
        except Exception:
            pass

    def compute(self) -> PixelMetrics:
        """Exact pooled metrics; releases the temporary file."""
        self._file.flush()
        self._file.close()
        try:
            pos = np.concatenate(self._pos) if self._pos else np.zeros(0, np.float32)
            uniq, cnt = np.unique(pos.astype(np.float64), return_counts=True)
            ge = np.zeros(len(uniq), np.int64)
            eq = np.zeros(len(uniq), np.int64)
            if self.n_neg and len(uniq):
                mm = np.memmap(self._path, dtype=np.float32, mode="r", shape=(self.n_neg,))
                for s in range(0, self.n_neg, self.chunk):
                    g, e = _neg_counts(uniq, np.asarray(mm[s:s + self.chunk], np.float64))
                    ge += g
                    eq += e
                del mm
        finally:
            self._path.unlink(missing_ok=True)
        c = _counts_from(uniq, cnt, ge, eq, self.n_neg)
        d, t = best_dice(c)
        return PixelMetrics(ap=average_precision(c), auroc=c.auroc, best_dice=d,
                            best_threshold=t, n_pos=c.n_pos, n_neg=c.n_neg, curve=c,
                            n_pos_outside=self.n_pos_outside)


def pixel_metrics(volumes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]]
                  ) -> PixelMetrics:
    """Exact pooled pixel metrics of ``(map, label, mask)`` triples (convenience wrapper)."""
    acc = PixelAccumulator()
    for s, lab, m in volumes:
        acc.update(s, lab, m)
    return acc.compute()


# --------------------------------------------------------------------------------------------
# metrics from histograms (bootstrap)


def hist_metrics(pos_hist: np.ndarray, neg_hist: np.ndarray) -> tuple[float, float, float]:
    """AP, AUROC and best Dice from binned counts (scores in one bin count as tied).

    Args:
        pos_hist: ``(..., bins)`` lesion-voxel counts per bin.
        neg_hist: ``(..., bins)`` healthy-voxel counts per bin.

    Returns:
        ``(ap, auroc, best_dice)`` arrays of shape ``(...)``.
    """
    pos_hist = np.asarray(pos_hist, np.float64)
    neg_hist = np.asarray(neg_hist, np.float64)
    tp = np.cumsum(pos_hist[..., ::-1], axis=-1)  # score >= bin lower edge, descending
    fp = np.cumsum(neg_hist[..., ::-1], axis=-1)
    n_pos = tp[..., -1:]
    n_neg = fp[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos_hist[..., ::-1] * prec).sum(-1) / n_pos[..., 0]
        fp_below = n_neg - fp  # negatives in lower bins
        auroc = (pos_hist[..., ::-1] * (fp_below + 0.5 * neg_hist[..., ::-1])).sum(-1) / (
            n_pos[..., 0] * n_neg[..., 0])
        dice = (2 * tp / (tp + fp + n_pos)).max(-1)
    return ap, auroc, dice


def bootstrap_ci(pos_hist: np.ndarray, neg_hist: np.ndarray, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0,
                 per_volume: dict[str, np.ndarray] | None = None
                 ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over volumes (resampled with replacement).

    Pixel metrics are recomputed from the summed per-volume histograms of each resample
    (binned: exact up to the histogram grid). Per-volume quantities in ``per_volume`` (e.g.
    Dice per case) are bootstrapped as means.

    Args:
        pos_hist: ``(n_volumes, bins)`` lesion-voxel histograms.
        neg_hist: ``(n_volumes, bins)`` healthy-voxel histograms.
        n_boot: Number of resamples.
        alpha: 1 - confidence level.
        seed: Seed of the resampling generator.
        per_volume: Name -> ``(n_volumes,)`` values whose mean gets an interval too.

    Returns:
        Name -> ``(low, high)``; names ``ap``, ``auroc``, ``best_dice_oracle`` and those of
        ``per_volume`` (prefixed ``mean_``).
    """
    pos_hist = np.asarray(pos_hist, np.float64)
    neg_hist = np.asarray(neg_hist, np.float64)
    n = len(pos_hist)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    aps, aucs, dices = [], [], []
    means: dict[str, list[np.ndarray]] = {k: [] for k in (per_volume or {})}
    step = 64
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        idx = rng.integers(0, n, size=(b, n))
        w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)
        a, u, d = hist_metrics(w @ pos_hist, w @ neg_hist)
        aps.append(a)
        aucs.append(u)
        dices.append(d)
        for k, v in (per_volume or {}).items():
            v = np.asarray(v, np.float64)
            ok = np.isfinite(v)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[k].append((w[:, ok] @ v[ok]) / w[:, ok].sum(1))
    q = (100 * alpha / 2, 100 * (1 - alpha / 2))

    def _ci(x: list[np.ndarray]) -> tuple[float, float]:
        arr = np.concatenate(x)
        arr = arr[np.isfinite(arr)]
        if len(arr) == 0:
            return (float("nan"), float("nan"))
        lo, hi = np.percentile(arr, q)
        return (float(lo), float(hi))

    out = {"ap": _ci(aps), "auroc": _ci(aucs), "best_dice_oracle": _ci(dices)}
    for k, v in means.items():
        out[f"mean_{k}"] = _ci(v)
    return out


def paired_bootstrap_ap(pos_a: np.ndarray, neg_a: np.ndarray, pos_b: np.ndarray,
                        neg_b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                        seed: int = 0) -> dict[str, float]:
    """Pixel AP of two maps of the *same* volumes and a paired interval of their difference.

    Each resample draws volumes with replacement once and computes both APs on it (from the
    per-volume histograms, as :func:`bootstrap_ci`), so the interval of ``ap_b - ap_a`` is
    not widened by which volumes were drawn: two settings of one model are compared fairly.

    Args:
        pos_a, neg_a: ``(n_volumes, bins)`` lesion / healthy voxel histograms of map A.
        pos_b, neg_b: The same for map B, volumes in the same order.
        n_boot: Number of resamples.
        alpha: 1 - confidence level.
        seed: Seed of the resampling generator.

    Returns:
        ``{"ap_a", "ap_b", "diff", "diff_low", "diff_high"}`` (binned APs, B minus A).

    Example:
        >>> h = np.array([[0, 5, 5], [1, 0, 9]]), np.array([[9, 1, 0], [8, 2, 0]])
        >>> r = paired_bootstrap_ap(*h, *h, n_boot=50)
        >>> r["diff"], r["diff_low"], r["diff_high"]
        (0.0, 0.0, 0.0)
    """
    arrs = [np.asarray(a, np.float64) for a in (pos_a, neg_a, pos_b, neg_b)]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError("the two maps need histograms of the same volumes")
    ap_a = float(hist_metrics(arrs[0].sum(0), arrs[1].sum(0))[0])
    ap_b = float(hist_metrics(arrs[2].sum(0), arrs[3].sum(0))[0])
    rng = np.random.default_rng(seed)
    diffs = []
    for s in range(0, n_boot, 64):
        idx = rng.integers(0, n, size=(min(64, n_boot - s), n))
        w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)
        diffs.append(hist_metrics(w @ arrs[2], w @ arrs[3])[0]
                     - hist_metrics(w @ arrs[0], w @ arrs[1])[0])
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    d = d[np.isfinite(d)]
    lo, hi = (np.percentile(d, (100 * alpha / 2, 100 * (1 - alpha / 2))) if len(d)
              else (float("nan"), float("nan")))
    return {"ap_a": ap_a, "ap_b": ap_b, "diff": ap_b - ap_a, "diff_low": float(lo),
            "diff_high": float(hi)}


# --------------------------------------------------------------------------------------------
# slice- and volume-level detection


def reduce_scores(values: np.ndarray, how: str, k: int = TOP_K) -> float:
    """Reduce voxel scores to one score: ``mean``, ``max`` or ``topk`` (mean of the top k)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return float("nan")
    if how == "mean":
        return float(v.mean())
    if how == "max":
        return float(v.max())
    if how == "topk":
        if v.size <= k:
            return float(v.mean())
        return float(np.partition(v, v.size - k)[v.size - k:].mean())
    raise ValueError(f"unknown reduction {how!r}; choose from {REDUCTIONS}")


def slice_scores(score: np.ndarray, label: np.ndarray, mask: np.ndarray | None,
                 k: int = TOP_K) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per axial slice (first axis) reduced scores, and slice labels.

    Slices with neither brain nor lesion voxels are left out. A slice is anomalous if any of
    its voxels is labelled lesion. The reductions of :data:`REDUCTIONS` run over the slice's
    brain voxels; :data:`WHOLE_SLICE_MEAN` (the authors' slice score) is the mean over the
    whole slice of the grid given, background included.

    Returns:
        ``({reduction: (n_slices,) scores}, (n_slices,) bool labels)``.
    """
    _check_shapes(score, label, mask)
    m = np.ones(score.shape, bool) if mask is None else np.asarray(mask) != 0
    lab = np.asarray(label) != 0
    out: dict[str, list[float]] = {r: [] for r in (*REDUCTIONS, WHOLE_SLICE_MEAN)}
    labels = []
    for z in range(score.shape[0]):
        mz = m[z]
        if not (mz.any() or lab[z].any()):
            continue
        vals = score[z][mz]
        for r in REDUCTIONS:
            out[r].append(reduce_scores(vals, r, k) if vals.size else 0.0)
        out[WHOLE_SLICE_MEAN].append(float(np.mean(score[z], dtype=np.float64)))
        labels.append(bool(lab[z].any()))
    return {r: np.asarray(v) for r, v in out.items()}, np.asarray(labels, bool)


def volume_scores(score: np.ndarray, mask: np.ndarray | None, k: int = TOP_K,
                  voxel_mm3: float = 1.0) -> dict[str, float]:
    """Whole-volume reduced scores over brain voxels: ``mean``, ``max``, ``topk`` and
    :data:`VOLUME_SCORE` (:func:`top_volume_mean` of 1 cm^3, the score of ``disyre detect``).
    """
    vals = score[np.asarray(mask) != 0] if mask is not None else np.asarray(score).ravel()
    out = {r: reduce_scores(vals, r, k) for r in REDUCTIONS}
    out[VOLUME_SCORE] = top_volume_mean(vals, voxel_mm3)
    return out


def detection_metrics(scores: dict[str, np.ndarray], labels: np.ndarray
                      ) -> dict[str, dict[str, float]]:
    """AUROC and AP (scikit-learn) of reduced scores per reduction.

    Returns:
        ``{reduction: {"auroc": .., "ap": .., "n": .., "n_positive": ..}}``; NaN where the
        labels hold a single class.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, bool)
    out = {}
    for r, s in scores.items():
        s = np.asarray(s, np.float64)
        both = 0 < labels.sum() < len(labels)
        out[r] = {
            "auroc": float(roc_auc_score(labels, s)) if both else float("nan"),
            "ap": float(average_precision_score(labels, s)) if labels.any() else float("nan"),
            "n": int(len(labels)),
            "n_positive": int(labels.sum()),
        }
    return out
