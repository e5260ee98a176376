"""Two trainings side by side (one thread each) against one after the other (every thread each).

The demo trains DISYRE and the denoising autoencoder; on a CPU
:func:`disyre.runtime.decide_train_jobs` runs them side by side. This measures, with the
demo's network and batch (:class:`disyre.demo.run.DemoSettings`) on a demo cache, the wall
time of ``--steps`` steps of both methods trained

- one after the other, each with every core (``train_many(workers=1)``), and
- side by side, each in its own process with ``cores // 2`` threads (``workers=2``),

``--reps`` times each in turn, and prints the medians and their ratio (throughput of side by
side over one after the other), with the CPU. Run it alone: the times are wall-clock.

Usage::

    python -m benchmarks.speed.bench_side_by_side --cache demo_out/cache --steps 60 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.args import at_least, existing_dir, new_file


def _jobs(cache_dir: Path, steps: int, root: Path) -> list[Any]:
    from disyre.data.cache import VolumeCache
    from disyre.demo.run import DemoSettings
    from disyre.methods import get_method
    from disyre.training.parallel import TrainJob
    from disyre.training.prepare import prepare_run

    cache = VolumeCache.open(cache_dir)
    tr = [e for e in cache.entries if e.split == "train"]
    vols, masks = [e.image() for e in tr], [e.mask() for e in tr]
    base = DemoSettings(steps=steps).run_config()
    base.train.val_every = base.train.ckpt_every = steps
    out = []
    for name in ("dag", "dae"):
        rc = get_method(name).run_config(base)
        cb = prepare_run(rc, vols, source=str(cache_dir), train_masks=masks,
                         fit=get_method(name).codebook)
        out.append(TrainJob(rc, vols, None, root / name, codebook=cb if cb else None,
                            train_masks=masks))
    return out


def measure(cache_dir: Path, steps: int, reps: int) -> dict[str, Any]:
    """Median wall seconds of both ways over ``reps`` alternating repetitions."""
    from disyre.runtime import cpu_info, usable_cores
    from disyre.training.parallel import train_many

    cores = usable_cores()
    times: dict[str, list[float]] = {"one after the other": [], "side by side": []}
    for _ in range(reps):
        for way, workers in (("one after the other", 1), ("side by side", 2)):
            with tempfile.TemporaryDirectory() as tmp:
                jobs = _jobs(cache_dir, steps, Path(tmp))
                t0 = time.perf_counter()
                train_many(jobs, workers=workers,
                           threads_each=max(1, cores // workers), progress=False)
                times[way].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"cpu": cpu_info().describe(), "cores": cores, "steps": steps, "reps": reps,
            "seconds": times, "median_s": med,
            "throughput_ratio": med["one after the other"] / med["side by side"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=existing_dir, required=True,
                    help="a demo cache (demo_out/cache)")
    ap.add_argument("--steps", type=at_least(1), default=60,
                    help="training steps of each method")
    ap.add_argument("--reps", type=at_least(1), default=3, help="repetitions of each way")
    ap.add_argument("--json", type=new_file, help="also write the figures here")
    args = ap.parse_args(argv)
    if not (args.cache / "index.json").is_file():
        ap.error(f"--cache {args.cache}: not a disyre cache folder (no index.json)")
    res = measure(args.cache, args.steps, args.reps)
    print(f"CPU: {res['cpu']}, {res['cores']} cores; {args.steps} steps of dag and dae, "
          f"{args.reps} reps")
    for k, v in res["median_s"].items():
        print(f"{k:>22}: median {v:.1f} s  ({', '.join(f'{x:.1f}' for x in res['seconds'][k])})")
    print(f"side by side / one after the other throughput: {res['throughput_ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
