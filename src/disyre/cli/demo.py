"""``disyre demo``: the whole method on a cohort generated from real anatomy, no data needed.

Example::

    disyre demo -o demo            # about 15 minutes on a 2-core CPU
    disyre demo -o demo_q --quick  # seconds: every stage, tiny model (a smoke test)
    disyre demo -o demo_gpu --steps 20000 --subjects 60 --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

from disyre.cli.options import (
    add_device_argument,
    add_output_argument,
    add_progress_argument,
    add_train_jobs_argument,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre demo``."""
    p = subparsers.add_parser(
        "demo",
        help="build a demo cohort, train DISYRE and baselines, detect, evaluate, report",
        description="Generate healthy and lesioned subjects from the MNI152 anatomy bundled "
        "with nilearn, train DISYRE (small) and the denoising autoencoder with the same budget "
        "(side by side on a multi-core CPU with AMX), compare them with the non-learned "
        "reference, and write the reports into -o/--output. The full comparison: --methods "
        "dag,dae,anoddpm,pddpm,reference.",
    )
    add_output_argument(p, "demo folder", deprecated=("--out",))
    p.add_argument("--quick", action="store_true",
                   help="seconds-long variant: tiny model, few steps, few subjects")
    p.add_argument("--steps", type=int, default=None, help="training steps of each method")
    p.add_argument("--subjects", type=int, default=None,
                   help="healthy training subjects (validation/test sizes scale with it; "
                   "24 gives the defaults)")
    p.add_argument("--contrast", choices=["t2", "t1"], default="t2", help="cohort contrast")
    p.add_argument("--preset", default=None, help="network preset (default small; quick: tiny)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default dag,dae,reference; the full "
                   "comparison: dag,dae,anoddpm,pddpm,reference)")
    p.add_argument("--window", type=int, default=None,
                   help="inference window in pixels (0 = whole slices, the default; 64 = the "
                   "authors' sliding windows at the demo's 2 mm)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort and of training")
    p.add_argument("--cohort-dir", type=Path, default=None,
                   help="cohort folder to build or reuse (default OUTPUT/cohort)")
    add_device_argument(p)
    add_train_jobs_argument(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous demo run in -o/--output (the cohort is reused)")
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``disyre demo``; returns the exit status."""
    from disyre.benchmark import normalise_methods
    from disyre.cli import CLIError
    from disyre.demo.run import DemoSettings, run_demo

    s = DemoSettings.quick() if args.quick else DemoSettings()
    s.cohort.contrast = args.contrast
    s.cohort.seed = args.seed
    s.seed = args.seed
    s.device = args.device
    if args.steps is not None:
        if args.steps < 1:
            raise CLIError(f"--steps must be >= 1, got {args.steps}")
        s.steps = args.steps
    if args.subjects is not None:
        if args.subjects < 2:
            raise CLIError(f"--subjects must be >= 2, got {args.subjects}")
        n = args.subjects
        s.cohort.n_train = n
        s.cohort.n_val = max(1, n // 3)  # n = 24 gives the defaults
        s.cohort.n_test_healthy = max(1, 5 * n // 24)
        s.cohort.n_transfer = max(1, 5 * n // 24)
        s.cohort.n_test_lesion = max(3, 7 * n // 8)
    if args.window is not None:
        if args.window < 0:
            raise CLIError(f"--window must be >= 0, got {args.window}")
        s.window = args.window
    if args.preset:
        s.preset = args.preset
    if args.methods:
        s.methods = normalise_methods(args.methods)
    s.train_jobs = args.train_jobs
    res = run_demo(args.output, s, cohort_dir=args.cohort_dir, overwrite=args.overwrite,
                   progress=not args.no_progress)
    print(res.table)
    print(f"report: {res.comparison}")
    return 0
