"""Run every benchmark with its default (CPU-sized) settings and print their figures.

The machine comes first (CPU model and flags: avx512_bf16, amx; torch; what
``precision=auto`` picks here and why), then each benchmark as its own process, one after the
other, so that timings do not overlap. Every benchmark measures the fp32/bf16 matmul peak in
the same run and reports fractions of that peak; figures of other machines appear only as
labelled references. Memory is in GiB. The end is one summary table: the `paper` network's
training step at 16 and 96 patches (fp32, bf16, ``auto``), batch production, detection per
slice and per volume (128 px windows vs whole slices, v2 and v1), each beside the authors'
figures of ``docs/targets.md`` (labelled references, not measured here) and our ratio to them.
``--quick`` shrinks every benchmark to a smoke run of a few minutes (figures then only
indicative); without it the whole set takes about half an hour on a 2-core CPU, most of it in
the `paper` network's training and detection rows.

Usage::

    python -m benchmarks.speed.run_all            # full set (make bench)
    python -m benchmarks.speed.run_all --quick    # smoke run
    python -m benchmarks.speed.run_all --only corruption detect
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The detection volume: 130 axial slices of 137 x 163, as in the side-by-side of docs/targets.md.
SHAPE = "130,137,163"

#: name -> (script, full arguments, quick arguments); all but ``evaluation`` also get ``--json``.
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "corruption": ("bench_corruption", ["--threads", "2", "--repeats", "7"],
                   ["--threads", "2", "--repeats", "3"]),
    "training": ("bench_training",
                 ["--preset", "paper", "--batch", "16", "96", "--precision", "fp32", "bf16",
                  "auto", "--reps", "3"],
                 ["--preset", "small", "--batch", "16", "--precision", "fp32", "bf16",
                  "--reps", "2"]),
    "training-small": ("bench_training",
                       ["--preset", "small", "--batch", "16", "96", "--precision", "fp32",
                        "bf16", "--reps", "3"],
                       ["--preset", "small", "--batch", "16", "--precision", "auto",
                        "--reps", "2"]),
    "detect": ("bench_detect",
               ["--nets", "paper,small", "--methods", "v2-5,v1-5", "--precisions", "fp32,bf16",
                "--windows", "128,0", "--slices", "8", "--repeats", "3", "--shape", SHAPE],
               ["--nets", "small", "--methods", "v2-5", "--slices", "4", "--repeats", "1",
                "--shape", SHAPE]),
    # the whole volume, the library's defaults on this machine, whole slices
    "detect-volume": ("bench_detect",
                      ["--nets", "paper", "--methods", "v2-5", "--precisions", "auto",
                       "--windows", "0", "--slices", "0", "--repeats", "3", "--shape", SHAPE],
                      ["--nets", "small", "--methods", "v2-5", "--precisions", "auto",
                       "--windows", "0", "--slices", "0", "--repeats", "1", "--shape", SHAPE]),
    "evaluation": ("bench_evaluation", ["--volumes", "100", "--bootstrap", "200"],
                   ["--volumes", "5", "--healthy", "2", "--bootstrap", "20"]),
}

#: The authors' figures (docs/targets.md), references only: the side-by-side on an AVX512-BF16 EPYC
#: (2026-11-26) where it has the row, else the first table (a 2-core CPU, fp32).
AUTHORS_TRAIN = {(16, "fp32"): 5.66, (16, "bf16"): 2.40, (96, "fp32"): 60.2, (96, "bf16"): 24.4}
AUTHORS_TRAIN_RSS_GB = {(96, "fp32"): 19.3, (96, "bf16"): 11.0}
#: Targets of the issue, like for like with the authors' bf16: >= 2x at 16, >= 3x at 96.
TRAIN_TARGET = {16: 2.0, 96: 3.0}
AUTHORS_DETECT = {"v2-5": 4.33, "v1-5": 4.42}  # s/slice, fp32, 128 px windows, stride 32
AUTHORS_VOLUME = 633.0  # s per 130-slice volume, fp32, windows (side-by-side; 627 s in the issue)
AUTHORS_BATCH = {"batch": 3.07, "dag": 0.80}  # s per 96 patches (first table, 2-core CPU)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ratio(ref: float | None, ours: float) -> str:
    return f"{ref / ours:.2f}x" if ref else "-"


def summary(res: dict[str, dict | None]) -> list[str]:
    """The summary table (markdown) from the benchmarks' JSON outputs."""
    rows = ["| row | ours | % of peak | peak RSS GiB | authors (reference, docs/targets.md) "
            "| ratio authors / ours | target |", "|---|---|---|---|---|---|---|"]
    tr = res.get("training") or {}
    step = {}
    for d in tr.get("rows", []):
        if d["preset"] != "paper":
            continue
        b, p = d["batch"], d["precision"]
        step.setdefault((b, p), d["s_per_step"])
        auto = d["precision_requested"] == "auto"
        name = f"train paper, {b} patches, {'auto = ' if auto else ''}{p}"
        ref = AUTHORS_TRAIN.get((b, p))
        rss = AUTHORS_TRAIN_RSS_GB.get((b, p))
        ref_s = (f"{ref} s {p}" + (f", {rss} GB" if rss else "")) if ref else "-"
        tgt = (f">= {TRAIN_TARGET[b]:.0f}x (<= {ref / TRAIN_TARGET[b]:.2f} s)"
               if p == "bf16" and ref and b in TRAIN_TARGET else "")
        rows.append(f"| {name} (micro-batch {b // d['accum']}) | {d['s_per_step']:.2f} s/step, "
                    f"{d['patches_per_s']:.1f} patches/s | {d['pct_peak']:.0f} % of {p} "
                    f"| {d['rss_gib']:.2f} | {ref_s} | {_ratio(ref, d['s_per_step'])} | {tgt} |")
    co = (res.get("corruption") or {}).get("seconds", {}).get("cpu", {})
    ref_step = step.get((96, "bf16"))
    for key, label in (("batch", "batch production, 96 patches (sample + augment + DAG)"),
                       ("dag", "DAG corruption alone, 96 patches")):
        if key in co:
            s = co[key]
            share = f"; {100 * s / ref_step:.1f} % of the bf16 step" if ref_step else ""
            tgt = ">= 2000 patches/s" if key == "dag" else "<= 10 % of a step"
            rows.append(f"| {label} | {s:.3f} s, {96 / s:.0f} patches/s{share} | - | - "
                        f"| {AUTHORS_BATCH[key]} s | {_ratio(AUTHORS_BATCH[key], s)} | {tgt} |")
    det = (res.get("detect") or {}).get("timing", [])
    for d in det:
        if d["net"] != "paper":
            continue
        win = "128 px windows" if d["window"] else "whole slices"
        p = d["resolved_precision"]
        ref = AUTHORS_DETECT.get(d["method"])
        like = p == "fp32" and d["window"]
        ref_s = f"{ref} s/slice (fp32, windows)" if ref else "-"
        rows.append(f"| detect {d['method']} paper, {win}, {p} | {d['s_slice']:.2f} s/slice "
                    f"({d['s_per_130_slices']:.0f} s x130, from {d['n_slices']} middle slices) "
                    f"| {d['pct_peak']:.0f} % of {p} | {d['rss_gib']:.2f} | {ref_s} "
                    f"| {_ratio(ref, d['s_slice'])}{'' if like else ' (vs their default)'} "
                    f"| {'<= 1/3 of their time' if like else ''} |")
    for d in (res.get("detect-volume") or {}).get("timing", []):
        p = d["resolved_precision"]
        rows.append(f"| detect {d['method']} {d['net']}, whole slices, auto = {p}, the whole "
                    f"{d['shape'][0]}-slice volume {'x'.join(map(str, d['shape']))} "
                    f"| {d['s_volume']:.1f} s/volume ({d['s_slice']:.2f} s/slice) "
                    f"| {d['pct_peak']:.0f} % of {p} | {d['rss_gib']:.2f} "
                    f"| {AUTHORS_VOLUME:.0f} s/volume (fp32, windows) "
                    f"| {_ratio(AUTHORS_VOLUME, d['s_volume'])} (vs their default) "
                    f"| <= {AUTHORS_VOLUME / 10:.0f} s (1/10) |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    p.add_argument("--json-dir", default=None, help="keep every benchmark's JSON here")
    args = p.parse_args(argv)
    failed = []
    from benchmarks.speed.machine import header, machine_info

    machine = header(machine_info("cpu"))
    print(machine, flush=True)
    tmp = tempfile.TemporaryDirectory()
    out_dir = Path(args.json_dir or tmp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict | None] = {}
    for name, (script, full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        js = out_dir / f"{name}.json"
        cmd = [sys.executable, "-m", f"benchmarks.speed.{script}",
               *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        if name != "evaluation":
            cmd += ["--json", str(js)]
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
        results[name] = _load(js)
    print(f"\nall figures above measured on:\n{machine}")
    rows = summary(results)
    if len(rows) > 2:
        print("\nsummary (medians of >= 3 timed repetitions after a warm-up unless stated; "
              "% of the matmul peak of that precision measured in the same benchmark run; "
              "the authors' figures are references from docs/targets.md, not measured here):")
        print("\n".join(rows))
    tmp.cleanup()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
