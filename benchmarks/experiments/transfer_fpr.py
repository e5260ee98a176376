"""Where DISYRE's false positives on healthy brains lie, and what moves the out-of-range FPR.

Takes a finished demo (``disyre demo --out DEMO``) and either

- ``--run``: analyses its DISYRE model as it is, or
- ``--label NAME``: trains the demo's DISYRE again with one change (``--extra-train N`` more
  training subjects drawn from the same ``typical`` ranges, ``--p-elastic P`` for the
  authors' elastic deformation, ``--median-filter K`` on the maps) on the same validation,
  test and older-looking subjects, and evaluates it like the demo (thresholds from the
  validation scans).

For each model it prints pixel AP, the held-out and out-of-range healthy FPR at the 1 %
threshold, and where the false positives of the healthy test subjects lie: within 6 mm of
the lateral ventricles ("periventricular"), within 6 mm of the brain's outline ("cortex")
or elsewhere, as the fraction of each region's voxels flagged and the share of all false
positives. Each row is kept in ``OUT/transfer.json``.

Usage::

    python -m benchmarks.experiments.transfer_fpr --demo demo_out --out transfer --run
    python -m benchmarks.experiments.transfer_fpr --demo demo_out --out transfer --label n48 \\
        --extra-train 24

Run it alone (``flock /tmp/disyre-cpu.lock ...``): it trains for minutes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from benchmarks.args import at_least, existing_dir
from benchmarks.experiments.fidelity import headline  # the same numbers from a metrics.json

log = logging.getLogger("transfer_fpr")

#: distance (mm) from the ventricles / the brain's outline that counts as "near"
NEAR_MM = 6.0


def regions(maps: dict[str, np.ndarray], voxel_mm: float) -> dict[str, np.ndarray]:
    """Periventricular, cortical and remaining brain voxels of one subject's tissue maps."""
    brain = maps["brain"] > 0
    vent = maps["ventricles"] > 0.5
    near_v = brain & (ndimage.distance_transform_edt(~vent, sampling=voxel_mm) <= NEAR_MM)
    near_c = (brain & (ndimage.distance_transform_edt(brain, sampling=voxel_mm) <= NEAR_MM)
              & ~near_v)
    return {"periventricular": near_v, "cortex": near_c, "elsewhere": brain & ~near_v & ~near_c}


def where(run: Path, threshold: float, manifest: Path, seed: int, resolution: int,
          **overrides: Any) -> dict[str, dict[str, Any]]:
    """False positives of the healthy test and transfer subjects, by region (``overrides``:
    inference settings, e.g. ``levels=[0]``)."""
    from disyre.demo.cohort import TRANSFER_SPLIT, subject_tissue_maps
    from disyre.inference import Detector

    det = Detector.from_checkpoint(run, **overrides)
    out: dict[str, dict[str, Any]] = {"levels": list(det.inference.levels)}
    for split, profile in (("test", "typical"), (TRANSFER_SPLIT, "older")):
        counts: dict[str, list[int]] = {}
        subjects = []
        for r in csv.DictReader(open(manifest)):
            if r["split"] != split or r["lesion_mask"]:
                continue
            idx = int(r["subject"].rsplit("-", 1)[1])
            maps = subject_tissue_maps(idx, seed=seed, resolution=resolution, anatomy=profile)
            amap = det.predict(manifest.parent / r["image"]).anomaly_map
            fp = amap > threshold
            for name, reg in regions(maps, float(resolution)).items():
                c = counts.setdefault(name, [0, 0])
                c[0] += int((fp & reg).sum())
                c[1] += int(reg.sum())
            subjects.append(r["subject"])
        n_fp = sum(c[0] for c in counts.values())
        n_brain = sum(c[1] for c in counts.values())
        out[split] = {"subjects": subjects, "fpr": n_fp / max(1, n_brain),
                      **{k: {"rate": c[0] / max(1, c[1]), "share": c[0] / max(1, n_fp)}
                         for k, c in counts.items()}}
    return out


def retrain(demo: Path, out: Path, args: argparse.Namespace) -> Path:
    """Train and evaluate the demo's DISYRE with the requested change; its method folder."""
    from disyre.benchmark import run_benchmark
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.demo.cohort import _save_nifti, make_subject
    from disyre.demo.run import DemoSettings

    settings = json.loads((demo / "demo.json").read_text())["settings"]
    coh = settings["cohort"]
    cohort = demo / "cohort"
    rows = list(csv.DictReader(open(cohort / "manifest.csv")))
    for r in rows:
        for k in ("image", "lesion_mask", "brain_mask", "t1"):
            if r.get(k):
                r[k] = str((cohort / r[k]).resolve())
    extra = out / "extra"
    (extra / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(cohort / "preprocessing.json", extra / "preprocessing.json")
    first = 1000 + len(rows)  # beyond every index of the cohort
    for i in range(first, first + args.extra_train):
        path = extra / "images" / f"demo-{i:04d}.nii.gz"
        if not path.exists():
            s = make_subject(i, seed=coh["seed"], contrast=coh["contrast"],
                             resolution=coh["resolution"])
            _save_nifti(s.image, s.affine, path, np.float32)
        rows.append({**{k: "" for k in rows[0]}, "subject": f"demo-{i:04d}",
                     "image": str(path), "split": "train", "contrast": coh["contrast"]})
    label_dir = out / args.label
    label_dir.mkdir(parents=True, exist_ok=True)
    manifest = label_dir / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    s = DemoSettings(steps=args.steps or settings["steps"])
    cfg = s.run_config()
    cfg.inference.median_filter = args.median_filter
    if args.p_elastic is not None:
        import importlib

        aug = importlib.import_module("disyre.corruption.augment")
        aug.AUTHORS_AUGMENT = dataclasses.replace(aug.AUTHORS_AUGMENT, p_elastic=args.p_elastic)
    cache = out / "cache"
    if not cache.exists():
        shutil.copytree(demo / "cache", cache)
    c = prepare_cache(read_manifest(manifest), cache, cfg.intensity, progress=False)
    run_benchmark(["dag"], c, label_dir / "benchmark", cfg=cfg, steps=s.steps, seed=s.seed,
                  device="auto", n_boot=settings["n_boot"], overwrite=True, progress=False,
                  title=args.label)
    return label_dir / "benchmark" / "dag"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=existing_dir, default="demo_out", help="a finished demo")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", action="store_true", help="analyse the demo's own DISYRE model")
    ap.add_argument("--label", help="name of the retrained row")
    ap.add_argument("--extra-train", type=at_least(0), default=0)
    ap.add_argument("--p-elastic", type=float, default=None,
                    help="probability of the elastic deformation (authors: 0.1)")
    ap.add_argument("--median-filter", type=at_least(0), default=0)
    ap.add_argument("--steps", type=at_least(1), default=None, help="default: the demo's")
    ap.add_argument("--each-level", action="store_true",
                    help="also the FPRs of each ensemble level's map alone at the threshold")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.run == bool(args.label):
        ap.error("give exactly one of --run and --label")
    from benchmarks.speed.machine import machine_info

    args.out.mkdir(parents=True, exist_ok=True)
    settings = json.loads((args.demo / "demo.json").read_text())["settings"]
    if args.run:
        label, method = "demo", args.demo / "benchmark" / "dag"
    else:
        label, method = args.label, retrain(args.demo, args.out, args)
    metrics = json.loads((method / "report" / "metrics.json").read_text())
    threshold = json.loads((method / "report" / "thresholds.json").read_text())["fpr"]["0.01"]
    row = {"label": label, "extra_train": args.extra_train, "p_elastic": args.p_elastic,
           "median_filter": args.median_filter, **headline(metrics),
           "where": where(method / "run", threshold, args.demo / "cohort" / "manifest.csv",
                          settings["cohort"]["seed"], settings["cohort"]["resolution"]),
           "cpu": machine_info()["cpu"]}
    if args.each_level:
        for lv in row["where"]["levels"]:
            w = where(method / "run", threshold, args.demo / "cohort" / "manifest.csv",
                      settings["cohort"]["seed"], settings["cohort"]["resolution"], levels=[lv])
            row["where"][f"level {lv}"] = {k: w[k]["fpr"] for k in ("test", "transfer")}
            print(f"level {lv} alone at the ensemble's 1 % threshold: held-out FPR "
                  f"{100 * w['test']['fpr']:.2f} %, "
                  f"out-of-range {100 * w['transfer']['fpr']:.2f} %")
    store = args.out / "transfer.json"
    rows = json.loads(store.read_text()) if store.exists() else {}
    rows[label] = row
    store.write_text(json.dumps(rows, indent=1))
    print("| row | pixel AP [95 % CI] | held-out FPR @ 1 % | out-of-range FPR @ 1 % | "
          "periventricular flagged, typical / older | their share of the older FPs |")
    print("|---|---|---|---|---|---|")
    for r in rows.values():
        w = r["where"]
        lo, hi = r["ap_ci"]
        print(f"| {r['label']} | {r['ap']:.3f} [{lo:.3f}, {hi:.3f}] | "
              f"{100 * r['heldout_fpr_1pct']:.2f} % | {100 * r['transfer_fpr_1pct']:.2f} % "
              f"| {100 * w['test']['periventricular']['rate']:.1f} / "
              f"{100 * w['transfer']['periventricular']['rate']:.1f} % | "
              f"{100 * w['transfer']['periventricular']['share']:.0f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
