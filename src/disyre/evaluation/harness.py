"""One call that evaluates a stream of anomaly maps: :func:`evaluate_cases`.

Cases are streamed: each volume is read once, its statistics are accumulated, and only what
the report needs is kept (per-case numbers and one axial slice per case for the gallery).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> def cases():
    ...     for i in range(3):
    ...         lab = np.zeros((4, 16, 16), bool); lab[1:3, 4:8, 4:8] = True
    ...         amap = (0.5 * rng.random(lab.shape) + 0.5 * lab).astype(np.float32)
    ...         yield Case(f"s{i}", amap, lab, np.ones_like(lab))
    >>> healthy = [(0.5 * rng.random((4, 16, 16)), None) for _ in range(2)]
    >>> res = evaluate_cases(cases(), healthy_maps=healthy, n_boot=50)
    >>> res.pixel.ap > 0.9, sorted(res.thresholds.fpr)
    (True, [0.01, 0.05, 0.1])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disyre.evaluation import metrics as M
from disyre.evaluation.html import ViewerVolume, pack_volume
from disyre.evaluation.lesions import CaseLesions, case_lesions, scan_level_ci, summarize_lesions
from disyre.evaluation.thresholds import (
    DEFAULT_FPRS,
    ThresholdCalibrator,
    Thresholds,
    counts_at,
    fpr_key,
    summarize_counts,
)
from disyre.io_utils import json_safe

VIEWER_MAX_SCANS = 100  # report.html embeds at most this many scans (about 0.5 MB each)
ORACLE_NOTE = ("best_dice_oracle: the threshold is chosen on the test labels (an upper bound, "
               "not applicable to new scans); the calibrated thresholds are set on healthy "
               "scans only")
CURVE_POINTS = 400
#: A lesion label with more than this fraction of its voxels outside the brain mask is warned
#: about (another scan's label, or one on another grid).
OUTSIDE_WARN_FRACTION = 0.5

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One test volume. All arrays ``(D, H, W)`` of the same shape.

    Attributes:
        subject: Identifier.
        anomaly_map: Scores (higher = more anomalous), normally in ``[0, 1]``.
        label: Lesion label (non-zero = lesion); all zero for a healthy scan.
        brain_mask: Brain mask (non-zero = brain); ``None`` = every voxel. Lesion voxels
            outside it still count as lesion (scored by the map's value there).
        image: Optional scan, only used for the report's gallery (any intensity scale: the
            gallery shows it scaled by the 99th percentile of its brain voxels).
        voxel_mm3: Voxel volume in mm^3, for the volume score (the highest-scoring 1 cm^3)
            and the lesion volumes; ``None``: the product of ``spacing``, else 1 mm^3.
        spacing: Voxel size in mm along ``(D, H, W)`` (the viewer's aspect ratio); ``None``:
            isotropic.
        lesioned: Whether the data set calls the scan lesioned (a manifest row with a lesion
            mask); ``None``: a non-empty label says so. An empty label never makes a scan
            the data set calls lesioned a healthy one (it is warned about).
        label_path: The label's file, named in warnings about the label.
    """

    subject: str
    anomaly_map: np.ndarray
    label: np.ndarray | None
    brain_mask: np.ndarray | None = None
    image: np.ndarray | None = None
    voxel_mm3: float | None = None
    spacing: tuple[float, float, float] | None = None
    lesioned: bool | None = None
    label_path: str | None = None


@dataclass
class CaseRecord:
    """What is kept of one case: its numbers, one axial slice for the gallery and the compact
    volume of ``report.html``.

    ``n_lesion`` counts every lesion voxel, ``n_lesion_outside`` those outside the brain mask;
    ``score`` is the volume score (mean of the highest-scoring 1 cm^3 of brain), the same
    number ``disyre detect`` writes; ``group``: ``test`` (a test case), ``heldout`` or
    ``transfer`` (healthy scans given apart); ``lesions``: lesion-wise counts at the
    calibrated thresholds.
    """

    subject: str
    n_brain: int
    n_lesion: int
    ap: float
    score: float
    n_lesion_outside: int = field(default=0, kw_only=True)
    dice: dict[float, float]
    slice_index: int
    slice_map: np.ndarray = field(repr=False)
    slice_label: np.ndarray = field(repr=False)
    slice_mask: np.ndarray = field(repr=False)
    slice_image: np.ndarray | None = field(default=None, repr=False)
    group: str = field(default="test", kw_only=True)
    lesioned: bool = field(default=False, kw_only=True)
    lesions: CaseLesions | None = field(default=None, kw_only=True, repr=False)
    viewer: ViewerVolume | None = field(default=None, kw_only=True, repr=False)


HEALTHY_GROUPS = {"test": "healthy test cases", "heldout": "held-out healthy scans",
                  "transfer": "out-of-range healthy scans"}


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_cases` measured; :meth:`to_dict` gives ``metrics.json``."""

    pixel: M.PixelMetrics
    thresholds: Thresholds | None
    calibrated: dict[float, dict[str, float]]
    healthy_heldout: dict[float, dict[str, float]]
    slice_level: dict[str, dict[str, float]]
    volume_level: dict[str, dict[str, float]]
    ci: dict[str, tuple[float, float]]
    cases: list[CaseRecord]
    pos_hist: np.ndarray
    neg_hist: np.ndarray
    healthy_hist: np.ndarray | None
    settings: dict[str, Any]
    lesion_wise: dict[str, Any] = field(default_factory=dict)
    volume_level_by_group: dict[str, dict[str, Any]] = field(default_factory=dict)
    healthy_cases: list[CaseRecord] = field(default_factory=list)
    #: per-test-volume histograms ``(n_volumes, bins)`` of lesion and healthy voxel scores
    #: (the bootstrap's input; :func:`~disyre.evaluation.metrics.paired_bootstrap_ap` compares
    #: two maps of the same volumes with them)
    volume_pos_hist: np.ndarray | None = None
    volume_neg_hist: np.ndarray | None = None

    def curves(self, n: int = CURVE_POINTS) -> dict[str, dict[str, list[float]]]:
        """Exact PR and ROC points (at each distinct lesion score), thinned to ``n`` points."""
        c = self.pixel.curve
        if c is None or c.n_pos == 0:
            return {}
        idx = np.unique(np.linspace(0, len(c.tp) - 1, min(n, len(c.tp))).round().astype(int))
        tp, fp = c.tp[idx].astype(float), c.fp[idx].astype(float)
        rec = tp / c.n_pos
        prec = tp / (tp + fp)
        fpr = fp / c.n_neg if c.n_neg else np.zeros_like(fp)
        return {"pr": {"recall": rec.tolist(), "precision": prec.tolist()},
                "roc": {"fpr": [0.0, *fpr.tolist(), 1.0], "tpr": [0.0, *rec.tolist(), 1.0]}}

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` document (NaN written as null)."""
        d: dict[str, Any] = {
            "n_cases": len(self.cases),
            "n_cases_with_lesion": sum(r.n_lesion > 0 for r in self.cases),
            "pixel": self.pixel.as_dict(),
            "n_cases_with_lesion_outside_brain": sum(r.n_lesion_outside > 0
                                                     for r in self.cases),
            "cases_with_empty_label": [r.subject for r in self.cases
                                       if r.lesioned and r.n_lesion == 0],
            "note": ORACLE_NOTE,
            "calibrated": {fpr_key(f): v for f, v in self.calibrated.items()},
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
            "healthy_heldout": {fpr_key(f): v for f, v in self.healthy_heldout.items()},
            "slice_level": self.slice_level,
            "volume_level": self.volume_level,
            "volume_level_by_group": self.volume_level_by_group,
            "lesion_wise": self.lesion_wise,
            "post_processing": self.settings.get("post_processing"),
            "bootstrap_ci": {k: list(v) for k, v in self.ci.items()},
            "settings": self.settings,
            "curves": self.curves(),
        }
        return json_safe(d)


def as_case(obj: Any) -> Case:
    """Accept a :class:`Case`, a dict with its field names, or a tuple
    ``(subject, anomaly_map, label, brain_mask[, image[, voxel_mm3[, spacing]]])``."""
    if isinstance(obj, Case):
        return obj
    if isinstance(obj, dict):
        return Case(**obj)
    if isinstance(obj, tuple | list) and len(obj) in (4, 5, 6, 7, 8, 9):
        return Case(*obj)
    if all(hasattr(obj, a) for a in ("subject", "anomaly_map", "label")):
        return Case(obj.subject, obj.anomaly_map, obj.label, getattr(obj, "brain_mask", None),
                    getattr(obj, "image", None), getattr(obj, "voxel_mm3", None),
                    getattr(obj, "spacing", None), getattr(obj, "lesioned", None),
                    getattr(obj, "label_path", None))
    raise TypeError(f"cannot read a case from {type(obj).__name__}; give a Case, a dict or a "
                    "tuple (subject, anomaly_map, label, brain_mask[, image[, voxel_mm3[, "
                    "spacing]]])")


def _as_healthy(obj: Any, group: str, i: int) -> Case:
    """A healthy scan given apart: a :class:`Case` (label ignored) or ``(map, brain_mask)``."""
    if isinstance(obj, tuple | list) and len(obj) == 2:
        return Case(f"{group}-{i:03d}", obj[0], None, obj[1])
    c = as_case(obj)
    return Case(c.subject, c.anomaly_map, None, c.brain_mask, c.image, c.voxel_mm3, c.spacing)


def label_warnings(c: Case, lab: np.ndarray, mask: np.ndarray) -> list[str]:
    """What is suspicious about a test case's label: empty on a scan the data set calls
    lesioned, or mostly outside the brain mask. Each message starts with the label's file."""
    where = c.label_path or f"case {c.subject}"
    n = int(lab.sum())
    if c.lesioned and n == 0:
        return [f"{where}: the lesion label of {c.subject} is empty (no voxel set) although "
                "the manifest gives it a lesion mask; it stays a lesioned scan (volume and "
                "scan level) but adds no lesion voxel to the pixel metrics: is it the right file?"]
    out_n = M.lesion_outside_brain(lab, mask) if n else 0
    if n and out_n > OUTSIDE_WARN_FRACTION * n:
        return [f"{where}: {100 * out_n / n:.1f} % of the lesion label of {c.subject} lies "
                "outside the brain mask (those voxels count as missed lesion): is it this "
                "scan's label, on its grid?"]
    return []


def _voxel_mm3(c: Case) -> float | None:
    if c.voxel_mm3 is not None:
        return float(c.voxel_mm3)
    return None if c.spacing is None else float(np.prod(c.spacing))


def _gallery_slice(amap: np.ndarray, lab: np.ndarray, mask: np.ndarray) -> int:
    per = lab.reshape(lab.shape[0], -1).sum(1)
    if per.max() > 0:
        return int(per.argmax())
    return int((amap * mask).reshape(amap.shape[0], -1).sum(1).argmax())


def _display_slice(image: np.ndarray, mask: np.ndarray, z: int) -> np.ndarray:
    """Slice ``z`` of ``image`` scaled to [0, 1] by the 99th percentile of the brain voxels."""
    vals = image[mask]
    hi = float(np.percentile(vals, 99)) if vals.size else 1.0
    return np.clip(image[z] / (hi if hi > 0 else 1.0), 0, 1).astype(np.float16)


def evaluate_cases(
    cases: Iterable[Any],
    healthy_maps: Iterable[tuple[np.ndarray, np.ndarray | None]] | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    *,
    thresholds: Thresholds | None = None,
    healthy_test_maps: Iterable[Any] | None = None,
    healthy_transfer_maps: Iterable[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    top_k: int = M.TOP_K,
    hist_bins: int = M.HIST_BINS,
    spill_dir: str | None = None,
    source: str = "",
    lesion_dilation: int = 0,
    viewer: bool | int = True,
    post_processing: dict[str, Any] | None = None,
    binary_step: Callable[[np.ndarray], np.ndarray] | None = None,
) -> EvaluationResult:
    """Evaluate anomaly maps against lesion labels, streaming one volume at a time.

    Args:
        cases: Test volumes (see :func:`as_case`); a generator is fine. A case with an empty
            label is a healthy test scan.
        healthy_maps: ``(map, brain_mask)`` of healthy validation scans to calibrate the
            thresholds on (read before ``cases``). Ignored if ``thresholds`` is given.
        fprs: Voxel false-positive rates of the calibrated thresholds.
        thresholds: Already calibrated thresholds (e.g. :func:`load_thresholds`).
        healthy_test_maps: Held-out healthy scans, each a :class:`Case` (its label ignored)
            or ``(map, brain_mask)``: their voxel FPR at the calibrated thresholds
            (``healthy_heldout``), their false-positive blobs, and they join the volume-level
            table as healthy scans.
        healthy_transfer_maps: Healthy scans unlike the training ones (out of its range),
            given like ``healthy_test_maps``: false-positive blobs and the volume-level table.
        n_boot: Bootstrap resamples over volumes (0 = no intervals).
        seed: Seed of the bootstrap.
        top_k: k of the top-k-mean reduction.
        hist_bins: Bins of the per-volume histograms (bootstrap and score histograms).
        spill_dir: Folder of the temporary healthy-voxel file (default: system temp).
        source: Text recorded with freshly fitted thresholds.
        lesion_dilation: Tolerance of the lesion-wise matching in voxels
            (:mod:`disyre.evaluation.lesions`; 0 = the map must overlap the lesion).
        viewer: Keep a compact volume of each scan for ``report.html``
            (:func:`disyre.evaluation.html.pack_volume`): ``True`` for the first
            :data:`VIEWER_MAX_SCANS` scans (test cases first), a number for that many,
            ``False`` for none. The others are listed on the page without their volume.
        post_processing: What was applied to the maps (e.g. ``{"median_filter": 3}``),
            recorded in ``metrics.json`` and the report.
        binary_step: Applied to every thresholded volume before it is counted (Dice, FPR,
            lesion recall, false-positive blobs at the calibrated thresholds): the step
            after thresholding of a published post-processing
            (:meth:`~disyre.inference.postprocess.PostProcessing.apply_binary`, the removal
            of small connected components). ``None``: none. The thresholds are still the
            healthy maps' quantiles.

    Returns:
        An :class:`EvaluationResult`.
    """
    healthy_hist = None
    if thresholds is None and healthy_maps is not None:
        cal = ThresholdCalibrator()
        healthy_hist = np.zeros(hist_bins, np.int64)
        for amap, mask in healthy_maps:
            cal.update(amap, mask)
            vals = np.asarray(amap)[np.asarray(mask) != 0] if mask is not None else amap
            healthy_hist += M.histogram(np.ravel(vals), hist_bins)
        thresholds = cal.fit(fprs, source=source)
    th_items = sorted(thresholds.fpr.items()) if thresholds is not None else []
    th_values = [t for _, t in th_items]

    acc = M.PixelAccumulator(spill_dir=spill_dir, hist_bins=hist_bins)
    pooled = np.zeros((len(th_items), 4), np.int64)
    records: list[CaseRecord] = []
    slice_scores: dict[str, list[np.ndarray]] = {r: [] for r in
                                                 (*M.REDUCTIONS, M.WHOLE_SLICE_MEAN)}
    slice_labels: list[np.ndarray] = []
    vol_scores: dict[str, list[float]] = {r: [] for r in (*M.REDUCTIONS, M.VOLUME_SCORE)}
    assumed_voxel = False
    vol_labels: list[bool] = []
    vol_groups: list[str] = []
    seen: set[str] = set()
    n_viewer = [VIEWER_MAX_SCANS if viewer is True else int(viewer)]  # volumes still to keep

    def check(c: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        amap = np.asarray(c.anomaly_map)
        lab = (np.zeros(amap.shape, bool) if c.label is None else np.asarray(c.label) != 0)
        mask = (np.ones(amap.shape, bool) if c.brain_mask is None
                else np.asarray(c.brain_mask) != 0)
        if amap.shape != lab.shape or amap.shape != mask.shape:
            raise ValueError(f"case {c.subject}: shape mismatch: map {amap.shape}, "
                             f"label {lab.shape}, brain mask {mask.shape}")
        if amap.ndim != 3:
            raise ValueError(f"case {c.subject}: expected (D, H, W) arrays, got {amap.shape}")
        if c.subject in seen:
            raise ValueError(f"case {c.subject}: subject listed twice")
        if not np.isfinite(amap[mask]).all():
            raise ValueError(f"case {c.subject}: anomaly map holds NaN or Inf inside the brain")
        seen.add(c.subject)
        return amap, lab, mask

    def record(c: Case, amap: np.ndarray, lab: np.ndarray, mask: np.ndarray, group: str,
               cnt: np.ndarray | None) -> CaseRecord:
        """Per-scan numbers shared by test cases and healthy scans given apart."""
        nonlocal assumed_voxel
        vox = _voxel_mm3(c)
        assumed_voxel |= vox is None
        vox = 1.0 if vox is None else vox
        vs = M.volume_scores(amap, mask, top_k, voxel_mm3=vox)
        for r in vol_scores:
            vol_scores[r].append(vs[r])
        lesioned = bool(lab.any()) or (group == "test" and bool(c.lesioned))
        vol_labels.append(lesioned)
        vol_groups.append("lesioned" if lesioned else group)
        dice: dict[float, float] = {}
        for (f, _), (tp, fp, fn, _tn) in zip(th_items, cnt if cnt is not None else [],
                                              strict=False):
            den = 2 * tp + fp + fn
            dice[f] = float(2 * tp / den) if den else 1.0
        pos, neg = amap[lab], amap[mask & ~lab]
        ap = M.average_precision(M.curve_counts(pos, neg)) if len(pos) else float("nan")
        z = _gallery_slice(amap, lab, mask)
        img = None if c.image is None else _display_slice(np.asarray(c.image), mask, z)
        keep = n_viewer[0] > 0
        n_viewer[0] -= keep
        return CaseRecord(
            subject=str(c.subject), n_brain=int(mask.sum()), n_lesion=int(lab.sum()),
            n_lesion_outside=M.lesion_outside_brain(lab, mask), ap=ap,
            score=vs[M.VOLUME_SCORE], dice=dice, slice_index=z,
            slice_map=amap[z].astype(np.float16), slice_label=lab[z].copy(),
            slice_mask=mask[z].copy(), slice_image=img, group=group, lesioned=lesioned,
            lesions=(case_lesions(amap, lab, mask, th_values, vox, lesion_dilation,
                                  binary_step)
                     if th_items else None),
            viewer=(pack_volume(amap, lab if group == "test" else None, mask, image=c.image,
                                spacing=c.spacing) if keep else None))

    try:
        for obj in cases:
            c = as_case(obj)
            amap, lab, mask = check(c)
            for msg in label_warnings(c, lab, mask):
                log.warning("%s", msg)
            acc.update(amap, lab, mask)  # lesion voxels outside the brain stay lesion: misses
            cnt = counts_at(amap, lab, mask, th_values, binary_step) if th_items else None
            if cnt is not None:
                pooled += cnt
            ss, sl = M.slice_scores(amap, lab, mask, top_k)
            for r in slice_scores:
                slice_scores[r].append(ss[r])
            slice_labels.append(sl)
            records.append(record(c, amap, lab, mask, "test", cnt))
        pos_h = np.stack(acc.pos_hist) if acc.pos_hist else np.zeros((0, hist_bins), np.int64)
        neg_h = np.stack(acc.neg_hist) if acc.neg_hist else np.zeros((0, hist_bins), np.int64)
        if not records:
            raise ValueError("no test cases to evaluate")
        pixel = acc.compute()
    finally:
        acc.close()

    calibrated: dict[float, dict[str, float]] = {}
    for i, (f, t) in enumerate(th_items):
        summ: dict[str, float] = {"threshold": t, **summarize_counts(pooled[i])}
        d = [r.dice[f] for r in records if r.n_lesion > 0]
        summ["mean_case_dice"] = float(np.mean(d)) if d else float("nan")
        calibrated[f] = summ

    heldout: dict[float, dict[str, float]] = {}
    healthy_records: list[CaseRecord] = []
    hc = np.zeros((len(th_items), 4), np.int64)
    n_heldout = 0
    for group, items in (("heldout", healthy_test_maps), ("transfer", healthy_transfer_maps)):
        for i, obj in enumerate(items or []):
            c = _as_healthy(obj, group, i)
            amap, lab, mask = check(c)
            cnt = counts_at(amap, None, mask, th_values, binary_step) if th_items else None
            if group == "heldout" and cnt is not None:
                hc += cnt
                n_heldout += 1
            healthy_records.append(record(c, amap, lab, mask, group, cnt))
    if healthy_test_maps is not None and th_items:
        for i, (f, t) in enumerate(th_items):
            s = summarize_counts(hc[i])
            heldout[f] = {"threshold": t, "fpr": s["fpr"], "n_volumes": n_heldout,
                          "n_voxels": s["fp"] + s["tn"]}

    sl_labels = np.concatenate(slice_labels)
    slice_level = M.detection_metrics({r: np.concatenate(v) for r, v in slice_scores.items()},
                                      sl_labels)
    vl = np.asarray(vol_labels)
    vg = np.asarray(vol_groups)
    volume_level = M.detection_metrics({r: np.asarray(v) for r, v in vol_scores.items()}, vl)
    healthy_groups = {g: int((vg == g).sum()) for g in HEALTHY_GROUPS if (vg == g).any()}
    for r, v in volume_level.items():
        v.update(scan_level_ci(np.asarray(vol_scores[r]), vl, n_boot=n_boot, seed=seed))
        v["n_healthy_by_group"] = healthy_groups
    by_group: dict[str, dict[str, Any]] = {}
    if len(healthy_groups) > 1:
        for g in healthy_groups:
            keep = vl | (vg == g)
            sc = np.asarray(vol_scores[M.VOLUME_SCORE])[keep]
            e = M.detection_metrics({M.VOLUME_SCORE: sc}, vl[keep])[M.VOLUME_SCORE]
            e.update(scan_level_ci(sc, vl[keep], n_boot=n_boot, seed=seed))
            by_group[g] = e

    lesion_wise: dict[str, Any] = {}
    if th_items:
        lesion_wise = summarize_lesions(
            [r.lesions for r in records if r.n_lesion > 0 and r.lesions is not None],
            {g: [r.lesions for r in (*records, *healthy_records)
                 if r.n_lesion == 0 and not r.lesioned and r.group == g
                 and r.lesions is not None]
             for g in HEALTHY_GROUPS},
            th_items, n_boot=n_boot if len(records) > 1 else 0, seed=seed,
            dilation=lesion_dilation)

    ci: dict[str, tuple[float, float]] = {}
    if n_boot > 0 and len(records) > 1:
        per_vol = {f"dice_fpr_{fpr_key(f)}": np.array(
            [r.dice[f] if r.n_lesion > 0 else np.nan for r in records]) for f, _ in th_items}
        ci = M.bootstrap_ci(pos_h, neg_h, n_boot=n_boot, seed=seed, per_volume=per_vol)
    settings = {"fprs": [f for f, _ in th_items], "top_k": top_k, "n_boot": n_boot,
                "seed": seed, "hist_bins": hist_bins, "threshold_rule": "score > threshold",
                "best_dice_rule": "score >= threshold",
                "lesion_voxels": "every labelled voxel is a positive; one outside the brain "
                                 "mask keeps the map's value there (normally 0: a miss)",
                "slice_mean_slice": "mean over the whole slice, background included (the "
                                    "authors' slice score)",
                "volume_score": f"{M.VOLUME_SCORE}: mean of the highest-scoring "
                                f"{M.SCORE_VOLUME_MM3:g} mm^3 of brain voxels"
                                + (" (voxel volume unknown for some cases: 1 mm^3 assumed)"
                                   if assumed_voxel else ""),
                "volume_level": "every test scan: lesioned ones positive, healthy ones "
                                "(healthy test cases, held-out and out-of-range healthy "
                                "scans) negative; intervals: lesioned and healthy scans "
                                "resampled apart",
                "post_processing": dict(post_processing) if post_processing is not None
                else None,
                "bootstrap": "percentile 95 % interval over volumes resampled with "
                             f"replacement; pixel metrics from per-volume {hist_bins}-bin "
                             "histograms on [0, 1]"}
    return EvaluationResult(
        pixel=pixel, thresholds=thresholds, calibrated=calibrated, healthy_heldout=heldout,
        slice_level=slice_level, volume_level=volume_level, ci=ci, cases=records,
        pos_hist=pos_h.sum(0), neg_hist=neg_h.sum(0), healthy_hist=healthy_hist,
        settings=settings, lesion_wise=lesion_wise, volume_level_by_group=by_group,
        healthy_cases=healthy_records, volume_pos_hist=pos_h, volume_neg_hist=neg_h)
