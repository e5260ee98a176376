"""Evaluation time and peak memory for N synthetic 1 mm volumes (streamed).

Each volume is 182 x 218 x 182 (MNI 1 mm) with an ellipsoidal brain of about 1.5 M voxels,
a random map and a few spherical lesion blobs, generated on the fly: the evaluation sees one
volume at a time, so peak RSS must stay flat as N grows.

    OMP_NUM_THREADS=1 python -m benchmarks.speed.bench_evaluation --volumes 100
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from benchmarks.args import at_least
from disyre.evaluation import Case, evaluate_cases

SHAPE = (182, 218, 182)


def _brain() -> np.ndarray:
    z, y, x = np.ogrid[[slice(0, s) for s in SHAPE]]
    c = [s / 2 for s in SHAPE]
    r = ((z - c[0]) / 62) ** 2 + ((y - c[1]) / 80) ** 2 + ((x - c[2]) / 72) ** 2
    return r < 1.0


def _cases(n: int, brain: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        amap = rng.random(SHAPE, dtype=np.float32) * 0.6
        lab = np.zeros(SHAPE, bool)
        for _ in range(rng.integers(1, 4)):
            c = rng.integers([60, 70, 60], [120, 150, 120])
            r = int(rng.integers(5, 15))
            sl = tuple(slice(ci - r, ci + r) for ci in c)
            zz, yy, xx = np.ogrid[[slice(-r, r)] * 3]
            lab[sl] |= (zz**2 + yy**2 + xx**2) < r * r
        lab &= brain
        amap[lab] += 0.4 * rng.random(int(lab.sum()), dtype=np.float32)
        amap *= brain
        yield Case(f"vol{i:03d}", amap, lab, brain)


def _healthy(n: int, brain: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.random(SHAPE, dtype=np.float32) * 0.6 * brain, brain


def _rss_gib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 / (1024 if sys.platform == "darwin" else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--volumes", type=at_least(1), default=100)
    ap.add_argument("--healthy", type=at_least(1), default=5)
    ap.add_argument("--bootstrap", type=at_least(0), default=1000)
    args = ap.parse_args()
    brain = _brain()
    print(f"{args.volumes} volumes {SHAPE}, {int(brain.sum())} brain voxels each; "
          f"{args.healthy} healthy volumes for thresholds")
    # time of generating the synthetic data alone, to subtract
    t0 = time.perf_counter()
    for _ in _cases(min(args.volumes, 3), brain, 1):
        pass
    gen = (time.perf_counter() - t0) / min(args.volumes, 3)
    rss0 = _rss_gib()
    t0 = time.perf_counter()
    res = evaluate_cases(_cases(args.volumes, brain, 0), _healthy(args.healthy, brain, 1),
                         n_boot=args.bootstrap)
    total = time.perf_counter() - t0
    n = args.volumes + args.healthy
    print(f"pixel AP {res.pixel.ap:.4f} AUROC {res.pixel.auroc:.4f} "
          f"best Dice {res.pixel.best_dice:.4f}  ({res.pixel.n_pos} lesion voxels)")
    print(f"total {total:.1f} s; {total / n:.2f} s per volume including generation, "
          f"~{total / n - gen:.2f} s per volume of evaluation (generation {gen:.2f} s)")
    print(f"peak RSS {_rss_gib():.2f} GiB (after setup {rss0:.2f} GiB; one volume's map "
          f"{np.prod(SHAPE) * 4 / 2**30:.3f} GiB)")


if __name__ == "__main__":
    main()
