"""``disyre train``: train the restoration network on the healthy subjects of a manifest or cache.

Examples::

    disyre train --manifest cohort.csv -o runs/t2 --preset small --steps 2000
    disyre train --cache runs/cache -o runs/t2 --config t2.yaml --set train.lr=2e-4
    disyre train --cache runs/cache -o runs/t2 --resume
    torchrun --nproc_per_node=2 -m disyre train --cache runs/cache -o runs/t2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from disyre.cli import CLIError
from disyre.cli.options import (
    add_device_argument,
    add_output_argument,
    add_overrides_argument,
    add_precision_argument,
    add_progress_argument,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre train``."""
    p = subparsers.add_parser(
        "train", help="train the restoration network on healthy scans",
        description="Train DISYRE's restoration network on the 'train' split of a manifest "
                    "(or a prepared cache); the 'val' split gives the validation loss.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, help="manifest CSV (subject,image,...,split)")
    src.add_argument("--cache", type=Path, help="cache folder made by 'disyre prepare'")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where --manifest scans are cached (default: RUN_DIR/cache)")
    add_output_argument(p, "run folder")
    p.add_argument("--config", type=Path, help="YAML/JSON run config")
    add_overrides_argument(p, "train.lr=2e-4 sampler.patch_size=64")
    p.add_argument("--preset", help="model preset: paper, small or tiny")
    p.add_argument("--steps", type=int, help="number of optimizer steps")
    add_device_argument(p, default=None)
    add_precision_argument(p)
    p.add_argument("--resume", action="store_true", help="continue the run in the folder")
    p.add_argument("--overwrite", action="store_true", help="replace a run in the folder")
    add_progress_argument(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # noqa: ANN201 - RunConfig
    """The run config of the command line: file, then flags, then ``--set`` overrides."""
    import disyre.methods  # noqa: F401 (the registry: validation knows every method)
    from disyre.config import RunConfig, apply_overrides

    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    ov = []
    if args.preset:
        ov.append(f"model.preset={args.preset}")
    if args.steps is not None:
        ov.append(f"train.steps={args.steps}")
    if args.device:
        ov.append(f"train.device={args.device}")
    if args.precision:
        ov.append(f"train.precision={args.precision}")
    return apply_overrides(cfg, ov + list(args.overrides))


def run(args: argparse.Namespace) -> int:
    """Run ``disyre train``."""
    from disyre.data.cache import VolumeCache, prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.io_utils import prepare_output_dir
    from disyre.runtime import resolve_device
    from disyre.training import distributed as ddp
    from disyre.training import train
    from disyre.training.loop import RUN_MARKER
    from disyre.training.prepare import prepare_run

    cfg = build_config(args)
    # refuse an occupied run folder before any (slow) preprocessing
    if not args.resume:
        prepare_output_dir(args.output, overwrite=args.overwrite, marker=RUN_MARKER)
    # under torchrun, rank 0 alone preprocesses the scans; the others wait, then read the cache
    world = ddp.init_distributed(resolve_device(cfg.train.device))
    try:
        if args.manifest is not None:
            rows = read_manifest(args.manifest)
            source = args.manifest
            if not any(r.split == "train" for r in rows):
                raise CLIError(f"{source}: no healthy training subjects (rows with split "
                               "'train')")
            cache = ddp.main_first(lambda: prepare_cache(
                [r for r in rows if r.split in ("train", "val")],
                args.cache_dir or args.output / "cache", cfg.intensity,
                progress=not args.no_progress and world.is_main), world)
        else:
            source = args.cache
            cache = VolumeCache.open(args.cache)
        train_vols, val_vols = cache.volumes("train"), cache.volumes("val")
        train_masks, val_masks = cache.masks("train"), cache.masks("val")
        # volume checks and codebook (a resumed run keeps the one saved with its checkpoint)
        codebook = prepare_run(cfg, train_vols, source=source, train_masks=train_masks,
                               resume_dir=args.output if args.resume else None)
        # train() logs its summary (checkpoint, duration, losses) at the end
        train(cfg, train_vols, val_vols, args.output, resume=args.resume,
              overwrite=args.overwrite, codebook=codebook, progress=not args.no_progress,
              data_info=cache.describe("train"), train_masks=train_masks,
              val_masks=val_masks)
    finally:
        ddp.cleanup(world)
    return 0

