"""Detection benchmark: seconds per volume, per slice and per patch, peak memory, and accuracy.

Every timing configuration runs in a fresh subprocess (so peak memory is its own). The volume is
a synthetic brain of ``130 x 136 x 162`` voxels by default (axial slices x rows x columns, the
size of the authors' cropped BraTS volume; ``--shape`` changes it), random network weights
(timing does not depend on them). GFLOP/s count the network's convolutions and matrix products;
the fraction of peak is against the matmul peak of the same precision measured at the start of
the run. Memory is in GiB.

The accuracy part (``--accuracy``) compares the pixel AP of bf16 and of whole-slice inference
with the fp32 sliding-window reference on a volume with planted lesions, using a ``small``
network trained briefly on healthy synthetic volumes (``--train-steps``; 0 = random weights).

Examples::

    # quick check on a loaded machine: small network, 8 slices
    python -m benchmarks.speed.bench_detect --nets small --slices 8
    # the full table (quiet machine): paper + small, v2 with 5 and 4 levels, v1 with 5 steps
    python -m benchmarks.speed.bench_detect --nets paper,small --precisions fp32,bf16 \\
        --windows 128,0
    python -m benchmarks.speed.bench_detect --accuracy --train-steps 300
    python -m benchmarks.speed.bench_detect --device cuda --precisions bf16 --nets paper \
        --shape 155,240,240 --batch 160 --compile off,on

Reference figures (not measured by this script; docs/targets.md, the authors' code on 2-core CPUs,
fp32, paper network, 5 levels, sliding windows): 813 s and 10.9 GB per 130-slice volume,
5.9 s/slice, 0.93 s per 128x128 patch; on the AVX512-BF16 EPYC (2026-11-26): 4.33 s/slice,
633 s and 11.1 GB per volume.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.args import at_least, new_file
from benchmarks.speed.machine import header, machine_info, measure_peaks, peak_rss_gib

#: this module, run again as a child process per measurement
CHILD = "benchmarks.speed.bench_detect"

METHODS = {
    "v2-5": dict(method="ensemble", levels=[0, 20, 40, 60, 80]),
    "v2-4": dict(method="ensemble", levels=[0, 25, 50, 75]),
    "v1-5": dict(method="multistep", steps=5),
}
#: Reference figures (authors' code, other machines: docs/targets.md), printed as such.
#: Their memory figures are peak RSS in GB as given there.
AUTHORS = {"s_per_volume": 813.0, "rss_gb": 10.9, "s_per_slice": 5.9, "s_per_patch": 0.93}
AUTHORS_BF16_EPYC = {"s_per_slice": 4.33, "s_per_volume": 633.0, "rss_gb": 11.1}
SHAPE = (130, 136, 162)


def synthetic_volume(shape=SHAPE, seed: int = 0, lesions: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoidal 'brain' with smooth texture (and optional bright/dark lesions), in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.ogrid[:d, :h, :w]
    r2 = ((z - d / 2) / (d / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2 + ((x - w / 2) / (w / 2)) ** 2
    brain = r2 < 0.98
    tex = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3) * 4
    vol = np.where(brain, np.clip(0.55 + 0.15 * tex - 0.15 * r2, 0.05, 1), 0).astype(np.float32)
    les = np.zeros(shape, bool)
    for i in range(lesions):
        c = np.array(shape) / 2 + rng.uniform(-0.3, 0.3, 3) * np.array(shape)
        r = rng.uniform(5, 10)
        blob = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r) & brain
        vol[blob] = 0.95 if i % 2 == 0 else 0.15
        les |= blob
    return vol, les


def _child(spec: dict) -> dict:
    """One timing configuration (run in a fresh process)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from disyre.config import InferenceConfig, ModelConfig
    from disyre.inference import count_work, predict_volume, restore
    from disyre.model import build_model, compile_network, use_channels_last
    from disyre.runtime import decide_precision, resolve_device, retain_freed_memory

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    dev = resolve_device(spec["device"])
    # the allocator as the Detector sets it on a CPU (auto), or left alone (system)
    alloc = (retain_freed_memory() if spec.get("malloc", "auto") == "auto" and dev.type == "cpu"
             else "system")
    torch.manual_seed(0)
    mcfg = ModelConfig.from_preset(spec["net"])
    net = build_model(mcfg).to(dev).eval()
    prec = decide_precision(spec["precision"], dev)
    cl = {"on": True, "off": False}.get(spec.get("channels_last", "auto"))
    cl = (use_channels_last(mcfg, dev, precision=prec.precision, mode="inference")
          if cl is None else cl)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    cfg = InferenceConfig(window=spec["window"], stride=32, batch_size=spec["batch"],
                          precision=prec.precision, **METHODS[spec["method"]])
    vol, _ = synthetic_volume(tuple(spec.get("shape") or SHAPE))
    if spec["slices"]:
        mid = len(vol) // 2
        vol = vol[mid - spec["slices"] // 2: mid - spec["slices"] // 2 + spec["slices"]]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n_levels = len(cfg.levels) if cfg.method == "ensemble" else cfg.steps
    # per patch: one 128x128 window, all levels
    c = (vol.shape[2] - 128) // 2
    patch = torch.from_numpy(vol[len(vol) // 2, :128, c:c + 128].copy())[None, None].to(dev)
    t_compile = None
    if spec.get("compile"):
        compile_network(net)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            restore(net, patch, cfg, channels_last=cl)
        sync()
        t_compile = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            net(torch.zeros(1, 1, 128, 128, device=dev), torch.zeros(1, dtype=torch.long,
                                                                     device=dev))
        flops_patch = fc.get_total_flops()
        restore(net, patch, cfg, channels_last=cl)
        ts = []
        for _ in range(3):
            sync()
            t0 = time.perf_counter()
            restore(net, patch, cfg, channels_last=cl)
            sync()
            ts.append(time.perf_counter() - t0)
    s_patch = statistics.median(ts)
    # warm-up on 2 slices, then the volume
    predict_volume(net, vol[:2] if len(vol) > 2 else vol, None, cfg, device=dev,
                   channels_last=cl)
    vts = []
    for _ in range(spec["repeats"]):
        sync()
        t0 = time.perf_counter()
        predict_volume(net, vol, None, cfg, device=dev, channels_last=cl)
        sync()
        vts.append(time.perf_counter() - t0)
    s_vol = statistics.median(vts)
    n_slices = int((vol.reshape(len(vol), -1) > 0).any(1).sum())
    work = count_work(vol > 0, cfg)
    if cfg.window > 0:
        pix = work * cfg.window ** 2
    else:
        m = net.min_size
        pix = n_slices * (-(-vol.shape[1] // m) * m) * (-(-vol.shape[2] // m) * m)
    gflop = flops_patch * pix / 128 ** 2 * n_levels / 1e9
    out = dict(spec, s_volume=s_vol, s_slice=s_vol / max(n_slices, 1), s_patch=s_patch,
               n_slices=n_slices, n_inputs=work, gflop=gflop, gflops_per_s=gflop / s_vol,
               rss_gib=peak_rss_gib(), resolved_precision=prec.precision,
               precision_reason=prec.reason, channels_last=cl, shape=list(vol.shape),
               compile_s=t_compile, malloc=alloc)
    if dev.type == "cuda":
        out["gpu_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    # a 130-slice volume at this rate
    out["s_per_130_slices"] = out["s_slice"] * 130
    return out


def accuracy(train_steps: int, device: str, slices: int) -> list[dict]:
    """Pixel AP of bf16 / whole-slice inference against the fp32 sliding-window reference."""
    import dataclasses
    import tempfile

    import torch
    from sklearn.metrics import average_precision_score

    from disyre.config import InferenceConfig, ModelConfig, RunConfig
    from disyre.inference import predict_volume
    from disyre.model import build_model

    shape = (slices, SHAPE[1], SHAPE[2]) if slices else SHAPE
    trained = "random weights"
    if train_steps > 0:
        from disyre.training import train

        cfg = RunConfig()
        cfg.model = ModelConfig.from_preset("small")
        cfg.sampler.patch_size = 64
        cfg.sampler.n_volumes, cfg.sampler.n_slices = 2, 4
        cfg.train.steps = train_steps
        cfg.train.lr = 5e-4
        cfg.train.warmup_steps = 20
        cfg.train.val_every = cfg.train.ckpt_every = train_steps
        cfg.train.device = device
        healthy = [synthetic_volume(shape, seed=s)[0] for s in (1, 2, 3)]
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            train(cfg, healthy, None, d, progress=False)
            from disyre.training import load_model

            net, _ = load_model(d, device)
        trained = f"small network trained {train_steps} steps ({time.perf_counter() - t0:.0f} s)"
    else:
        torch.manual_seed(0)
        net = build_model(ModelConfig.from_preset("small")).to(device).eval()
    vol, les = synthetic_volume(shape, seed=7, lesions=6)
    brain = vol > 0
    base = InferenceConfig(precision="fp32")
    rows = []
    ref = None
    for name, kw in [("fp32 window 128 (reference)", {}), ("bf16 window 128", dict(
            precision="bf16")), ("fp32 whole slice", dict(window=0)),
            ("bf16 whole slice", dict(window=0, precision="bf16"))]:
        cfg = dataclasses.replace(base, **kw)
        t0 = time.perf_counter()
        amap = predict_volume(net, vol, None, cfg, device=device)
        dt = time.perf_counter() - t0
        ap = float(average_precision_score(les[brain], amap[brain]))
        ref = ap if ref is None else ref
        rows.append(dict(config=name, ap=ap, delta=ap - ref, seconds=dt, model=trained))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", default="small")
    p.add_argument("--methods", default="v2-5,v2-4,v1-5")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--windows", default="128,0", help="128 = sliding windows, 0 = whole slices")
    p.add_argument("--batch", type=at_least(1), default=32,
                   help="network inputs per pass (inference.batch_size, default the library's; "
                        "window x level pairs)")
    p.add_argument("--slices", type=at_least(0), default=0,
                   help="only this many middle slices (0=all)")
    p.add_argument("--repeats", type=at_least(1), default=1, help="timed runs per volume (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0 = default)")
    p.add_argument("--shape", default=",".join(map(str, SHAPE)),
                   help="synthetic volume D,H,W (axial slices first)")
    p.add_argument("--compile", default="off", help="off, on or off,on (torch.compile)")
    p.add_argument("--channels-last", default="auto", help="auto, on, off (comma list)")
    p.add_argument("--malloc", default="auto",
                   help="auto (freed memory kept on a CPU, as the Detector does), system "
                        "(allocator left alone), or auto,system")
    p.add_argument("--accuracy", action="store_true", help="run the AP agreement check")
    p.add_argument("--no-timing", action="store_true", help="skip the timing table")
    p.add_argument("--train-steps", type=at_least(0), default=300)
    p.add_argument("--json", type=new_file, default=None, help="also write the results here")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        print(json.dumps(_child(json.loads(a._child))))
        return 0
    results: dict = {"timing": [], "accuracy": []}
    shape = [int(v) for v in a.shape.split(",")]
    if not a.no_timing:
        info = machine_info(a.device)
        peaks = measure_peaks(a.device)
        results.update(machine=info, peaks=peaks)
        print(header(info, peaks), flush=True)
    print(f"{'net':6} {'method':5} {'prec':6} {'win':>4} {'comp':4} {'CL':3} {'s/vol':>8} "
          f"{'s/130sl':>8} {'s/slice':>8} {'s/patch':>8} {'GFLOP/s':>8} {'%peak':>5} "
          f"{'RSS GiB':>7}")
    for net in ([] if a.no_timing else a.nets.split(",")):
        for method in a.methods.split(","):
            for prec in a.precisions.split(","):
                for win in (int(w) for w in a.windows.split(",")):
                    for comp in a.compile.split(","):
                        for cl, malloc in itertools.product(a.channels_last.split(","),
                                                            a.malloc.split(",")):
                            spec = dict(net=net, method=method, precision=prec, window=win,
                                        batch=a.batch, slices=a.slices, repeats=a.repeats,
                                        device=a.device, threads=a.threads, shape=shape,
                                        compile=comp == "on", channels_last=cl, malloc=malloc)
                            r = subprocess.run([sys.executable, "-m", CHILD, "--_child",
                                                json.dumps(spec)], capture_output=True,
                                               text=True)
                            if r.returncode != 0:
                                print(f"{net} {method} {prec} {win} compile={comp} cl={cl}: "
                                      f"FAILED\n{r.stderr[-2000:]}", flush=True)
                                continue
                            res = json.loads(r.stdout.strip().splitlines()[-1])
                            results["timing"].append(res)
                            rp = res["resolved_precision"]
                            pk = 100 * res["gflops_per_s"] / peaks[rp]
                            res["pct_peak"] = pk
                            extra = []
                            if res.get("compile_s") is not None:
                                extra.append(f"compile {res['compile_s']:.0f} s")
                            if "gpu_peak_gib" in res:
                                extra.append(f"GPU peak {res['gpu_peak_gib']:.2f} GiB")
                            if not res["malloc"].startswith("retained"):
                                extra.append(f"allocator {res['malloc']}")
                            print(f"{net:6} {method:5} {rp + ('*' if prec == 'auto' else ''):6} "
                                  f"{win:>4} {comp:4} {'on' if res['channels_last'] else 'off':3} "
                                  f"{res['s_volume']:8.2f} {res['s_per_130_slices']:8.1f} "
                                  f"{res['s_slice']:8.3f} {res['s_patch']:8.3f} "
                                  f"{res['gflops_per_s']:8.1f} {pk:5.1f} {res['rss_gib']:7.2f}"
                                  + (f"  ({', '.join(extra)})" if extra else ""), flush=True)
    if not a.no_timing:
        print("* precision=auto, resolved on this machine. %peak: of the matmul peak of that "
              "precision measured above.")
        print("reference figures (not measured in this run; the authors' code, paper, v2-5, "
              f"fp32, other machines): {AUTHORS['s_per_volume']} s per 130-slice volume, "
              f"{AUTHORS['s_per_slice']} s/slice, {AUTHORS['s_per_patch']} s/patch, "
              f"peak RSS {AUTHORS['rss_gb']} GB as given (2-core CPU); "
              f"{AUTHORS_BF16_EPYC['s_per_slice']} s/slice, {AUTHORS_BF16_EPYC['s_per_volume']} "
              f"s/volume, {AUTHORS_BF16_EPYC['rss_gb']} GB (AVX512-BF16 EPYC)")
    if a.accuracy:
        rows = accuracy(a.train_steps, a.device, a.slices)
        results["accuracy"] = rows
        print(f"pixel AP on planted lesions ({rows[0]['model']}):")
        for row in rows:
            ok = "ok" if abs(row["delta"]) <= 0.01 else "DIFFERS"
            print(f"  {row['config']:28} AP {row['ap']:.4f}  delta {row['delta']:+.4f} {ok}  "
                  f"({row['seconds']:.1f} s)")
    if a.json:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
