"""Thresholds calibrated on healthy maps at fixed voxel false-positive rates.

A threshold ``t`` for false-positive rate ``f`` is the smallest value such that at most a
fraction ``f`` of the healthy brain voxels it was fitted on score *strictly above* ``t``
(the rule everywhere in disyre: a voxel is anomalous when ``score > t``). Unlike the oracle
best-Dice threshold, it uses no lesion labels, so a user can apply it to new scans.

The quantiles are exact while the healthy brain voxels fit in ``max_exact_voxels`` (default
50 M, 200 MB of float32 maps); beyond that the calibrator switches to a histogram of ``2**20`` bins
over ``[0, 1]`` (maps are in ``[0, 1]``), which keeps the fitted FPR at most ``f`` and within
one bin (about 1e-6 in score) of the exact threshold. The method used is recorded.

The file format (``thresholds.json``, read by ``disyre detect``), where it lives and how it
binds to the inference settings and the checkpoint that made the maps belong to the inference
stage (:mod:`disyre.inference.thresholds`; :class:`Thresholds`, :func:`save_thresholds` and
:func:`load_thresholds` are re-exported here). A :class:`ThresholdCalibrator` knows only the
maps: ``disyre evaluate`` records what made them with
:func:`~disyre.inference.thresholds.bind_thresholds` before saving.

Example:
    >>> import numpy as np
    >>> cal = ThresholdCalibrator()
    >>> cal.update(np.linspace(0, 1, 1000).reshape(10, 10, 10), None)
    >>> th = cal.fit((0.1,))
    >>> float((np.linspace(0, 1, 1000) > th.fpr[0.1]).mean())
    0.1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from disyre.inference.thresholds import (
    RULE,
    Thresholds,
    fpr_key,
    load_thresholds,
    save_thresholds,
)

__all__ = ["DEFAULT_FPRS", "HIST_BINS", "RULE", "ThresholdCalibrator", "Thresholds",
           "bootstrap_thresholds", "counts_at", "fit_thresholds", "fpr_key", "load_thresholds",
           "save_thresholds", "summarize_counts"]

DEFAULT_FPRS: tuple[float, ...] = (0.01, 0.05, 0.1)
HIST_BINS = 1 << 20


class ThresholdCalibrator:
    """Streams healthy maps (brain voxels) and fits FPR thresholds.

    Args:
        max_exact_voxels: Above this many voxels, switch from exact quantiles to a histogram.
    """

    def __init__(self, max_exact_voxels: int = 50_000_000) -> None:
        self.max_exact_voxels = int(max_exact_voxels)
        self._values: list[np.ndarray] | None = []
        self._hist: np.ndarray | None = None
        self.n_volumes = 0
        self.n_voxels = 0

    def update(self, score: np.ndarray, mask: np.ndarray | None) -> None:
        """Add one healthy map (``mask`` non-zero = brain; ``None`` = every voxel)."""
        score = np.asarray(score)
        if mask is not None and np.shape(mask) != score.shape:
            raise ValueError(f"healthy map shape {score.shape} != mask shape {np.shape(mask)}")
        # kept at the map's own precision, so thresholds hold exactly on the same maps
        v = (score[np.asarray(mask) != 0] if mask is not None else score.ravel())
        if not np.issubdtype(v.dtype, np.floating):
            v = v.astype(np.float32)
        if not np.isfinite(v).all():
            raise ValueError("healthy anomaly map holds NaN or Inf inside the brain")
        self.n_volumes += 1
        self.n_voxels += v.size
        if self._values is not None and self.n_voxels > self.max_exact_voxels:
            self._hist = np.zeros(HIST_BINS, np.int64)
            for old in self._values:
                self._add_hist(old)
            self._values = None
        if self._values is not None:
            self._values.append(v)
        else:
            self._add_hist(v)

    def _add_hist(self, v: np.ndarray) -> None:
        idx = np.clip((v.astype(np.float64) * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
        self._hist += np.bincount(idx, minlength=HIST_BINS)

    def fit(self, fprs: Sequence[float] = DEFAULT_FPRS, source: str = "") -> Thresholds:
        """Thresholds at each false-positive rate in ``fprs`` (each in ``(0, 1)``)."""
        if self.n_voxels == 0:
            raise ValueError("no healthy brain voxels to calibrate thresholds on")
        for f in fprs:
            if not 0 < f < 1:
                raise ValueError(f"false-positive rate {f} must lie in (0, 1)")
        n = self.n_voxels
        out: dict[float, float] = {}
        if self._values is not None:
            v = np.sort(np.concatenate(self._values))
            for f in fprs:
                allowed = int(np.floor(f * n + 1e-9))
                out[float(f)] = float(v[n - allowed - 1])
            method = "exact"
        else:
            above = np.cumsum(self._hist[::-1])[::-1]  # above[j] = #{bin >= j}
            for f in fprs:
                allowed = int(np.floor(f * n + 1e-9))
                # smallest j with #{bins >= j} <= allowed; threshold = lower edge of bin j
                j = int(np.searchsorted(-above, -allowed, side="left"))
                out[float(f)] = float(min(j, HIST_BINS) / HIST_BINS)
            method = "histogram"
        return Thresholds(fpr=out, n_volumes=self.n_volumes, n_voxels=n, source=source,
                          method=method)


def fit_thresholds(healthy: Iterable[tuple[np.ndarray, np.ndarray | None]],
                   fprs: Sequence[float] = DEFAULT_FPRS, source: str = "",
                   max_exact_voxels: int = 50_000_000) -> Thresholds:
    """Fit thresholds from ``(map, brain_mask)`` pairs of healthy scans (streamed).

    Example:
        >>> import numpy as np
        >>> m = np.random.default_rng(0).random((4, 8, 8))
        >>> t = fit_thresholds([(m, None)], fprs=(0.05,))
        >>> float((m > t.fpr[0.05]).mean()) <= 0.05
        True
    """
    cal = ThresholdCalibrator(max_exact_voxels)
    for score, mask in healthy:
        cal.update(score, mask)
    return cal.fit(fprs, source)


def counts_at(score: np.ndarray, label: np.ndarray | None, mask: np.ndarray | None,
              thresholds: Sequence[float],
              binary_step: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """TP, FP, FN, TN of ``score > t`` inside the brain at each threshold.

    ``label=None`` means a healthy scan (every brain voxel negative). ``binary_step`` (e.g.
    :meth:`~disyre.inference.postprocess.PostProcessing.apply_binary`, the removal of small
    connected components) is applied to each thresholded volume (``score > t`` on the brain
    and the lesion voxels) before counting.

    Returns:
        int64 array ``(len(thresholds), 4)``.

    Example:
        >>> s = np.zeros((3, 5, 5)); s[1, 2, 2] = 1.0  # one voxel above 0.5
        >>> counts_at(s, None, None, [0.5])[0].tolist()
        [0, 1, 0, 74]
        >>> drop = lambda b: np.zeros_like(b)  # a step that removes every blob
        >>> counts_at(s, None, None, [0.5], binary_step=drop)[0].tolist()
        [0, 0, 0, 75]
    """
    from disyre.evaluation.metrics import binary_counts

    if label is None:
        label = np.zeros(np.shape(score), bool)
    if binary_step is None:
        return binary_counts(score, label, mask, thresholds, strict=True)
    score = np.asarray(score)
    lab = np.asarray(label) != 0
    brain = np.ones(score.shape, bool) if mask is None else np.asarray(mask) != 0
    where, neg = lab | brain, brain & ~lab
    n_pos, n_neg = int(lab.sum()), int(neg.sum())
    out = np.zeros((len(thresholds), 4), np.int64)
    for i, t in enumerate(thresholds):
        pred = np.asarray(binary_step((score > t) & where), bool)
        tp, fp = int(np.count_nonzero(pred & lab)), int(np.count_nonzero(pred & neg))
        out[i] = (tp, fp, n_pos - tp, n_neg - fp)
    return out


def summarize_counts(counts: np.ndarray) -> dict[str, float]:
    """Dice, precision, recall and FPR of pooled ``(TP, FP, FN, TN)`` counts."""
    tp, fp, fn, tn = (float(x) for x in counts)
    nan = float("nan")
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else nan,
        "precision": tp / (tp + fp) if (tp + fp) else nan,
        "recall": tp / (tp + fn) if (tp + fn) else nan,
        "fpr": fp / (fp + tn) if (fp + tn) else nan,
        "tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn),
    }


def bootstrap_thresholds(volumes: Sequence[np.ndarray], fprs: Sequence[float] = DEFAULT_FPRS,
                         *, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Thresholds refitted on resamples of whole healthy volumes: how stable they are.

    Each resample draws ``len(volumes)`` volumes with replacement and fits the thresholds
    exactly as :meth:`ThresholdCalibrator.fit` does on them (exact quantiles, ``score > t``).

    Args:
        volumes: Brain-voxel scores of each healthy volume (any shape, flattened).
        fprs: False-positive rates.
        n_boot: Resamples.
        seed: Seed of the resampling.

    Returns:
        float64 array ``(n_boot, len(fprs))``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> vols = [rng.random(1000) * s for s in (0.5, 1.0, 0.8)]
        >>> t = bootstrap_thresholds(vols, (0.01,), n_boot=50)
        >>> t.shape, bool(t.min() < t.max())
        ((50, 1), True)
    """
    if not volumes:
        raise ValueError("no healthy volumes to resample")
    for f in fprs:
        if not 0 < f < 1:
            raise ValueError(f"false-positive rate {f} must lie in (0, 1)")
    srt = [np.sort(np.ravel(v)) for v in volumes]
    sizes = np.array([s.size for s in srt], np.int64)
    values = np.unique(np.concatenate(srt))
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(fprs)))
    k = len(srt)
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, k, size=k), minlength=k)
        n = int((w * sizes).sum())
        for j, f in enumerate(fprs):
            allowed = int(np.floor(f * n + 1e-9))
            rank = n - allowed  # the threshold is the rank-th smallest pooled value (1-based)
            lo, hi = 0, values.size - 1  # smallest value with #(pooled <= value) >= rank
            while lo < hi:
                mid = (lo + hi) // 2
                le = sum(int(wi) * int(np.searchsorted(s, values[mid], side="right"))
                         for wi, s in zip(w, srt, strict=True) if wi)
                if le >= rank:
                    hi = mid
                else:
                    lo = mid + 1
            out[b, j] = float(values[lo])
    return out
