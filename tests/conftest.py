"""Session-wide fixtures: the tiny synthetic cohort and one trained tiny checkpoint.

The checkpoint is trained once per test session (about 3 s on 2 CPU cores): the ``tiny``
network, 120 steps on 32-px patches of :func:`tests.helpers.synthetic_cohort`, with EMA.
Tests that write into a run folder take :func:`tiny_run_copy` instead of the shared one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from disyre.runtime import KERNEL_CACHE_ENV
from tests.helpers import synthetic_cohort, train_tiny_run

# This process (and the commands it starts) trains after it detects: a detector would turn the
# CPU kernel caches off for the whole process (disyre.runtime.uncached_cpu_kernels) and the
# tiny networks' training that follows would run about 1.6x slower. Set as a user would to keep
# them; tests/test_runtime.py checks detection without them, in a fresh process.
for _name in KERNEL_CACHE_ENV:
    os.environ.setdefault(_name, "1024")


@dataclass
class TinyRun:
    """The session's trained run: its folder, the training result and the cohort."""

    path: Path
    result: Any
    cohort: list[np.ndarray]


@pytest.fixture(scope="session")
def tiny_cohort() -> list[np.ndarray]:
    """Six synthetic brains ``(6, 40, 40)``: 4 train, 2 validation."""
    return synthetic_cohort(6, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_cohort: list[np.ndarray]
             ) -> TinyRun:
    """A run folder holding the trained tiny checkpoint (read-only use: do not write into it)."""
    out = tmp_path_factory.mktemp("session") / "tiny_run"
    res = train_tiny_run(out, tiny_cohort)
    return TinyRun(out, res, tiny_cohort)


@pytest.fixture()
def tiny_run_copy(tiny_run: TinyRun, tmp_path: Path) -> Path:
    """A private copy of the trained run folder, for tests that write next to the checkpoint."""
    dst = tmp_path / "run_copy"
    shutil.copytree(tiny_run.path, dst, symlinks=True)
    return dst
