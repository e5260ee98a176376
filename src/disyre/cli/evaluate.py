"""``disyre evaluate``: metrics and a report for a test manifest, from a model or from maps.

Examples::

    disyre evaluate --manifest test.csv --checkpoint runs/t2 -o reports/t2 --save-thresholds
    disyre evaluate --manifest test.csv --maps maps/ --healthy-manifest val.csv -o reports/t2

Test cases are the manifest's rows of split ``test`` (if none is ``test``: every row but the
validation ones; rows of split ``val`` are never test cases). The manifest must have a
``split`` column. Healthy
scans for the thresholds come from ``--healthy-manifest`` (rows without a lesion mask) or else
from the manifest's rows of split ``val`` without a lesion mask. With ``--maps``, each row's map
is ``<maps>/<file name of its image>`` (the naming of ``disyre detect``'s pixel mode).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from disyre.cli.options import (
    add_bootstrap_argument,
    add_device_argument,
    add_output_argument,
    add_overrides_argument,
    add_threshold_mismatch_argument,
    add_weights_mismatch_argument,
)

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="exact metrics and a report (PR/ROC, histograms, gallery) for a test manifest",
        description="Evaluate anomaly maps against lesion masks: pixel AP/AUROC (exact), oracle "
        "best Dice, Dice at thresholds calibrated on healthy scans, slice/volume detection, "
        "bootstrap intervals, lesion-wise detection; writes metrics.json, cases.csv, report.md, "
        "report.html (the maps in the browser) and figures.",
    )
    p.add_argument("--manifest", type=Path, required=True, help="test manifest (CSV)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="run or checkpoint folder to detect with")
    src.add_argument("--maps", type=Path, help="folder of existing maps named like the images")
    p.add_argument("--healthy-manifest", type=Path, default=None,
                   help="manifest of healthy scans for the thresholds: its 'val' rows (all its "
                   "rows without a lesion mask if it has none); default: rows of split 'val' "
                   "without a lesion mask in --manifest")
    p.add_argument("--thresholds-file", type=Path, default=None,
                   help="use these calibrated thresholds instead of fitting them")
    add_threshold_mismatch_argument(p)
    add_weights_mismatch_argument(p)
    p.add_argument("--fpr", type=float, nargs="+", default=[0.01, 0.05, 0.1],
                   help="false-positive rates of the calibrated thresholds (default 0.01 0.05 0.1)")
    add_output_argument(p, "report folder")
    p.add_argument("--save-thresholds", action="store_true",
                   help="also write thresholds.json into the checkpoint's run folder for "
                   "'disyre detect'")
    add_bootstrap_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    add_device_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_overrides_argument(p, "inference.stride=16 inference.levels=[0,20,40,60,80]")
    p.set_defaults(func=run)


class _Source:
    """Yields ``(subject, map, label, brain_mask, image)`` per manifest row."""

    def __init__(self, checkpoint: Path | None, maps: Path | None, device: str,
                 overrides: list[str] | None = None, check_weights: bool = True) -> None:
        self.maps = maps
        self.detector = None
        if checkpoint is not None:
            from disyre.cli import apply_inference_overrides
            from disyre.inference import Detector

            self.detector = Detector.from_checkpoint(checkpoint, device=device,
                                                     check_weights=check_weights)
            apply_inference_overrides(self.detector, overrides or [])

    def load(self, row: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float,
                                      tuple[float, float, float]]:
        """``(map, lesion, brain, image, voxel_mm3, spacing)`` on the scan's full axial-first
        grid.

        Both sources use one brain (:func:`disyre.data.intensity.brain_mask`: the manifest's
        brain mask, else the voxels > 0) and the full grid, so lesion voxels outside the brain
        or its crop count the same way.
        """
        from disyre.data.intensity import brain_mask
        from disyre.data.nifti import load_mask, load_scan

        scan = load_scan(row.image)
        lesion = (load_mask(row.lesion_mask, like=scan, binarize=row.binarize_lesion)
                  if row.lesion_mask else np.zeros(scan.data.shape, bool))
        brain = load_mask(row.brain_mask, like=scan) if row.brain_mask else None
        voxel_mm3 = float(np.prod(scan.spacing))
        if self.detector is not None:
            res = self.detector.predict(scan, brain)
            return (res.full(res.map_cropped), lesion, res.full(res.mask_cropped).astype(bool),
                    scan.data, voxel_mm3, scan.spacing)
        amap = self._read_map(row, scan)
        return amap, lesion, brain_mask(scan.data, brain), scan.data, voxel_mm3, scan.spacing

    def _read_map(self, row: Any, scan: Any) -> np.ndarray:
        import nibabel as nib

        from disyre.cli import CLIError
        from disyre.data.nifti import to_canonical

        assert self.maps is not None
        path = self.maps / Path(row.image).name
        if not path.is_file():
            raise CLIError(f"{path}: no map for subject {row.subject} (expected the image's "
                           "file name in the --maps folder)")
        try:
            img = nib.load(str(path))
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as e:  # nibabel raises many kinds
            raise CLIError(f"{path}: cannot read the map ({e})") from e
        data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
        if tuple(data.shape) != tuple(scan.native_shape):
            raise CLIError(f"{path}: map shape {data.shape} differs from its image "
                           f"{row.image} {tuple(scan.native_shape)}")
        if not np.allclose(img.affine, scan.affine, atol=1e-3):
            raise CLIError(f"{path}: map affine differs from its image {row.image}")
        if not np.isfinite(data).all():
            raise CLIError(f"{path}: map holds NaN or Inf")
        return np.ascontiguousarray(to_canonical(data, scan.ornt))


def _split_rows(rows: list[Any], healthy_rows: list[Any] | None) -> tuple[list, list]:
    if healthy_rows is None:
        healthy = [r for r in rows if r.split == "val" and not r.lesion_mask]
    else:
        # a healthy manifest usually also lists the training scans: calibrating on scans the
        # model was trained on would under-estimate its false-positive rate, so prefer 'val'
        healthy = [r for r in healthy_rows if not r.lesion_mask]
        val = [r for r in healthy if r.split == "val"]
        if val:
            healthy = val
        elif any(r.split == "train" for r in healthy):
            log.warning("the healthy manifest has no 'val' rows; calibrating thresholds on its "
                        "'train' rows under-estimates the false-positive rate on new scans")
    test = [r for r in rows if r.split == "test"]
    if not test:  # validation scans (healthy or not) never join the test set
        ids = {id(r) for r in healthy}
        test = [r for r in rows if id(r) not in ids and r.split != "val"]
    return test, healthy


def run(args: argparse.Namespace) -> int:
    """Run ``disyre evaluate``; returns the exit status."""
    from disyre.cli import CLIError
    from disyre.data.manifest import read_manifest
    from disyre.evaluation import evaluate_cases
    from disyre.evaluation.harness import Case
    from disyre.evaluation.report import write_report
    from disyre.evaluation.thresholds import load_thresholds, save_thresholds
    from disyre.inference.postprocess import describe
    from disyre.inference.thresholds import (
        bind_thresholds,
        check_binding,
        check_maps_binding,
        read_maps_records,
        thresholds_path,
    )
    from disyre.io_utils import ensure_writable_dir, prepare_output_dir

    if args.save_thresholds and args.checkpoint is None:
        raise CLIError("--save-thresholds needs --checkpoint (thresholds.json always goes "
                       "into the report folder)")
    if args.maps is not None and not args.maps.is_dir():
        raise CLIError(f"{args.maps}: maps folder not found")
    rows = read_manifest(args.manifest, required=("split",))
    healthy_rows = read_manifest(args.healthy_manifest) if args.healthy_manifest else None
    test, healthy = _split_rows(rows, healthy_rows)
    if not test:
        n_val = sum(r.split == "val" for r in rows)
        raise CLIError(f"{args.manifest}: no test rows to evaluate"
                       + (f" ({n_val} row(s) of split 'val' are validation scans, never test "
                          "cases: mark the test cases with split 'test')" if n_val else ""))
    th_target = None
    if args.save_thresholds:
        th_target = thresholds_path(args.checkpoint)  # the run folder: where detect looks
        if th_target.exists() and not args.overwrite:
            raise CLIError(f"{th_target}: exists; pass --overwrite to replace it")
        if args.thresholds_file is not None or not healthy:
            raise CLIError("--save-thresholds needs healthy scans to fit on (--healthy-manifest "
                           "or rows of split 'val' without a lesion mask), not "
                           "--thresholds-file")
        if th_target.parent.is_dir():  # writable now, not after every scan is mapped
            ensure_writable_dir(th_target.parent)
    out = prepare_output_dir(args.output, overwrite=args.overwrite, marker="metrics.json")
    thresholds = load_thresholds(args.thresholds_file) if args.thresholds_file else None
    if thresholds is None and not healthy:
        log.warning("no healthy scans: reporting without calibrated thresholds")
    if args.overrides and args.checkpoint is None:
        raise CLIError("--set inference.* needs --checkpoint (maps are already computed)")
    source = _Source(args.checkpoint, args.maps, args.device, args.overrides,
                     check_weights=not args.allow_weights_mismatch)
    if thresholds is not None and source.detector is not None:
        # given thresholds must fit the maps this checkpoint makes, as in detect
        for w in check_binding(thresholds, source.detector, args.checkpoint,
                               source=args.thresholds_file,
                               allow_mismatch=args.allow_threshold_mismatch):
            log.warning("%s", w)
    elif thresholds is not None and args.maps is not None:
        # maps of disyre detect: the folder records what made each of them
        made_by = read_maps_records(args.maps)
        for w in check_maps_binding(thresholds, [made_by.get(Path(r.image).name) for r in test],
                                    source=args.thresholds_file, maps=args.maps,
                                    allow_mismatch=args.allow_threshold_mismatch):
            log.warning("%s", w)

    def cases() -> Iterator[tuple]:
        for i, r in enumerate(test, 1):
            log.info("case %d/%d: %s", i, len(test), r.subject)
            amap, lab, mask, img, voxel_mm3, spacing = source.load(r)
            # the manifest says which scans are lesioned, never an empty label
            yield Case(r.subject, amap, lab, mask, img, voxel_mm3, spacing,
                       lesioned=r.lesion_mask is not None,
                       label_path=None if r.lesion_mask is None else str(r.lesion_mask))

    def healthy_maps() -> Iterator[tuple]:
        for i, r in enumerate(healthy, 1):
            log.info("healthy scan %d/%d: %s", i, len(healthy), r.subject)
            amap, _lab, mask, _img, _vox, _sp = source.load(r)
            yield (amap, mask)

    hsrc = str(args.healthy_manifest or args.manifest)
    recipe = None if source.detector is None else source.detector.postprocessing()
    post = (None if recipe is None or source.detector is None  # maps read from files
            else describe(recipe, source.detector.cfg.inference.postprocessing))
    res = evaluate_cases(cases(), healthy_maps() if healthy and thresholds is None else None,
                         tuple(args.fpr), thresholds=thresholds, n_boot=args.bootstrap,
                         seed=args.seed, source=f"{hsrc} ({len(healthy)} healthy scans)",
                         post_processing=post,
                         binary_step=None if recipe is None else recipe.apply_binary)
    if res.thresholds is not None and thresholds is None and source.detector is not None:
        # fitted here on this model's maps: record what made them, for detect to check
        bind_thresholds(res.thresholds, source.detector, args.checkpoint)
    config = {"manifest": str(args.manifest), "checkpoint": str(args.checkpoint or ""),
              "maps": str(args.maps or ""), "healthy_manifest": str(args.healthy_manifest or ""),
              "thresholds_file": str(args.thresholds_file or ""), "n_test": len(test),
              "n_healthy": len(healthy)}
    if source.detector is not None:
        config["run"] = source.detector.cfg.to_dict()
        config["precision"] = source.detector.precision.to_dict()
    report = write_report(out, res, config=config, overwrite=True,
                          title=f"Evaluation of {args.checkpoint or args.maps}")
    if res.thresholds is not None:
        save_thresholds(out / "thresholds.json", res.thresholds)
        if th_target is not None:
            save_thresholds(th_target, res.thresholds)
            log.info("thresholds written to %s", th_target)
    px = res.pixel
    print(f"pixel AP {px.ap:.4f}  AUROC {px.auroc:.4f}  best Dice (oracle) {px.best_dice:.4f}")
    for f, v in res.calibrated.items():
        print(f"  at {f:g} healthy FPR: Dice {v['dice']:.4f}  precision {v['precision']:.4f}  "
              f"recall {v['recall']:.4f}")
    print(f"report: {report}")
    return 0
