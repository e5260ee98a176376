"""AnoDDPM's walk: how many network passes does detection need? Measured on a trained run.

AnoDDPM noises a scan to step 249 (lambda = 250) and walks back; the full walk is 250
network passes per slice. disyre's default walk strides evenly over 25 steps
(``inference.steps=25``). This experiment maps the first ``--scans`` lesioned test scans of a
cache with each walk length, and prints per length: the pooled pixel AP of those scans (brain
voxels; the 3-voxel median filter as detection applies it), the correlation of each map
with the full walk's map, and seconds per scan. Thresholds are not fit (the full walk over
the healthy scans too would take hours on a CPU), so this compares the walks with each
other, not with the benchmark's table.

Usage::

    python -m benchmarks.experiments.walk_length --run bench/anoddpm/run \\
        --cache demo_out/cache --steps 250,25,10 --scans 3

Run it alone: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.args import at_least, existing_dir, int_list, new_file

log = logging.getLogger("walk_length")


def measure(run: Path, cache_dir: Path, steps: list[int], *, scans: int = 3,
            split: str = "test", device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Map the first ``scans`` lesioned ``split`` scans once per walk length.

    Returns:
        ``{"rows": [{"steps", "ap", "corr_with_first", "seconds_per_scan"}, ...], ...}``;
        the first length is the reference of the correlation.

    Example:
        >>> measure(Path("bench/anoddpm/run"), Path("demo_out/cache"), [250, 25])  # doctest: +SKIP
    """
    from sklearn.metrics import average_precision_score

    from disyre.data.cache import VolumeCache
    from disyre.inference import Detector
    from disyre.inference.detector import with_inference_overrides

    cache = VolumeCache.open(cache_dir)
    entries = [e for e in cache.entries if e.split == split and e.files.get("lesion")][:scans]
    if not entries:
        raise SystemExit(f"{cache_dir}: no lesioned scans in split {split!r}")
    det = Detector.from_checkpoint(run, device=device)
    det.seed = seed
    if det.cfg.corruption.name != "anoddpm":
        raise SystemExit(f"{run}: a {det.cfg.corruption.name} run, not anoddpm")
    rows, first_maps = [], None
    for n in steps:
        det.cfg = with_inference_overrides(det.cfg, {"steps": n})
        maps, labels = [], []
        t0 = time.perf_counter()
        for e in entries:
            brain = e.mask() > 0
            amap = det.map_preprocessed(np.array(e.image()), brain)
            maps.append(amap[brain])
            labels.append(e.lesion()[brain] > 0)
        secs = (time.perf_counter() - t0) / len(entries)
        score, label = np.concatenate(maps), np.concatenate(labels)
        if first_maps is None:
            first_maps = score
        row = {"steps": n, "ap": float(average_precision_score(label, score)),
               "corr_with_first": float(np.corrcoef(first_maps, score)[0, 1]),
               "seconds_per_scan": round(secs, 1)}
        log.info("steps=%d: AP %.4f, %.1f s per scan", n, row["ap"], secs)
        rows.append(row)
    return {"run": str(run), "cache": str(cache_dir), "scans": [e.subject for e in entries],
            "lesion_fraction": float(np.concatenate(labels).mean()), "rows": rows}


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    lines = [f"{result['run']}: {len(result['scans'])} lesioned scans "
             f"({', '.join(result['scans'])}), lesion fraction of the brain "
             f"{result['lesion_fraction']:.4f}", "",
             "| walk (network passes) | pixel AP | correlation with the first row's map | "
             "s per scan |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['steps']} | {r['ap']:.3f} | {r['corr_with_first']:.3f} | "
                     f"{r['seconds_per_scan']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=existing_dir, required=True, help="a trained anoddpm run folder")
    p.add_argument("--cache", type=existing_dir, required=True, help="the cache it is evaluated on")
    p.add_argument("--steps", type=int_list(1), default="250,25,10",
                   help="walk lengths, the first the "
                   "reference (default 250,25,10)")
    p.add_argument("--scans", type=at_least(1), default=3, help="lesioned test scans (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=new_file, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure(args.run, args.cache, args.steps,
                     scans=args.scans, device=args.device)
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
