"""Whole slices or sliding windows: accuracy and time of detection with one trained model.

Detects and evaluates the test subjects of a cohort with a trained DISYRE checkpoint once per
inference setting (``precision:window[:stride]``; window 0 = whole slices), through
``disyre evaluate --checkpoint`` (the same code path as a user's), and prints one table:
pixel AP with its bootstrap interval, best Dice (oracle), Dice at the 1 % healthy threshold,
and the wall time of detect + evaluate per scan. The difference between two settings of one
model on the same subjects is what decides the library's default window.

Two ways to get the model:

- ``--run RUN --manifest MANIFEST``: an existing run (e.g. a fidelity-ablation row or a demo
  method's ``run`` folder) and its cohort's manifest;
- ``--build DIR --resolution 1``: build a demo cohort at that resolution under ``DIR``, train
  the demo's DISYRE v2 on it (at 1 mm with the paper's 128 px patches and 64 px corruption
  window) and use that.

Usage::

    python -m benchmarks.experiments.windows_vs_whole --run runs/fid/t2/authors/dag/run \\
        --manifest runs/fid/t2/cohort/manifest.csv --settings bf16:0,bf16:64:32,fp32:64:32 \\
        --out wvw_t2
    python -m benchmarks.experiments.windows_vs_whole --build wvw_1mm --resolution 1 \\
        --contrast t2 --settings bf16:0,bf16:128:64,fp32:128:64 --out wvw_1mm/table
    python -m benchmarks.experiments.windows_vs_whole --build /tmp/wq --quick --out /tmp/wq/table

Run it alone (``flock /tmp/disyre-cpu.lock ...``): the times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.args import at_least, existing_dir, existing_file
from benchmarks.experiments.fidelity import headline  # the same numbers from a metrics.json

log = logging.getLogger("windows_vs_whole")


@dataclass(frozen=True)
class Setting:
    """One inference setting: precision, window side (0 = whole slices) and stride.

    Whole slices keep the checkpoint's stride: it sets the spacing of the foreground
    weighting's windows (``inference/windows.py``), so it changes the map there too.
    """

    precision: str
    window: int
    stride: int | None

    @property
    def key(self) -> str:
        return f"{self.precision}-w{self.window}" + (f"s{self.stride}" if self.window else "")

    @property
    def label(self) -> str:
        where = "whole slices" if self.window == 0 else \
            f"{self.window} px windows, stride {self.stride}"
        return f"{where}, {self.precision}"


def parse_settings(text: str) -> list[Setting]:
    """``bf16:0,fp32:128:64`` -> settings (stride defaults to half the window).

    Example:
        >>> [s.key for s in parse_settings("bf16:0,fp32:128")]
        ['bf16-w0', 'fp32-w128s64']
    """
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in ("fp32", "bf16", "auto"):
            raise ValueError(f"setting {item!r}: expected precision:window[:stride]")
        window = int(parts[1])
        stride = int(parts[2]) if len(parts) == 3 else (window // 2 or None)
        out.append(Setting(parts[0], window, stride))
    return out


def build_and_train(root: Path, resolution: int, contrast: str, quick: bool, seed: int,
                    steps: int | None, n_test_lesion: int | None) -> tuple[Path, Path]:
    """Build a demo cohort at ``resolution`` and train DISYRE v2 on it; (run, manifest)."""
    from disyre.benchmark import run_benchmark
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.demo.cohort import build_cohort
    from disyre.demo.run import DemoSettings

    demo = DemoSettings.quick() if quick else DemoSettings()
    if resolution == 1 and not quick:
        # the paper's setting: 128 px patches, 64 px corruption window; a smaller cohort and
        # batch than the 2 mm demo (8x the voxels per scan)
        cohort = replace(demo.cohort, n_train=12, n_val=4, n_test_healthy=2, n_transfer=0,
                         n_test_lesion=12)
        demo = replace(demo, cohort=cohort, patch=128, stride=64, n_volumes=4, n_slices=4)
    cohort = replace(demo.cohort, contrast=contrast, resolution=resolution, seed=seed,
                     **({} if n_test_lesion is None else {"n_test_lesion": n_test_lesion}))
    demo = replace(demo, cohort=cohort, methods=["dag"], seed=seed)
    if steps is not None:
        demo.steps = steps
    built = build_cohort(demo.cohort, root / "cohort", progress=False)
    cache = prepare_cache(read_manifest(built.manifest), root / "cache", progress=False)
    run = root / "bench" / "dag" / "run"
    if not (root / "bench" / "benchmark.json").exists():  # trained and evaluated to the end
        run_benchmark(["dag"], cache, root / "bench", cfg=demo.run_config(), steps=demo.steps,
                      seed=seed, n_boot=20, overwrite=True, progress=False,
                      title=f"{resolution} mm {contrast.upper()} model for windows_vs_whole")
    return run, Path(built.manifest)


def evaluate_setting(run: Path, manifest: Path, s: Setting, out: Path, n_boot: int,
                     extra: list[str]) -> dict[str, Any]:
    """``disyre evaluate --checkpoint`` with one setting; headline numbers and wall time."""
    from disyre.cli import main as cli

    dest = out / s.key
    sets = [f"inference.precision={s.precision}", f"inference.window={s.window}",
            *([] if s.stride is None else [f"inference.stride={s.stride}"]), *extra]
    t0 = time.perf_counter()
    rc = cli(["evaluate", "--checkpoint", str(run), "--manifest", str(manifest), "-o",
              str(dest), "--bootstrap", str(n_boot), "--overwrite", "--fpr", "0.01",
              "--set", *sets])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"disyre evaluate failed for {s.key} (exit {rc})")
    m = json.loads((dest / "metrics.json").read_text())
    h = headline(m)
    n_scans = int(m.get("n_cases") or 0) + int((m.get("thresholds") or {}).get("n_volumes") or 0)
    return {"key": s.key, "label": s.label, "ap": h["ap"], "ap_ci": h["ap_ci"],
            "best_dice": h["best_dice"], "dice_1pct": h["dice_1pct"],
            "wall_s": round(wall, 1), "n_scans": n_scans,
            "s_per_scan": round(wall / n_scans, 2) if n_scans else None}


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The table."""
    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [f"### {title}", "",
             "| setting | pixel AP [95 % CI] | AP - first row | best Dice (oracle) "
             "| Dice @ 1 % healthy FPR | s per scan (detect + evaluate) |",
             "|---|---|---|---|---|---|"]
    ref = rows[0]["ap"] if rows else None
    for r in rows:
        ci = r["ap_ci"]
        ci_s = "" if not ci or ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        d = "" if ref is None or r["ap"] is None else f"{r['ap'] - ref:+.3f}"
        lines.append(f"| {r['label']} | {f(r['ap'])}{ci_s} | {d} | {f(r['best_dice'])} | "
                     f"{f(r['dice_1pct'])} | {r['s_per_scan']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=existing_dir, help="trained run or checkpoint folder")
    src.add_argument("--build", type=Path, help="build a cohort and train a model here")
    p.add_argument("--manifest", type=existing_file, help="the cohort's manifest (with --run)")
    p.add_argument("--resolution", type=int, default=1, choices=[1, 2], help="with --build")
    p.add_argument("--contrast", default="t2", choices=["t2", "t1"], help="with --build")
    p.add_argument("--steps", type=at_least(1), default=None, help="training steps (with --build)")
    p.add_argument("--n-test-lesion", type=at_least(1), default=None, help="with --build")
    p.add_argument("--quick", action="store_true", help="tiny everything (with --build)")
    p.add_argument("--settings", default="bf16:0,bf16:128,fp32:128",
                   help="comma-separated precision:window[:stride]; window 0 = whole slices")
    p.add_argument("--set", nargs="*", default=[], dest="extra",
                   help="further inference overrides for every setting")
    p.add_argument("--bootstrap", type=at_least(0), default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = parse_settings(a.settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.run is not None:
        if a.manifest is None:
            print("error: --run needs --manifest", file=sys.stderr)
            return 2
        run, manifest = a.run, a.manifest
        title = f"{run}"
    else:
        run, manifest = build_and_train(a.build, a.resolution, a.contrast, a.quick, a.seed,
                                        a.steps, a.n_test_lesion)
        title = f"{a.resolution} mm {a.contrast.upper()} demo cohort ({run})"
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [evaluate_setting(run, manifest, s, a.out, a.bootstrap, a.extra) for s in settings]
    from disyre.io_utils import atomic_write_json, atomic_write_text, provenance
    from disyre.runtime import cpu_info

    table = markdown(rows, title)
    cpu = cpu_info().describe()
    atomic_write_text(a.out / "windows_vs_whole.md", table + f"\nMeasured on {cpu}.\n")
    atomic_write_json(a.out / "windows_vs_whole.json",
                      {"run": str(run), "manifest": str(manifest), "rows": rows, "cpu": cpu,
                       "provenance": provenance()})
    print(table)
    print(f"machine: {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
