"""The template: the skull-stripped brain that defines the output grid, and its brain mask.

``"mni152"`` is the MNI152 2009 brain that nilearn's wheel ships (1 mm; its 2 mm version for
``spacing=2``), masked by nilearn's brain mask: no download. Any other template is a NIfTI
file of a skull-stripped brain (background exactly 0), e.g. a BraTS scan to work on the
BraTS (SRI24) grid. A template that still has its skull (a non-zero volume larger than any
brain) is refused.

Example:
    >>> tpl = load_template("mni152", spacing=2.0)
    >>> tpl.shape, float(tpl.affine[0, 0])
    ((99, 117, 95), 2.0)
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disyre.data.nifti import InputError

__all__ = ["Template", "load_template", "MAX_BRAIN_ML", "file_sha1"]

#: a "brain" with more non-zero volume than this (mL) still has its skull (the MNI152 brain
#: mask, generous with CSF, holds 1,883 mL; adult intracranial volumes stay below ~2,000 mL)
MAX_BRAIN_ML: float = 2500.0


@dataclass(frozen=True)
class Template:
    """A template on its output grid.

    Attributes:
        name: ``"mni152"`` or the file path.
        image: ``(X, Y, Z)`` float32 brain, exactly 0 outside it.
        mask: ``(X, Y, Z)`` bool brain mask.
        affine: RAS voxel-to-world matrix of the grid.
        sha1: SHA-1 of the template file (``None`` for the built-in one).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    sha1: str | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The output grid's shape."""
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the array axes."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(0)))  # type: ignore[return-value]

    def grid(self) -> dict[str, Any]:
        """``{"shape", "affine", "spacing"}`` (JSON-ready; recorded with the recipe)."""
        return {"shape": list(self.shape), "affine": self.affine.tolist(),
                "spacing": list(self.spacing)}

    def ants(self) -> Any:
        """The template image as an ANTs image."""
        from disyre.preprocessing.steps import to_ants

        return to_ants(self.image, self.affine)


def file_sha1(path: str | Path) -> str:
    """SHA-1 of a whole file."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mni152(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from nilearn import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the built-in template needs nilearn (its wheel ships MNI152): "
                          "pip install 'disyre[preprocess]'") from e
    img = datasets.load_mni152_template(resolution=resolution)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).dataobj) > 0
    image = np.where(mask, np.clip(np.asarray(img.dataobj, np.float32), 0, None), 0)
    return image.astype(np.float32), mask, np.asarray(img.affine, float)


def _from_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from disyre.data.nifti import load_scan, to_native

    scan = load_scan(path, nan_policy="error")  # 3D, readable, not empty (else InputError)
    arr = np.clip(to_native(scan.data, scan), 0, None).astype(np.float32)
    voxel_ml = abs(float(np.linalg.det(scan.affine[:3, :3]))) / 1000.0
    mask = arr > 0
    volume = float(mask.sum()) * voxel_ml
    if volume > MAX_BRAIN_ML:
        raise InputError(f"{path}: template is not skull-stripped (non-zero volume "
                         f"{volume:.0f} mL > {MAX_BRAIN_ML:.0f} mL; a brain holds less); "
                         "give a brain-only template with background exactly 0")
    return arr, mask, scan.affine


@functools.lru_cache(maxsize=4)
def _load(name: str, spacing: float | None, sha1: str | None) -> Template:
    if name == "mni152":
        res = 2 if spacing is not None and abs(spacing - 2.0) < 1e-6 else 1
        image, mask, affine = _mni152(res)
        if spacing is not None and abs(spacing - res) < 1e-6:
            spacing = None
    else:
        image, mask, affine = _from_file(Path(name))
    if spacing is not None:
        from disyre.preprocessing.steps import from_ants, require, to_ants

        ants = require()
        sp = [float(spacing)] * 3
        img = ants.resample_image(to_ants(image, affine), sp, use_voxels=False, interp_type=0)
        msk = ants.resample_image(to_ants(mask.astype(np.float32), affine), sp,
                                  use_voxels=False, interp_type=0)
        image, affine = from_ants(img)
        mask = from_ants(msk)[0] > 0.5
        image = np.where(mask, np.clip(image, 0, None), 0).astype(np.float32)
    for a in (image, mask):
        a.setflags(write=False)
    return Template(name=name, image=image, mask=mask, affine=np.asarray(affine, float),
                    sha1=sha1)


def load_template(template: str | Path = "mni152", spacing: float | None = None,
                  expect_sha1: str | None = None) -> Template:
    """Load a template onto its output grid (cached per process).

    Args:
        template: ``"mni152"`` or the path of a skull-stripped NIfTI brain.
        spacing: Output voxel size (mm, isotropic); ``None`` keeps the template's own grid.
        expect_sha1: Refuse a template file whose SHA-1 differs (the recipe a model recorded).

    Returns:
        The :class:`Template`.

    Raises:
        InputError: Missing, unreadable, 4D or not skull-stripped template, or a file that
            changed since the recipe was recorded.
    """
    name = str(template)
    sha1 = None
    if name != "mni152":
        p = Path(name).expanduser()
        if not p.is_file():
            raise InputError(f"{p}: template file not found")
        name = str(p.resolve())
        sha1 = file_sha1(p)
        if expect_sha1 and sha1 != expect_sha1:
            raise InputError(f"{p}: template file differs from the one the recipe was made "
                             f"with (SHA-1 {sha1[:12]} vs {expect_sha1[:12]})")
    return _load(name, None if spacing is None else float(spacing), sha1)
