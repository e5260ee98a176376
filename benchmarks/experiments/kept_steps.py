"""Pixel AP of a run's kept checkpoints, as ``disyre benchmark --eval-steps`` evaluates them.

A benchmark evaluates the checkpoints kept at ``--eval-steps`` (``train.keep_steps``) once
its method has finished training. A run that was stopped before (a time limit, a crash) or
trained outside a benchmark still holds them: this evaluates each kept step that exists with
the benchmark's own evaluation (:func:`disyre.benchmark.evaluate_kept_steps`: thresholds on
the cache's healthy validation scans, pixel AP over its lesioned test scans) and prints one
row per step. A step the run never reached prints ``-``.

Usage::

    python -m benchmarks.experiments.kept_steps --run bench/pddpm/pddpm/run \\
        --cache demo_out/cache --steps 650,1300,2600 --json pddpm_steps.json

Every argument is checked before any scan is read.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from benchmarks.args import existing_dir, new_file

log = logging.getLogger("kept_steps")


def measure(run: Path, cache_dir: Path, steps: list[int], *, device: str = "auto",
            seed: int = 0) -> dict[str, Any]:
    """``{"run", "method", "ap": {step: AP or None}}`` of ``run``'s kept checkpoints."""
    import json

    from disyre.benchmark import _split_entries, evaluate_kept_steps
    from disyre.data.cache import VolumeCache

    cache = VolumeCache.open(cache_dir)
    _train, val_e, lesioned, _healthy = _split_entries(cache, "val", "test", None)
    rec = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    method = ((rec.get("run") or {}).get("corruption") or {}).get("name")
    ap = evaluate_kept_steps(run.parent.name, run, steps, val_e, lesioned, device=device,
                             seed=seed, progress=False)
    return {"run": str(run), "method": method, "cache": str(cache_dir),
            "n_test_lesion": len(lesioned), "n_val": len(val_e), "ap": ap}


def check_args(args: argparse.Namespace) -> list[int]:
    """Refuse bad arguments before any work (one line each); returns the steps."""
    from disyre.benchmark import parse_eval_steps
    from disyre.config import ConfigError

    if not (args.run / "checkpoints").is_dir():
        raise SystemExit(f"--run {args.run}: no checkpoints/ folder (not a run)")
    from disyre.data.cache import INDEX_NAME

    if not (args.cache / INDEX_NAME).is_file():
        raise SystemExit(f"--cache {args.cache}: no {INDEX_NAME} (not a volume cache)")
    try:
        steps = parse_eval_steps(args.steps)
    except ConfigError as e:
        raise SystemExit(f"--steps {args.steps}: {str(e).replace('--eval-steps ', '')}") from e
    if not steps:
        raise SystemExit(f"--steps {args.steps}: no step given")
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=existing_dir, required=True, help="a run folder")
    p.add_argument("--cache", type=existing_dir, required=True,
                   help="the volume cache the run's benchmark used (its val and test splits)")
    p.add_argument("--steps", required=True, help="comma-separated kept steps, e.g. 650,1300")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="the benchmark's seed")
    p.add_argument("--json", type=new_file, default=None, help="also write the result here")
    p.add_argument("--overwrite", action="store_true", help="replace --json")
    args = p.parse_args(argv)
    steps = check_args(args)
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise SystemExit(f"--json {args.json}: exists; pass --overwrite to replace it")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = measure(args.run, args.cache, steps, device=args.device, seed=args.seed)
    print(f"{args.run} ({res['method']}): pixel AP of the kept checkpoints on "
          f"{res['n_test_lesion']} lesioned test scans")
    print("| step | pixel AP |\n|---|---|")
    for k, v in res["ap"].items():
        print(f"| {k} | {'-' if v is None else f'{v:.3f}'} |")
    if args.json is not None:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
