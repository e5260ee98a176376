"""One raw scan -> the template grid: reorient, N4, skull strip, register, resample, check.

:func:`preprocess_scan` runs the recipe on one scan in memory and returns a
:class:`Preprocessed` (the brain and its mask on the template grid, the mask on the scan's own
grid, the transforms both ways); :func:`write_outputs` writes it into a subject folder.

For a T2/PD/FLAIR scan with the same subject's T1 at hand, the T1 goes through the whole
recipe, the contrast is registered rigidly onto the (bias-corrected) T1, and the T1's brain
mask and template transform are reused through that rigid transform. Without a T1, deepbet
runs on the contrast itself (it was trained on T1: a warning says so).

Example::

    cfg = PreprocessConfig()
    pre = preprocess_scan("sub-01_T1w.nii.gz", cfg, load_template(), "tmp")
    write_outputs(pre, "out/sub-01")
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disyre.data.nifti import Scan, load_mask, load_scan, nifti_stem, to_canonical, to_native
from disyre.preprocessing import steps
from disyre.preprocessing.recipe import PreprocessConfig, PreprocessError
from disyre.preprocessing.template import MAX_BRAIN_ML, Template

__all__ = ["Preprocessed", "preprocess_scan", "write_outputs", "output_names"]

log = logging.getLogger(__name__)


@dataclass
class Preprocessed:
    """One scan after the recipe.

    Attributes:
        subject: Name used for outputs and messages.
        scan: The raw scan as loaded (:class:`~disyre.data.nifti.Scan`).
        corrected: The bias-corrected raw scan, ``(X, Y, Z)`` in the file's own layout.
        native_mask: Brain mask on the raw scan's own grid (file layout), bool.
        image: The brain on the template grid, ``(X, Y, Z)`` float32, 0 outside ``mask``.
        mask: The brain mask on the template grid, bool.
        lesion: A lesion mask carried onto the template grid (bool), or ``None``.
        transform: Raw scan -> template (and back).
        template: The template.
        dice: Brain-mask Dice of ``mask`` with the template's brain mask.
        brain_ml: Volume of ``native_mask`` in mL.
        seconds: Wall time of each stage.
        warnings: Messages about this scan (also issued as Python warnings).
        t1: The T1's own result when the scan was processed through its T1.
    """

    subject: str
    scan: Scan
    corrected: np.ndarray
    native_mask: np.ndarray
    image: np.ndarray
    mask: np.ndarray
    lesion: np.ndarray | None
    transform: steps.Transform
    template: Template
    dice: float
    brain_ml: float
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    t1: Preprocessed | None = None

    @property
    def affine(self) -> np.ndarray:
        """The raw scan's affine."""
        return self.scan.affine


def _raw(path: str | Path) -> tuple[Scan, np.ndarray]:
    """The scan (validated by the data layer: 3D, readable, finite) and its native array."""
    scan = load_scan(path, nan_policy="zero")
    return scan, to_native(scan.data, scan).astype(np.float32)


def _ml(mask: np.ndarray, affine: np.ndarray) -> float:
    return float(mask.sum()) * abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def preprocess_scan(image: str | Path, cfg: PreprocessConfig,
                    template: Template | Callable[[], Template],
                    workdir: str | Path, *, t1: str | Path | None = None,
                    lesion: str | Path | None = None, binarize_lesion: bool = False,
                    contrast: str = "t1", device: str = "cpu",
                    subject: str | None = None) -> Preprocessed:
    """Run the recipe on one raw scan.

    Args:
        image: The raw NIfTI scan (3D).
        cfg: The recipe.
        template: The template (from :func:`~disyre.preprocessing.template.load_template`),
            or a function that loads it (called only once the scan has passed its checks).
        workdir: Folder for the transform files (kept: :func:`write_outputs` copies them).
        t1: The same subject's T1 scan, for a contrast other than T1.
        lesion: A lesion mask on ``image``'s grid, carried onto the template grid.
        binarize_lesion: The lesion file is a label map (every label > 0 is lesion).
        contrast: The scan's contrast (``t1``, ``t2``, ``pd``, ``flair``, ...).
        device: Torch device of deepbet.
        subject: Name for outputs and messages (default: the file name without .nii/.nii.gz).

    Returns:
        The :class:`Preprocessed` scan.

    Raises:
        disyre.data.nifti.InputError: Unreadable, 4D or empty scan.
        PreprocessError: No brain found, or registration failed its check (the message names
            the scan and the figure).
    """
    t0 = time.perf_counter()
    workdir = Path(workdir)
    scan, arr = _raw(image)
    name = str(scan.path)
    subject = subject or nifti_stem(scan.path.name)
    secs: dict[str, float] = {}
    msgs: list[str] = []

    def lap(stage: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        secs[stage] = secs.get(stage, 0.0) + now - t0
        t0 = now

    img = steps.to_ants(arr, scan.affine)  # the ANTs image carries the orientation
    lap("load")
    if cfg.n4:
        img = steps.n4(img, steps.head_mask(img))
        lap("n4")
    corrected = img.numpy()
    t1_pre = None
    if t1 is not None:
        t1_pre = preprocess_scan(t1, cfg, template, workdir / "t1", contrast="t1",
                                 device=device, subject=f"{subject} (T1)")
        for k, v in t1_pre.seconds.items():
            secs[f"t1_{k}"] = v
        t1_img = steps.to_ants(t1_pre.corrected, t1_pre.affine)
        t0 = time.perf_counter()
        rigid = steps.register(t1_img, img, "rigid", workdir / "to_t1", prefix="to_t1_")
        lap("register_to_t1")
        t1_mask = steps.to_ants(t1_pre.native_mask.astype(np.float32), t1_pre.affine)
        native_mask = steps.apply(img, t1_mask, rigid, inverse=True).numpy() > 0.5
        transform = rigid.then(t1_pre.transform)
        lap("mask_from_t1")
    else:
        if cfg.skull_strip:
            if contrast.lower() not in ("t1", "t1w", "t1ce", ""):
                msg = (f"{name}: skull stripping a {contrast.upper()} scan without its T1 "
                       "(deepbet was trained on T1; give the T1 for a more reliable mask)")
                msgs.append(msg)
                warnings.warn(msg, stacklevel=2)
            native_mask = steps.skull_strip(corrected, scan.affine, device=device, name=name)
            lap("skull_strip")
        else:
            native_mask = arr > 0
        transform = None
    brain_ml = _ml(native_mask, scan.affine)
    if not cfg.min_brain_ml <= brain_ml <= MAX_BRAIN_ML:
        how = "skull stripping gave" if cfg.skull_strip or t1 is not None else \
            "the non-zero voxels (the scan was declared skull-stripped) make"
        raise PreprocessError(
            f"{name}: no brain found ({how} a mask of {brain_ml:.0f} mL, outside "
            f"[{cfg.min_brain_ml:.0f}, {MAX_BRAIN_ML:.0f}] mL)"
            + ("" if cfg.skull_strip else "; is the scan really skull-stripped?"))
    if callable(template):
        template = template()
    fixed = template.ants()
    if transform is None:
        brain = steps.to_ants(np.where(native_mask, corrected, 0), scan.affine)
        transform = steps.register(fixed, brain, cfg.registration, workdir / "to_template",
                                   prefix="to_template_")
        lap("register")
    warped = steps.apply(fixed, img, transform).numpy()
    mask = steps.apply(fixed, steps.to_ants(native_mask.astype(np.float32), scan.affine),
                       transform).numpy() > 0.5
    out = np.where(mask, np.clip(warped, 0, None), 0).astype(np.float32)
    les = None
    if lesion is not None:
        lm = to_native(load_mask(lesion, like=scan, binarize=binarize_lesion), scan)
        les = steps.apply(fixed, steps.to_ants(lm.astype(np.float32), scan.affine),
                          transform).numpy() > 0.5
    lap("resample")
    d = steps.dice(mask, template.mask)
    if d < cfg.min_dice:
        raise PreprocessError(
            f"{name}: registration to the template failed its check (brain-mask Dice with the "
            f"template's brain {d:.3f} < {cfg.min_dice}); not passing a misregistered brain on")
    return Preprocessed(subject=subject, scan=scan, corrected=corrected, native_mask=native_mask,
                        image=out, mask=mask, lesion=les, transform=transform,
                        template=template, dice=d, brain_ml=brain_ml, seconds=secs,
                        warnings=msgs + (t1_pre.warnings if t1_pre else []), t1=t1_pre)


def output_names(subject: str) -> dict[str, str]:
    """File names of a subject's outputs (inside its folder)."""
    return {"image": f"{subject}.nii.gz", "mask": f"{subject}_mask.nii.gz",
            "native_mask": f"{subject}_native_mask.nii.gz",
            "lesion": f"{subject}_lesion_mask.nii.gz", "qc": f"{subject}_qc.png",
            "record": f"{subject}.json"}


def _save(arr: np.ndarray, affine: np.ndarray, path: Path, dtype: Any) -> None:
    import nibabel as nib

    from disyre.io_utils import atomic_path

    img = nib.Nifti1Image(np.asarray(arr).astype(dtype), affine)
    img.set_qform(affine, code=2)  # aligned to the template's space
    img.set_sform(affine, code=2)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_outputs(pre: Preprocessed, folder: str | Path, qc: bool = True) -> dict[str, Any]:
    """Write a subject's outputs into ``folder`` (atomically, file by file).

    Files: ``<subject>.nii.gz`` (brain on the template grid), ``<subject>_mask.nii.gz``
    (its mask), ``<subject>_native_mask.nii.gz`` (the mask on the raw scan's grid),
    ``<subject>_lesion_mask.nii.gz`` (with a lesion mask), the transform files
    ``<subject>_to_template_*`` (and ``<subject>_to_t1_*``), ``<subject>_qc.png``.

    Returns:
        The record's ``outputs`` and ``transform`` entries (names relative to ``folder``).
    """
    from disyre.data.nifti import save_like

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = output_names(pre.subject)
    tpl = pre.template
    _save(pre.image, tpl.affine, folder / names["image"], np.float32)
    _save(pre.mask, tpl.affine, folder / names["mask"], np.uint8)
    save_like(to_canonical(pre.native_mask, pre.scan.ornt), pre.scan,
              folder / names["native_mask"], dtype=np.uint8)
    outputs = {k: names[k] for k in ("image", "mask", "native_mask")}
    if pre.lesion is not None:
        _save(pre.lesion, tpl.affine, folder / names["lesion"], np.uint8)
        outputs["lesion"] = names["lesion"]
    tf = pre.transform.moved(folder, f"{pre.subject}_")
    if qc:
        from disyre.preprocessing.qc import save_qc_png

        save_qc_png(pre, folder / names["qc"])
        outputs["qc"] = names["qc"]
    return {"outputs": outputs, "transform": tf.to_dict(relative_to=folder)}
