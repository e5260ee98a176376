"""Fixtures: a synthetic raw head (skull, random pose, bias field) and one preprocessing run.

The head is built around nilearn's MNI152 brain (:mod:`disyre.demo.raw_head`) at 3 mm, in
sagittal (PIR) voxel order, so that every test exercises reorientation; the template is the
MNI152 brain resampled to 3 mm. One ``disyre preprocess`` run (module-scoped, about 20 s on
two cores) serves the skull-stripping, registration, inverse-warp and output tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pytest

pytest.importorskip("ants", reason="raw-scan preprocessing needs disyre[preprocess]")
pytest.importorskip("deepbet", reason="raw-scan preprocessing needs disyre[preprocess]")

from disyre.demo.raw_head import SyntheticHead, make_raw_head  # noqa: E402

VOXEL_MM = 3.0
SHAPE = (80, 80, 80)


@dataclass
class HeadRun:
    """A raw head on disk, its truth, and the output folder of one preprocessing run."""

    head: SyntheticHead
    path: Path
    out: Path
    rc: int
    voxel_mm: float = VOXEL_MM

    @property
    def folder(self) -> Path:
        return self.out / "head"


def write_head(head: SyntheticHead, path: Path) -> Path:
    nib.save(head.nifti(), str(path))
    return path


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("raw")


@pytest.fixture(scope="session")
def t1_head(raw_dir) -> tuple[SyntheticHead, Path]:
    head = make_raw_head(seed=1, voxel_mm=VOXEL_MM, shape=SHAPE, axes="PIR")
    return head, write_head(head, raw_dir / "head.nii.gz")


@pytest.fixture(scope="session")
def t1_run(t1_head, tmp_path_factory) -> HeadRun:
    """``disyre preprocess -i head.nii.gz -o OUT --spacing 3`` (the default recipe otherwise)."""
    from disyre.cli import main

    head, path = t1_head
    out = tmp_path_factory.mktemp("prep")
    rc = main(["preprocess", "-i", str(path), "-o", str(out), "--spacing", str(VOXEL_MM),
               "--jobs", "1", "--threads", "2", "--no-progress"])
    return HeadRun(head=head, path=path, out=out, rc=rc)
