"""``disyre prepare``: write a dataset manifest and its preprocessed cache.

Examples::

    disyre prepare --layout camcan --root /data/camcan --contrast t2 --val-fraction 0.1 -o prep/cc
    disyre prepare --layout brats --root /data/BraTS2021 --contrast t2 -o prep/brats_t2
    disyre prepare --layout folder --root scans/ --glob "*.nii.gz" -o prep/mine
    disyre prepare --layout bids --root ds/ --suffix T2w --healthy group=control -o prep/ds
    disyre prepare --manifest prep/mine/manifest.csv          # (re)build only the cache
    disyre prepare --layout camcan --root /data/camcan --contrast t2 --preprocess -o prep/cc
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from disyre.cli.options import add_output_argument, add_overrides_argument, add_progress_argument
from disyre.cli.preprocess import add_preprocess_options

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre prepare``."""
    p = subparsers.add_parser(
        "prepare",
        help="write a dataset manifest (CSV) and its preprocessed cache",
        description="Find the scans of a dataset layout, write OUTPUT/manifest.csv, and normalise "
        "every scan into OUTPUT/cache/ (reused when inputs are unchanged).",
    )
    p.add_argument("--layout", choices=["folder", "bids", "brats", "atlas", "camcan", "ixi"],
                   help="how the dataset is stored under --root (bids: docs/bids.md)")
    p.add_argument("--root", type=Path, help="dataset folder")
    p.add_argument("--glob", default=None,
                   help="file pattern for --layout folder (default '*.nii.gz'; '**/' recurses)")
    p.add_argument("--contrast", default=None,
                   help="contrast to take: t1, t2 (brats: also t1ce, flair; ixi: also pd)")
    bids = p.add_argument_group("--layout bids")
    bids.add_argument("--suffix", default=None,
                      help="BIDS suffix of the scans: T1w, T2w, FLAIR, ... (required)")
    bids.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL",
                      help="only these subjects (01 or sub-01)")
    bids.add_argument("--session-label", nargs="+", default=None, metavar="LABEL",
                      help="only these sessions (1 or ses-1)")
    bids.add_argument("--healthy", default=None, metavar="COLUMN=VALUE[,VALUE]",
                      help="participants.tsv column marking healthy subjects, e.g. "
                      "group=control: their scans go to split train, the others to test")
    p.add_argument("--split", default=None,
                   help="split of every row (default: test for brats/atlas, train otherwise)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="move this fraction of the rows to split 'val' (deterministic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val assignment")
    p.add_argument("--manifest", type=Path, default=None,
                   help="use this existing manifest and only build the cache")
    add_output_argument(p, "output folder (default with --manifest: the manifest's folder)",
                        required=False, deprecated=("--out",))
    p.add_argument("--config", type=Path, default=None,
                   help="run config (YAML/JSON) whose 'intensity' section to use")
    add_overrides_argument(p, "intensity.upper_percentile=99")
    p.add_argument("--no-cache", action="store_true", help="write only the manifest")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out scans with invalid files (logged) instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    p.add_argument("--preprocess", action="store_true",
                   help="raw scans: skull strip and register every scan first (into "
                   "OUTPUT/preprocessed/, see `disyre preprocess`); the manifest lists the results")
    add_progress_argument(p)
    add_preprocess_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``disyre prepare``; returns the exit status."""
    import disyre.methods  # noqa: F401 (the registry: validation knows every method)
    from disyre.cli import CLIError
    from disyre.config import RunConfig, apply_overrides
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import build_manifest, read_manifest, write_manifest

    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    cfg = apply_overrides(cfg, args.overrides)
    if args.manifest is not None:
        if args.layout or args.root:
            raise CLIError("give either --manifest or --layout/--root, not both")
        rows = read_manifest(args.manifest)
        out = args.output or args.manifest.parent
        log.info("%s: %d scans", args.manifest, len(rows))
        if args.preprocess:
            new = Path(out) / "manifest.csv"
            if new.resolve() == args.manifest.resolve():
                raise CLIError(f"{args.manifest}: --preprocess would replace the input "
                               "manifest; give another output folder with -o")
            if new.exists() and not args.overwrite:
                raise CLIError(f"{new}: manifest already exists; pass --overwrite to replace it")
            rows = _preprocess(rows, out, args)
            write_manifest(rows, new, overwrite=True)
    else:
        if not args.layout or not args.root:
            raise CLIError("give --layout and --root (or --manifest)")
        if args.output is None:
            raise CLIError("give the output folder with -o/--output")
        if args.glob and args.layout != "folder":
            raise CLIError("--glob applies to --layout folder only")
        bids_flags = [f for f, v in (("--suffix", args.suffix),
                                     ("--participant-label", args.participant_label),
                                     ("--session-label", args.session_label),
                                     ("--healthy", args.healthy)) if v]
        if bids_flags and args.layout != "bids":
            raise CLIError(f"{bids_flags[0]} applies to --layout bids only")
        if args.layout == "bids" and not args.suffix:
            raise CLIError("--layout bids needs --suffix (T1w, T2w, FLAIR, ...)")
        if args.layout == "bids" and args.healthy and args.split:
            raise CLIError("--healthy sets the splits (train for healthy subjects, test for "
                           "the others): leave out --split")
        out = args.output
        manifest = out / "manifest.csv"
        if manifest.exists() and not args.overwrite:
            raise CLIError(f"{manifest}: manifest already exists; pass --overwrite to replace it")
        kw: dict[str, object] = {"split": args.split, "val_fraction": args.val_fraction,
                                 "seed": args.seed, "contrast": args.contrast}
        if args.layout == "folder":
            kw["pattern"] = args.glob
        if args.layout == "bids":
            kw.update(suffix=args.suffix, healthy=args.healthy,
                      participant_label=args.participant_label,
                      session_label=args.session_label)
        rows = build_manifest(args.layout, args.root, **kw)
        if args.preprocess:
            rows = _preprocess(rows, out, args)
        write_manifest(rows, manifest, overwrite=args.overwrite)
        splits = {s: sum(r.split == s for r in rows) for s in sorted({r.split for r in rows})}
        log.info("wrote %s: %d scans %s", manifest, len(rows), splits)
    if args.no_cache:
        return 0
    cache = prepare_cache(rows, Path(out) / "cache", cfg.intensity, skip_bad=args.skip_bad,
                          progress=not args.no_progress)
    log.info("cache %s: %d scans (%d processed, %d reused)", cache.directory, len(cache),
             cache.processed, cache.reused)
    return 0


def _preprocess(rows: list, out: Path, args: argparse.Namespace) -> list:
    """Run the preprocessing recipe on every row (into OUT/preprocessed/); the new rows."""
    from disyre.cli import CLIError
    from disyre.cli.preprocess import recipe_from_args, report
    from disyre.preprocessing import jobs_from_rows, preprocess_many

    summary = preprocess_many(jobs_from_rows(rows), Path(out) / "preprocessed",
                              recipe_from_args(args), workers=args.jobs, threads=args.threads,
                              device=args.pre_device, overwrite=args.overwrite,
                              progress=not args.no_progress)
    if report(summary, Path(out) / "preprocessed") and not args.skip_bad:
        raise CLIError(f"{len(summary.failed)} scan(s) failed preprocessing (listed above); "
                       "pass --skip-bad to go on without them")
    if not summary.rows:
        raise CLIError("no scan survived preprocessing")
    return summary.rows
