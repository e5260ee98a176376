"""Every benchmarks.* module checks its arguments before any work (argparse's usage error)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

#: (module, a bad argument list) per benchmark module with a command line
BAD = [
    ("benchmarks.experiments.larger_test_set", ["--bench", "{tmp}", "--cohort", "{tmp}",
                                                "--out", "{tmp}/out", "--n-boot", "-1"]),
    ("benchmarks.experiments.larger_test_set", ["--cohort", "{tmp}", "--out", "{tmp}/out",
                                                "--bench", "{tmp}/none"]),
    ("benchmarks.experiments.combine_benchmarks", ["--figures", "{tmp}/f", "--bench",
                                                   "{tmp}/none"]),
    ("benchmarks.experiments.kept_steps", ["--cache", "{tmp}", "--steps", "650",
                                           "--run", "{tmp}/none"]),
    ("benchmarks.experiments.median_filter", ["--demo", "{tmp}", "--sizes", "3,-1"]),
    ("benchmarks.experiments.walk_length", ["--run", "{tmp}", "--cache", "{tmp}",
                                            "--scans", "0"]),
    ("benchmarks.experiments.windows_vs_whole", ["--build", "{tmp}/b", "--out", "{tmp}/out",
                                                 "--bootstrap", "-5"]),
    ("benchmarks.experiments.fidelity", ["--out", "{tmp}/out", "--n-train", "0"]),
    ("benchmarks.experiments.transfer_fpr", ["--demo", "{tmp}", "--out", "{tmp}/out",
                                             "--extra-train", "-2"]),
    ("benchmarks.experiments.resample_check", ["--manifest", "{tmp}", "--run", "{tmp}/none"]),
    ("benchmarks.experiments.demo_budget", ["--out", "{tmp}/out", "--jobs", "0"]),
    ("benchmarks.speed.bench_side_by_side", ["--cache", "{tmp}/none"]),
    ("benchmarks.speed.bench_corruption", ["--repeats", "0"]),
    ("benchmarks.speed.bench_detect", ["--json", "{tmp}/x.json", "--batch", "0"]),
    ("benchmarks.speed.bench_detect_memory", ["--scans", "0"]),
    ("benchmarks.speed.bench_evaluation", ["--volumes", "-3"]),
    ("benchmarks.speed.bench_optimizer", ["--reps", "0"]),
    ("benchmarks.speed.bench_preprocessing", ["--spacing", "-1"]),
    ("benchmarks.speed.bench_training", ["--reps", "0"]),
    ("benchmarks.speed.machine", ["--n", "0"]),
    ("benchmarks.speed.profile_step", ["--top", "0"]),
    ("benchmarks.tools.gpu_check", ["ddp", "--steps", "0"]),
]


@pytest.mark.parametrize("module, argv", BAD, ids=[f"{m.rsplit('.', 1)[1]}-{i}"
                                                   for i, (m, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_before_any_work(module: str, argv: list[str],
                                                   tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "x").write_text("")  # something inside, to see that nothing else appears
    before = sorted(p.name for p in tmp_path.rglob("*"))
    mod = importlib.import_module(module)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    monkeypatch.setattr(sys, "argv", [module, *args])  # modules whose main() reads sys.argv
    try:
        rc = mod.main(args) if _takes_argv(mod.main) else mod.main()
    except SystemExit as e:
        rc = e.code
    assert rc not in (0, None)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    bad = next(a for a in argv if a.startswith("--") and argv.index(a) == _culprit(argv))
    said = capsys.readouterr().err + (rc if isinstance(rc, str) else "")
    assert bad in said  # the message names the argument


def _culprit(argv: list[str]) -> int:
    """Index of the bad option: the last one given (each case ends with it)."""
    return max(i for i, a in enumerate(argv) if a.startswith("--"))


def _takes_argv(fn: object) -> bool:
    import inspect

    return bool(inspect.signature(fn).parameters)  # type: ignore[arg-type]
