"""``report.html``: one self-contained page to look at the maps, beside every ``report.md``.

Per case the page shows the scan, the map as a colour overlay above a threshold and the
label outline in axial, coronal and sagittal views (mouse wheel or sliders scroll, a click
moves the other two views there), a threshold slider that starts at the 1 % healthy
threshold, the overlay opacity, and the case's numbers; a case list sortable by AP, Dice,
score and name; and below, the tables and figures of ``report.md``. The comparison page of
``disyre benchmark`` shows one case of every method side by side.

The viewer is a small 2D canvas viewer in plain JavaScript (``html_assets/``, inlined): no
WebGL, no library, no network. Volumes are embedded compactly: cropped to the brain's
bounding box, 8 bits per voxel (scan scaled by its brain's 99.5th percentile; map in steps of
1/255 of the case's maximum, rounded down, so the overlay never shows a voxel whose score is
not above the threshold), zlib-compressed and base64-encoded; the browser inflates them with
its ``DecompressionStream`` when a case is opened. Volumes above :data:`MAX_VOXELS` voxels
are shown at a coarser grid (the map and label by block maximum, the scan by block mean).

Example:
    >>> import numpy as np
    >>> amap = np.zeros((4, 6, 6), np.float32); amap[1:3, 2:4, 2:4] = 0.8
    >>> v = pack_volume(amap, amap > 0.5, np.ones(amap.shape, bool), image=amap)
    >>> v.shape, v.factor, round(v.scale, 3)
    ((4, 6, 6), 1, 0.8)
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_VOXELS = 1_500_000
MARGIN = 2


@dataclass
class ViewerVolume:
    """One scan as the page embeds it (axial-first ``(D, H, W)``, cropped, 8-bit, zlib).

    Attributes:
        shape: Shape of the embedded grid.
        spacing: Voxel size of the embedded grid in mm along ``(D, H, W)``.
        origin: Start of the crop on the evaluated grid.
        factor: Block size of the coarser grid (1 = full resolution).
        scale: Map value of code 255 (the case's maximum).
        map: Map codes (``value = code / 255 * scale``, rounded down).
        image: Scan codes (0-255), or ``None``.
        label: Lesion label (0/1), or ``None``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[int, int, int]
    factor: int
    scale: float
    map: bytes
    image: bytes | None = None
    label: bytes | None = None

    def nbytes(self) -> int:
        """Compressed size."""
        return sum(len(b) for b in (self.map, self.image, self.label) if b is not None)


def _crop_box(mask: np.ndarray, label: np.ndarray | None) -> tuple[slice, slice, slice]:
    m = mask if label is None else (mask | label)
    if not m.any():
        return tuple(slice(0, s) for s in m.shape)  # type: ignore[return-value]
    out = []
    for ax in range(3):
        hit = np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != ax)))
        out.append(slice(max(int(hit[0]) - MARGIN, 0),
                         min(int(hit[-1]) + 1 + MARGIN, m.shape[ax])))
    return tuple(out)  # type: ignore[return-value]


def _blocks(a: np.ndarray, f: int, how: str) -> np.ndarray:
    """Reduce ``a`` by ``f`` along every axis (``max`` or ``mean`` over each block)."""
    if f == 1:
        return a
    pad = [(0, (-s) % f) for s in a.shape]
    a = np.pad(a, pad, mode="edge")
    d, h, w = (s // f for s in a.shape)
    b = a.reshape(d, f, h, f, w, f)
    return b.max(axis=(1, 3, 5)) if how == "max" else b.mean(axis=(1, 3, 5))


def _z(a: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(a, np.uint8).tobytes(), 6)


def pack_volume(amap: np.ndarray, label: np.ndarray | None, mask: np.ndarray | None, *,
                image: np.ndarray | None = None,
                spacing: Sequence[float] | None = None,
                max_voxels: int = MAX_VOXELS) -> ViewerVolume:
    """Crop, quantise and compress one scan for the page.

    Args:
        amap: Anomaly map ``(D, H, W)``.
        label: Lesion label (non-zero = lesion) or ``None`` (no label: no outline).
        mask: Brain mask (crop box and image scaling) or ``None`` (every voxel).
        image: The scan (any intensity scale), or ``None``.
        spacing: Voxel size in mm along ``(D, H, W)`` (default 1 mm).
        max_voxels: Above this many voxels in the crop, a coarser grid (integer block size).

    Returns:
        A :class:`ViewerVolume`.
    """
    amap = np.asarray(amap, np.float32)
    mask_b = np.ones(amap.shape, bool) if mask is None else np.asarray(mask) != 0
    lab = None if label is None else np.asarray(label) != 0
    box = _crop_box(mask_b, lab)
    n = int(np.prod([s.stop - s.start for s in box]))
    f = max(1, math.ceil((n / max_voxels) ** (1 / 3) - 1e-9))
    m = np.where(np.isfinite(amap[box]), amap[box], 0.0)
    m = _blocks(np.clip(m, 0, None), f, "max")
    scale = float(m.max()) if m.size and m.max() > 0 else 1.0
    codes = np.floor(m / scale * 255).clip(0, 255)
    img = None
    if image is not None:
        im = np.asarray(image, np.float32)
        vals = im[mask_b]
        hi = float(np.percentile(vals, 99.5)) if vals.size else float(im.max())
        lo = min(float(vals.min()) if vals.size else 0.0, 0.0)
        hi = hi if hi > lo else lo + 1.0
        img = _z(np.round(_blocks((im[box] - lo) / (hi - lo), f, "mean").clip(0, 1) * 255))
    lab_b = None if lab is None else _z(_blocks(lab[box].astype(np.uint8), f, "max"))
    sp = tuple(float(s) * f for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
    return ViewerVolume(shape=tuple(int(s) for s in codes.shape),  # type: ignore[arg-type]
                        spacing=sp, origin=tuple(s.start for s in box),  # type: ignore[arg-type]
                        factor=f, scale=scale, map=_z(codes), image=img, label=lab_b)


# --------------------------------------------------------------------------------------------
# page


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _asset(name: str) -> str:
    return resources.files("disyre.evaluation").joinpath("html_assets", name).read_text("utf-8")


def _inline(text: str, base: Path | None = None) -> str:
    """Markdown inline syntax of the reports -> HTML (the text is escaped first); PNG images
    found under ``base`` are embedded as data URIs."""

    def image(m: re.Match[str]) -> str:
        alt, src = m.group(1), m.group(2)
        p = (base / html.unescape(src)) if base is not None else None
        if p is not None and p.is_file() and p.suffix.lower() == ".png":
            src = "data:image/png;base64," + _b64(p.read_bytes())
        return f'<img alt="{alt}" src="{src}">'

    t = html.escape(text, quote=False)
    t = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', t)
    t = re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", t)
    return t


def markdown_to_html(md: str, base: Path | None = None) -> str:
    """The Markdown subset the reports use (headings, tables, paragraphs, images, links,
    emphasis, code) as HTML; images found under ``base`` are embedded as data URIs.

    Example:
        >>> print(markdown_to_html("## A\\n\\n| x | y |\\n|---|---|\\n| 1 | *2* |"))
        <h2>A</h2>
        <table><thead><tr><th>x</th><th>y</th></tr></thead><tbody><tr><td>1</td><td><em>2</em></td></tr></tbody></table>
    """
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + " ".join(_inline(p, base) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        h = re.match(r"^(#{1,4}) (.*)$", line)
        if h:
            flush()
            n = len(h.group(1))
            out.append(f"<h{n}>{_inline(h.group(2))}</h{n}>")
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i].strip())
                i += 1
            i -= 1
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            body = cells[2:] if len(cells) > 1 and re.match(r"^[\s|:-]+$", rows[1]) else cells[1:]
            t = ["<table><thead><tr>", *(f"<th>{_inline(c)}</th>" for c in cells[0]),
                 "</tr></thead><tbody>"]
            for r in body:
                t += ["<tr>", *(f"<td>{_inline(c)}</td>" for c in r), "</tr>"]
            t.append("</tbody></table>")
            out.append("".join(t))
        elif not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return "\n".join(out)


def _json_script(obj: Any) -> str:
    # "</" must not appear inside a <script> element
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def render_page(data: Mapping[str, Any], volumes: Sequence[Mapping[str, ViewerVolume | None]],
                body_html: str = "", title: str = "disyre report") -> str:
    """The page: ``data`` (methods, cases) as JSON, each case's volumes as base64 blocks.

    Args:
        data: ``{"kind", "title", "methods": [{"name", "thresholds": {fpr: t}}], "cases":
            [{"subject", "group", "n_lesion", "metrics": {method: {...}}}], "notes": [...]}``.
        volumes: Per case, method name -> its :class:`ViewerVolume` (the scan and label are
            taken from the first method's volume: every method's crop of a case must match).
        body_html: HTML below the viewer (the report's tables and figures).
        title: Page title.
    """
    blocks: list[str] = []
    cases = [dict(c) for c in data["cases"]]
    for i, (c, vols) in enumerate(zip(cases, volumes, strict=True)):
        present = {k: v for k, v in vols.items() if v is not None}
        if not present:
            c["volume"] = None
            continue
        first = next(iter(present.values()))
        c["volume"] = {"shape": list(first.shape), "spacing": list(first.spacing),
                       "factor": first.factor, "origin": list(first.origin),
                       "image": first.image is not None, "label": first.label is not None,
                       "maps": {k: {"scale": v.scale} for k, v in present.items()
                                if v.shape == first.shape and v.origin == first.origin}}
        blocks.append(_block(f"v{i}-image", first.image))
        blocks.append(_block(f"v{i}-label", first.label))
        for j, (k, v) in enumerate(present.items()):
            if k in c["volume"]["maps"]:
                c["volume"]["maps"][k]["block"] = f"v{i}-map{j}"
                blocks.append(_block(f"v{i}-map{j}", v.map))
    from disyre.io_utils import json_safe

    payload = json_safe({**data, "cases": cases})
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{_asset('report.css')}</style>",
        "</head><body>",
        f'<header><h1>{html.escape(title)}</h1></header>',
        '<main><section id="viewer" aria-label="case viewer"></section>',
        f'<section id="report">{body_html}</section></main>',
        f'<script type="application/json" id="report-data">{_json_script(payload)}</script>',
        *[b for b in blocks if b],
        f"<script>{_asset('report.js')}</script>", "</body></html>", ""])


def _block(name: str, b: bytes | None) -> str:
    if b is None:
        return ""
    return f'<script type="application/octet-stream" id="{name}">{_b64(b)}</script>'


def case_entry(rec: Any, method: str, fprs: Sequence[float]) -> dict[str, Any]:
    """A case of the page's list from a harness record (``CaseRecord``)."""
    from disyre.evaluation.thresholds import fpr_key

    m: dict[str, Any] = {"ap": rec.ap, "score": rec.score,
                         "dice": {fpr_key(f): rec.dice.get(f) for f in fprs}}
    les = getattr(rec, "lesions", None)
    if les is not None:
        m["lesions"] = {fpr_key(f): [int(les.detected[j].sum()), les.n_lesions,
                                     int(les.n_fp[j])] for j, f in enumerate(fprs)}
    return {"subject": rec.subject, "group": getattr(rec, "group", "test"),
            "n_lesion": rec.n_lesion, "metrics": {method: m}}


def result_page_data(result: Any, method: str = "map") -> tuple[dict[str, Any], list[dict]]:
    """``(data, volumes)`` of :func:`render_page` for one ``EvaluationResult``."""
    from disyre.evaluation.thresholds import fpr_key

    fprs = sorted(result.thresholds.fpr) if result.thresholds else []
    recs = [*result.cases, *getattr(result, "healthy_cases", [])]
    data = {"kind": "report", "default_fpr": fpr_key(min(fprs)) if fprs else None,
            "methods": [{"name": method, "thresholds": {fpr_key(f): result.thresholds.fpr[f]
                                                        for f in fprs}}],
            "cases": [case_entry(r, method, fprs) for r in recs],
            "post_processing": result.settings.get("post_processing")}
    vols = [{method: getattr(r, "viewer", None)} for r in recs]
    return data, vols


def write_report_html(out_dir: str | Path, result: Any, report_md: str, *,
                      title: str = "Evaluation report", method: str = "map") -> Path:
    """``report.html`` of one evaluation, beside its ``report.md`` (figures embedded)."""
    from disyre.io_utils import atomic_write_text

    out = Path(out_dir)
    data, vols = result_page_data(result, method)
    data["title"] = title
    body = markdown_to_html(report_md, out)
    missing = sum(v[method] is None for v in vols)
    if missing:
        body = (f'<p class="note">{missing} of {len(vols)} scans are listed without their '
                "volume (the page embeds at most the first "
                f"{len(vols) - missing}).</p>") + body
    page = render_page(data, vols, body, title=title)
    path = out / "report.html"
    atomic_write_text(path, page)
    return path


def write_comparison_html(out_dir: str | Path, results: Mapping[str, Any], comparison_md: str,
                          *, title: str = "Comparison of methods") -> Path:
    """``comparison.html``: every method's map of one case side by side.

    Args:
        out_dir: The comparison folder (holds ``comparison.md`` and its figures).
        results: Method name -> its ``EvaluationResult`` (same test scans, same order).
        comparison_md: Text of ``comparison.md`` (shown below the viewer).
        title: Heading.
    """
    from disyre.io_utils import atomic_write_text

    out = Path(out_dir)
    names = list(results)
    per = {n: result_page_data(r, n) for n, r in results.items()}
    first = per[names[0]][0]
    cases, vols = [], []
    for i, c in enumerate(first["cases"]):
        entry = dict(c, metrics={})
        v: dict[str, ViewerVolume | None] = {}
        for n in names:
            d, vv = per[n]
            if i < len(d["cases"]) and d["cases"][i]["subject"] == c["subject"]:
                entry["metrics"][n] = d["cases"][i]["metrics"][n]
                v[n] = vv[i][n]
        cases.append(entry)
        vols.append(v)
    data = {"kind": "comparison", "title": title,
            "default_fpr": first["default_fpr"],
            "methods": [per[n][0]["methods"][0] for n in names], "cases": cases,
            "post_processing": {n: per[n][0]["post_processing"] for n in names}}
    page = render_page(data, vols, markdown_to_html(comparison_md, out), title=title)
    path = out / "comparison.html"
    atomic_write_text(path, page)
    return path


def write_detect_report(out_dir: str | Path, scans: Sequence[str | Path], *,
                        checkpoint: str | Path | None = None,
                        thresholds_file: str | Path | None = None,
                        post_processing: Mapping[str, Any] | None = None,
                        overwrite: bool = True, name: str = "report.html") -> Path:
    """``report.html`` of a ``disyre detect`` output folder (scans without labels).

    Each scan's map is ``out_dir/<scan file name>`` (pixel mode); scans without one are left
    out and named on the page. The threshold slider starts at the 1 % threshold of
    ``thresholds_file`` (default: the one in ``checkpoint``'s run folder), else at half the largest
    map value.

    Args:
        out_dir: The detect output folder (the page is written there).
        scans: The input scans.
        checkpoint: The run or checkpoint folder (to find ``thresholds.json``).
        thresholds_file: Calibrated thresholds to start the slider at.
        post_processing: What was applied to the maps (e.g. ``{"median_filter": 0}``).
        overwrite: Replace an existing page.
        name: File name of the page.

    Returns:
        Path of the page.
    """
    import nibabel as nib

    from disyre.data.intensity import brain_mask
    from disyre.data.nifti import load_scan, to_canonical
    from disyre.evaluation import metrics as M
    from disyre.evaluation.thresholds import fpr_key, load_thresholds
    from disyre.io_utils import atomic_path

    out = Path(out_dir)
    from disyre.inference.thresholds import thresholds_path

    # the file named, else the checkpoint's run folder: the one place detect looks
    th_path = Path(thresholds_file) if thresholds_file else (
        thresholds_path(checkpoint) if checkpoint is not None else None)
    found = th_path is not None and (thresholds_file is not None or th_path.is_file())
    fpr = load_thresholds(th_path).fpr if found else {}  # a file named must exist
    cases, vols, missing = [], [], []
    for s in map(Path, scans):
        mpath = out / s.name
        if not mpath.is_file():
            log.warning("%s: no map in %s, left out of %s", s.name, out, name)
            missing.append(s.name)
            continue
        scan = load_scan(s)
        img = nib.load(str(mpath))
        amap = np.asarray(img.dataobj, np.float32).reshape(scan.native_shape)
        amap = np.ascontiguousarray(to_canonical(amap, scan.ornt))
        mask = brain_mask(scan.data, None) | (amap > 0)
        score = M.volume_scores(amap, mask, voxel_mm3=float(np.prod(scan.spacing)))
        stem = re.sub(r"\.nii(\.gz)?$", "", s.name, flags=re.I)
        cases.append({"subject": stem, "group": "scan", "n_lesion": 0,
                      "metrics": {"map": {"score": score[M.VOLUME_SCORE]}}})
        vols.append({"map": pack_volume(amap, None, mask, image=scan.data,
                                        spacing=scan.spacing)})
    title = f"disyre detect: {out}"
    data = {"kind": "detect", "title": title,
            "default_fpr": fpr_key(min(fpr)) if fpr else None,
            "methods": [{"name": "map", "thresholds": {fpr_key(f): t for f, t in fpr.items()}}],
            "cases": cases, "post_processing": dict(post_processing) if post_processing
            is not None else None}
    notes = [f"{len(cases)} scan(s) of {out}, checkpoint {checkpoint or '?'}; no labels. "
             f"Volume score: mean of the highest-scoring {M.SCORE_VOLUME_MM3:g} mm^3 of brain."]
    notes.append(f"Thresholds: {th_path} (a voxel is anomalous when its score is above)."
                 if th_path else "No calibrated thresholds found (run `disyre evaluate "
                 "--save-thresholds`): the slider starts at half the largest map value.")
    if missing:
        notes.append(f"Left out (no map): {', '.join(missing)}.")
    body = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    path = out / name
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(render_page(data, vols, body, title=title), encoding="utf-8")
    return path
