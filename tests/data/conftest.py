"""Fixtures for the data-layer tests: tiny synthetic NIfTI volumes written on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import helpers


def _brain(shape: tuple[int, int, int] = (12, 14, 10), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.6
    vol = np.where(inside, 100 + 50 * rng.random(shape), 0.0).astype(np.float32)
    return vol


@pytest.fixture
def brain_volume() -> Callable[..., np.ndarray]:
    """``brain_volume(shape=(12, 14, 10), seed=0)``: an ellipsoid 'brain' with random positive
    intensities inside and zeros outside."""
    return _brain


@pytest.fixture
def write_nifti(tmp_path: Path) -> Callable[..., Path]:
    """``write_nifti(name, data=None, affine=None, **header)`` -> path under tmp_path."""

    def _write(name: str | Path, data: np.ndarray | None = None,
               affine: np.ndarray | None = None, dtype: type | None = None) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return helpers.write_nifti(p, _brain() if data is None else data, affine, dtype)

    return _write
