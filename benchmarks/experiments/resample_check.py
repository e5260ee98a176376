"""Voxel size: the same test scans at the training spacing and upsampled, mapped by one model.

``disyre detect`` resamples a scan whose voxel size differs from the training data's to the
training spacing and interpolates the map back onto the scan's grid. This experiment checks
it on a trained run: each lesioned test scan of a manifest (and its label) is upsampled to
``--mm`` voxels (trilinear image, nearest-neighbour label, the same field of view), both
versions are mapped, and it prints the pooled pixel AP of each grid (brain voxels of every
scan pooled), their difference, and the largest difference of a scan's volume score. With
``--no-resample`` the upsampled copies are mapped at their own voxel size (the behaviour
before resampling) for comparison.

Usage::

    python -m benchmarks.experiments.resample_check --run bench/dag/run \\
        --manifest demo_out/prep/manifest.csv --mm 1 --json resample.json

Every argument is checked before any scan is read.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("resample_check")


def upsampled_copy(src: Path, dst: Path, mm: float, order: int) -> Path:
    """Write ``src`` resampled to ``mm`` voxels over the same field of view (``order`` 1:
    trilinear, 0: nearest neighbour); the affine keeps its orientation and outer edges.

    A trilinear copy keeps the scan's brain (its non-zero voxels, nearest neighbour) and is
    zero outside it, as a scan of the same head at ``mm`` would be: interpolation alone
    would add a rim of half-bright voxels around the brain that the original never had."""
    import nibabel as nib
    from scipy import ndimage

    img = nib.load(str(src))
    data = np.asarray(img.dataobj, np.float32).reshape(img.shape[:3])
    aff = np.asarray(img.affine, float)
    sizes = np.sqrt((aff[:3, :3] ** 2).sum(0))
    factors = sizes / mm
    out = ndimage.zoom(data, factors, order=order, grid_mode=True, mode="nearest")
    if order > 0:
        out *= ndimage.zoom(data > 0, factors, order=0, grid_mode=True, mode="nearest")
    new = aff.copy()
    new[:3, :3] = aff[:3, :3] / factors
    # the first voxel's centre moves half a new voxel inwards from the old grid's edge
    new[:3, 3] = aff[:3, :3] @ (-0.5 + 0.5 / factors) + aff[:3, 3]
    nib.save(nib.Nifti1Image(out.astype(np.uint8 if order == 0 else np.float32), new), dst)
    return dst


def measure(run: Path, manifest: Path, *, mm: float = 1.0, scans: int = 0,
            resample: bool = True, device: str = "auto") -> dict[str, Any]:
    """Map every lesioned test scan of ``manifest`` (the first ``scans``; 0 = all) at its own
    voxel size and upsampled to ``mm``.

    Returns:
        ``{"ap": {"native", "upsampled"}, "ap_difference", "max_score_difference", "rows"}``.

    Example:
        >>> measure(Path("bench/dag/run"), Path("prep/manifest.csv"))  # doctest: +SKIP
    """
    from disyre.data.manifest import read_manifest
    from disyre.data.nifti import load_mask, load_scan
    from disyre.evaluation import metrics as M
    from disyre.inference import Detector

    rows = [r for r in read_manifest(manifest) if r.split == "test" and r.lesion_mask]
    rows = rows[:scans] if scans else rows
    if not rows:
        raise SystemExit(f"{manifest}: no lesioned rows of split 'test'")
    det = Detector.from_checkpoint(run, device=device)
    det.resample = resample
    per: list[dict[str, Any]] = []
    acc = {k: M.PixelAccumulator() for k in ("native", "upsampled")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in rows:
                img = upsampled_copy(Path(r.image), Path(tmp) / "img.nii.gz", mm, 1)
                lab = upsampled_copy(Path(r.lesion_mask), Path(tmp) / "lab.nii.gz", mm, 0)
                row: dict[str, Any] = {"subject": r.subject}
                for key, path, lpath in (("native", Path(r.image), Path(r.lesion_mask)),
                                         ("upsampled", img, lab)):
                    scan = load_scan(path)
                    res = det.predict(scan)
                    label = load_mask(lpath, like=scan, binarize=True)
                    brain = res.full(res.mask_cropped).astype(bool)
                    acc[key].update(res.full(res.map_cropped), label, brain)
                    row[f"score_{key}"] = float(res.score)
                row["score_difference"] = abs(row["score_native"] - row["score_upsampled"])
                log.info("%s: score %.4f at its own voxel size, %.4f at %g mm", r.subject,
                         row["score_native"], row["score_upsampled"], mm)
                per.append(row)
        ap = {k: float(a.compute().ap) for k, a in acc.items()}
    finally:
        for a in acc.values():
            a.close()
    return {"run": str(run), "manifest": str(manifest), "mm": mm, "resample": resample,
            "ap": ap, "ap_difference": abs(ap["native"] - ap["upsampled"]),
            "max_score_difference": max(p["score_difference"] for p in per), "rows": per}


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad arguments before any work (one line each, naming the argument)."""
    from disyre.training.checkpoint import latest_checkpoint

    if not args.run.exists() or latest_checkpoint(args.run) is None:
        raise SystemExit(f"--run {args.run}: no trained run or checkpoint there")
    if not args.manifest.is_file():
        raise SystemExit(f"--manifest {args.manifest}: file not found")
    if not args.mm > 0:
        raise SystemExit(f"--mm {args.mm}: must be > 0")
    if args.scans < 0:
        raise SystemExit(f"--scans {args.scans}: must be >= 0 (0 = every lesioned test scan)")
    if args.json is not None:
        if args.json.exists() and not args.overwrite:
            raise SystemExit(f"--json {args.json}: exists; pass --overwrite to replace it")
        if not args.json.parent.is_dir():
            raise SystemExit(f"--json {args.json}: folder {args.json.parent} not found")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a trained run folder")
    p.add_argument("--manifest", type=Path, required=True,
                   help="manifest whose lesioned 'test' rows are mapped")
    p.add_argument("--mm", type=float, default=1.0, help="voxel size of the copies (default 1)")
    p.add_argument("--scans", type=int, default=0, help="first N lesioned test scans (0 = all)")
    p.add_argument("--no-resample", action="store_true",
                   help="map the copies at their own voxel size (the behaviour before)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("--overwrite", action="store_true", help="replace --json")
    args = p.parse_args(argv)
    check_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = measure(args.run, args.manifest, mm=args.mm, scans=args.scans,
                  resample=not args.no_resample, device=args.device)
    print(f"pixel AP {res['ap']['native']:.4f} at the scans' own voxel size, "
          f"{res['ap']['upsampled']:.4f} at {args.mm:g} mm (difference "
          f"{res['ap_difference']:.4f}); largest score difference "
          f"{res['max_score_difference']:.4f} over {len(res['rows'])} scan(s)")
    if args.json is not None:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
