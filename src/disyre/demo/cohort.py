"""A demo cohort of "subjects" generated from real anatomy (the MNI152 templates).

Each subject is the template anatomy, warped and re-imaged so that no two are alike:

1. **anatomy**: a random smooth (low-frequency) displacement field plus head-size scaling,
   applied to the T1 template and its tissue maps;
2. **contrast**: ``t1`` uses the T1 template; ``t2`` is synthesised from the tissue maps
   (CSF bright, grey > white matter), with per-subject tissue levels;
3. optionally a **lesion** from :mod:`disyre.demo.lesions` (drawn on the clean anatomy, so it
   goes through the same acquisition as the tissue around it);
4. **acquisition**: a smooth multiplicative bias field, contrast/gamma jitter, slice-thickness
   blur along one axis, Rician noise, a scanner-like intensity scale; skull-stripped
   (background exactly 0).

A subject is a pure function of ``(seed, index)`` (plus contrast/resolution/lesion kind).
:func:`build_cohort` writes a cohort as NIfTI files with a manifest CSV, so every other stage
reads it like user data, and reuses it when it already exists with the same parameters.

Example:
    >>> s = make_subject(3, seed=0, contrast="t2")
    >>> s.image.shape, s.image.dtype.name, bool(s.image[~s.brain].any())
    ((99, 117, 95), 'float32', False)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from disyre.data.manifest import ManifestRow, write_manifest
from disyre.demo.anatomy import Templates, load_templates
from disyre.demo.lesions import LESION_KINDS, Tissues, simulate_lesion
from disyre.io_utils import atomic_path, atomic_write_json

CONTRASTS = ("t1", "t2")
#: bumped whenever the generator changes, so cached cohorts are rebuilt
GENERATOR_VERSION = 1


@dataclass
class Subject:
    """One generated subject, arrays in file layout ``(X, Y, Z)``.

    Attributes:
        name: Subject id (``demo-000`` ...).
        image: float32 image in scanner-like units, 0 outside the brain.
        brain: Brain mask (bool).
        affine: 4x4 RAS voxel-to-world matrix (mm).
        lesion_mask: Ground-truth lesion mask (bool), ``None`` for a healthy subject.
        lesion_kind: ``tumour``, ``stroke``, ``ms`` or ``None``.
        params: The random draws that made the subject (for provenance).
    """

    name: str
    image: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    lesion_mask: np.ndarray | None = None
    lesion_kind: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, *, n_waves: int,
                  wavelength: tuple[float, float], voxel_mm: float) -> np.ndarray:
    """Sum of random plane waves (unit-ish amplitude): a cheap smooth random field."""
    grids = [np.arange(n, dtype=np.float32) * voxel_mm for n in shape]
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(n_waves):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        k = 2 * np.pi / rng.uniform(*wavelength) * direction
        phase = rng.uniform(0, 2 * np.pi)
        arg = (k[0] * grids[0][:, None, None] + k[1] * grids[1][None, :, None]
               + k[2] * grids[2][None, None, :] + phase)
        out += np.sin(arg.astype(np.float32)) * rng.uniform(0.5, 1.0)
    return out / np.sqrt(n_waves / 2.0)


def deform_anatomy(tpl: Templates, rng: np.random.Generator) -> tuple[dict[str, np.ndarray],
                                                                      dict[str, Any]]:
    """Warp the template maps by a random smooth deformation and head-size scaling.

    Args:
        tpl: Templates to warp.
        rng: Source of randomness.

    Returns:
        ``(maps, params)``: warped ``t1``, ``gm``, ``wm``, ``csf``, ``brain`` (float32,
        ``(X, Y, Z)``) and the random draws.
    """
    shape = tpl.t1.shape
    vox = tpl.voxel_mm
    scale = rng.uniform(0.9, 1.08) * (1 + rng.uniform(-0.03, 0.03, size=3))
    amp_mm = rng.uniform(2.0, 4.5)
    centre = (np.array(shape, dtype=np.float64) - 1) / 2.0
    coords = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    src = []
    for ax in range(3):
        disp = _smooth_field(shape, rng, n_waves=6, wavelength=(50.0, 140.0), voxel_mm=vox)
        c = centre[ax] + (coords[ax] - centre[ax]) / scale[ax] + disp * (amp_mm / vox)
        src.append(c)
    src_arr = np.stack(src)
    maps = {}
    for key in ("t1", "gm", "wm", "brain"):
        maps[key] = ndimage.map_coordinates(getattr(tpl, key), src_arr, order=1, cval=0.0,
                                            prefilter=False).astype(np.float32)
    maps["brain"] = (maps["brain"] > 0.5).astype(np.float32)
    for key in ("t1", "gm", "wm"):
        maps[key] *= maps["brain"]
    maps["csf"] = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0.0, 1.0)
    params = {"scale": scale.round(4).tolist(), "deformation_mm": round(float(amp_mm), 3)}
    return maps, params


def synthesise_contrast(maps: dict[str, np.ndarray], contrast: str,
                        rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Clean image in [0, 1] of the given contrast from warped anatomy maps.

    ``t1`` is the (warped) T1 template. ``t2`` is ``csf*L_csf + gm*L_gm + wm*L_wm`` with
    per-subject levels (``L_csf = 1 > L_gm > L_wm``) plus a faint trace of the T1 texture so
    the image keeps the template's fine detail.
    """
    if contrast == "t1":
        return np.clip(maps["t1"], 0.0, 1.0), {}
    if contrast != "t2":
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    l_gm = rng.uniform(0.52, 0.64)
    l_wm = rng.uniform(0.34, 0.44)
    img = maps["csf"] * 1.0 + maps["gm"] * l_gm + maps["wm"] * l_wm
    # T1 detail (inverted, mean-free within tissue) keeps gyral structure visible
    detail = ndimage.gaussian_filter(maps["t1"], 1.0) - maps["t1"]
    img = img + 0.15 * detail
    img = np.clip(img, 0.0, 1.0) * maps["brain"]
    return img.astype(np.float32), {"t2_levels": [1.0, round(l_gm, 4), round(l_wm, 4)]}


def acquire(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
            voxel_mm: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Simulate the scanner: bias field, gamma, slice blur, Rician noise, intensity scale.

    Args:
        image: Clean image in [0, 1], ``(X, Y, Z)``.
        brain: Brain mask (bool or 0/1); the output is 0 outside it.
        rng: Source of randomness.
        voxel_mm: Voxel size (sets the bias field's spatial scale).

    Returns:
        ``(image, params)``: float32 image in scanner-like units (>= 0, 0 outside the brain).
    """
    brain = brain > 0
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    bias_amp = rng.uniform(0.05, 0.2)
    bias = np.exp(bias_amp * _smooth_field(image.shape, rng, n_waves=4,
                                           wavelength=(150.0, 300.0), voxel_mm=voxel_mm))
    x = np.power(np.clip(image, 0.0, 1.0), gamma) * bias
    axis = int(rng.integers(0, 3))
    blur = float(rng.uniform(0.0, 1.2))
    if blur > 0.05:
        x = ndimage.gaussian_filter1d(x, blur, axis=axis)
    sigma = rng.uniform(0.01, 0.03)
    n1 = rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
    x = np.sqrt((x + n1) ** 2 + n2 ** 2)
    scale = rng.uniform(300.0, 1200.0)
    out = (x * scale * brain).astype(np.float32)
    params = {"gamma": round(gamma, 4), "bias_amplitude": round(float(bias_amp), 4),
              "blur_axis": axis, "blur_sigma_vox": round(blur, 4),
              "rician_sigma": round(float(sigma), 5), "scale": round(float(scale), 2)}
    return out, params


def make_subject(index: int, *, seed: int = 0, contrast: str = "t2", resolution: int = 2,
                 lesion: str | None = None) -> Subject:
    """Generate subject ``index`` of the cohort with ``seed`` (deterministic).

    Args:
        index: Subject index (any non-negative integer; each gives a different subject).
        seed: Cohort seed.
        contrast: ``t2`` (T2-like from tissue maps) or ``t1``.
        resolution: Template resolution in mm (1 or 2).
        lesion: ``None`` (healthy) or one of :data:`disyre.demo.lesions.LESION_KINDS`.

    Returns:
        The :class:`Subject`.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if lesion is not None and lesion not in LESION_KINDS:
        raise ValueError(f"lesion must be None or one of {LESION_KINDS}, got {lesion!r}")
    tpl = load_templates(resolution)
    rng = np.random.default_rng([int(seed), int(index), 0])
    maps, p_anat = deform_anatomy(tpl, rng)
    clean, p_con = synthesise_contrast(maps, contrast, rng)
    brain = maps["brain"] > 0
    lesion_mask = None
    p_les: dict[str, Any] = {}
    if lesion is not None:
        lrng = np.random.default_rng([int(seed), int(index), 1])
        tissues = Tissues(gm=maps["gm"], wm=maps["wm"], csf=maps["csf"], brain=brain)
        res = simulate_lesion(clean, tissues, lesion, contrast, lrng, voxel_mm=tpl.voxel_mm)
        clean, lesion_mask, p_les = res.image, res.mask, res.info
    image, p_acq = acquire(clean, brain, rng, tpl.voxel_mm)
    params = {"anatomy": p_anat, "contrast": p_con, "acquisition": p_acq, "lesion": p_les}
    return Subject(name=f"demo-{index:03d}", image=image, brain=brain, affine=tpl.affine.copy(),
                   lesion_mask=lesion_mask, lesion_kind=lesion, params=params)


@dataclass
class CohortSpec:
    """What a demo cohort holds.

    Attributes:
        contrast: ``t2`` or ``t1``.
        resolution: 1 or 2 mm (2 mm: 99 x 117 x 95 voxels, the CPU-sized default).
        seed: Cohort seed.
        n_train: Healthy training subjects.
        n_val: Healthy validation subjects (threshold calibration).
        n_test_healthy: Held-out healthy test subjects (false-positive rate).
        n_test_lesion: Lesioned test subjects.
        lesion_kinds: Lesion types, assigned to the lesioned subjects in turn.
    """

    contrast: str = "t2"
    resolution: int = 2
    seed: int = 0
    n_train: int = 16
    n_val: int = 4
    n_test_healthy: int = 4
    n_test_lesion: int = 8
    lesion_kinds: list[str] = field(default_factory=lambda: list(LESION_KINDS))

    def plan(self) -> list[tuple[int, str, str | None]]:
        """``(index, split, lesion kind)`` of every subject, in order."""
        out: list[tuple[int, str, str | None]] = []
        i = 0
        for split, n in (("train", self.n_train), ("val", self.n_val),
                         ("test", self.n_test_healthy)):
            for _ in range(n):
                out.append((i, split, None))
                i += 1
        for j in range(self.n_test_lesion):
            out.append((i, "test", self.lesion_kinds[j % len(self.lesion_kinds)]))
            i += 1
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` on an impossible spec."""
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {self.contrast!r}")
        if self.resolution not in (1, 2):
            raise ValueError(f"resolution must be 1 or 2, got {self.resolution!r}")
        if self.n_train < 1 or self.n_val < 1 or self.n_test_lesion < 1:
            raise ValueError("a cohort needs at least 1 training, 1 validation and 1 "
                             "lesioned test subject")
        if self.n_test_healthy < 0:
            raise ValueError("n_test_healthy must be >= 0")
        bad = [k for k in self.lesion_kinds if k not in LESION_KINDS]
        if bad or not self.lesion_kinds:
            raise ValueError(f"lesion_kinds must be a non-empty subset of {LESION_KINDS}")


@dataclass
class Cohort:
    """A cohort on disk.

    Attributes:
        root: Folder holding ``images/``, ``labels/``, ``manifest.csv`` and ``cohort.json``.
        manifest: Path of the manifest CSV (columns of :mod:`disyre.data.manifest`).
        spec: The spec that made it.
        rows: One dict per subject (manifest columns plus ``lesion_kind``).
        reused: True when an existing cohort was reused.
    """

    root: Path
    manifest: Path
    spec: CohortSpec
    rows: list[dict[str, str]]
    reused: bool = False


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path, dtype: Any) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(arr, dtype=dtype), affine)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _cohort_key(spec: CohortSpec) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "spec": asdict(spec)}


def build_cohort(spec: CohortSpec, root: str | Path, *, progress: bool = True) -> Cohort:
    """Write a cohort to ``root`` (or reuse the one there if it has the same spec).

    Files: ``images/<subject>.nii.gz`` (float32, RAS 1 or 2 mm affine),
    ``labels/<subject>_lesion.nii.gz`` (uint8, lesioned subjects only), ``manifest.csv``
    (``subject,image,lesion_mask,brain_mask,split,contrast``; paths relative to ``root``),
    ``cohort.json`` (spec, generator version and each subject's random draws).

    Args:
        spec: What to generate.
        root: Cohort folder.
        progress: Show a progress bar.

    Returns:
        The :class:`Cohort`.

    Raises:
        OutputExistsError: ``root`` holds something that is not a cohort of this spec.
    """
    from tqdm.auto import tqdm

    from disyre.io_utils import OutputExistsError

    spec.validate()
    root = Path(root)
    meta_path = root / "cohort.json"
    key = _cohort_key(spec)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and all((root / r["image"]).is_file()
                                          for r in meta.get("rows", [])):
            _write_recipe(root, spec.resolution)
            return Cohort(root=root, manifest=root / "manifest.csv", spec=spec,
                          rows=meta["rows"], reused=True)
        # a different cohort: regenerate in place (it is a cache we own)
    elif root.is_dir() and any(root.iterdir()):
        raise OutputExistsError(f"{root}: folder holds files but no cohort.json; "
                                "choose another cohort folder")
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    params: dict[str, Any] = {}
    plan = spec.plan()
    for index, split, kind in tqdm(plan, desc="cohort", unit="subject", disable=not progress):
        s = make_subject(index, seed=spec.seed, contrast=spec.contrast,
                         resolution=spec.resolution, lesion=kind)
        img_rel = f"images/{s.name}.nii.gz"
        _save_nifti(s.image, s.affine, root / img_rel, np.float32)
        les_rel = ""
        if s.lesion_mask is not None:
            les_rel = f"labels/{s.name}_lesion.nii.gz"
            _save_nifti(s.lesion_mask, s.affine, root / les_rel, np.uint8)
        rows.append({"subject": s.name, "image": img_rel, "lesion_mask": les_rel,
                     "brain_mask": "", "split": split, "contrast": spec.contrast,
                     "lesion_kind": kind or ""})
        params[s.name] = s.params
    write_manifest([ManifestRow(subject=r["subject"], image=r["image"],
                                lesion_mask=r["lesion_mask"] or None, split=r["split"],
                                contrast=r["contrast"]) for r in rows],
                   root / "manifest.csv", overwrite=True, relative=True)
    atomic_write_json(meta_path, {"key": key, "rows": rows, "subjects": params})
    _write_recipe(root, spec.resolution)
    return Cohort(root=root, manifest=root / "manifest.csv", spec=spec, rows=rows)


def _write_recipe(root: Path, resolution: int) -> None:
    """The cohort lies where ``disyre preprocess --spacing R`` puts a raw head (the MNI152
    brain's grid): record that recipe, so that a model trained on it can map raw scans."""
    from disyre.preprocessing.recipe import PreprocessConfig, write_recipe
    from disyre.preprocessing.template import load_template

    write_recipe(root, PreprocessConfig(spacing=float(resolution)),
                 load_template("mni152", float(resolution)).grid())
