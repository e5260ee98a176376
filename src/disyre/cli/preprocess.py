"""``disyre preprocess``: raw head scans -> skull-stripped brains on a template grid.

Examples::

    disyre preprocess -i raw/sub-01_T1w.nii.gz -o prep/
    disyre preprocess -i raw/ -o prep/ --spacing 2 --jobs 2
    disyre preprocess -i raw/sub-01_T2w.nii.gz --contrast t2 --t1 raw/sub-01_T1w.nii.gz -o prep/
    disyre preprocess -i manifest.csv -o prep/ --template brats/BraTS20_001_t2.nii.gz
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from disyre.cli.options import add_output_argument, add_progress_argument

log = logging.getLogger(__name__)


def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    """The recipe's flags (shared with ``disyre prepare --preprocess``)."""
    g = p.add_argument_group("preprocessing recipe")
    g.add_argument("--template", default="mni152",
                   help="'mni152' (nilearn's MNI152 2009 brain, default) or a skull-stripped "
                   "NIfTI whose grid the outputs take (e.g. a BraTS scan)")
    g.add_argument("--spacing", type=float, default=None,
                   help="output voxel size in mm (default: the template's own grid)")
    g.add_argument("--registration", choices=["rigid", "affine", "syn"], default="affine",
                   help="registration to the template (default affine)")
    g.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")
    g.add_argument("--no-skull-strip", action="store_true",
                   help="the scans are skull-stripped already (brain = non-zero voxels)")
    g.add_argument("--min-dice", type=float, default=0.8,
                   help="refuse a subject whose registered brain mask has a lower Dice with "
                   "the template's brain (default 0.8)")
    g.add_argument("--jobs", type=int, default=None,
                   help="parallel processes (default: number of CPUs)")
    g.add_argument("--threads", type=int, default=1, help="threads per process (default 1)")
    g.add_argument("--pre-device", dest="pre_device", default="cpu",
                   help="torch device of the skull stripper (cpu, cuda; default cpu)")


def recipe_from_args(args: argparse.Namespace):  # noqa: ANN201 - PreprocessConfig
    """The :class:`~disyre.preprocessing.PreprocessConfig` of the command line."""
    from disyre.preprocessing.recipe import PreprocessConfig

    return PreprocessConfig(template=args.template, spacing=args.spacing,
                            registration=args.registration, n4=not args.no_n4,
                            skull_strip=not args.no_skull_strip, min_dice=args.min_dice)


def report(summary, out: Path) -> int:  # noqa: ANN001 - Summary
    """Print what was done; exit status 1 when a subject failed."""
    print(f"disyre preprocess: {len(summary.done)} processed, {len(summary.skipped)} up to "
          f"date, {len(summary.failed)} failed -> {out}")
    if summary.rows:
        print(f"manifest: {out / 'manifest.csv'}")
    if summary.failed:
        print(f"failed {len(summary.failed)} subject(s):")
        for subject, err in summary.failed:
            print(f"  {subject}: {err}")
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre preprocess``."""
    p = subparsers.add_parser(
        "preprocess",
        help="raw head scans -> skull-stripped brains on a template grid",
        description="N4 bias correction, skull stripping (deepbet), registration to a template "
        "(antspyx) and resampling onto its grid; writes per subject the brain, its mask on "
        "the template and on the raw grid, the transforms and a QC figure, plus "
        "OUT/manifest.csv and OUT/preprocessing.json (the recipe a trained model records).")
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="a NIfTI scan, a folder of them, or a manifest CSV")
    add_output_argument(p, "output folder")
    p.add_argument("--contrast", default="t1",
                   help="contrast of file/folder input (default t1; a manifest says its own)")
    p.add_argument("--t1", type=Path, default=None,
                   help="the subject's T1 scan, for a single scan of another contrast")
    p.add_argument("--split", default="train", help="split of file/folder input in the "
                   "output manifest (default train)")
    add_preprocess_options(p)
    p.add_argument("--no-qc", action="store_true", help="do not write the QC figures")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs of another recipe in the folder")
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``disyre preprocess``; returns the exit status."""
    from disyre.cli import CLIError
    from disyre.preprocessing import jobs_from_input, preprocess_many

    if args.input.resolve() == args.output.resolve():
        raise CLIError(f"{args.output}: output folder is the input folder")
    cfg = recipe_from_args(args)
    jobs = jobs_from_input(args.input, contrast=args.contrast.lower(), t1=args.t1,
                           split=args.split)
    log.info("preprocess: %d scan(s), template %s, %s registration", len(jobs), cfg.template,
             cfg.registration)
    summary = preprocess_many(jobs, args.output, cfg, workers=args.jobs, threads=args.threads,
                              device=args.pre_device, overwrite=args.overwrite,
                              progress=not args.no_progress, qc=not args.no_qc)
    return report(summary, args.output)
