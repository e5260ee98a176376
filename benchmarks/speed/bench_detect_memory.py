"""Peak memory of ``disyre detect`` on a folder: one scan against many (a leak grows with them).

Writes ``--scans`` synthetic brains of slightly different sizes (``--shape`` give or take 8
voxels per axis: a real folder's scans differ) as NIfTI files, then runs the library behind
``disyre detect`` (:func:`disyre.inference.detect_files`) on the first scan and on all of them,
each in a fresh process, and prints the peak resident memory (``ru_maxrss``) of each run and
their ratio, plus the resident memory after each scan of the long run (growth that goes on
scan after scan is a leak; a plateau is the allocator keeping its peak). The network is the
``--preset`` network with random weights (memory does not depend on them), or ``--run``.

Usage::

    python -m benchmarks.speed.bench_detect_memory --scans 30
    python -m benchmarks.speed.bench_detect_memory --scans 30 --run runs/t2 --shape 96,112,96

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


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Detect the first ``spec["n"]`` scans of ``spec["folder"]`` (run in a fresh process)."""
    import logging

    from benchmarks.speed.machine import peak_rss_gib
    from disyre.inference import Detector, detect_files

    logging.disable(logging.WARNING)
    src = Path(spec["folder"])
    scans = sorted(src.glob("*.nii.gz"))[: spec["n"]]
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        inp.mkdir()
        for s in scans:
            (inp / s.name).symlink_to(s)
        det = Detector.from_checkpoint(spec["run"], device=spec["device"])
        trace: list[float] = []

        def predict(d: Any, scan: Path, **kw: Any) -> Any:
            res = d.predict(scan, **kw)
            trace.append(round(_rss_mib(), 1))
            return res

        summary = detect_files(inp, Path(tmp) / "out", det, progress=False, predict=predict)
        if not summary.ok:
            raise SystemExit(summary.report())
    return {"n": spec["n"], "peak_rss_gib": peak_rss_gib(), "rss_mib_after_each": trace}


def measure(folder: Path, run: Path, scans: int, device: str = "cpu") -> list[dict[str, Any]]:
    """Peak memory of detection on the first scan and on the first ``scans`` scans."""
    rows = []
    for n in sorted({1, scans}):
        spec = {"folder": str(folder), "run": str(run), "n": n, "device": device}
        r = subprocess.run([sys.executable, "-m", CHILD, "--child", json.dumps(spec)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"detection of {n} scan(s) failed:\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The peaks, their ratio to one scan's, and the memory trace of the longest run."""
    base = rows[0]["peak_rss_gib"]
    lines = ["| scans | peak RSS (GiB) | vs one scan |", "|---|---|---|"]
    lines += [f"| {r['n']} | {r['peak_rss_gib']:.3f} | {r['peak_rss_gib'] / base:.3f} |"
              for r in rows]
    trace = rows[-1]["rss_mib_after_each"]
    lines += ["", "resident MiB after each scan of the longest run: "
              + " ".join(f"{v:.0f}" for v in trace)]
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
        rows = measure(folder, run, args.scans, args.device)
    print(table(rows))
    if args.json is not None:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(args.json, {"shape": list(shape), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
