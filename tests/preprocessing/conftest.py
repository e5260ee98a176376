"""Fixtures: a synthetic raw head (skull, random pose, bias field) and one preprocessing run.

The head is built around nilearn's MNI152 brain (:mod:`disyre.demo.raw_head`) at 3 mm, in
sagittal (PIR) voxel order, so that every test exercises reorientation; the template is the
MNI152 brain resampled to 3 mm. One ``disyre preprocess`` run (session-scoped, about 20 s on
two cores) serves the skull-stripping, registration, inverse-warp and output tests; it is the
README's first raw-scan command, run with relative paths from a work folder
(``disyre preprocess -i raw/ -o prep_raw/ --jobs 2``, at 3 mm), which
``test_readme_raw_scan_workflow`` continues.
"""

from __future__ import annotations

import os
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
    """A raw head on disk, its truth, and the output folder of one preprocessing run.

    ``work`` is the folder the run was started from: ``work/raw/head.nii.gz`` and
    ``work/prep_raw/`` (``out``).
    """

    head: SyntheticHead
    path: Path
    out: Path
    rc: int
    work: Path
    voxel_mm: float = VOXEL_MM

    @property
    def folder(self) -> Path:
        return self.out / "head"


def write_head(head: SyntheticHead, path: Path) -> Path:
    nib.save(head.nifti(), str(path))
    return path


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def raw_dir(work_dir) -> Path:
    (work_dir / "raw").mkdir()
    return work_dir / "raw"


@pytest.fixture(scope="session")
def t1_head(raw_dir) -> tuple[SyntheticHead, Path]:
    head = make_raw_head(seed=1, voxel_mm=VOXEL_MM, shape=SHAPE, axes="PIR")
    return head, write_head(head, raw_dir / "head.nii.gz")


@pytest.fixture(scope="session")
def t1_run(t1_head, work_dir) -> HeadRun:
    """In ``work/``: ``disyre preprocess -i raw/ -o prep_raw/ --jobs 2 --spacing 3`` (the
    README's command at 3 mm; ``--threads 2`` for speed)."""
    from disyre.cli import main

    head, path = t1_head
    cwd = os.getcwd()
    os.chdir(work_dir)
    try:
        rc = main(["preprocess", "-i", "raw/", "-o", "prep_raw/", "--jobs", "2", "--spacing",
                   str(VOXEL_MM), "--threads", "2", "--no-progress"])
    finally:
        os.chdir(cwd)
    return HeadRun(head=head, path=path, out=work_dir / "prep_raw", rc=rc, work=work_dir)
