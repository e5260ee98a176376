"""Reports: ``metrics.json``, a per-case CSV, and a Markdown report with PNG figures.

:func:`write_report` writes one method's evaluation; :func:`write_comparison` puts several
methods' ``metrics.json`` documents side by side. Figures use matplotlib's Agg backend.

Layout of a report folder::

    metrics.json   cases.csv   report.md   report.html (the maps in the browser)
    figures/pr_curve.png  figures/roc_curve.png  figures/score_histograms.png
    figures/gallery.png
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from disyre.evaluation.harness import HEALTHY_GROUPS, ORACLE_NOTE, EvaluationResult
from disyre.evaluation.thresholds import fpr_key
from disyre.io_utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    prepare_output_dir,
    provenance,
)

GALLERY_FPR = 0.05


class _Figures:
    """pyplot's ``subplots``/``close`` on bare ``Figure`` objects: no backend is selected, so a
    notebook's (or any caller's) matplotlib backend stays as it is."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, *, figsize: Any = None, **kw: Any) -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kw)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: the figure is not registered with pyplot."""


def _plt() -> Any:
    return _Figures


def _savefig(fig: Any, path: Path) -> None:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _ci(d: dict[str, Any], key: str) -> str:
    v = d.get("bootstrap_ci", {}).get(key)
    if not v or v[0] is None:
        return ""
    return f" [{v[0]:.3f}, {v[1]:.3f}]"


# --------------------------------------------------------------------------------------------
# figures


def _pr_roc(curves: Mapping[str, Mapping[str, Any]], out: Path, which: str,
            prevalence: Mapping[str, float] | None = None) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, c in curves.items():
        if which not in c:
            continue
        if which == "pr":
            ax.plot(c["pr"]["recall"], c["pr"]["precision"], label=name, drawstyle="steps-post")
        else:
            ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=name)
    if which == "pr":
        for name, p in (prevalence or {}).items():
            ax.axhline(p, ls=":", lw=0.8, color="gray")
            ax.text(1.0, p, f" chance ({name})" if len(curves) > 1 else " chance",
                    fontsize=7, va="bottom", ha="right", color="gray")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Pixel-wise precision-recall")
    else:
        ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=0.8)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title("Pixel-wise ROC")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    _savefig(fig, out)


def _histograms(res: EvaluationResult, out: Path) -> None:
    plt = _plt()
    bins = len(res.pos_hist)
    # coarsen to <= 100 bars for readability
    f = max(1, bins // 100)
    n = bins // f

    def coarse(h: np.ndarray) -> np.ndarray:
        return h[: n * f].reshape(n, f).sum(1).astype(float)

    edges = np.linspace(0, 1, n + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    series = [("healthy voxels of test scans", res.neg_hist),
              ("lesion voxels", res.pos_hist)]
    if res.healthy_hist is not None:
        series.insert(0, ("healthy validation scans", res.healthy_hist))
    for name, h in series:
        c = coarse(h)
        if c.sum() > 0:
            ax.stairs(c / c.sum(), edges, label=name, fill=False)
    for f_, t in sorted(res.thresholds.fpr.items()) if res.thresholds else []:
        ax.axvline(t, ls="--", lw=0.8, color="gray")
        ax.text(t, ax.get_ylim()[1] * 0.95, f" {100 * f_:g}%", fontsize=7, color="gray")
    ax.set_yscale("log")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("fraction of voxels")
    ax.set_title("Scores of healthy and lesion voxels (dashed: calibrated thresholds)")
    ax.legend(fontsize=7)
    _savefig(fig, out)


def _gallery_picks(res: EvaluationResult) -> list[tuple[str, int]]:
    idx = [i for i, r in enumerate(res.cases) if r.n_lesion > 0 and math.isfinite(r.ap)]
    if not idx:
        return []
    order = sorted(idx, key=lambda i: res.cases[i].ap)
    picks = [("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])]
    seen: set[int] = set()
    out = []
    for name, i in picks:
        if i not in seen:
            seen.add(i)
            out.append((name, i))
    return out


def _gallery_threshold(res: EvaluationResult) -> tuple[float, str]:
    if res.thresholds and res.thresholds.fpr:
        f = min(res.thresholds.fpr, key=lambda x: abs(x - GALLERY_FPR))
        return res.thresholds.fpr[f], f"> t at {100 * f:g} % healthy FPR"
    return res.pixel.best_threshold, ">= oracle best-Dice threshold"


def _gallery(res: EvaluationResult, out: Path) -> list[tuple[str, int]]:
    plt = _plt()
    picks = _gallery_picks(res)
    t, tname = _gallery_threshold(res)
    strict = tname.startswith(">") and not tname.startswith(">=")
    cols = ["scan", "label", "anomaly map", f"map {tname}"]
    fig, axes = plt.subplots(max(len(picks), 1), 4, figsize=(10, 2.7 * max(len(picks), 1)),
                             squeeze=False)
    for row, (name, i) in enumerate(picks):
        r = res.cases[i]
        m = r.slice_map.astype(np.float32)
        img = r.slice_image.astype(np.float32) if r.slice_image is not None else None
        binm = (m > t) if strict else (m >= t)
        panels = [img if img is not None else r.slice_mask.astype(np.float32),
                  r.slice_label.astype(np.float32), m, (binm & r.slice_mask).astype(np.float32)]
        for col, (ax, p) in enumerate(zip(axes[row], panels, strict=True)):
            ax.imshow(p, cmap="gray" if col in (0, 1, 3) else "inferno", vmin=0,
                      vmax=1 if col != 2 else max(float(m.max()), 1e-6), origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=9)
        axes[row][0].set_ylabel(f"{name}: {r.subject}\nAP {r.ap:.3f}, z={r.slice_index}",
                                fontsize=8)
    if not picks:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][0].text(0, 0.5, "no case with a lesion", fontsize=10)
    _savefig(fig, out)
    return picks


# --------------------------------------------------------------------------------------------
# report


def _cases_csv(res: EvaluationResult) -> str:
    """One row per test case, then the healthy scans given apart (``group``)."""
    fprs = sorted(res.thresholds.fpr) if res.thresholds else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subject", "n_brain_voxels", "lesion_voxels", "lesion_voxels_outside_brain",
                "ap", "score_1cm3", *[f"dice_fpr_{fpr_key(f)}" for f in fprs], "group",
                "n_lesions", *[f"lesions_found_fpr_{fpr_key(f)}" for f in fprs],
                *[f"fp_blobs_fpr_{fpr_key(f)}" for f in fprs]])
    for r in (*res.cases, *res.healthy_cases):
        les = r.lesions
        w.writerow([r.subject, r.n_brain, r.n_lesion, r.n_lesion_outside, _num(r.ap),
                    _num(r.score), *[_num(r.dice.get(f)) for f in fprs], r.group,
                    "" if les is None else les.n_lesions,
                    *["" if les is None else int(les.detected[j].sum())
                      for j in range(len(fprs))],
                    *["" if les is None else int(les.n_fp[j]) for j in range(len(fprs))]])
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _threshold_spread_lines(d: Mapping[str, Any]) -> list[str]:
    """Report lines: out-of-range scans, and the thresholds' spread over resamples."""
    lines = []
    if d.get("healthy_transfer"):
        t = next(iter(d["healthy_transfer"].values()))
        lines += [f"Out-of-range healthy FPR: {t['n_volumes']} healthy scans drawn outside the "
                  "training range (e.g. older-looking brains), at the same thresholds.", ""]
    boot = d.get("threshold_bootstrap") or {}
    rows = [(k, v) for k, v in boot.items() if isinstance(v, dict)]
    if rows:
        lines += [f"Thresholds refitted on {boot['n_boot']} bootstrap resamples of the "
                  f"{boot['n_volumes']} validation scans (95 % intervals):", "",
                  "| healthy FPR | threshold | held-out healthy FPR | out-of-range FPR |",
                  "|---|---|---|---|"]
        for k, v in rows:
            cells = [f"[{a:.4f}, {b:.4f}]" if (a, b) != (None, None) else "-"
                     for a, b in (v.get("threshold_ci") or (None, None),
                                  v.get("heldout_fpr_ci") or (None, None),
                                  v.get("transfer_fpr_ci") or (None, None))]
            lines.append(f"| {float(k):.0%} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _ci_text(v: Any, nd: int = 3) -> str:
    if not v or v[0] is None:
        return ""
    return f" [{v[0]:.{nd}f}, {v[1]:.{nd}f}]"


def _count(n: int, group: str) -> str:
    """``"1 held-out healthy scan"`` / ``"3 held-out healthy scans"``."""
    name = HEALTHY_GROUPS[group]
    return f"{n} {name if n != 1 else name[:-1]}"


def post_processing_text(pp: Any) -> str:
    """One sentence saying which post-processing the maps had."""
    if pp is None:
        return "Post-processing of the maps: not known (maps read from files)."
    size = pp.get("median_filter")
    if pp.get("steps") and size is None:
        what = str(pp["steps"])
    else:
        what = (f"a 3D median filter of size {size}" if size else "none (no median filter)")
    head = "Post-processing of the maps" + (f" ({pp['protocol']} protocol)"
                                            if pp.get("protocol") else "")
    return f"{head}: {what}" + (f" ({pp['note']})" if pp.get("note") else "") + "."


def lesion_wise_lines(lw: Mapping[str, Any]) -> list[str]:
    """The report's lesion-wise section (from ``metrics.json``'s ``lesion_wise``)."""
    if not lw or not lw.get("at"):
        return []
    bins = lw["size_bins_ml"]
    nh = lw.get("n_healthy_scans") or {}
    n_healthy = sum(nh.values())
    lines = ["## Lesion-wise detection", "",
             f"{lw['n_lesions']} lesions in {lw['n_lesioned_scans']} lesioned scans; "
             f"{n_healthy} healthy scans"
             + (" (" + ", ".join(_count(n, g) for g, n in nh.items() if n) + ")"
                if n_healthy else "") + ". "
             "Protocol: BraTS 2023 lesion-wise matching: a lesion is a connected component "
             f"of the label ({lw['connectivity']}-connectivity); it is found when a voxel of "
             "`map > threshold` lies in it"
             + (f" (grown by {lw['dilation']} voxels)" if lw.get("dilation") else "")
             + "; a connected component of the thresholded map that touches no lesion is a "
             "false-positive blob; lesion F1 is the harmonic mean of lesion recall and the "
             "fraction of blobs touching a lesion (MSSEG 2016). Brackets: 95 % bootstrap "
             "intervals over scans.", "",
             "| healthy FPR | lesions found | lesion recall | FP blobs per lesioned scan | "
             "FP blobs per healthy scan | lesion F1 |", "|---|---|---|---|---|---|"]
    for k, v in lw["at"].items():
        fph = (f"{_fmt(v.get('fp_per_healthy_scan'), 1)}"
               f"{_ci_text(v.get('fp_per_healthy_scan_ci'), 1)}"
               if "fp_per_healthy_scan" in v else "-")
        lines.append(f"| {float(k):.0%} | {v['n_detected']} / {lw['n_lesions']} | "
                     f"{_fmt(v['recall'])}{_ci_text(v.get('recall_ci'))} | "
                     f"{_fmt(v['fp_per_lesioned_scan'], 1)}"
                     f"{_ci_text(v.get('fp_per_lesioned_scan_ci'), 1)} | {fph} | "
                     f"{_fmt(v['f1'])}{_ci_text(v.get('f1_ci'))} |")

    def rng(lo: float, hi: float | None) -> str:
        return f"< {hi:g} mL" if not lo else (f">= {lo:g} mL" if hi is None
                                              else f"{lo:g}-{hi:g} mL")

    lines += ["", "Lesion recall by lesion volume:", "",
              "| healthy FPR | " + " | ".join(f"{b} ({rng(*r)})" for b, r in bins.items())
              + " |", "|---" * (len(bins) + 1) + "|"]
    for k, v in lw["at"].items():
        cells = []
        for b in bins:
            e = v["by_size"][b]
            cells.append("-" if not e["n"] else
                         f"{_fmt(e['recall'])}{_ci_text(e.get('recall_ci'))} "
                         f"({e['n_detected']}/{e['n']})")
        lines.append(f"| {float(k):.0%} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_report(out_dir: str | Path, result: EvaluationResult, *,
                 config: Mapping[str, Any] | None = None, title: str = "Evaluation report",
                 overwrite: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``metrics.json``, ``cases.csv``, ``report.md``, ``report.html`` and
    ``figures/*.png``.

    Args:
        out_dir: Report folder (created; refused if it already holds a ``metrics.json``
            unless ``overwrite``).
        result: What :func:`~disyre.evaluation.harness.evaluate_cases` returned.
        config: Settings to record (e.g. the run config, the manifest, the checkpoint).
        title: Heading of the report.
        overwrite: Replace an existing report.
        extra: More entries for ``metrics.json``; ``healthy_transfer`` (FPR of healthy scans
            outside the training range, shaped like ``healthy_heldout``) and
            ``threshold_bootstrap`` (spread of the thresholds over resamples of the healthy
            validation scans) are also shown in the report.

    Returns:
        Path of ``report.md``.
    """
    out = prepare_output_dir(out_dir, overwrite=overwrite, marker="metrics.json")
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    d = result.to_dict()
    d.update(extra or {})
    transfer = d.get("healthy_transfer") or {}
    d["config"] = dict(config or {})
    d["provenance"] = provenance()
    atomic_write_text(out / "cases.csv", _cases_csv(result))

    curves = {"": d["curves"]} if d["curves"] else {}
    _pr_roc(curves, figs / "pr_curve.png", "pr", {"": d["pixel"]["prevalence"]})
    _pr_roc(curves, figs / "roc_curve.png", "roc")
    _histograms(result, figs / "score_histograms.png")
    picks = _gallery(result, figs / "gallery.png")

    px = d["pixel"]
    n_out = px.get("n_lesion_voxels_outside_brain", 0)
    lines = [f"# {title}", "",
             f"{d['n_cases']} test volumes ({d['n_cases_with_lesion']} with a lesion), "
             f"{px['n_lesion_voxels']} lesion and {px['n_healthy_voxels']} healthy brain "
             f"voxels (lesion prevalence {px['prevalence']:.4f}: the AP of a random map). "
             f"{n_out} lesion voxels "
             f"({100 * n_out / max(px['n_lesion_voxels'], 1):.2f} %, in "
             f"{d.get('n_cases_with_lesion_outside_brain', 0)} volumes) lie outside the brain "
             "mask: they count as lesion, scored by the map's value there (normally 0, a "
             "miss). " + post_processing_text(d.get("post_processing"))
             + (f" {len(d['cases_with_empty_label'])} lesioned volume(s) have an empty label "
                f"({', '.join(d['cases_with_empty_label'])}): they stay lesioned at the volume "
                "and scan level but add no lesion voxel."
                if d.get("cases_with_empty_label") else ""), "",
             "## Pixel-wise (all lesion voxels and all healthy brain voxels of all test "
             "volumes pooled, exact)", "",
             "| metric | value | 95 % bootstrap CI |", "|---|---|---|",
             f"| AP | {_fmt(px['ap'])} |{_ci(d, 'ap')} |",
             f"| AUROC | {_fmt(px['auroc'])} |{_ci(d, 'auroc')} |",
             f"| best Dice (ORACLE, threshold {_fmt(px['best_threshold_oracle'], 4)} chosen on "
             f"the test labels) | {_fmt(px['best_dice_oracle'])} |"
             f"{_ci(d, 'best_dice_oracle')} |", "", f"*{ORACLE_NOTE}.*", ""]
    if d["calibrated"]:
        th = d["thresholds"] or {}
        lines += ["## At thresholds calibrated on healthy scans", "",
                  f"Fitted on {th.get('n_volumes')} healthy volumes ({th.get('n_voxels')} brain "
                  f"voxels, {th.get('method')} quantiles); a voxel is anomalous when "
                  "`score > threshold`.", "",
                  "| healthy FPR | threshold | Dice (pooled) | mean case Dice | precision "
                  "| recall | test FPR | held-out healthy FPR |"
                  + (" out-of-range healthy FPR |" if transfer else ""),
                  "|---" * (9 if transfer else 8) + "|"]
        for k, v in d["calibrated"].items():
            ho = d["healthy_heldout"].get(k, {}).get("fpr")
            lines.append(f"| {float(k):.0%} | {_fmt(v['threshold'], 4)} | {_fmt(v['dice'])} | "
                         f"{_fmt(v['mean_case_dice'])}{_ci(d, f'mean_dice_fpr_{k}')} | "
                         f"{_fmt(v['precision'])} | {_fmt(v['recall'])} | "
                         f"{_fmt(v['fpr'], 4)} | {_fmt(ho, 4)} |"
                         + (f" {_fmt(transfer.get(k, {}).get('fpr'), 4)} |" if transfer else ""))
        lines.append("")
        lines += _threshold_spread_lines(d)
    lines += lesion_wise_lines(d.get("lesion_wise") or {})
    vol = d["volume_level"]
    groups = next(iter(vol.values()), {}).get("n_healthy_by_group") or {}
    lines += ["## Slice- and volume-level detection", "",
              "A slice (volume) is anomalous if any voxel of its label is; its score is "
              f"the mean, the max or the mean of the top {result.settings['top_k']} voxel "
              "scores over its brain voxels; `mean_slice` (the authors' slice score) is the "
              "mean over the whole slice, background included; `top_1cm3` (the volume score "
              "of `disyre detect`) is the mean of the highest-scoring 1 cm^3 of brain. "
              "The volume level is scan-level detection (MOOD's sample-level task): every "
              "lesioned test scan against every healthy one ("
              + (", ".join(_count(n, g) for g, n in groups.items())
                 if groups else "none here: AUROC n/a, AP 1 by construction")
              + "); brackets: 95 % bootstrap intervals, lesioned and healthy scans resampled "
              "apart.", "",
              "| level | reduction | AUROC | AP | n | n anomalous |", "|---|---|---|---|---|---|"]
    labels = {"mean_slice": "mean over the whole slice (authors')",
              "top_1cm3": "mean of the top 1 cm^3 (detect's score)"}
    for level in ("slice_level", "volume_level"):
        for r, v in d[level].items():
            lines.append(f"| {level.split('_')[0]} | {labels.get(r, r)} | {_fmt(v['auroc'])}"
                         f"{_ci_text(v.get('auroc_ci'))} | {_fmt(v['ap'])}"
                         f"{_ci_text(v.get('ap_ci'))} | {v['n']} | {v['n_positive']} |")
    if d.get("volume_level_by_group"):
        lines += ["", "Scan level (volume score `top_1cm3`) against each group of healthy "
                  "scans:", "", "| lesioned against | AUROC | AP | n healthy |",
                  "|---|---|---|---|"]
        for g, v in d["volume_level_by_group"].items():
            lines.append(f"| {HEALTHY_GROUPS[g]} | {_fmt(v['auroc'])}"
                         f"{_ci_text(v.get('auroc_ci'))} | {_fmt(v['ap'])}"
                         f"{_ci_text(v.get('ap_ci'))} | {v['n'] - v['n_positive']} |")
    lines += ["", "## Figures", "",
              "![precision-recall](figures/pr_curve.png) ![ROC](figures/roc_curve.png)", "",
              "![score histograms](figures/score_histograms.png)", "",
              "### Gallery: best, median and worst cases by per-volume AP", "",
              "Axial slice with the most lesion voxels; "
              f"thresholded map: {_gallery_threshold(result)[1]}.", "",
              "![gallery](figures/gallery.png)", "",
              "Per-case numbers: [cases.csv](cases.csv); all metrics: "
              "[metrics.json](metrics.json); every scan in 3D: [report.html](report.html).", ""]
    if not picks:
        lines.insert(-3, "(No case with a lesion: the gallery is empty.)")
    atomic_write_json(out / "metrics.json", d)
    report = out / "report.md"
    text = "\n".join(lines)
    atomic_write_text(report, text)
    from disyre.evaluation.html import write_report_html

    write_report_html(out, result, text, title=title,
                      method=str((config or {}).get("method") or "map"))
    return report


# --------------------------------------------------------------------------------------------
# comparison of methods


COMPARISON_COLUMNS = ("ap", "auroc", "best_dice_oracle")


def _row(name: str, m: Mapping[str, Any]) -> dict[str, Any]:
    px = m.get("pixel", {})
    row: dict[str, Any] = {"method": name}
    for k in COMPARISON_COLUMNS:
        row[k] = px.get(k)
        ci = m.get("bootstrap_ci", {}).get(k)
        row[f"{k}_ci"] = ci
    for k, v in (m.get("calibrated") or {}).items():
        row[f"dice_fpr_{k}"] = v.get("dice")
    for k, v in (m.get("healthy_heldout") or {}).items():
        row[f"heldout_fpr_at_{k}"] = v.get("fpr")
    for k, v in (m.get("healthy_transfer") or {}).items():
        row[f"transfer_fpr_at_{k}"] = v.get("fpr")
    sl = (m.get("slice_level") or {}).get("mean", {})
    row["slice_auroc_mean"] = sl.get("auroc")
    lw = ((m.get("lesion_wise") or {}).get("at") or {}).get("0.01") or {}
    row["lesion_recall_at_0.01"] = lw.get("recall")
    row["lesion_recall_at_0.01_ci"] = lw.get("recall_ci")
    row["fp_blobs_per_healthy_scan_at_0.01"] = lw.get("fp_per_healthy_scan")
    vol = (m.get("volume_level") or {}).get("top_1cm3") or {}
    row["scan_auroc"] = vol.get("auroc")
    row["scan_auroc_ci"] = vol.get("auroc_ci")
    return row


def write_comparison(out_dir: str | Path, results: Mapping[str, Mapping[str, Any]], *,
                     title: str = "Comparison of methods", overwrite: bool = False,
                     notes: Sequence[str] = ()) -> Path:
    """Compare methods: ``comparison.md``, ``comparison.csv`` and two figures.

    Args:
        out_dir: Folder (created; refused if it holds a ``comparison.md`` unless ``overwrite``).
        results: Method name -> its ``metrics.json`` document (``EvaluationResult.to_dict()``
            or the file read back).
        title: Heading.
        overwrite: Replace an existing comparison.
        notes: Lines written under the table (e.g. how the methods were trained).

    Returns:
        Path of ``comparison.md``.
    """
    if not results:
        raise ValueError("no methods to compare")
    out = prepare_output_dir(out_dir, overwrite=overwrite, marker="comparison.md")
    rows = [_row(n, m) for n, m in results.items()]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and not k.endswith("_ci")]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        w.writerow([r["method"], *[_num(r.get(k)) if isinstance(r.get(k), float)
                                   else ("" if r.get(k) is None else r.get(k))
                                   for k in keys[1:]]])
    atomic_write_text(out / "comparison.csv", buf.getvalue())

    plt = _plt()
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    bar_keys = [k for k in keys[1:] if k in COMPARISON_COLUMNS or k.startswith("dice_fpr_")]
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(bar_keys), 3.5))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        vals = [r.get(k) if r.get(k) is not None else 0.0 for k in bar_keys]
        ax.bar(np.arange(len(bar_keys)) + i * width, vals, width, label=r["method"])
    ax.set_xticks(np.arange(len(bar_keys)) + 0.4 - width / 2)
    ax.set_xticklabels([k.replace("_", " ") for k in bar_keys], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Pixel-wise metrics (best Dice is an oracle)")
    _savefig(fig, figs / "comparison_bars.png")
    curves = {n: m.get("curves") or {} for n, m in results.items()}
    prev = {n: m.get("pixel", {}).get("prevalence") for n, m in results.items()}
    prev = {n: p for n, p in prev.items() if p is not None}
    if len(set(np.round(list(prev.values()), 9))) == 1:  # same test set: one chance line
        prev = {"": next(iter(prev.values()))}
    _pr_roc(curves, figs / "comparison_pr.png", "pr", prev)

    head = ["method", "AP", "AUROC", "best Dice (oracle)"]
    dkeys = [k for k in keys if k.startswith("dice_fpr_")]
    hkeys = [k for k in keys if k.startswith("heldout_fpr_at_")]
    tkeys = [k for k in keys if k.startswith("transfer_fpr_at_")]
    head += [f"Dice @ {float(k[9:]):.0%} FPR" for k in dkeys]
    head += [f"held-out FPR @ {float(k[15:]):.0%}" for k in hkeys]
    head += [f"out-of-range FPR @ {float(k[16:]):.0%}" for k in tkeys]
    head += ["slice AUROC (mean)", "lesion recall @ 1 %", "FP blobs per healthy scan @ 1 %",
             "scan AUROC (top 1 cm^3)"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"]]
        for k in COMPARISON_COLUMNS:
            ci = r.get(f"{k}_ci")
            cells.append(_fmt(r.get(k)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]"
                                           if ci and ci[0] is not None else ""))
        cells += [_fmt(r.get(k)) for k in dkeys]
        cells += [_fmt(r.get(k), 4) for k in hkeys]
        cells += [_fmt(r.get(k), 4) for k in tkeys]
        cells.append(_fmt(r.get("slice_auroc_mean")))
        cells.append(_fmt(r.get("lesion_recall_at_0.01"))
                     + _ci_text(r.get("lesion_recall_at_0.01_ci")))
        cells.append(_fmt(r.get("fp_blobs_per_healthy_scan_at_0.01"), 1))
        cells.append(_fmt(r.get("scan_auroc")) + _ci_text(r.get("scan_auroc_ci")))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"*{ORACLE_NOTE}. Brackets: 95 % bootstrap intervals over volumes. Lesion "
              "recall and FP blobs: BraTS 2023 lesion-wise matching (see each method's report); "
              "scan AUROC: lesioned against healthy test scans. Every method's map of one case "
              "side by side: [comparison.html](comparison.html).*", "",
              *notes, *([""] if notes else []),
              "![metrics](figures/comparison_bars.png) ![PR curves](figures/comparison_pr.png)",
              ""]
    path = out / "comparison.md"
    atomic_write_text(path, "\n".join(lines))
    return path
