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

from disyre.cli import CLIError, add_overrides_argument

#: patches may be at most this many times the largest cropped slice side (the rest is padding)
MAX_PATCH_OVER_SLICE = 2.0


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
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder")
    p.add_argument("--config", type=Path, help="YAML/JSON run config")
    add_overrides_argument(p, "train.lr=2e-4 sampler.patch_size=64")
    p.add_argument("--preset", help="model preset: paper, small or tiny")
    p.add_argument("--steps", type=int, help="number of optimizer steps")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="autocast precision")
    p.add_argument("--resume", action="store_true", help="continue the run in the folder")
    p.add_argument("--overwrite", action="store_true", help="replace a run in the folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # noqa: ANN201 - RunConfig
    """The run config of the command line: file, then flags, then ``--set`` overrides."""
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


def check_volumes(cfg, train_volumes: list, source: Path) -> None:  # noqa: ANN001
    """Refuse settings that cannot work with these volumes (one clear error)."""
    from disyre.model import build_model

    if not train_volumes:
        raise CLIError(f"{source}: no healthy training subjects (rows with split 'train')")
    P = cfg.sampler.patch_size
    side = max(max(v.shape[1:]) for v in train_volumes)
    if P > MAX_PATCH_OVER_SLICE * side:
        raise CLIError(
            f"{source}: sampler.patch_size={P} is more than {MAX_PATCH_OVER_SLICE:g}x the "
            f"largest cropped slice ({side} px); lower sampler.patch_size")
    step = build_model(cfg.model).min_size
    if P % step:
        raise CLIError(f"sampler.patch_size={P} must be a multiple of {step} for model "
                       f"preset {cfg.model.preset!r}")
    if cfg.corruption.name != "gaussian" and cfg.corruption.window > P:
        raise CLIError(f"corruption.window={cfg.corruption.window} is larger than "
                       f"sampler.patch_size={P}")


def run(args: argparse.Namespace) -> int:
    """Run ``disyre train``."""
    from disyre.corruption.bias import fit_codebook
    from disyre.data.cache import VolumeCache, prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.io_utils import prepare_output_dir
    from disyre.preprocessing.recipe import find_recipe
    from disyre.training import train
    from disyre.training.loop import RUN_MARKER

    cfg = build_config(args)
    # refuse an occupied run folder before any (slow) preprocessing
    if not args.resume:
        prepare_output_dir(args.output, overwrite=args.overwrite, marker=RUN_MARKER)
    if args.manifest is not None:
        rows = read_manifest(args.manifest)
        source = args.manifest
        if not any(r.split == "train" for r in rows):
            raise CLIError(f"{source}: no healthy training subjects (rows with split 'train')")
        cache = prepare_cache([r for r in rows if r.split in ("train", "val")],
                              args.cache_dir or args.output / "cache", cfg.intensity,
                              progress=not args.no_progress)
    else:
        source = args.cache
        cache = VolumeCache.open(args.cache)
    train_vols, val_vols = cache.volumes("train"), cache.volumes("val")
    check_volumes(cfg, train_vols, source)
    codebook = cfg.corruption.codebook or fit_codebook(train_vols, k=5, seed=cfg.train.seed)
    # train() logs its summary (checkpoint, duration, losses) at the end
    contrasts = sorted({e.contrast for e in cache.select("train") if e.contrast})
    recipe = find_recipe(e.source for e in cache.select("train"))  # from `disyre preprocess`
    train(cfg, train_vols, val_vols, args.output, resume=args.resume, overwrite=args.overwrite,
          codebook=codebook, progress=not args.no_progress,
          data_info={"contrast": ",".join(contrasts) or None,
                     **({"preprocessing": recipe} if recipe else {})})
    return 0
