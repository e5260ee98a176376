"""Training throughput and peak memory of the restoration network, with a time breakdown.

Each configuration runs in a fresh subprocess, so its peak memory is its own. A step is end to
end: patch sampling, corruption (DAG), forward, backward, optimizer. The FLOP of a step are
counted once per configuration (``torch.utils.flop_counter``: convolutions and matrix products,
forward and backward; the `paper` U-Net at 128 px: 48.3 GFLOP per patch), and the fraction of
peak is taken against the fp32/bf16 matrix-product peak measured at the start of the same run.
Memory is in GiB. ``precision=auto`` is shown with what it resolved to on this machine.

Usage::

    python -m benchmarks.speed.bench_training --preset small --batch 16 96 --precision fp32 bf16
    python -m benchmarks.speed.bench_training --preset paper --batch 16 --precision auto --reps 2
    python -m benchmarks.speed.bench_training --preset paper --batch 16 --compile off on \\
        --channels-last off on          # the levers, A/B
    python -m benchmarks.speed.bench_training --device cuda --preset paper --batch 96 --accum 1 \\
        --precision bf16 --reps 200 --no-breakdown

The first (warm-up) step is timed on its own: with ``--compile on`` the difference between it
and the median step is the compile time, reported separately.

Reference figures (not measured by this script; docs/targets.md): the authors' code, 2-core CPU,
fp32: 67.8 s per step of 96 patches (17.9 GB peak RSS), 7.9 s per step of 16; on an AVX512-BF16
EPYC (2026-11-26): fp32 60.2 s / bf16 24.4 s at 96, fp32 5.66 s / bf16 2.40 s at 16.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time

from benchmarks.args import at_least, new_file
from benchmarks.speed.machine import header, machine_info, measure_peaks, peak_rss_gib

#: Reference figures, labelled as such when printed: (source, {batch: {precision: s/step}}).
REFERENCES = [
    ("authors' code, 2-core CPU (docs/targets.md)", {96: {"fp32": 67.8}, 16: {"fp32": 7.9}}),
    ("authors' code, AVX512-BF16 EPYC 2026-11-26 (docs/targets.md)",
     {96: {"fp32": 60.2, "bf16": 24.4}, 16: {"fp32": 5.66, "bf16": 2.40}}),
]


def _batch_shape(batch: int) -> tuple[int, int]:
    """(volumes, slices) of a batch: the authors' 8 x 12 for 96, 8 x 2 for 16."""
    return {96: (8, 12), 16: (8, 2)}.get(batch, (batch, 1))


def _flops_per_patch(model, patch: int, dev, spatial_dims: int = 2) -> float:
    """Forward + backward FLOP of one patch (convolutions and matrix products)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, *([patch] * spatial_dims), device=dev)
    with FlopCounterMode(display=False) as fc:
        model(x, torch.zeros(1, dtype=torch.long, device=dev)).sum().backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def child(preset: str, batch: int, precision: str, reps: int, device: str, accum: int,
          compile_: bool = False, channels_last: str = "auto", breakdown: bool = True,
          patch: int = 128, optimizer: str = "auto", malloc: str = "auto") -> dict:
    """Time ``reps`` training steps after one warm-up; returns medians and peak memory."""
    import numpy as np
    import torch

    from disyre.config import ModelConfig, RunConfig, SamplerConfig
    from disyre.model import build_model, compile_network, use_channels_last
    from disyre.runtime import decide_precision, resolve_device, retain_freed_memory
    from disyre.training import BatchSource, make_optimizer, micro_batch_shards, train_step
    from disyre.training.loop import adamw_impl

    dev = resolve_device(device)
    # the allocator as the training loop sets it on a CPU (auto), or left alone (system)
    alloc = retain_freed_memory() if malloc == "auto" and dev.type == "cpu" else "system"
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(preset)
    nv, ns = _batch_shape(batch)
    cfg.sampler = SamplerConfig(n_volumes=nv, n_slices=ns, patch_size=patch)
    cfg.corruption.augment = False
    cfg.corruption.window = min(cfg.corruption.window, patch // 2)
    prec = decide_precision(precision, dev)
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

    if breakdown:
        src.sample_shard = timed("sampling", real_sample)
        src.corrupt = timed("corruption", real_corrupt)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev)
    gflop_patch = _flops_per_patch(model, patch, dev) / 1e9
    cl = {"on": True, "off": False}.get(channels_last)
    cl = use_channels_last(cfg.model, dev, precision=prec.precision) if cl is None else cl
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt, _ = make_optimizer(model, cfg, impl=optimizer)
    if compile_:
        compile_network(model)
    shards = micro_batch_shards(ns, 1, accum, 0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    steps, parts = [], []
    first = 0.0
    for r in range(reps + 1):
        t.clear()
        t0 = time.perf_counter()
        train_step(model, opt, lambda i, r=r: src.micro_batch(0, r, shards[i]), accum,
                   global_size=batch, device=dev, precision=prec.precision, channels_last=cl,
                   timings=t if breakdown else None)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if r:
            steps.append(dt)
            parts.append(dict(t))
        else:
            first = dt
    med = statistics.median(steps)
    keys = ("sampling", "corruption", "forward", "backward", "optimizer")
    out = {"preset": preset, "batch": batch, "precision": prec.precision,
           "precision_requested": precision, "precision_reason": prec.reason,
           "device": str(dev), "accum": accum, "compile": compile_, "channels_last": cl,
           "optimizer": adamw_impl(optimizer, dev), "malloc": alloc,
           "steps": reps, "s_per_step": med, "patches_per_s": batch / med,
           "first_step_s": first, "compile_s": max(0.0, first - med) if compile_ else None,
           "gflop_per_patch": gflop_patch, "gflops": gflop_patch * batch / med,
           "rss_gib": peak_rss_gib(), "spread": (max(steps) - min(steps)) / med,
           "breakdown": ({k: statistics.median(b.get(k, 0.0) for b in parts) for k in keys}
                         if breakdown else None)}
    if dev.type == "cuda":
        out["gpu_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    return out


def _auto_accum(batch: int, micro: int) -> int:
    """Largest number of micro-batches <= batch / micro that divides the slices per volume."""
    _, ns = _batch_shape(batch)
    want = max(1, batch // max(1, micro))
    return max(d for d in range(1, ns + 1) if ns % d == 0 and d <= want)


def references(batch: int, precision: str, s_per_step: float) -> list[str]:
    """Ratios to the labelled reference figures (other machines or other code)."""
    out = []
    for src, table in REFERENCES:
        ref = table.get(batch, {}).get(precision)
        if ref:
            out.append(f"{ref / s_per_step:.2f}x of {ref} s ({src})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", nargs="+", default=["small"])
    p.add_argument("--batch", nargs="+", type=at_least(1), default=[16, 96])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                   help="fp32, bf16 and/or auto (the hardware decision)")
    p.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"],
                   help="torch.compile the network (A/B: --compile off on)")
    p.add_argument("--channels-last", nargs="+", choices=["auto", "off", "on"],
                   default=["auto"], help="memory layout (auto = the library's choice)")
    p.add_argument("--optimizer", nargs="+", choices=["auto", "loop", "foreach", "fused"],
                   default=["auto"], help="AdamW implementation (auto = the library's choice)")
    p.add_argument("--malloc", nargs="+", choices=["auto", "system"], default=["auto"],
                   help="auto: the allocator as the library sets it (freed memory kept on a "
                        "CPU, disyre.runtime.retain_freed_memory); system: left alone")
    p.add_argument("--reps", type=at_least(1), default=3, help="timed steps after one warm-up")
    p.add_argument("--accum", type=at_least(0), default=0,
                   help="micro-batches per step (0 = batch / --micro, so memory stays that of "
                        "a --micro batch)")
    p.add_argument("--micro", type=at_least(1), default=16,
                   help="micro-batch size when --accum is 0")
    p.add_argument("--patch", type=at_least(8), default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-breakdown", action="store_true",
                   help="no per-phase timing (on CUDA it synchronises around every phase)")
    p.add_argument("--json", type=new_file, default=None, help="also write all rows here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.preset[0], a.batch[0], a.precision[0], a.reps, a.device,
                               max(1, a.accum), a.compile[0] == "on", a.channels_last[0],
                               not a.no_breakdown, a.patch, a.optimizer[0], a.malloc[0])))
        return 0
    info = machine_info(a.device)
    peaks = measure_peaks(a.device)
    print(header(info, peaks), flush=True)
    print(f"{'preset':6} {'batch':>5} {'micro':>5} {'prec':9} {'comp':4} {'CL':3} {'adamw':7} "
          f"{'malloc':8} "
          f"{'s/step':>7} {'patch/s':>7} {'RSS GiB':>7} {'GF/s':>6} {'%peak':>5}  "
          "breakdown s (sample/corrupt/fwd/bwd/opt)")
    rows = []
    for preset, batch, prec, comp, cl, optim, malloc in itertools.product(
            a.preset, a.batch, a.precision, a.compile, a.channels_last, a.optimizer, a.malloc):
        accum = a.accum or _auto_accum(batch, a.micro)
        cmd = [sys.executable, "-m", "benchmarks.speed.bench_training", "--child", "--preset",
               preset, "--batch", str(batch),
               "--precision", prec, "--reps", str(a.reps), "--device", a.device, "--accum",
               str(accum), "--compile", comp, "--channels-last", cl, "--patch", str(a.patch),
               "--optimizer", optim, "--malloc", malloc]
        cmd += ["--no-breakdown"] if a.no_breakdown else []
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            print(f"{preset} {batch} {prec} compile={comp} cl={cl} adamw={optim} "
                  f"malloc={malloc}: failed\n"
                  f"{r.stderr[-2000:]}", flush=True)
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(d)
        pk = 100 * d["gflops"] / peaks[d["precision"]]
        d["pct_peak"] = pk
        label = d["precision"] + ("*" if prec == "auto" else "")
        b = d["breakdown"]
        parts = "/".join(f"{b[k]:.2f}" for k in b) if b else "-"
        print(f"{preset:6} {batch:5d} {batch // accum:5d} {label:9} {comp:4} "
              f"{'on' if d['channels_last'] else 'off':3} {d['optimizer']:7} "
              f"{'retain' if d['malloc'].startswith('retained') else 'system':8} "
              f"{d['s_per_step']:7.3f} {d['patches_per_s']:7.1f} "
              f"{d['rss_gib']:7.2f} {d['gflops']:6.1f} {pk:5.1f}  {parts}"
              f"  (spread {100 * d['spread']:.0f}%"
              + (f", compile {d['compile_s']:.0f} s" if d["compile_s"] is not None else "")
              + (f", GPU peak {d['gpu_peak_gib']:.2f} GiB" if "gpu_peak_gib" in d else "")
              + ")", flush=True)
    print("* precision=auto, resolved on this machine. %peak: of the matmul peak of that "
          "precision measured above. GF/s: counted FLOP (conv + matmul, fwd + bwd) / s.")
    refs = [(d, references(d["batch"], d["precision"], d["s_per_step"])) for d in rows
            if d["preset"] == "paper" and a.patch == 128 and d["device"] == "cpu"]
    refs = [(d, r) for d, r in refs if r]
    if refs:
        print("reference figures (not measured in this run; other code / other machines):")
        for d, r in refs:
            print(f"  paper {d['batch']} {d['precision']} compile "
                  f"{'on' if d['compile'] else 'off'} channels-last "
                  f"{'on' if d['channels_last'] else 'off'}: " + "; ".join(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "peaks": peaks, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
