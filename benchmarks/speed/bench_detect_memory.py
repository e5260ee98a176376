"""Peak memory of ``disyre detect`` on a folder: one scan against many (a leak grows with them).

Writes ``--scans`` synthetic brains of slightly different sizes (``--shape`` give or take 8
voxels per axis: a real folder's scans differ) as NIfTI files, then runs the library behind
``disyre detect`` (:func:`disyre.inference.detect_files`) on each scan alone and on all of
them, each run in a fresh process, recording the resident memory after each scan and each
scan's own peak (the peak is reset before each scan). It prints the folder's peak
(``VmHWM``) against the highest peak of a scan alone and their ratio: a folder cannot stay
below its most demanding scan, and a leak would take it further, scan after scan. The
network is the ``--preset`` network with random weights (memory does not depend on them),
or ``--run``. 30 scans take about 31 times the model's loading plus twice the detection.
The folder run's median seconds per scan are printed too: ``--caches on`` keeps the CPU
kernel caches that detection turns off (:func:`disyre.runtime.uncached_cpu_kernels`), for
the comparison of memory and speed with and without them.

Usage::

    python -m benchmarks.speed.bench_detect_memory --scans 30
    python -m benchmarks.speed.bench_detect_memory --scans 30 --run runs/t2 --shape 96,112,96
    python -m benchmarks.speed.bench_detect_memory --scans 12 --caches on

Every argument is checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: this module, run again as a child process per measurement
CHILD = "benchmarks.speed.bench_detect_memory"


def _rss_mib() -> float:
    """Current resident memory of this process in MiB (Linux ``/proc``)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_scans(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> list[Path]:
    """``n`` synthetic brains (``shape`` +- 8 voxels per axis, 2 mm voxels) in ``folder``."""
    import nibabel as nib

    from benchmarks.speed.bench_detect import synthetic_volume

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sh = tuple(int(max(16, s + rng.integers(-8, 9))) for s in shape)
        vol, _ = synthetic_volume(sh, seed=seed + i)  # type: ignore[arg-type]
        p = folder / f"scan{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0) * 1000, np.diag([2.0, 2.0, 2.0, 1])), p)
        out.append(p)
    return out


def _reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux: ``clear_refs`` 5); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    """Peak resident memory of this process since its start or the last reset, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover - Linux always has VmHWM


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Detect ``spec["scans"]`` of ``spec["folder"]`` in order (run in a fresh process),
    recording the resident memory after each scan and each scan's own peak (the peak is
    reset before each scan; it covers the scan's mapping and the writing of its outputs)."""
    import logging
    import statistics
    import time

    from disyre.inference import Detector, detect_files

    logging.disable(logging.WARNING)
    src = Path(spec["folder"])
    scans = [src / name for name in spec["scans"]]
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        inp.mkdir()
        for s in scans:
            (inp / s.name).symlink_to(s)
        det = Detector.from_checkpoint(spec["run"], device=spec["device"])
        trace: list[float] = []
        peaks: list[float] = []
        overall = [_peak_mib()]  # loading the model
        can_reset = [True]

        def close_scan() -> None:
            if trace:  # the scan before this one: its peak, then a fresh window
                trace[-1] = round(_rss_mib(), 1)
                peaks.append(round(_peak_mib(), 1))

        seconds: list[float] = []

        def predict(d: Any, scan: Path, **kw: Any) -> Any:
            close_scan()
            overall.append(_peak_mib())
            can_reset[0] = can_reset[0] and _reset_peak()
            t0 = time.perf_counter()
            res = d.predict(scan, **kw)
            seconds.append(time.perf_counter() - t0)
            trace.append(0.0)
            return res

        summary = detect_files(inp, Path(tmp) / "out", det, progress=False, predict=predict)
        close_scan()
        overall.append(_peak_mib())
        if not summary.ok:
            raise SystemExit(summary.report())
    return {"n": len(scans), "scans": spec["scans"], "peak_rss_gib": max(overall) / 1024,
            "rss_mib_after_each": trace, "peak_mib_each": peaks if can_reset[0] else None,
            "median_s_per_scan": round(statistics.median(seconds), 3)}


def _child_env(caches: bool) -> dict[str, str]:
    """The children's environment: the CPU kernel caches as detection leaves them (off), or
    kept (``caches``) as a user keeps them, by their variables."""
    import os

    from disyre.runtime import KERNEL_CACHE_ENV

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_ENV}
    if caches:
        env.update({k: "1024" for k in KERNEL_CACHE_ENV})
    return env


def _run_child(folder: Path, run: Path, names: list[str], device: str,
               caches: bool = False) -> dict[str, Any]:
    spec = {"folder": str(folder), "run": str(run), "scans": names, "device": device}
    r = subprocess.run([sys.executable, "-m", CHILD, "--child", json.dumps(spec)],
                       capture_output=True, text=True, env=_child_env(caches))
    if r.returncode != 0:
        raise SystemExit(f"detection of {len(names)} scan(s) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(folder: Path, run: Path, scans: int, device: str = "cpu", caches: bool = False
            ) -> list[dict[str, Any]]:
    """Peak memory of detection on each scan alone and on the first ``scans`` scans.

    The folder's scans need different peaks (their slice sizes and counts differ, and not in
    the order of their voxel counts), so each is mapped alone in a fresh process and the
    highest of those peaks is the one a folder cannot stay below. Rows: that scan alone
    (with every scan's alone-peak in ``"peak_mib_alone"``), then the folder. ``caches``
    keeps the CPU kernel caches in every run.
    """
    files = sorted(folder.glob("*.nii.gz"))[:scans]
    alone = [_run_child(folder, run, [p.name], device, caches) for p in files]
    top = max(alone, key=lambda r: r["peak_rss_gib"])
    top = {**top, "peak_mib_alone": [round(r["peak_rss_gib"] * 1024, 1) for r in alone]}
    if scans == 1:
        return [top]
    return [top, _run_child(folder, run, [p.name for p in files], device, caches)]


def table(rows: list[dict[str, Any]]) -> str:
    """The peaks, their ratio to one scan's, and the memory trace of the longest run."""
    base = rows[0]["peak_rss_gib"]
    lines = ["| scans | peak RSS (GiB) | vs one scan |", "|---|---|---|"]
    lines += [f"| {r['n']}{' (' + r['scans'][0] + ')' if r['n'] == 1 else ''} | "
              f"{r['peak_rss_gib']:.3f} | {r['peak_rss_gib'] / base:.3f} |" for r in rows]
    trace = rows[-1]["rss_mib_after_each"]
    lines += ["", "resident MiB after each scan of the longest run: "
              + " ".join(f"{v:.0f}" for v in trace)]
    each = rows[-1].get("peak_mib_each")
    if each:
        lines += ["each scan's own peak (MiB) in that run: " + " ".join(f"{v:.0f}" for v in each)]
    lone = rows[0].get("peak_mib_alone")
    if lone:
        lines += ["each scan's peak (MiB) mapped alone: " + " ".join(f"{v:.0f}" for v in lone)]
    lines += [f"median seconds per scan in that run: {rows[-1]['median_s_per_scan']:.2f}"]
    return "\n".join(lines)


def _tiny_run(folder: Path, preset: str) -> Path:
    """A one-step checkpoint of a ``preset`` network with random weights."""
    import torch

    from disyre.config import ModelConfig, RunConfig
    from disyre.model import build_model
    from disyre.training.checkpoint import save_checkpoint

    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(preset)
    torch.manual_seed(0)
    save_checkpoint(folder / "run" / "checkpoints", step=1, model=build_model(cfg.model),
                    cfg=cfg, codebook=None, state={}, data={"spacing": [2.0, 2.0, 2.0]})
    return folder / "run"


def check_args(args: argparse.Namespace) -> tuple[int, int, int]:
    """Refuse bad arguments before any work; returns the shape."""
    from disyre.training.checkpoint import latest_checkpoint

    if args.scans < 1:
        raise SystemExit(f"--scans {args.scans}: must be >= 1")
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 24:
        raise SystemExit(f"--shape {args.shape}: expected D,H,W, each >= 24")
    if args.run is not None and (not args.run.exists() or latest_checkpoint(args.run) is None):
        raise SystemExit(f"--run {args.run}: no trained run or checkpoint there")
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise SystemExit(f"--json {args.json}: exists; pass --overwrite to replace it")
    if args.json is not None and not args.json.parent.is_dir():
        raise SystemExit(f"--json {args.json}: folder {args.json.parent} not found")
    return shape  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=30, help="scans of the long run (default 30)")
    p.add_argument("--shape", default="64,80,64", help="D,H,W of the scans (default 64,80,64)")
    p.add_argument("--run", type=Path, default=None,
                   help="a trained run (default: the --preset network, random weights)")
    p.add_argument("--preset", default="small", help="network preset without --run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--caches", choices=("off", "on"), default="off",
                   help="CPU kernel caches: off as detection leaves them (default), on kept")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--overwrite", action="store_true", help="replace --json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    shape = check_args(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        write_scans(folder, args.scans, shape)
        run = args.run or _tiny_run(Path(tmp), args.preset)
        rows = measure(folder, run, args.scans, args.device, caches=args.caches == "on")
    print(table(rows))
    if args.json is not None:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(args.json, {"shape": list(shape), "caches": args.caches,
                                      "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
