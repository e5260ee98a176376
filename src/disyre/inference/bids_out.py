"""BIDS derivatives out: anomaly maps of a BIDS dataset as a BIDS derivatives dataset.

:func:`bids_app` is what ``disyre bids BIDS_DIR OUTPUT_DIR participant`` runs (the BIDS-Apps
calling convention). It shares :func:`disyre.inference.files.detect_files`' machinery
(:func:`~disyre.inference.files.pending_scans` for ``--continue`` and the refusal to
overwrite, :func:`~disyre.inference.files.map_scans` for the per-scan loop and the failures
listed at the end, atomic writes, the thresholds and their binding) and differs in what it
reads (the scans of one suffix of a BIDS dataset, :func:`disyre.data.bids.find_scans`) and in
how it names what it writes.

Outputs, for the input ``sub-01/ses-1/anat/sub-01_ses-1_acq-fast_T2w.nii.gz`` (each with a
JSON sidecar of the same name, ``.json``), under ``OUTPUT_DIR/sub-01/ses-1/anat/``:

- ``sub-01_ses-1_acq-fast_space-T2w_label-anomaly_probseg.nii.gz``: the anomaly map, float32
  in [0, 1], on the scan's own grid and affine;
- ``sub-01_ses-1_acq-fast_space-T2w_label-anomaly_desc-fpr1_mask.nii.gz``: ``map > t`` at each
  false-positive rate of the checkpoint's ``thresholds.json`` (``fpr1`` = 1 %, ``fpr0p5`` =
  0.5 %), uint8;
- ``sub-01_ses-1_acq-fast_desc-restored_T2w.nii.gz``: the restored image (``restored``).

and ``OUTPUT_DIR/dataset_description.json`` (``DatasetType: derivative``, ``GeneratedBy``,
``SourceDatasets``, ``DatasetLinks``). docs/bids.md says why these names.

Example:
    >>> fpr_desc(0.01), fpr_desc(0.005), fpr_desc(0.1)
    ('fpr1', 'fpr0p5', 'fpr10')
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from disyre.data.bids import BidsScan, find_scans
from disyre.data.nifti import InputError
from disyre.inference.files import (
    DetectSummary,
    Predict,
    _check_targets,
    _write,
    _write_text,
    describe_detector,
    map_scans,
    pending_scans,
)
from disyre.inference.thresholds import (
    RULE,
    Thresholds,
    check_binding,
    fpr_key,
    load_thresholds,
    map_settings,
    thresholds_path,
)
from disyre.io_utils import OutputExistsError, atomic_write_json, ensure_writable_dir, json_safe

__all__ = ["BIDS_VERSION", "GENERATOR", "bids_version", "fpr_desc", "derivative_paths",
           "dataset_description", "bids_app"]

log = logging.getLogger(__name__)

#: The BIDS version written when the schema does not give one (it gives the version of the
#: rules the names follow: :func:`bids_version`).
BIDS_VERSION = "1.10.0"
#: ``GeneratedBy[0].Name``.
GENERATOR = "disyre"
CODE_URL = "https://github.com/disyre/disyre"
#: The ``label-`` of maps and masks.
LABEL = "anomaly"
#: The name of the source dataset in ``DatasetLinks`` (``bids:raw:sub-01/...`` in Sources).
RAW = "raw"


def bids_version() -> str:
    """The BIDS version of bidsschematools' schema (whose rules the names follow)."""
    from disyre.data.bids import _schema

    try:
        return str(_schema().bids_version)
    except Exception:  # pragma: no cover - the schema ships with bidsschematools
        return BIDS_VERSION


def fpr_desc(rate: float) -> str:
    """The ``desc-`` value of the mask at false-positive rate ``rate``: ``fpr`` and the rate
    in percent, ``p`` for the decimal point (BIDS labels are alphanumeric)."""
    return "fpr" + format(round(float(rate) * 100, 6), "g").replace(".", "p")


def derivative_paths(scan: BidsScan, rates: Iterable[float] = (),
                     restored: bool = False) -> dict[str, str]:
    """The outputs of ``scan``, paths from the derivatives' root: keys ``map``, ``mask:<rate>``
    (one per rate), ``restored``, each followed by its sidecar (``<key>.json``).

    Example:
        >>> from disyre.data.bids import parse_name
        >>> s = BidsScan(Path("x"), parse_name("sub-01_T1w.nii.gz"), "sub-01/anat/x")
        >>> derivative_paths(s, [0.01])["mask:0.01"]
        'sub-01/anat/sub-01_space-T1w_label-anomaly_desc-fpr1_mask.nii.gz'
    """
    n = scan.name
    folder = Path(scan.relpath).parent.as_posix()
    space = n.get("space") or n.suffix  # on the scan's own grid: the scan's space
    names = {"map": n.with_(space=space, label=LABEL, suffix="probseg", extension=".nii.gz")}
    for r in rates:
        names[f"mask:{fpr_key(r)}"] = n.with_(space=space, label=LABEL, desc=fpr_desc(r),
                                              suffix="mask", extension=".nii.gz")
    if restored:
        names["restored"] = n.with_(desc="restored", extension=".nii.gz")
    out = {}
    for key, name in names.items():
        out[key] = f"{folder}/{name.filename}"
        out[f"{key}.json"] = f"{folder}/{name.with_(extension='.json').filename}"
    return out


def _dataset_link(bids_dir: Path, output_dir: Path) -> str:
    """``bids_dir`` as seen from ``output_dir``: a relative path where there is one."""
    try:
        return Path(os.path.relpath(bids_dir.resolve(), output_dir.resolve())).as_posix()
    except ValueError:  # other drive
        return bids_dir.resolve().as_uri()


def dataset_description(bids_dir: str | Path, output_dir: str | Path,
                        command: str = "disyre bids") -> dict[str, Any]:
    """``dataset_description.json`` of the derivatives: ``DatasetType: derivative``,
    ``GeneratedBy`` (disyre, its version, the command), ``SourceDatasets`` (the input
    dataset, with its DOI and version where its own description gives them) and
    ``DatasetLinks`` (``raw``: the input dataset, which ``bids:raw:`` URIs in ``Sources``
    name)."""
    from disyre import __version__

    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    src: dict[str, Any] = {"URL": bids_dir.resolve().as_uri()}
    try:
        raw = json.loads((bids_dir / "dataset_description.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raw = {}
    if raw.get("DatasetDOI"):
        src["DOI"] = raw["DatasetDOI"]
    if raw.get("DatasetVersion") or raw.get("Version"):
        src["Version"] = raw.get("DatasetVersion") or raw.get("Version")
    return {
        "Name": f"disyre anomaly maps of {raw.get('Name') or bids_dir.name}",
        "BIDSVersion": bids_version(),
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": GENERATOR, "Version": __version__, "CodeURL": CODE_URL,
                         "Description": command}],
        "SourceDatasets": [src],
        "DatasetLinks": {RAW: _dataset_link(bids_dir, output_dir)},
    }


def _checkpoint_info(checkpoint: str | Path | None) -> dict[str, Any]:
    """``{"Path", "Step", "WeightsSHA256"}`` as the checkpoint's ``config.json`` records them
    (``WeightsSHA256``: weights file -> its SHA-256; ``None`` where nothing is recorded)."""
    info: dict[str, Any] = {"Path": None, "Step": None, "WeightsSHA256": None}
    if checkpoint is None:
        return info
    from disyre.training.checkpoint import read_checkpoint_meta

    try:
        ckpt, meta = read_checkpoint_meta(checkpoint)
    except (OSError, ValueError, RuntimeError):
        info["Path"] = str(Path(checkpoint).resolve())
        return info
    info["Path"] = str(Path(ckpt).resolve())
    info["Step"] = meta.get("step")
    rec = meta.get("weights")  # {"sha256": {file: hex}, "method": ...} (checkpoint.py)
    info["WeightsSHA256"] = rec.get("sha256") if isinstance(rec, dict) else None
    return info


def _check_description(out: Path, overwrite: bool) -> None:
    """Refuse a folder whose dataset_description.json another program wrote."""
    p = out / "dataset_description.json"
    if not p.is_file() or overwrite:
        return
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        names = [g.get("Name") for g in d.get("GeneratedBy", [])]
    except (OSError, json.JSONDecodeError, AttributeError, TypeError):
        names = []
    if GENERATOR not in names:
        raise OutputExistsError(f"{p}: the folder holds another dataset (not generated by "
                                f"{GENERATOR}); choose another output folder or pass "
                                "--overwrite")


def bids_app(bids_dir: str | Path, output_dir: str | Path,
             detector: Any | Callable[[], Any], *,
             checkpoint: str | Path | None = None,
             suffix: str = "T2w",
             participant_labels: Sequence[str] | None = None,
             session_labels: Sequence[str] | None = None,
             restored: bool = False,
             thresholds_file: str | Path | None = None,
             allow_threshold_mismatch: bool = False,
             overwrite: bool = False,
             continue_: bool = False,
             progress: bool = True,
             predict: Predict | None = None,
             command: str = "disyre bids",
             settings: dict[str, Any] | None = None) -> DetectSummary:
    """Anomaly maps of a BIDS dataset's ``*_<suffix>`` scans as BIDS derivatives.

    Everything is checked before a model is loaded: the dataset (its
    ``dataset_description.json``, the labels asked for), the output names, existing
    outputs, the output folder; then that the thresholds were fitted on maps made as these
    will be. Without a thresholds file, maps are written without masks (with a warning).

    Args:
        bids_dir: The BIDS dataset.
        output_dir: The derivatives folder (created; may be ``bids_dir/derivatives/disyre``).
        detector: A :class:`~disyre.inference.Detector`, or a function returning one.
        checkpoint: The run or checkpoint folder of the detector (its step and weights hash
            go into the sidecars; its run's ``thresholds.json`` gives the masks).
        suffix: The scans' BIDS suffix (``T1w``, ``T2w``, ``FLAIR``, ...).
        participant_labels: Only these subjects (``01`` or ``sub-01``).
        session_labels: Only these sessions.
        restored: Also write the restored images.
        thresholds_file: Another thresholds file than the checkpoint's.
        allow_threshold_mismatch: Apply thresholds fitted on other maps (with a warning).
        overwrite: Replace existing outputs.
        continue_: Skip scans whose outputs all exist and read back whole.
        progress: Progress bars.
        predict: How a scan is mapped (default :meth:`Detector.predict`; raw heads:
            ``disyre.preprocessing.predict_raw``).
        command: The command line, recorded in ``GeneratedBy``.
        settings: More inference settings for the sidecars (e.g. ``{"Preprocess": True}``).

    Returns:
        The :class:`~disyre.inference.files.DetectSummary` (``summary.ok`` false if a scan
        failed; they are listed in ``summary.report()``).

    Raises:
        InputError: Not a BIDS dataset, no scan, an unknown label.
        OutputExistsError: Outputs exist (without ``overwrite``/``continue_``), or the output
            folder is the dataset itself or another program's dataset.
        ThresholdError: A bad thresholds file, or one fitted on other maps.
    """
    bids_dir, out = Path(bids_dir), Path(output_dir)
    if overwrite and continue_:
        raise ValueError("overwrite and continue exclude each other: overwrite recomputes "
                         "every scan, continue skips the finished ones (--overwrite, "
                         "--continue)")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if bids_dir.is_dir() and out.resolve() == bids_dir.resolve():
        raise OutputExistsError(f"{out}: output folder is the input dataset; write the "
                                "derivatives elsewhere, e.g. into its derivatives/disyre/")
    listing = find_scans(bids_dir, suffix, participant_labels=participant_labels,
                         session_labels=session_labels)
    if not listing.scans:
        raise InputError(f"{bids_dir}: no scans sub-*/[ses-*/]anat/*_{suffix}.nii[.gz]")
    th: Thresholds | None = None
    th_path = Path(thresholds_file) if thresholds_file is not None else (
        thresholds_path(checkpoint) if checkpoint is not None else None)
    if th_path is not None and (thresholds_file is not None or th_path.is_file()):
        th = load_thresholds(th_path)
    rates = sorted(th.fpr) if th is not None else []
    scans = [s.path for s in listing.scans]
    by_path = {s.path: s for s in listing.scans}
    targets = {s.path: {k: out / v for k, v in derivative_paths(s, rates, restored).items()}
               for s in listing.scans}
    _check_targets(targets, scans)
    summary = DetectSummary(out, scans, command="disyre bids")
    summary.warnings += listing.warnings
    todo = pending_scans(summary, targets, overwrite=overwrite, continue_=continue_)
    _check_description(out, overwrite)
    ensure_writable_dir(out)
    if th is None:
        msg = (f"{th_path or 'no checkpoint'}: no thresholds file; anomaly maps are written "
               "without masks (fit thresholds with `disyre evaluate --save-thresholds`)")
        summary.warnings.append(msg)
        log.warning("%s", msg)

    det = detector if hasattr(detector, "predict") else detector()
    if th is not None:
        for msg in check_binding(th, det, checkpoint, source=th_path,
                                 allow_mismatch=allow_threshold_mismatch):
            summary.warnings.append(msg)
            log.warning("%s", msg)
    atomic_write_json(out / "dataset_description.json",
                      dataset_description(bids_dir, out, command))
    log.info("bids: %d scan(s) of %s, %s", len(todo), bids_dir, describe_detector(det))
    if predict is None:
        def predict(d: Any, scan: Path, **kw: Any) -> Any:
            return d.predict(scan, **kw)

    inf = det.inference
    common = {
        "Model": {**_checkpoint_info(checkpoint), "Method": det.cfg.corruption.name},
        "InferenceSettings": {**map_settings(inf), "precision": det.precision.precision,
                              "device": str(det.device), **(settings or {})},
    }
    thresholds = None if th is None else {
        "File": str(th_path.resolve()) if th_path is not None else None,
        "Rule": RULE,
        "FalsePositiveRate": {fpr_key(r): th.fpr[r] for r in rates},
        "FittedOn": {"NumberOfVolumes": th.n_volumes, "NumberOfVoxels": th.n_voxels,
                     "Source": th.source},
    }
    write_over = overwrite or continue_

    def sidecar(path: Path, doc: dict[str, Any]) -> None:
        text = json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
        _write(path, lambda p: _write_text(p, text), write_over)

    def write(res: Any, scan_path: Path) -> list[Path]:
        scan, tgt = by_path[scan_path], targets[scan_path]
        src = f"bids:{RAW}:{scan.relpath}"
        map_uri = f"bids::{Path(tgt['map']).relative_to(out).as_posix()}"
        score = float(res.score)
        _write(tgt["map"], res.save_map, write_over)
        sidecar(tgt["map.json"], {
            "Description": "Anomaly map of the source scan: per voxel, how much the "
                           "restoration network changed it (0 = normal, 1 = most anomalous), "
                           "on the source scan's grid; a score, not a calibrated probability",
            "Sources": [src], "Label": LABEL, "Score": score,
            "ScoreDefinition": "mean of the most anomalous 1 cm^3 of the map",
            **common, "Thresholds": thresholds})
        for r in rates:
            key = f"mask:{fpr_key(r)}"
            t = th.fpr[r]  # type: ignore[union-attr]
            _write(tgt[key], lambda p, t=t: res.save_mask(p, t), write_over)
            sidecar(tgt[f"{key}.json"], {
                "Description": f"Voxels of the anomaly map above the threshold calibrated "
                               f"on healthy scans at a false-positive rate of {r:g}",
                "Sources": [src, map_uri], "Label": LABEL, "FalsePositiveRate": r,
                "Threshold": t, "Rule": RULE, "Score": score, **common,
                "Thresholds": thresholds})
        if "restored" in tgt:
            _write(tgt["restored"], res.save_restored, write_over)
            sidecar(tgt["restored.json"], {
                "Description": "The source scan as the restoration network restored it "
                               "(intensities of its normalised input, on the source grid)",
                "Sources": [src], "Score": score, **common})
        return list(tgt.values())

    map_scans(summary, todo, det, predict, write, progress=progress)
    return summary
