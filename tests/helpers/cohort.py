"""A tiny synthetic cohort: smooth ellipsoid 'brains' (background exactly 0), optionally with
bright spherical lesions, as arrays or as NIfTI files plus a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_cohort(n: int, seed: int, shape: tuple[int, int, int] = (6, 40, 40)
                     ) -> list[np.ndarray]:
    """``n`` 'brains' ``(D, H, W)`` in [0, 1]: ellipsoids with a smooth tissue texture."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, d), np.linspace(-1, 1, h), np.linspace(-1, 1, w),
                             indexing="ij")
    vols = []
    for _ in range(n):
        ry, rx = rng.uniform(0.75, 0.95, 2)
        r2 = (yy / ry) ** 2 + (xx / rx) ** 2
        f1, f2, ph = rng.uniform(2, 4), rng.uniform(2, 4), rng.uniform(0, 2 * np.pi)
        tissue = 0.55 + 0.25 * np.sin(f1 * np.pi * yy + ph) * np.cos(f2 * np.pi * xx)
        v = np.where(r2 + 0.3 * zz**2 < 1, tissue * (0.6 + 0.4 * np.clip(1 - r2, 0, 1) ** 0.3),
                     0.0)
        vols.append(np.clip(v, 0, 1).astype(np.float32))
    return vols


def phantom(shape: tuple[int, int, int] = (12, 72, 80), lesion: tuple[int, int, int] = (6, 30, 44),
            r: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid 'brain' with mild texture and one bright spherical lesion: ``(vol, lesion)``."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.mgrid[:d, :h, :w]
    brain = ((z - d / 2) / (d / 2 + 1)) ** 2 + ((y - h / 2) / (h / 2 - 4)) ** 2 + (
        (x - w / 2) / (w / 2 - 4)) ** 2 < 1
    vol = np.where(brain, 0.5 + 0.03 * rng.standard_normal(shape), 0).astype(np.float32)
    les = ((z - lesion[0]) ** 2 + (y - lesion[1]) ** 2 + (x - lesion[2]) ** 2 <= r * r) & brain
    vol[les] = 0.95
    return vol, les


def plant_lesion(vol: np.ndarray, seed: int, r: float = 5.0, value: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``vol`` with a bright ball of radius ``r`` inside the brain: ``(vol, lesion)``."""
    rng = np.random.default_rng(seed)
    d, h, w = vol.shape
    z, y, x = np.mgrid[:d, :h, :w]
    inside = np.argwhere(vol > 0)
    core = inside[(inside[:, 1] > h * 0.3) & (inside[:, 1] < h * 0.7)
                  & (inside[:, 2] > w * 0.3) & (inside[:, 2] < w * 0.7)]
    cz, cy, cx = core[rng.integers(len(core))]
    les = ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r) & (vol > 0)
    out = vol.copy()
    out[les] = value
    return out, les


def planted_lesion_aps(run: Path | str, n: int = 3, seed: int = 9
                       ) -> tuple[list[float], list[float]]:
    """Pixel AP of a run's maps on ``n`` synthetic brains with a planted bright lesion each,
    and each brain's lesion prevalence (the AP of chance): ``(aps, prevalences)``."""
    from sklearn.metrics import average_precision_score

    from disyre.inference import Detector

    det = Detector.from_checkpoint(run, device="cpu")
    aps, prev = [], []
    for k, vol in enumerate(synthetic_cohort(n, seed=seed)):
        lesioned, les = plant_lesion(vol, seed=k, r=5.0)
        brain = lesioned > 0
        amap = det.map_preprocessed(lesioned, brain)
        aps.append(float(average_precision_score(les[brain], amap[brain])))
        prev.append(float(les[brain].mean()))
    return aps, prev


def write_nifti(path: Path | str, data: np.ndarray, affine: np.ndarray | None = None,
                dtype: np.dtype | type | str | None = None, dhw: bool = False) -> Path:
    """Write ``data`` as a NIfTI file and return its path.

    Args:
        path: Where to write (``.nii`` or ``.nii.gz``).
        data: The voxels, in NIfTI's ``(x, y, z[, t])`` order unless ``dhw``.
        affine: The voxel-to-world affine (default: identity, 1 mm voxels).
        dtype: Stored data type (default: that of ``data``).
        dhw: ``data`` is a ``(D, H, W)`` volume as the library holds it: written transposed.

    Example:
        >>> import tempfile
        >>> p = write_nifti(Path(tempfile.mkdtemp()) / "a.nii.gz", np.zeros((2, 3, 4)))
        >>> import nibabel as nib; nib.load(p).shape
        (2, 3, 4)
    """
    import nibabel as nib

    arr = np.ascontiguousarray(data.transpose(2, 1, 0) if dhw else data)
    if dtype is not None:
        arr = arr.astype(dtype)
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return Path(path)


def write_nifti_cohort(root: Path, n_val: int = 2, n_test_lesion: int = 3,
                       n_test_healthy: int = 1, n_train: int = 0, seed: int = 0,
                       spacing: float = 2.0, shape: tuple[int, int, int] = (6, 40, 40)) -> Path:
    """Write a cohort as NIfTI files (scaled to 0..900, ``spacing`` mm voxels) and a manifest.

    Lesioned test scans get a bright ball and a lesion mask. Returns the manifest path
    (columns ``subject,image,lesion_mask,brain_mask,split,contrast``).
    """
    root.mkdir(parents=True, exist_ok=True)
    n = n_train + n_val + n_test_lesion + n_test_healthy
    vols = synthetic_cohort(n, seed, shape)
    splits = (["train"] * n_train + ["val"] * n_val + ["test"] * n_test_lesion
              + ["test"] * n_test_healthy)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    lines = ["subject,image,lesion_mask,brain_mask,split,contrast"]
    for i, (v, split) in enumerate(zip(vols, splits, strict=True)):
        les_name = ""
        if n_train + n_val <= i < n_train + n_val + n_test_lesion:
            v, les = plant_lesion(v, seed + i)
            les_name = f"s{i}_seg.nii.gz"
            write_nifti(root / les_name, les, affine, np.uint8, dhw=True)
        write_nifti(root / f"s{i}.nii.gz", v * 900, affine, dhw=True)
        lines.append(f"s{i},s{i}.nii.gz,{les_name},,{split},t2")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def small_benchmark_cache(root: Path) -> tuple[Path, Path, object]:
    """A demo cohort of 3 training, 1 validation, 1 healthy, 1 older-looking and 2 lesioned
    (tumour, stroke) subjects in ``root/cohort``, cached in ``root/cache``: the benchmark
    tests' data. Returns ``(root, manifest, cache)``."""
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.demo.cohort import CohortSpec, build_cohort

    spec = CohortSpec(n_train=3, n_val=1, n_test_healthy=1, n_test_lesion=2,
                      lesion_kinds=["tumour", "stroke"], seed=1, n_transfer=1)
    c = build_cohort(spec, root / "cohort", progress=False)
    return root, c.manifest, prepare_cache(read_manifest(c.manifest), root / "cache")
