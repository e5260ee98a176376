"""Training throughput and peak memory of the restoration network, with a time breakdown.

Each configuration runs in a fresh subprocess, so its peak RSS is its own. A step is end to end:
patch sampling, corruption (DAG), forward, backward, optimizer. GFLOP/s use the `paper` U-Net's
48.3 GFLOP forward+backward per 128x128 patch (scaled by parameter-free FLOP ratio for other
presets is not attempted: the fraction of peak is printed for `paper` only).

Usage::

    python benchmarks/bench_training.py --preset small --batch 16 96 --precision fp32 bf16
    python benchmarks/bench_training.py --preset paper --batch 16 --precision bf16 --reps 2

Authors' figures on a 2-core CPU: 67.8 s/step at 96 patches (1.4 patches/s, 17.9 GB peak RSS),
7.9 s/step at 16 (2.0 patches/s). Peaks of that machine: 182 GFLOP/s fp32, 393 GFLOP/s bf16.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

PAPER_GFLOP_PER_PATCH = 48.3
PEAK_GFLOPS = {"fp32": 182.0, "bf16": 393.0}
AUTHORS = {96: (67.8, 17.9), 16: (7.9, 3.9)}  # s/step, peak RSS GB


def _batch_shape(batch: int) -> tuple[int, int]:
    return {96: (8, 12), 16: (8, 2)}.get(batch, (batch, 1))


def child(preset: str, batch: int, precision: str, reps: int, device: str, accum: int) -> dict:
    """Time ``reps`` training steps after one warm-up; returns medians and peak RSS."""
    import numpy as np
    import torch

    from disyre.config import ModelConfig, RunConfig, SamplerConfig
    from disyre.model import build_model
    from disyre.runtime import resolve_device
    from disyre.training import BatchSource, make_optimizer, micro_batch_shards, train_step

    dev = resolve_device(device)
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(preset)
    nv, ns = _batch_shape(batch)
    cfg.sampler = SamplerConfig(n_volumes=nv, n_slices=ns, patch_size=128)
    cfg.corruption.augment = False
    cfg.train.precision = precision
    rng = np.random.default_rng(0)
    vols = []
    for _ in range(8):  # synthetic cohort of the authors' benchmark size
        v = np.zeros((130, 136, 162), np.float32)
        v[10:120, 10:126, 12:150] = rng.random((110, 116, 138), dtype=np.float32) * 0.5 + 0.3
        vols.append(v)
    src = BatchSource(vols, cfg, device=dev)
    t: dict[str, float] = {}
    real_sample, real_corrupt = src.sample_shard, src.corrupt

    def timed(name, fn):
        def f(*a):
            t0 = time.perf_counter()
            out = fn(*a)
            t[name] = t.get(name, 0.0) + time.perf_counter() - t0
            return out
        return f

    src.sample_shard = timed("sampling", real_sample)
    src.corrupt = timed("corruption", real_corrupt)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev)
    channels_last = cfg.train.channels_last and dev.type == "cuda"  # as the loop does
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, _ = make_optimizer(model, cfg)
    shards = micro_batch_shards(ns, 1, accum, 0)
    steps, breakdown = [], []
    for r in range(reps + 1):
        t.clear()
        t0 = time.perf_counter()
        train_step(model, opt, lambda i, r=r: src.micro_batch(0, r, shards[i]), accum,
                   global_size=batch, device=dev, precision=precision, channels_last=channels_last,
                   timings=t)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if r:
            steps.append(time.perf_counter() - t0)
            breakdown.append(dict(t))
    med = statistics.median(steps)
    keys = ("sampling", "corruption", "forward", "backward", "optimizer")
    out = {"preset": preset, "batch": batch, "precision": precision, "device": str(dev),
           "accum": accum, "s_per_step": med, "patches_per_s": batch / med,
           "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
           "spread": (max(steps) - min(steps)) / med,
           "breakdown": {k: statistics.median(b.get(k, 0.0) for b in breakdown) for k in keys}}
    if dev.type == "cuda":
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return out


def _auto_accum(batch: int, micro: int) -> int:
    """Largest number of micro-batches <= batch / micro that divides the slices per volume."""
    _, ns = _batch_shape(batch)
    want = max(1, batch // max(1, micro))
    return max(d for d in range(1, ns + 1) if ns % d == 0 and d <= want)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", nargs="+", default=["small"])
    p.add_argument("--batch", nargs="+", type=int, default=[16, 96])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--accum", type=int, default=0,
                   help="micro-batches per step (0 = batch / --micro, so memory stays that of "
                        "a --micro batch)")
    p.add_argument("--micro", type=int, default=16, help="micro-batch size when --accum is 0")
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.preset[0], a.batch[0], a.precision[0], a.reps, a.device,
                               max(1, a.accum))))
        return
    print(f"{'preset':6} {'batch':>5} {'prec':4} {'s/step':>7} {'patch/s':>7} {'xAuth':>5} "
          f"{'RSS GB':>6} {'GF/s':>6} {'%peak':>5}  breakdown s (sample/corrupt/fwd/bwd/opt)")
    for preset in a.preset:
        for batch in a.batch:
            for prec in a.precision:
                accum = a.accum or _auto_accum(batch, a.micro)
                cmd = [sys.executable, __file__, "--child", "--preset", preset, "--batch",
                       str(batch), "--precision", prec, "--reps", str(a.reps), "--device",
                       a.device, "--accum", str(accum)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    print(f"{preset} {batch} {prec}: failed\n{r.stderr[-2000:]}")
                    continue
                d = json.loads(r.stdout.strip().splitlines()[-1])
                gf = pk = float("nan")
                if preset == "paper":
                    gf = PAPER_GFLOP_PER_PATCH * d["patches_per_s"]
                    pk = 100 * gf / PEAK_GFLOPS.get(prec, PEAK_GFLOPS["fp32"])
                auth = AUTHORS.get(batch)
                x = d["patches_per_s"] / (batch / auth[0]) if auth and preset == "paper" \
                    else float("nan")
                b = d["breakdown"]
                print(f"{preset:6} {batch:5d} {prec:4} {d['s_per_step']:7.2f} "
                      f"{d['patches_per_s']:7.1f} {x:5.2f} {d['rss_gb']:6.2f} {gf:6.1f} "
                      f"{pk:5.1f}  " + "/".join(f"{b[k]:.2f}" for k in b)
                      + f"  (spread {100 * d['spread']:.0f}%)", flush=True)


if __name__ == "__main__":
    main()
