"""Corruption throughput: patches per second for each variant and for the augmentation.

Also times the earlier recipes (``dag-legacy``: legacy shapes and single-level bias selection;
``aug-legacy``: the legacy augmentation).

Batch of 96 patches of 128x128 (the authors' 8 volumes x 12 slices) with an elliptical
synthetic brain; median of ``--repeats`` timed runs after one warm-up; CPU with
``--threads`` intra-op threads, and CUDA when available.

The ``batch`` stage is the training loop's whole batch production, as the TARGETS row counts
it: patches sampled from 8 in-memory volumes of 130 x 136 x 162 (the authors' benchmark size),
augmented and corrupted (``BatchSource.micro_batch`` over all 12 shards of a step).

Usage:
    python -m benchmarks.speed.bench_corruption [--threads 2] [--repeats 5] [--batch 96]
        [--size 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch

from benchmarks.args import at_least, new_file
from benchmarks.speed.machine import time_it
from disyre.config import CorruptionConfig
from disyre.corruption import augment
from disyre.methods import make_corruption, method_names
from disyre.runtime import make_generator


def synthetic_batch(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """(batch, 1, size, size) brain-like patches: an ellipse of smooth texture, background 0."""
    g = make_generator(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    inside = ((yy - c) / (0.45 * size)) ** 2 + ((xx - c) / (0.37 * size)) ** 2 < 1
    tex = torch.rand(batch, 1, size // 8, size // 8, generator=g)
    tex = torch.nn.functional.interpolate(tex, size=(size, size), mode="bilinear")
    return ((0.1 + 0.85 * tex) * inside).float().to(device)


def _batch_source(n_volumes: int, n_slices: int, size: int, dev: torch.device):
    """The training loop's batch source over 8 synthetic 130 x 136 x 162 volumes."""
    import numpy as np

    from disyre.config import RunConfig, SamplerConfig
    from disyre.training import BatchSource

    cfg = RunConfig()
    cfg.sampler = SamplerConfig(n_volumes=n_volumes, n_slices=n_slices, patch_size=size)
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:130, :136, :162]
    inside = ((z - 65) / 60) ** 2 + ((y - 68) / 60) ** 2 + ((x - 81) / 72) ** 2 < 1
    vols = [np.where(inside, rng.random((130, 136, 162), dtype=np.float32) * 0.5 + 0.3,
                     0).astype(np.float32) for _ in range(8)]
    return BatchSource(vols, cfg, device=dev)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=at_least(1), default=2)
    p.add_argument("--repeats", type=at_least(1), default=5)
    p.add_argument("--batch", type=at_least(1), default=96)
    p.add_argument("--size", type=at_least(8), default=128)
    p.add_argument("--json", type=new_file, default=None,
                   help="also write {device: {stage: s/batch}} here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"batch {args.batch} x {args.size}x{args.size}, {args.threads} CPU threads, "
          f"median of {args.repeats}")
    print(f"{'device':<6} {'stage':<11} {'ms/batch':>9} {'patches/s':>10}")
    out: dict[str, dict[str, float]] = {}
    for dev in devices:
        out[dev.type] = bench_device(dev, args.batch, args.size, args.repeats)
        for name, seconds in out[dev.type].items():
            print(f"{dev.type:<6} {name:<11} {1000 * seconds:9.1f} {args.batch / seconds:10.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "size": args.size, "threads": args.threads,
                       "repeats": args.repeats, "seconds": out}, f, indent=2)


def bench_device(dev: torch.device, batch: int, size: int, repeats: int) -> dict[str, float]:
    """Median seconds per batch of every corruption variant, augmentation, and both."""
    x = synthetic_batch(batch, size, dev)
    g = make_generator(0, dev)
    stages: dict[str, Callable[[], object]] = {}
    for name in method_names():
        corr = make_corruption(CorruptionConfig(name=name))
        stages[name] = lambda corr=corr: corr(x, g)
    stages["augment"] = lambda: augment(x, g)
    dag = make_corruption(CorruptionConfig(name="dag"))
    stages["aug+dag"] = lambda: dag(augment(x, g), g)
    # the earlier recipes (corruption.shapes=legacy, bias_selection=single, augment_recipe=legacy)
    old = make_corruption(CorruptionConfig(name="dag", shapes="legacy", bias_selection="single"))
    stages["dag-legacy"] = lambda: old(x, g)
    stages["aug-legacy"] = lambda: augment(x, g, recipe="legacy")
    if batch % 12 == 0:
        src = _batch_source(batch // 12, 12, size, dev)
        step = iter(range(10 ** 6))
        stages["batch"] = lambda: src.micro_batch(0, next(step), list(range(12)))
    return {name: time_it(fn, dev, repeats) for name, fn in stages.items()}

if __name__ == "__main__":
    main()
