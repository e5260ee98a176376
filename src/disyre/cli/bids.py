"""``disyre bids``: anomaly maps of a BIDS dataset as BIDS derivatives (a BIDS App).

The BIDS-Apps calling convention, ``disyre bids BIDS_DIR OUTPUT_DIR participant``: every
``*_<suffix>`` scan of the dataset (or of ``--participant-label`` subjects) gets an anomaly
map, a mask per calibrated false-positive rate and, with ``--restored``, the restored image,
each with a JSON sidecar, under ``OUTPUT_DIR/sub-*/[ses-*/]anat/``; ``OUTPUT_DIR`` gets a
``dataset_description.json`` (docs/bids.md).

Examples::

    disyre bids ds/ ds/derivatives/disyre participant --checkpoint runs/t2
    disyre bids ds/ out/ participant --checkpoint runs/t2 --participant-label 01 02 --restored
    disyre bids raw_ds/ out/ participant --checkpoint runs/t1 --suffix T1w --preprocess
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from disyre.cli import apply_inference_overrides
from disyre.cli.options import (
    add_device_argument,
    add_overrides_argument,
    add_precision_argument,
    add_progress_argument,
    add_threshold_mismatch_argument,
)

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre bids``."""
    p = subparsers.add_parser(
        "bids",
        help="anomaly maps of a BIDS dataset as BIDS derivatives (a BIDS App)",
        description="Map every scan of one suffix of a BIDS dataset with a trained model and "
        "write the maps, masks at the calibrated false-positive rates and JSON sidecars as a "
        "BIDS derivatives dataset (BIDS-Apps calling convention).",
    )
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset")
    p.add_argument("output_dir", type=Path,
                   help="the derivatives folder (e.g. BIDS_DIR/derivatives/disyre)")
    p.add_argument("analysis_level", choices=["participant"],
                   help="participant: one map per scan (no group level)")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="run folder (newest checkpoint) or checkpoint folder")
    p.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL",
                   help="only these subjects (01 or sub-01; default all)")
    p.add_argument("--session-label", nargs="+", default=None, metavar="LABEL",
                   help="only these sessions (1 or ses-1; default all)")
    p.add_argument("--suffix", default=None,
                   help="BIDS suffix of the scans to map (default from the checkpoint's "
                   "training contrast: t1 -> T1w, t2 -> T2w, flair -> FLAIR)")
    p.add_argument("--preprocess", action="store_true",
                   help="raw head scans: run the checkpoint's preprocessing recipe (skull "
                   "strip, register); maps on the raw scans' own grids")
    p.add_argument("--restored", action="store_true", help="also write the restored images")
    p.add_argument("--thresholds-file", type=Path, default=None,
                   help="thresholds JSON (default: thresholds.json of the checkpoint's run)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--continue", dest="continue_run", action="store_true",
                   help="skip scans whose outputs all exist and read back whole")
    add_device_argument(p)
    add_precision_argument(p, "autocast precision (default: the checkpoint's "
                           "inference.precision)")
    add_overrides_argument(p, "inference.levels=[0,25,50,75]")
    add_threshold_mismatch_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=run)


#: the checkpoint's training contrast -> BIDS suffix
SUFFIXES = {"t1": "T1w", "t2": "T2w", "flair": "FLAIR", "pd": "PDw", "t2star": "T2starw"}


def _suffix(args: argparse.Namespace) -> str:
    """``--suffix``, or the suffix of the contrast the checkpoint was trained on."""
    from disyre.cli import CLIError
    from disyre.training.checkpoint import read_checkpoint_meta

    if args.suffix:
        return args.suffix
    _ckpt, meta = read_checkpoint_meta(args.checkpoint)
    contrast = str((meta.get("data") or {}).get("contrast") or "").lower()
    if contrast not in SUFFIXES:
        raise CLIError(f"{args.checkpoint}: the checkpoint records no known training contrast "
                       f"({contrast or 'none'}); give the scans' suffix with --suffix")
    return SUFFIXES[contrast]


def run(args: argparse.Namespace) -> int:
    """Run ``disyre bids`` (:func:`disyre.inference.bids_out.bids_app`); returns the exit
    status."""
    from disyre.cli import CLIError
    from disyre.inference.bids_out import bids_app

    if args.overwrite and args.continue_run:
        raise CLIError("--overwrite and --continue exclude each other: --overwrite recomputes "
                       "every scan, --continue skips the finished ones")
    suffix = _suffix(args)
    predict = None
    if args.preprocess:
        from disyre.preprocessing import predict_raw

        predict = predict_raw

    def load() -> object:
        from disyre.cli.detect import _device
        from disyre.inference import Detector

        det = Detector.from_checkpoint(args.checkpoint, device=_device(args.device))
        apply_inference_overrides(det, args.overrides)
        if args.precision is not None:
            det.cfg.inference.precision = args.precision
        return det

    command = "disyre " + shlex.join(str(a) for a in getattr(args, "argv", sys.argv[1:]))
    summary = bids_app(
        args.bids_dir, args.output_dir, load, checkpoint=args.checkpoint, suffix=suffix,
        participant_labels=args.participant_label, session_labels=args.session_label,
        restored=args.restored, thresholds_file=args.thresholds_file,
        allow_threshold_mismatch=args.allow_threshold_mismatch, overwrite=args.overwrite,
        continue_=args.continue_run, progress=not args.no_progress, predict=predict,
        command=command, settings={"preprocess": bool(args.preprocess)})
    print(summary.report())
    return 0 if summary.ok else 1
