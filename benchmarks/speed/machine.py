"""What every benchmark prints first: the machine, and its matrix-product peaks measured now.

Fractions of peak are computed against these measured peaks (never against figures of another
machine). Memory is reported in GiB (2^30 bytes) everywhere.

Usage (standalone)::

    python -m benchmarks.speed.machine [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys

from benchmarks.args import at_least, new_file

GIB = 2 ** 30


def peak_rss_gib() -> float:
    """Peak resident memory of this process in GiB (``ru_maxrss`` is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2 ** 30 if sys.platform == "darwin" else kib / 2 ** 20


def time_it(fn, device, repeats: int, warmups: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmups`` untimed calls (CUDA
    synchronised around each timed call)."""
    import statistics
    import time

    import torch

    dev = torch.device(device)
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_info(device: str = "cpu") -> dict:
    """CPU model and flags, threads, torch version, GPU name; and the ``auto`` precision."""
    import torch

    from disyre.runtime import cpu_info, decide_precision

    info = cpu_info()
    out = {"cpu": info.model, "arch": info.arch, "cpu_flags": list(info.flags),
           "cpu_bf16_native": info.bf16_native, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.device(device))
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1),
                   cuda=torch.version.cuda)
    d = decide_precision("auto", device)
    out["auto_precision"] = d.precision
    out["auto_reason"] = d.reason
    return out


def measure_peaks(device: str = "cpu", n: int | None = None, reps: int = 3) -> dict[str, float]:
    """GFLOP/s of a large fp32 and bf16 matrix product on ``device`` (the practical peaks).

    ``n`` defaults to 4096 on a CPU (about 3 s in all on 2 cores) and 8192 on a GPU.
    """
    import torch

    from disyre.runtime import matmul_gflops

    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 4096)
    reps = reps if dev.type != "cuda" else max(reps, 10)
    return {"n": n, "fp32": matmul_gflops(torch.float32, dev, n, reps),
            "bf16": matmul_gflops(torch.bfloat16, dev, n, reps)}


def header(info: dict, peaks: dict | None = None) -> str:
    """Human-readable lines about the machine (and its peaks)."""
    flags = info["cpu_flags"]
    amx = "amx_bf16" in flags or "amx_tile" in flags
    lines = [f"machine: {info['cpu']} ({info['arch']}), flags: {' '.join(flags) or '-'}; "
             f"avx512_bf16: {'yes' if 'avx512_bf16' in flags else 'no'}, "
             f"amx: {'yes' if amx else 'no'}; torch {info['torch']}, {info['threads']} threads"]
    if info.get("gpu"):
        lines.append(f"gpu: {info['gpu']} ({info['gpu_memory_gib']} GiB, CUDA {info['cuda']})")
    lines.append(f"precision=auto on {info['device']}: {info['auto_precision']} "
                 f"({info['auto_reason']})")
    if peaks:
        lines.append(f"matmul peak measured now ({peaks['n']}^2): fp32 {peaks['fp32']:.0f} "
                     f"GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=at_least(1), default=None,
                   help="matrix side (default 4096 CPU, 8192 GPU)")
    p.add_argument("--json", type=new_file, default=None, help="also write {machine, peaks} here")
    a = p.parse_args()
    info = machine_info(a.device)
    peaks = measure_peaks(a.device, a.n)
    print(header(info, peaks))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "peaks": peaks}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
