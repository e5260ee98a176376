"""Mutation check: deliberate bugs in the inference maths must make their tests fail.

Each mutant is one textual change to the source. For each, the source tree and the tests are
copied to a temporary folder, the change is applied there (the working tree is never touched),
and the tests of that behaviour run against the copy in a fresh interpreter. A mutant is
"killed" when at least one test fails, "survived" when all pass. The unmutated copy runs
first: if it fails, nothing is reported.

Mutants:

(a) ``restore_ensemble`` tiles the images image-major (``x.repeat_interleave``) while the
    levels stay level-major: images are paired with the wrong levels and compared with the
    restorations of other images.
(b) The Gaussian blending weights of the sliding windows are replaced with ones. The
    indirect accuracy test ``test_whole_slice_mode_close_to_windows_for_a_convolutional_model``
    is left out of this run: the blending must be caught by the tests that check it.
(c) The v1 multi-step update moves away from the prediction:
    ``x_prev = x0 + (a_prev/a_t) (x0 - x_t)`` instead of ``(x_t - x0)``.

Usage::

    python -m benchmarks.tools.mutants            # all mutants; exit status 1 if one survives
    python -m benchmarks.tools.mutants --only a   # one of them
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Mutant:
    """A textual change of one source file and the tests that must catch it."""

    key: str
    title: str
    file: str
    old: str
    new: str
    tests: list[str]
    deselect: list[str] = field(default_factory=list)


MUTANTS = [
    Mutant(
        "a", "ensemble: x.repeat -> x.repeat_interleave",
        "src/disyre/methods/dag.py",
        "xs = x.repeat(n, 1, 1, 1)", "xs = x.repeat_interleave(n, 0)",
        ["tests/test_inference.py"]),
    Mutant(
        "b", "windows: Gaussian blending weights -> ones",
        "src/disyre/inference/windows.py",
        'return compute_importance_map(\n        (window, window), mode="gaussian", '
        "sigma_scale=SIGMA_SCALE, device=device\n    ).float()",
        "return torch.ones((window, window), device=device)",
        ["tests/test_inference.py"],
        ["tests/test_inference.py::"
         "test_whole_slice_mode_close_to_windows_for_a_convolutional_model"]),
    Mutant(
        "c", "v1 update: (xt - x0) -> (x0 - xt)",
        "src/disyre/methods/dag.py",
        "xt = (x0 + (a_prev / a_t) * (xt - x0)).clamp(0, 1)",
        "xt = (x0 + (a_prev / a_t) * (x0 - xt)).clamp(0, 1)",
        ["tests/test_inference.py"]),
]


def _copy_tree(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(ROOT / "src", dst / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", dst / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")


def _apply(dst: Path, m: Mutant) -> None:
    path = dst / m.file
    text = path.read_text()
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"{m.file}: the code of mutant ({m.key}) occurs {n} times, expected 1; "
                         "update benchmarks/tools/mutants.py to the current source")
    path.write_text(text.replace(m.old, m.new))


def _env(dst: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(dst / "src")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def _check_import(dst: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import disyre; print(disyre.__file__)"],
                         cwd=dst, env=_env(dst), capture_output=True, text=True, check=True)
    where = Path(out.stdout.strip()).resolve()
    if dst.resolve() not in where.parents:
        raise SystemExit(f"the copy imports disyre from {where}, not from {dst}: results "
                         "would not reflect the mutants")


def _run_tests(dst: Path, tests: list[str], deselect: list[str]) -> tuple[int, int, list[str]]:
    """``(tests run, tests failed, names of the failed tests)``."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
           "-W", "ignore", *tests, *[a for d in deselect for a in ("--deselect", d)]]
    out = subprocess.run(cmd, cwd=dst, env=_env(dst), capture_output=True, text=True)
    text = out.stdout + out.stderr
    failed = sorted(set(re.findall(r"^FAILED (\S+)", text, re.M)))
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error)", text)}
    n_run = counts.get("passed", 0) + counts.get("failed", 0) + counts.get("error", 0)
    if out.returncode not in (0, 1) or n_run == 0:
        raise SystemExit(f"pytest did not run ({out.returncode}):\n{text[-3000:]}")
    return n_run, counts.get("failed", 0) + counts.get("error", 0), failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=[m.key for m in MUTANTS],
                   help="run only these mutants")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.key in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="disyre-mutants-") as tmp:
        base = Path(tmp) / "base"
        _copy_tree(base)
        _check_import(base)
        tests = sorted({t for m in chosen for t in m.tests})
        t0 = time.perf_counter()
        n, n_failed, names = _run_tests(base, tests, [])
        if n_failed:
            print(f"the unmutated source fails {n_failed} of {n} tests: {names}")
            return 2
        print(f"unmutated source: {n} tests pass ({time.perf_counter() - t0:.0f} s)\n")
        for m in chosen:
            dst = Path(tmp) / f"mutant_{m.key}"
            _copy_tree(dst)
            _apply(dst, m)
            n, n_failed, names = _run_tests(dst, m.tests, m.deselect)
            rows.append((m, n, n_failed, names))
            shutil.rmtree(dst, ignore_errors=True)
    w = max(len(f"({m.key}) {m.title}") for m, *_ in rows)
    print(f"{'mutant':<{w}}  {'tests run':>9}  {'failed':>6}  result")
    for m, n, n_failed, _ in rows:
        print(f"{f'({m.key}) {m.title}':<{w}}  {n:>9}  {n_failed:>6}  "
              f"{'killed' if n_failed else 'SURVIVED'}")
    print()
    for m, _, _, names in rows:
        left_out = f" (left out: {', '.join(d.split('::')[-1] for d in m.deselect)})" \
            if m.deselect else ""
        print(f"({m.key}) failing tests{left_out}:")
        for name in names or ["none"]:
            print(f"    {name}")
    return 0 if all(n_failed for _, _, n_failed, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
