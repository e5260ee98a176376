"""Run every benchmark with its default (CPU-sized) settings and print their figures.

The machine comes first (CPU model and flags: avx512_bf16, amx; torch; what
``precision=auto`` picks here and why), then each benchmark as its own process, one after the
other, so that timings do not overlap. Every benchmark measures the fp32/bf16 matmul peak in
the same run and reports fractions of that peak; figures of other machines appear only as
labelled references. Memory is in GiB.
``--quick`` shrinks every benchmark to a smoke run of a minute or two (figures are then only
indicative); without it the whole set takes tens of minutes on a 2-core CPU, most of it in the
`paper` network's training and detection rows.

Usage::

    python benchmarks/run_all.py            # full set (make bench)
    python benchmarks/run_all.py --quick    # smoke run
    python benchmarks/run_all.py --only corruption detect
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "corruption": (["--threads", "2", "--repeats", "7"],
                   ["--threads", "2", "--repeats", "3"]),
    "training": (["--preset", "small", "paper", "--batch", "16", "96", "--precision", "fp32",
                  "bf16", "--reps", "3"],
                 ["--preset", "small", "--batch", "16", "--precision", "fp32", "bf16",
                  "--reps", "2"]),
    "detect": (["--nets", "paper,small", "--methods", "v2-5,v1-5", "--precisions", "fp32,bf16",
                "--windows", "128,0", "--slices", "16", "--repeats", "1"],
               ["--nets", "small", "--methods", "v2-5", "--slices", "4", "--repeats", "1"]),
    "evaluation": (["--volumes", "100", "--bootstrap", "200"],
                   ["--volumes", "5", "--healthy", "2", "--bootstrap", "20"]),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    args = p.parse_args(argv)
    failed = []
    sys.path.insert(0, str(HERE))
    from machine import header, machine_info

    machine = header(machine_info("cpu"))
    print(machine, flush=True)
    for name, (full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    print(f"\nall figures above measured on:\n{machine}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
