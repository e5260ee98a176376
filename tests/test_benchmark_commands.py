"""The benchmark commands the README and docs give run as written (their ``--help`` form), and
the profiler profiles the training loop's own step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "Makefile"]
#: every benchmark module the docs name, written ``python -m benchmarks.<sub>.<name>``
MODULE = re.compile(r"-m (benchmarks\.(?:speed|experiments|tools)\.\w+)")


def _env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def documented_modules() -> list[str]:
    found = set()
    for doc in DOCS:
        found.update(MODULE.findall(doc.read_text()))
    return sorted(found)


def test_docs_name_benchmarks_as_modules_only() -> None:
    """No doc runs a benchmark by its file path (those fail: the modules import the package)."""
    stale = [f"{d.name}: {m}" for d in DOCS
             for m in re.findall(r"python3? benchmarks/\S+\.py", d.read_text())]
    assert not stale, stale
    mods = documented_modules()
    assert {"benchmarks.speed.run_all", "benchmarks.tools.mutants",
            "benchmarks.experiments.fidelity"} <= set(mods)
    for m in mods:
        assert (ROOT / (m.replace(".", "/") + ".py")).is_file(), m


@pytest.mark.parametrize("module", documented_modules())
def test_documented_module_runs_help(module: str) -> None:
    # measured: under 1 s each (pytest --durations, loaded 2-core machine); 120 s is generous
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_gpu_check_script_names_existing_modules() -> None:
    sh = (ROOT / "benchmarks" / "tools" / "gpu_check.sh").read_text()
    mods = set(re.findall(r"-m (benchmarks\.\w+\.\w+)", sh))
    mods |= set(re.findall(r"from (benchmarks\.\w+\.\w+) import", sh))
    assert mods >= {"benchmarks.speed.bench_training", "benchmarks.speed.bench_detect",
                    "benchmarks.tools.gpu_check", "benchmarks.speed.machine"}
    for m in mods:
        assert (ROOT / (m.replace(".", "/") + ".py")).is_file(), m
    assert "sys.path" not in sh
    r = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "tools" / "gpu_check.sh")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_no_sys_path_insertions_in_benchmarks() -> None:
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").rglob("*.py")
            if "sys.path" in p.read_text()]
    assert not hits, hits


def test_profile_step_profiles_the_training_step() -> None:
    """The profiler's phases are the labels inside ``disyre.training.train_step``."""
    # measured: 12.6 s (pytest --durations, loaded 2-core machine); 300 s is generous
    r = subprocess.run([sys.executable, "-m", "benchmarks.speed.profile_step", "--preset", "tiny",
                        "--batch", "2", "--patch", "32", "--precision", "fp32", "--top", "3"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    header = next(ln for ln in r.stdout.splitlines() if ln.startswith("op type"))
    assert header.split()[2:6] == ["batch", "forward", "backward", "optimizer"], header
