"""``disyre benchmark``: train and evaluate several methods on one manifest, same budget.

Example::

    disyre benchmark --manifest prep/manifest.csv -o bench --methods dag,gaussian,reference \\
        --steps 2000 --set model.preset=small sampler.patch_size=64 inference.window=64

    # each method to its plateau (cap 5200 steps), the checkpoints of 650 ... 2600 evaluated
    disyre benchmark --manifest prep/manifest.csv -o bench --methods dag,dae,andi \\
        --steps 5200 --patience 5 --eval-steps 650,1300,2600 --set train.val_every=130

The manifest needs rows of split ``train`` (healthy), ``val`` (healthy, for the thresholds)
and ``test`` (lesioned rows, with a lesion mask, are evaluated; healthy ``test`` rows give the
held-out false-positive rate).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from disyre.cli.options import (
    add_bootstrap_argument,
    add_deprecated_alias,
    add_device_argument,
    add_output_argument,
    add_overrides_argument,
    add_progress_argument,
    add_train_jobs_argument,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre benchmark``."""
    from disyre.benchmark import benchmark_methods

    p = subparsers.add_parser(
        "benchmark",
        help="train/run several methods with the same budget and compare them",
        description="Train each learned method (dag = DISYRE; its ablations gaussian, fpi, "
        "bias; the baselines dae, anoddpm, pddpm, andi) with the same config and budget, fit the "
        "non-learned reference, detect on the test split, evaluate with thresholds "
        "calibrated on healthy validation scans, and write one report per method plus a "
        "comparison table and figures.",
    )
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV (train/val/test)")
    add_output_argument(p, "benchmark folder")
    p.add_argument("--methods", default="dag,gaussian,reference",
                   help=f"comma-separated subset of {','.join(benchmark_methods())} (disyre = dag)")
    p.add_argument("--config", type=Path, default=None, help="base run config (YAML/JSON)")
    add_overrides_argument(p, "model.preset=small train.lr=2e-4")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of every method (the cap with --patience)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop each method when its validation loss on healthy patches has not "
                   "improved for N validations (train.patience; one every train.val_every "
                   "steps); its stopping step and curve go into the comparison")
    p.add_argument("--min-delta", type=float, default=None,
                   help="relative improvement that counts for --patience (train.min_delta)")
    p.add_argument("--eval-steps", default=None, metavar="STEPS",
                   help="keep the checkpoints of these steps (e.g. 650,1300,2600) and evaluate "
                   "them too: pixel AP by training budget, without retraining")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where the manifest's scans are cached (default OUTPUT/cache)")
    add_deprecated_alias(p, "--cache", "--cache-dir", "cache_dir", type=Path)
    p.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    add_bootstrap_argument(p)
    add_device_argument(p)
    add_train_jobs_argument(p)
    add_post_processing_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing benchmark")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted benchmark: finished runs are kept, interrupted "
                        "ones continue from their newest checkpoint, every evaluation is redone")
    add_progress_argument(p)
    p.set_defaults(func=run)


def add_post_processing_argument(p: argparse.ArgumentParser) -> None:
    """``--post-processing shared|published|both`` (docs/methods.md, "Two protocols")."""
    from disyre.benchmark import POST_PROCESSING_CHOICES

    p.add_argument("--post-processing", choices=POST_PROCESSING_CHOICES, default="both",
                   help="post-process every method's maps alike (shared), each as its "
                   "publication did (published), or both side by side (default); the maps "
                   "are computed once")


def run(args: argparse.Namespace) -> int:
    """Run ``disyre benchmark``; returns the exit status."""
    from disyre.benchmark import (
        MARKER,
        apply_plateau_settings,
        normalise_methods,
        run_benchmark,
    )
    from disyre.config import RunConfig, apply_overrides
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.io_utils import OutputExistsError

    methods = normalise_methods(args.methods)
    if (args.output / MARKER).exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output}: holds a benchmark; pass --overwrite to "
                                "replace it")
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    cfg = apply_overrides(cfg, args.overrides)
    probe = copy.deepcopy(cfg)  # the plateau arguments refused before the cache is built
    probe.train.steps = args.steps if args.steps is not None else probe.train.steps
    apply_plateau_settings(probe, args.patience, args.min_delta, args.eval_steps)
    rows = read_manifest(args.manifest)
    cache = prepare_cache(rows, args.cache_dir or args.output / "cache", cfg.intensity,
                          progress=not args.no_progress)
    res = run_benchmark(methods, cache, args.output, cfg=cfg, steps=args.steps, seed=args.seed,
                        device=args.device, n_boot=args.bootstrap, overwrite=args.overwrite,
                        progress=not args.no_progress, title=f"Benchmark on {args.manifest}",
                        source=args.manifest, train_jobs=args.train_jobs,
                        patience=args.patience, min_delta=args.min_delta,
                        eval_steps=args.eval_steps, post_processing=args.post_processing,
                        resume=args.resume)
    print(res.table())
    print(f"comparison: {res.comparison}")
    return 0
