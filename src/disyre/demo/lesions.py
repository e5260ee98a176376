"""Lesion simulator for the demo cohort, independent of the training corruption.

Three clinically motivated lesion types, drawn on a clean image with its tissue maps:

- ``tumour``: a glioma-like mass. An irregular solid core with an enhancing rim and (usually)
  a necrotic centre, surrounded by oedema that spreads preferentially through white matter.
  **Mass effect**: the neighbouring tissue is pushed outwards by a radial, volume-conserving
  displacement that fades with distance, so the image also changes *outside* the lesion mask
  (as in real scans). Ground truth = core + necrosis + oedema (BraTS "whole tumour").
- ``stroke``: an infarct following a vascular-territory-like wedge of one hemisphere (middle,
  anterior or posterior cerebral artery-like direction), cortex plus underlying white matter.
- ``ms``: several small ovoid white-matter lesions, mostly periventricular.

Appearance is contrast-appropriate and relative to the subject's own tissue intensities:
on T2 every lesion type is hyperintense (necrosis and oedema most, close to CSF); on T1 they
are hypointense (stroke and necrosis close to CSF, MS lesions mildly).

The simulator never imports the training corruption: it shares no code with it, so the demo
does not test the model on the anomalies it was trained to undo.

Example:
    >>> import numpy as np
    >>> from disyre.demo.anatomy import load_templates
    >>> t = load_templates(2)
    >>> tis = Tissues(gm=t.gm, wm=t.wm, csf=t.csf, brain=t.brain > 0)
    >>> img = t.csf + 0.6 * t.gm + 0.4 * t.wm
    >>> r = simulate_lesion(img, tis, "stroke", "t2", np.random.default_rng(0))
    >>> bool(r.mask.any()), float(img[r.mask].mean()) < float(r.image[r.mask].mean())
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

LESION_KINDS = ("tumour", "stroke", "ms")


@dataclass
class Tissues:
    """Tissue probability maps of a subject, ``(X, Y, Z)`` float in [0, 1], plus brain mask."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray


@dataclass
class LesionResult:
    """A simulated lesion.

    Attributes:
        image: The lesioned image (float32, same shape and range as the input).
        mask: Ground-truth mask (bool): what a radiologist would segment.
        kind: Lesion type.
        info: Centre (voxel), sizes and intensities drawn.
    """

    image: np.ndarray
    mask: np.ndarray
    kind: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Levels:
    csf: float
    gm: float
    wm: float


def _tissue_levels(image: np.ndarray, t: Tissues) -> _Levels:
    def med(sel: np.ndarray, fallback: float) -> float:
        return float(np.median(image[sel])) if sel.sum() > 20 else fallback

    brain = t.brain > 0
    hi = float(np.percentile(image[brain], 99)) if brain.any() else 1.0
    return _Levels(csf=med(brain & (t.csf > 0.8), 0.5 * hi), gm=med(brain & (t.gm > 0.7), 0.6 * hi),
                   wm=med(brain & (t.wm > 0.9), 0.5 * hi))


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-8)


def _dist_mm(shape: tuple[int, ...], centre: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, ...]:
    g = [(np.arange(n, dtype=np.float32) - centre[i]) * voxel_mm for i, n in enumerate(shape)]
    dx, dy, dz = np.meshgrid(*g, indexing="ij", sparse=True)
    r = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
    return r, dx, dy, dz


def _pick(cands: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = np.argwhere(cands)
    if len(idx) == 0:
        raise ValueError("no valid location for the lesion in this brain")
    return idx[rng.integers(len(idx))].astype(np.float64)


def _soft(region: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """Softened indicator: Gaussian blur truncated at 2 voxels, so a lesion's edge is bounded."""
    return ndimage.gaussian_filter(region.astype(np.float32), sigma, truncate=2.0 / sigma)


def _blend(image: np.ndarray, weight: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    return image * (1.0 - weight) + target * weight


def _mass_effect(arrays: list[np.ndarray], centre: np.ndarray, r_insert_mm: float,
                 falloff_mm: float, voxel_mm: float) -> list[np.ndarray]:
    """Push tissue radially away from ``centre`` as if a sphere of radius ``r_insert`` grew.

    A point at distance ``rho`` moves to ``r`` with ``r^3 = rho^3 + R^3`` (volume-conserving),
    the displacement fading as ``exp(-(r / falloff)^2)`` so the brain outline stays put.
    """
    shape = arrays[0].shape
    r, dx, dy, dz = _dist_mm(shape, centre, voxel_mm)
    rho = np.cbrt(np.maximum(r ** 3 - r_insert_mm ** 3, 0.0))
    fade = np.exp(-((r / falloff_mm) ** 2))
    src_r = r - (r - rho) * fade
    ratio = np.where(r > 1e-6, src_r / np.maximum(r, 1e-6), 0.0)
    coords = np.stack([
        centre[0] + dx * ratio / voxel_mm,
        centre[1] + dy * ratio / voxel_mm,
        centre[2] + dz * ratio / voxel_mm,
    ]).astype(np.float32)
    return [ndimage.map_coordinates(a, coords, order=1, cval=0.0, prefilter=False)
            .astype(np.float32) for a in arrays]


def tumour(image: np.ndarray, t: Tissues, contrast: str, rng: np.random.Generator,
           voxel_mm: float = 2.0, mass_effect: bool = True) -> LesionResult:
    """Glioma-like tumour: enhancing rim, necrotic core, oedema, mass effect.

    Args:
        image: Clean image ``(X, Y, Z)`` (0 outside the brain).
        t: Tissue maps of ``image``.
        contrast: ``t2`` or ``t1``.
        rng: Source of randomness.
        voxel_mm: Isotropic voxel size.
        mass_effect: Displace the surrounding tissue (on by default).

    Returns:
        The :class:`LesionResult`; the mask is core + necrosis + oedema.
    """
    lv = _tissue_levels(image, t)
    brain = t.brain > 0
    r_core = rng.uniform(10.0, 20.0)
    r_oed = r_core * rng.uniform(1.4, 2.0)
    inner = ndimage.distance_transform_edt(brain) * voxel_mm > r_core * 0.7 + 4.0
    centre = _pick(inner & (t.wm + t.gm > 0.7), rng)
    gm, wm, img = t.gm, t.wm, image
    r_ins = r_core * rng.uniform(0.8, 1.1)
    if mass_effect:
        img, gm, wm = _mass_effect([image, t.gm, t.wm], centre, r_ins, 4.0 * r_core, voxel_mm)
    r = _dist_mm(image.shape, centre, voxel_mm)[0]
    n1 = _smooth_noise(image.shape, rng, 3.0)
    n2 = _smooth_noise(image.shape, rng, 4.0)
    d_core = r / r_core + 0.18 * n1
    core = d_core < 1.0
    has_necrosis = rng.random() < 0.75
    nec = d_core < rng.uniform(0.45, 0.7) if has_necrosis else np.zeros_like(core)
    rim_width = rng.uniform(0.15, 0.3)
    rim = core & ~nec & (d_core > 1.0 - rim_width)
    solid = core & ~nec & ~rim
    oed = (r / r_oed + 0.25 * n2 < 1.0) & (wm + 0.4 * gm > 0.45)
    whole = (core | oed) & brain
    w_oed = _soft(oed & ~core & brain)
    w_core = _soft(core & brain)
    w_nec = _soft(nec & brain)
    w_rim = _soft(rim & brain)
    strength = rng.uniform(0.75, 1.0)
    tex = 1.0 + 0.05 * _smooth_noise(image.shape, rng, 1.5)
    if contrast == "t2":
        up = lv.csf - lv.gm
        t_oed = lv.gm + strength * 0.6 * up
        t_solid = lv.gm + strength * 0.35 * up
        t_rim = lv.gm + strength * 0.2 * up
        t_nec = lv.gm + strength * 1.0 * up
    else:
        down = lv.wm - lv.csf
        t_oed = lv.wm - strength * 0.35 * down
        t_solid = lv.wm - strength * 0.5 * down
        t_rim = lv.wm - strength * 0.3 * down
        t_nec = lv.csf + (1 - strength) * 0.3 * down
    out = _blend(img, 0.9 * w_oed, t_oed * tex)
    out = _blend(out, 0.9 * w_core * (1 - w_rim) * (1 - w_nec), t_solid * tex)
    out = _blend(out, 0.9 * w_rim, t_rim * tex)
    out = _blend(out, 0.95 * w_nec, t_nec * tex)
    out = np.clip(out, 0.0, 1.0) * brain
    info = {"centre_vox": centre.astype(int).tolist(), "core_radius_mm": round(r_core, 2),
            "oedema_radius_mm": round(r_oed, 2), "necrosis": bool(has_necrosis),
            "mass_effect": bool(mass_effect), "solid_voxels": int(solid.sum()),
            "volume_ml": round(float(whole.sum()) * voxel_mm ** 3 / 1000, 2)}
    return LesionResult(image=out.astype(np.float32), mask=whole, kind="tumour", info=info)


_TERRITORIES = {
    # direction (x sign relative to the hemisphere, y, z) of the territory from the origin
    "mca": (1.0, 0.0, 0.25),
    "aca": (0.25, 0.8, 0.6),
    "pca": (0.35, -1.0, 0.0),
}


def stroke(image: np.ndarray, t: Tissues, contrast: str, rng: np.random.Generator,
           voxel_mm: float = 2.0) -> LesionResult:
    """Infarct in a vascular-territory-like wedge of one hemisphere (cortex + white matter).

    Args:
        image: Clean image ``(X, Y, Z)``.
        t: Tissue maps of ``image``.
        contrast: ``t2`` (hyperintense) or ``t1`` (hypointense).
        rng: Source of randomness.
        voxel_mm: Isotropic voxel size.

    Returns:
        The :class:`LesionResult`.
    """
    lv = _tissue_levels(image, t)
    brain = t.brain > 0
    com = np.array(ndimage.center_of_mass(brain))
    side = 1.0 if rng.random() < 0.5 else -1.0
    name = str(rng.choice(list(_TERRITORIES)))
    d = np.array(_TERRITORIES[name], dtype=np.float64)
    d[0] *= side
    d += rng.normal(0, 0.15, size=3)
    d /= np.linalg.norm(d)
    origin = com + np.array([side * 8.0, 0.0, 0.0]) / voxel_mm
    r, dx, dy, dz = _dist_mm(image.shape, origin, voxel_mm)
    cosang = (dx * d[0] + dy * d[1] + dz * d[2]) / np.maximum(r, 1e-6)
    half = np.deg2rad(rng.uniform(12.0, 24.0))
    n = _smooth_noise(image.shape, rng, 3.0)
    depth = rng.uniform(15.0, 35.0)
    x_idx = np.arange(image.shape[0], dtype=np.float32)[:, None, None]
    hemi = (x_idx - com[0]) * side > 1.0
    wedge = (cosang > np.cos(half * (1 + 0.2 * n))) & (r > depth) & hemi
    region = wedge & brain & (t.gm + t.wm > 0.5)
    region = ndimage.binary_opening(region, iterations=1)
    lab, nlab = ndimage.label(region)
    if nlab > 1:
        sizes = ndimage.sum(region, lab, index=range(1, nlab + 1))
        region = lab == (1 + int(np.argmax(sizes)))
    if not region.any():
        raise ValueError("stroke territory fell outside the brain")
    w = _soft(region)
    strength = rng.uniform(0.5, 0.85)
    tex = 1.0 + 0.04 * _smooth_noise(image.shape, rng, 1.5)
    if contrast == "t2":
        target = lv.gm + strength * (lv.csf - lv.gm)
    else:
        target = lv.csf + (1 - strength) * (lv.gm - lv.csf)
    out = np.clip(_blend(image, 0.9 * w, target * tex), 0.0, 1.0) * brain
    info = {"territory": name, "hemisphere": "right" if side > 0 else "left",
            "half_angle_deg": round(float(np.rad2deg(half)), 1),
            "volume_ml": round(float(region.sum()) * voxel_mm ** 3 / 1000, 2)}
    return LesionResult(image=out.astype(np.float32), mask=region, kind="stroke", info=info)


def ms_lesions(image: np.ndarray, t: Tissues, contrast: str, rng: np.random.Generator,
               voxel_mm: float = 2.0) -> LesionResult:
    """Several small ovoid white-matter lesions, mostly periventricular (MS-like).

    Args:
        image: Clean image ``(X, Y, Z)``.
        t: Tissue maps of ``image``.
        contrast: ``t2`` (hyperintense) or ``t1`` (mildly hypointense).
        rng: Source of randomness.
        voxel_mm: Isotropic voxel size.

    Returns:
        The :class:`LesionResult`.
    """
    lv = _tissue_levels(image, t)
    brain = t.brain > 0
    depth = ndimage.distance_transform_edt(brain) * voxel_mm
    ventricles = (t.csf > 0.6) & (depth > 20.0)
    near_v = ndimage.distance_transform_edt(~ventricles) * voxel_mm
    wm_core = (t.wm > 0.8) & brain
    peri = wm_core & (near_v < 10.0)
    deep = wm_core & (depth > 12.0)
    n_les = int(rng.integers(4, 11))
    mask = np.zeros(image.shape, dtype=bool)
    weight = np.zeros(image.shape, dtype=np.float32)
    shape = np.array(image.shape)
    for _ in range(n_les):
        cands = peri if (rng.random() < 0.75 and peri.any()) else deep
        c = _pick(cands, rng)
        radii = rng.uniform(2.5, 6.0, size=3) * np.array([1.0, 1.0, rng.uniform(1.2, 2.0)])
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        half = int(np.ceil(radii.max() / voxel_mm)) + 2
        lo = np.maximum(c.astype(int) - half, 0)
        hi = np.minimum(c.astype(int) + half + 1, shape)
        g = np.meshgrid(*[(np.arange(lo[i], hi[i]) - c[i]) * voxel_mm for i in range(3)],
                        indexing="ij")
        p = np.stack(g, -1) @ rot
        q = ((p / radii) ** 2).sum(-1)
        sl = tuple(slice(lo[i], hi[i]) for i in range(3))
        blob = (q < 1.0) & (t.wm[sl] > 0.3) & brain[sl]
        mask[sl] |= blob
        weight[sl] = np.maximum(weight[sl], np.clip(1.5 * (1.0 - q), 0.0, 1.0)
                                * (t.wm[sl] > 0.3))
    if not mask.any():
        raise ValueError("no white matter to place MS-like lesions in")
    strength = rng.uniform(0.4, 0.75)
    if contrast == "t2":
        target = lv.gm + strength * (lv.csf - lv.gm)
    else:
        target = lv.wm - strength * (lv.wm - lv.csf)
    w = _soft(weight, sigma=0.5)
    out = np.clip(_blend(image, 0.9 * w, target), 0.0, 1.0) * brain
    info = {"n_lesions": n_les, "volume_ml": round(float(mask.sum()) * voxel_mm ** 3 / 1000, 2)}
    return LesionResult(image=out.astype(np.float32), mask=mask, kind="ms", info=info)


def simulate_lesion(image: np.ndarray, tissues: Tissues, kind: str, contrast: str,
                    rng: np.random.Generator | int, voxel_mm: float = 2.0) -> LesionResult:
    """Draw one lesion of ``kind`` on ``image`` (deterministic for a given seed).

    Args:
        image: Clean image ``(X, Y, Z)`` in [0, 1], 0 outside the brain.
        tissues: Its tissue maps.
        kind: ``tumour``, ``stroke`` or ``ms``.
        contrast: ``t2`` or ``t1``.
        rng: A ``numpy.random.Generator`` or an integer seed.
        voxel_mm: Isotropic voxel size in mm.

    Returns:
        The :class:`LesionResult` (lesioned image, binary ground-truth mask).
    """
    if contrast not in ("t1", "t2"):
        raise ValueError(f"contrast must be 't1' or 't2', got {contrast!r}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(int(rng))
    fn = {"tumour": tumour, "stroke": stroke, "ms": ms_lesions}.get(kind)
    if fn is None:
        raise ValueError(f"unknown lesion kind {kind!r}; choose from {LESION_KINDS}")
    res = fn(np.asarray(image, dtype=np.float32), tissues, contrast, rng, voxel_mm=voxel_mm)
    res.info["contrast"] = contrast
    return res
