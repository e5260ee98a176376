"""Raw-scan preprocessing benchmark: seconds and peak memory per stage per 1 mm head, and
skull-strip Dice on synthetic and real heads.

Each configuration runs ``disyre.preprocessing`` on one head in a fresh subprocess (so peak RSS
is its own): the synthetic 1 mm 256^3 T1 head of :mod:`disyre.demo.raw_head` (MNI152 brain with
scalp and skull, random affine pose, +-30 % bias field), with the default recipe (N4, deepbet,
affine registration to the 1 mm MNI152 brain, resampling, QC figure). A sampler thread reads
the process's RSS every 20 ms; each stage's peak is the highest RSS seen while it ran.

``--real IMAGE[:REFERENCE]`` adds real head scans: the full recipe runs on each, and with a
reference (a brain mask, or a skull-stripped image whose non-zero voxels are the brain) the
skull-strip Dice is reported. Real heads that install without a download: Colin27 (MNI's
27-scan average of one subject, with skull) and its FSL-BET brain, from Debian's
``mricron-data`` (``apt-get install mricron-data``)::

    python -m benchmarks.speed.bench_preprocessing --real \\
        /usr/share/mricron/templates/ch2.nii.gz:/usr/share/mricron/templates/ch2bet.nii.gz

Examples::

    python -m benchmarks.speed.bench_preprocessing                       # 1 mm head, affine
    python -m benchmarks.speed.bench_preprocessing --registration syn --threads 2
    python -m benchmarks.speed.bench_preprocessing --device cuda         # deepbet on the GPU

Target (issue): <= 60 s and <= 4 GB per 1 mm 256^3 head on the 2-core CPU with an affine
registration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.args import at_least, new_file, positive

TARGET_S, TARGET_GB = 60.0, 4.0
STAGES = ("load", "n4", "skull_strip", "register", "resample", "write")


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _child(args: argparse.Namespace) -> dict:
    """One head, in this (fresh) process; returns the figures."""
    from disyre.preprocessing import steps

    steps.set_threads(args.threads)
    import nibabel as nib
    import numpy as np

    from disyre.preprocessing.batch import Job, preprocess_one
    from disyre.preprocessing.recipe import PreprocessConfig

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_gb()))
            time.sleep(0.02)

    work = Path(tempfile.mkdtemp(prefix="bench_pre_"))
    truth = None
    if args.image == "synthetic":
        from disyre.demo.raw_head import make_raw_head

        head = make_raw_head(seed=args.seed, voxel_mm=1.0, shape=(256, 256, 256))
        path = work / "synthetic_head.nii.gz"
        nib.save(head.nifti(), str(path))
        truth = head.brain
        del head
    else:
        path = Path(args.image)
        if args.reference:
            ref = nib.load(args.reference)
            truth = np.asarray(ref.dataobj) > 0
    cfg = PreprocessConfig(spacing=args.spacing, registration=args.registration)
    base = _rss_gb()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    rec = preprocess_one(Job(path.name.split(".")[0], path), work / "out", cfg,
                         device=args.device)
    t_end = time.perf_counter()
    stop.set()
    thread.join()
    secs = dict(rec["seconds"])
    secs["write"] = max(0.0, rec["seconds_total"] - sum(secs.values()))
    # stage boundaries: the pipeline's stages ran in this order, back to back from t0
    peaks, start = {}, t0
    for stage in [s for s in STAGES if s in secs]:
        end = start + secs[stage]
        inside = [r for t, r in samples if start <= t <= end + 0.02]
        peaks[stage] = round(max(inside), 2) if inside else None
        start = end
    out = {"image": str(path), "registration": args.registration, "threads": args.threads,
           "device": args.device, "seconds": {k: round(v, 1) for k, v in secs.items()},
           "total_s": round(t_end - t0, 1), "peak_gb": peaks,
           "peak_gb_total": round(max(r for _, r in samples), 2), "baseline_gb": round(base, 2),
           "dice_template": rec["dice_template"], "brain_ml": rec["brain_ml"]}
    if truth is not None:
        from disyre.preprocessing.steps import dice

        folder = work / "out" / path.name.split(".")[0]
        mask = np.asarray(nib.load(str(next(folder.glob("*_native_mask.nii.gz")))).dataobj) > 0
        out["skull_strip_dice"] = round(dice(mask, truth), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registration", choices=["rigid", "affine", "syn"], default="affine")
    p.add_argument("--spacing", type=positive, default=None, help="output grid (default 1 mm)")
    p.add_argument("--threads", type=at_least(1), default=2, help="ITK/torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="deepbet's device")
    p.add_argument("--seed", type=int, default=0, help="pose/bias/noise of the synthetic head")
    p.add_argument("--real", nargs="*", default=[], metavar="IMAGE[:REFERENCE]",
                   help="real head scans (and a brain mask or skull-stripped image)")
    p.add_argument("--no-synthetic", action="store_true", help="only the --real heads")
    p.add_argument("--json", type=new_file, default=None, help="also write the figures here")
    p.add_argument("--_child", nargs=2, metavar=("IMAGE", "REFERENCE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        args.image, args.reference = args._child[0], args._child[1] or None
        print(json.dumps(_child(args)))
        return 0
    heads = [] if args.no_synthetic else [("synthetic", "")]
    heads += [tuple((r.split(":", 1) + [""])[:2]) for r in args.real]
    rows = []
    for image, ref in heads:
        cmd = [sys.executable, "-m", "benchmarks.speed.bench_preprocessing", "--_child", image,
               ref, "--registration", args.registration, "--threads", str(args.threads),
               "--device", args.device, "--seed", str(args.seed)]
        if args.spacing:
            cmd += ["--spacing", str(args.spacing)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:], file=sys.stderr)
            return res.returncode
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for r in rows:
        name = Path(r["image"]).name
        print(f"\n{name}: {r['registration']} registration, {r['threads']} thread(s), "
              f"deepbet on {r['device']}")
        print(f"  {'stage':<12} {'seconds':>8} {'peak GB':>8}")
        for s in STAGES:
            if s in r["seconds"]:
                print(f"  {s:<12} {r['seconds'][s]:>8.1f} {r['peak_gb'].get(s) or 0:>8.2f}")
        ok = r["total_s"] <= TARGET_S and r["peak_gb_total"] <= TARGET_GB
        print(f"  {'total':<12} {r['total_s']:>8.1f} {r['peak_gb_total']:>8.2f}   target "
              f"<= {TARGET_S:.0f} s, <= {TARGET_GB:.0f} GB: {'met' if ok else 'NOT met'}")
        extra = f", skull-strip Dice {r['skull_strip_dice']:.3f}" if "skull_strip_dice" in r \
            else ""
        print(f"  brain {r['brain_ml']:.0f} mL, template Dice {r['dice_template']:.3f}{extra}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
