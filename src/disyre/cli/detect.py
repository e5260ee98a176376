"""``disyre detect``: anomaly maps for a NIfTI scan or a folder of them (MOOD-compatible).

Outputs (in folder ``-o``), for an input ``case.nii.gz``:

- pixel mode: ``case.nii.gz``, a float32 map in [0, 1] of exactly the input's shape and affine;
- sample mode: ``case.nii.gz.txt``, one number in [0, 1] (the volume score);
- ``case_restored.nii.gz`` (``--save-restored``), ``case_mask.nii.gz`` (``--threshold``),
  ``case_overlay.png`` (``--png``).

Examples::

    disyre detect -i scans/ -o maps/ --checkpoint runs/t2
    disyre detect -i sub-01.nii.gz -o out/ --checkpoint runs/t2 --mode both --png \\
        --threshold fpr=0.01
    disyre detect -i scans/ -o maps/ --checkpoint runs/t2 --shard 0/2   # and --shard 1/2
    disyre detect -i raw_heads/ -o maps/ --checkpoint runs/t1 --preprocess  # raw grid maps
    torchrun --nproc_per_node 4 $(which disyre) detect -i scans/ -o maps/ --checkpoint runs/t2
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from disyre.cli import apply_inference_overrides
from disyre.cli.options import (
    add_device_argument,
    add_output_argument,
    add_overrides_argument,
    add_precision_argument,
    add_progress_argument,
    add_threshold_mismatch_argument,
    add_weights_mismatch_argument,
)

log = logging.getLogger(__name__)

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre detect``."""
    p = subparsers.add_parser(
        "detect",
        help="anomaly maps / scores for NIfTI scans with a trained model",
        description="Restore each scan with the trained network and write its anomaly map on "
        "the scan's own grid (MOOD contract: same file names in pixel mode, <name>.txt in "
        "sample mode).",
    )
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="a NIfTI scan or a folder of them")
    add_output_argument(p, "output folder")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="run folder (newest checkpoint), checkpoint folder, or export folder "
                   "(disyre export)")
    p.add_argument("--mode", choices=["pixel", "sample", "both"], default="pixel",
                   help="pixel: voxel maps; sample: one score per scan; both (default pixel)")
    p.add_argument("--mask", type=Path, default=None,
                   help="brain mask NIfTI (single-scan input only; default non-zero voxels)")
    p.add_argument("--preprocess", action="store_true",
                   help="raw head scans: run the checkpoint's preprocessing recipe (skull "
                   "strip, register), write maps on the raw scans' own grids")
    p.add_argument("--no-resample", action="store_true",
                   help="map a scan at its own voxel size even where it differs from the "
                   "training data's (default: resampled to the training spacing, the map "
                   "interpolated back onto the scan's grid)")
    p.add_argument("--save-restored", action="store_true", help="also write restored images")
    p.add_argument("--png", action="store_true", help="also write PNG overlays")
    p.add_argument("--html", action="store_true", help="also write report.html: every scan "
                   "and its map in the browser (pixel mode)")
    p.add_argument("--threshold", default=None, metavar="T|fpr=F",
                   help="write a binary mask of map > T; 'fpr=0.01' takes T from the "
                   "thresholds file (calibrated on healthy scans)")
    p.add_argument("--thresholds-file", type=Path, default=None,
                   help="thresholds JSON (default: thresholds.json next to the checkpoint)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only the I-th of N parts of the sorted file list "
                   "(default from torchrun's RANK/WORLD_SIZE)")
    p.add_argument("--runtime", choices=["auto", "onnxruntime", "torchscript"], default="auto",
                   help="an export folder (disyre export): the runtime of its graph (default "
                   "auto: the fastest it holds)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--continue", dest="continue_run", action="store_true",
                   help="skip scans whose outputs all exist (after an interrupted run); the "
                   "others are computed and their outputs written")
    add_device_argument(p)
    add_precision_argument(p, "autocast precision (default: the checkpoint's "
                           "inference.precision)")
    add_overrides_argument(p, "inference.levels=[0,25,50,75]")
    add_threshold_mismatch_argument(p)
    add_weights_mismatch_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=run)


def _device(arg: str) -> str:
    """Under torchrun with CUDA, each process takes its ``LOCAL_RANK`` GPU."""
    import torch

    if arg == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return arg


def run(args: argparse.Namespace) -> int:
    """Run ``disyre detect`` (:func:`disyre.inference.files.detect_files`); returns the exit
    status."""
    from disyre.cli import CLIError
    from disyre.inference.files import detect_files

    if args.overwrite and args.continue_run:
        raise CLIError("--overwrite and --continue exclude each other: --overwrite recomputes "
                       "every scan, --continue skips the finished ones")
    if args.mask is not None and args.preprocess:
        raise CLIError("--mask and --preprocess exclude each other (skull stripping finds "
                       "the brain)")
    if args.html and args.mode == "sample":
        raise CLIError("--html shows the maps: use --mode pixel or both")
    predict = None
    if args.preprocess:
        from disyre.preprocessing import predict_raw

        predict = predict_raw

    def load() -> object:
        from disyre.inference import Detector

        det = Detector.from_checkpoint(args.checkpoint, device=_device(args.device),
                                       runtime=args.runtime,
                                       check_weights=not args.allow_weights_mismatch)
        apply_inference_overrides(det, args.overrides)
        det.resample = not args.no_resample
        if args.precision is not None:
            det.cfg.inference.precision = args.precision
        loaded.append(det)
        return det

    loaded: list = []  # the detector, once detect_files has loaded it

    summary = detect_files(
        args.input, args.output, load, checkpoint=args.checkpoint, mode=args.mode,
        threshold=args.threshold, thresholds_file=args.thresholds_file,
        allow_threshold_mismatch=args.allow_threshold_mismatch, mask=args.mask,
        save_restored=args.save_restored, png=args.png, overwrite=args.overwrite,
        continue_=args.continue_run, shard=args.shard, progress=not args.no_progress,
        predict=predict)
    print(summary.report())
    if args.html:
        from disyre.evaluation.html import write_detect_report
        from disyre.inference.postprocess import describe

        rank, world = summary.shard
        print("report: " + str(write_detect_report(
            args.output, summary.assigned, checkpoint=args.checkpoint,
            thresholds_file=(summary.threshold.path if summary.threshold is not None
                             and summary.threshold.path is not None else args.thresholds_file),
            post_processing=(describe(loaded[0].postprocessing(),
                                      loaded[0].cfg.inference.postprocessing)
                             if loaded else None),  # every scan skipped: not known
            overwrite=args.overwrite or args.continue_run,
            name="report.html" if world == 1 else f"report_shard{rank}of{world}.html")))
    return 0 if summary.ok else 1
