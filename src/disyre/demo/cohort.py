"""A demo cohort of "subjects" generated from real anatomy (the MNI152 templates).

Each subject is the template anatomy, changed the way healthy brains differ, then imaged:

1. **anatomy** (:class:`Anatomy`, drawn from :class:`AnatomyRanges`): lateral ventricles
   grown or shrunk (0.6-2.2x the template's volume), cortical thinning (0-0.35 mm of grey
   matter turned into CSF: thinner cortex, wider sulci), head size, a small rotation and a
   smooth random deformation; the ``older`` profile (the transfer check) draws larger
   ventricles (2.8-4x) and more thinning (0.45-0.7 mm) than any ``typical`` subject;
2. **contrast**: ``csf*L_csf + gm*L_gm + wm*L_wm`` with per-subject tissue levels, plus the
   T1 template's own texture (``t1``) or a faint inverted trace of it (``t2``: CSF bright,
   grey > white matter);
3. optionally a **lesion** from :mod:`disyre.demo.lesions` (drawn on the clean anatomy, so it
   goes through the same acquisition as the tissue around it);
4. **acquisition**: a smooth multiplicative bias field, contrast/gamma jitter, slice-thickness
   blur along one axis, Rician noise, a scanner-like intensity scale; skull-stripped
   (background exactly 0).

A subject is a pure function of ``(seed, index)`` (plus contrast/resolution/lesion kind and
anatomy profile). :func:`build_cohort` writes a cohort as NIfTI files with a manifest CSV, so
every other stage reads it like user data, and reuses it when it already exists with the same
parameters. docs/demo.md gives each range and the published figures behind it.

Example:
    >>> s = make_subject(3, seed=0, contrast="t2")
    >>> s.image.shape, s.image.dtype.name, bool(s.image[~s.brain].any())
    ((99, 117, 95), 'float32', False)
    >>> old = make_subject(3, seed=0, contrast="t2", anatomy="older")
    >>> old.params["anatomy"]["ventricles"] > s.params["anatomy"]["ventricles"]
    True
"""

from __future__ import annotations

import functools
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
#: split of the held-out healthy subjects with ``older`` anatomy (the transfer check)
TRANSFER_SPLIT = "transfer"
#: bumped whenever the generator changes, so cached cohorts are rebuilt
GENERATOR_VERSION = 2


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


# --------------------------------------------------------------------------------------------
# anatomy: what differs between healthy brains


@dataclass(frozen=True)
class AnatomyRanges:
    """Ranges the per-subject anatomy is drawn from (uniform; ventricles log-uniform).

    The template (MNI152 2009, an average of 152 adults aged 18-44) stands for a young adult;
    the ``typical`` ranges cover healthy adults up to about 65, ``older`` lies beyond them
    (docs/demo.md gives the published figures behind each range).

    Attributes:
        ventricles: Lateral-ventricle volume relative to the template's (17 mL), before the
            head-size scaling.
        thinning_mm: Cortical thinning: grey matter turned into CSF at the pial side, in mm.
        head_scale: Isotropic head-size scale relative to the MNI152 brain.
        head_aniso: Largest extra per-axis scale (``1 +- head_aniso``).
        rotation_deg: Largest rotation (degrees) about the left-right (pitch),
            anterior-posterior (roll) and superior-inferior (yaw) axes.
        deformation_mm: Amplitude of the smooth random deformation (shape of gyri, sulci,
            structures).
    """

    ventricles: tuple[float, float] = (0.6, 2.2)
    thinning_mm: tuple[float, float] = (0.0, 0.35)
    head_scale: tuple[float, float] = (0.85, 1.05)
    head_aniso: float = 0.04
    rotation_deg: tuple[float, float, float] = (8.0, 5.0, 5.0)
    deformation_mm: tuple[float, float] = (2.0, 4.5)


#: anatomy profiles: ``typical`` (training, validation, test) and ``older`` (the transfer
#: check: larger ventricles and thinner cortex than any training subject)
ANATOMY_PROFILES: dict[str, AnatomyRanges] = {
    "typical": AnatomyRanges(),
    "older": AnatomyRanges(ventricles=(2.8, 4.0), thinning_mm=(0.45, 0.7)),
}


@dataclass
class Anatomy:
    """One subject's anatomy draws (the neutral values reproduce the template).

    Attributes:
        ventricles: Lateral-ventricle volume relative to the template's.
        thinning_mm: Cortical thinning in mm.
        scale: Head-size scale per axis (X, Y, Z).
        rotation_deg: Rotation about X (pitch), Y (roll) and Z (yaw), degrees.
        deformation_mm: Amplitude of the smooth random deformation (0: none).
        field_seed: Seed of the smooth deformation's random waves.
    """

    ventricles: float = 1.0
    thinning_mm: float = 0.0
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    deformation_mm: float = 0.0
    field_seed: int = 0


def draw_anatomy(rng: np.random.Generator, ranges: AnatomyRanges | str = "typical") -> Anatomy:
    """Draw one subject's :class:`Anatomy` from ``ranges`` (or a profile name)."""
    r = ANATOMY_PROFILES[ranges] if isinstance(ranges, str) else ranges
    lo, hi = np.log(r.ventricles[0]), np.log(r.ventricles[1])
    head = rng.uniform(*r.head_scale) * (1 + rng.uniform(-r.head_aniso, r.head_aniso, size=3))
    rot = rng.uniform(-1.0, 1.0, size=3) * np.asarray(r.rotation_deg)
    return Anatomy(ventricles=round(float(np.exp(rng.uniform(lo, hi))), 4),
                   thinning_mm=round(float(rng.uniform(*r.thinning_mm)), 4),
                   scale=tuple(round(float(x), 4) for x in head),
                   rotation_deg=tuple(round(float(x), 3) for x in rot),
                   deformation_mm=round(float(rng.uniform(*r.deformation_mm)), 3),
                   field_seed=int(rng.integers(0, 2**31 - 1)))


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    a, b, c = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: Euler step of the ventricle flow (in units of its speed, at most 1 voxel per unit)
_FLOW_STEP = 0.5
#: flow times tabulated for the ventricle-volume lookup
_FLOW_TIMES = np.array([-4.0, 10.0])


@dataclass(frozen=True)
class _VentricleModel:
    """The template's ventricle flow: speed field in a box around the ventricles and the
    tabulated ventricle volume ratio of each flow time."""

    box: tuple[slice, slice, slice]
    speed: np.ndarray  # (3, *box shape) float32, voxels per unit time
    times: np.ndarray
    log_ratio: np.ndarray


def _interp(field: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(field, coords, order=1, mode="nearest", prefilter=False)


def _flow_positions(speed: np.ndarray, start: np.ndarray, time: float) -> np.ndarray:
    """Follow ``speed`` from ``start`` (3, N) for ``time`` in Euler steps of ``_FLOW_STEP``."""
    n = int(np.ceil(abs(time) / _FLOW_STEP - 1e-9))
    p = start.copy()
    for _ in range(n):
        p += (time / n) * np.stack([_interp(speed[a], p) for a in range(3)])
    return p


@functools.lru_cache(maxsize=2)
def _ventricle_model(resolution: int) -> _VentricleModel:
    """Speed field pushing tissue towards (time > 0) or away from the lateral ventricles.

    The speed is the gradient of the ventricle mask smoothed with a 6 mm Gaussian, scaled to
    at most 1 voxel per unit time. Following a gradient field for a while is a smooth,
    fold-free deformation; sampling the template at the followed positions grows the
    ventricles into the surrounding white matter (or shrinks them). The ventricle volume
    ratio of each flow time is tabulated once per resolution.
    """
    tpl = load_templates(resolution)
    seg = tpl.ventricles > 0.05
    margin = int(np.ceil(24.0 / tpl.voxel_mm))
    idx = np.argwhere(seg)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, seg.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    smooth = ndimage.gaussian_filter(seg[box].astype(np.float32), 6.0 / tpl.voxel_mm)
    speed = np.stack(np.gradient(smooth)).astype(np.float32)
    speed /= float(np.sqrt((speed ** 2).sum(0)).max())
    vent = np.ascontiguousarray(tpl.ventricles[box])
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in vent.shape],
                                indexing="ij")).reshape(3, -1)
    total = float(vent.sum())
    entries = [(0.0, 0.0)]
    for sign, end in ((1.0, _FLOW_TIMES.max()), (-1.0, -_FLOW_TIMES.min())):
        p = grid.copy()  # one integration per direction, reading the volume at every step
        for i in range(1, int(round(end / _FLOW_STEP)) + 1):
            p += sign * _FLOW_STEP * np.stack([_interp(speed[a], p) for a in range(3)])
            v = float(ndimage.map_coordinates(vent, p, order=1, prefilter=False).sum())
            entries.append((sign * i * _FLOW_STEP, float(np.log(max(v, 1e-6) / total))))
    tab = np.array(sorted(entries))
    speed.setflags(write=False)
    # the ratio grows with the flow time; keep the table strictly increasing for the lookup
    return _VentricleModel(box=box, speed=speed, times=tab[:, 0],
                           log_ratio=np.maximum.accumulate(tab[:, 1]))


def ventricle_flow_time(ratio: float, resolution: int = 2) -> float:
    """Flow time that scales the template's lateral ventricles by ``ratio`` (volume).

    Raises:
        ValueError: ``ratio`` is outside what the flow reaches without folding.
    """
    m = _ventricle_model(resolution)
    lr = np.log(ratio) if ratio > 0 else -np.inf
    if not m.log_ratio.min() <= lr <= m.log_ratio.max():
        raise ValueError(f"ventricle ratio {ratio} outside the modelled range "
                         f"[{np.exp(m.log_ratio.min()):.2f}, {np.exp(m.log_ratio.max()):.2f}]")
    return float(np.interp(lr, m.log_ratio, m.times))


def deform_anatomy(tpl: Templates, anat: Anatomy | np.random.Generator
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The template's maps for one subject's anatomy.

    Steps, in the template's frame: the lateral ventricles grow or shrink (a flow along the
    gradient of the smoothed ventricle mask, sized to ``anat.ventricles``); then head size
    (per-axis scale) and head position (rotation) about the brain's centre, and a smooth
    random deformation (sum of plane waves, wavelengths 50-140 mm); all in one resampling.
    Finally the cortex thins by ``anat.thinning_mm`` (:func:`thin_cortex`).

    Args:
        tpl: Templates to warp.
        anat: The anatomy, or a generator to draw a ``typical`` one from.

    Returns:
        ``(maps, params)``: ``t1`` (the warped template), ``gm``, ``wm``, ``csf``, ``brain``,
        ``ventricles``, ``texture`` (the part of ``t1`` its tissue model does not explain)
        as float32 ``(X, Y, Z)``, and the anatomy's values.
    """
    if isinstance(anat, np.random.Generator):
        anat = draw_anatomy(anat)
    shape = tpl.t1.shape
    vox = tpl.voxel_mm
    centre = np.argwhere(tpl.brain > 0).mean(0)
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                  indexing="ij")).reshape(3, -1)
    inv = (np.diag(1.0 / np.asarray(anat.scale)) @ _rotation(anat.rotation_deg).T)
    src = (inv @ (coords - centre[:, None]) + centre[:, None]).astype(np.float32)
    if anat.deformation_mm > 0:
        frng = np.random.default_rng(anat.field_seed)
        for ax in range(3):
            disp = _smooth_field(shape, frng, n_waves=6, wavelength=(50.0, 140.0),
                                 voxel_mm=vox)
            src[ax] += disp.reshape(-1) * (anat.deformation_mm / vox)
    if anat.ventricles != 1.0:
        m = _ventricle_model(int(round(vox)))
        t = ventricle_flow_time(anat.ventricles, int(round(vox)))
        lo = np.array([s.start for s in m.box], np.float32)[:, None]
        hi = np.array([s.stop - 1 for s in m.box], np.float32)[:, None]
        inside = np.all((src >= lo) & (src <= hi), axis=0)
        src[:, inside] = _flow_positions(m.speed, src[:, inside] - lo, t) + lo
    # only points that land in the template brain's bounding box can be non-zero
    idx = np.argwhere(tpl.brain > 0)
    lo, hi = idx.min(0)[:, None] - 1, idx.max(0)[:, None] + 1
    hit = np.all((src >= lo) & (src <= hi), axis=0)
    src = src[:, hit]
    maps = {}
    for key in ("t1", "gm", "wm", "brain", "ventricles"):
        flat = np.zeros(hit.size, np.float32)
        flat[hit] = ndimage.map_coordinates(getattr(tpl, key), src, order=1, cval=0.0,
                                            prefilter=False)
        maps[key] = flat.reshape(shape)
    maps["brain"] = (maps["brain"] > 0.5).astype(np.float32)
    for key in ("t1", "gm", "wm", "ventricles"):
        maps[key] *= maps["brain"]
    maps["csf"] = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0.0, 1.0)
    t_csf, t_gm, t_wm = _template_t1_levels(int(round(vox)))
    # the template's texture that its tissue model does not explain (kept through thinning)
    maps["texture"] = maps["t1"] - (maps["csf"] * t_csf + maps["gm"] * t_gm
                                    + maps["wm"] * t_wm) * maps["brain"]
    if anat.thinning_mm > 0:
        maps = thin_cortex(maps, anat.thinning_mm, vox)
    return maps, asdict(anat)


def thin_cortex(maps: dict[str, np.ndarray], thinning_mm: float,
                voxel_mm: float) -> dict[str, np.ndarray]:
    """Cortical atrophy: move the tissue/CSF boundary ``thinning_mm`` inwards, GM -> CSF.

    The tissue map ``T = GM + WM`` is sampled ``thinning_mm`` further out along its outward
    normal (an erosion by that distance); the tissue lost is taken from the grey matter and
    becomes CSF: the cortex thins and the sulci widen. The ventricle walls (within 4 mm of
    the lateral ventricles) are left alone: ventricle size is its own knob.

    Returns:
        New ``maps`` (``gm`` and ``csf`` changed, the rest shared).
    """
    gm, wm = maps["gm"], maps["wm"]
    tissue = gm + wm
    grad = np.stack(np.gradient(ndimage.gaussian_filter(tissue, 0.7)))
    norm = np.sqrt((grad ** 2).sum(0))
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in gm.shape],
                                  indexing="ij"))
    coords -= (thinning_mm / voxel_mm) * grad / (norm + 1e-3)
    eroded = ndimage.map_coordinates(tissue, coords, order=1, mode="nearest", prefilter=False)
    walls = ndimage.binary_dilation(maps["ventricles"] > 0.05,
                                    iterations=int(np.ceil(4.0 / voxel_mm)))
    lost = np.minimum(np.clip(tissue - eroded, 0.0, None), gm) * maps["brain"] * ~walls
    out = dict(maps)
    out["gm"] = (gm - lost).astype(np.float32)
    out["csf"] = (maps["csf"] + lost).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# contrast: tissue levels per subject


@functools.lru_cache(maxsize=2)
def _template_t1_levels(resolution: int) -> tuple[float, float, float]:
    """Least-squares T1 level of CSF, GM and WM in the template (T1 ~ sum of level x map)."""
    tpl = load_templates(resolution)
    b = tpl.brain > 0
    a = np.stack([tpl.csf[b], tpl.gm[b], tpl.wm[b]], 1)
    coef = np.linalg.lstsq(a, tpl.t1[b], rcond=None)[0]
    return tuple(float(c) for c in coef)


#: per-subject tissue levels (CSF, GM, WM), uniform in these ranges. T2: absolute, CSF = 1.
#: T1: GM and CSF relative to WM (whose level is the template's); the template has
#: GM/WM 0.75 and CSF/WM 0.32.
T2_LEVELS = {"csf": (1.0, 1.0), "gm": (0.52, 0.64), "wm": (0.34, 0.44)}
T1_RATIOS = {"gm": (0.68, 0.82), "csf": (0.2, 0.42)}


def draw_levels(contrast: str, rng: np.random.Generator, resolution: int = 2
                ) -> tuple[float, float, float]:
    """Tissue levels ``(csf, gm, wm)`` of one subject for ``contrast``."""
    if contrast == "t2":
        return (1.0, round(float(rng.uniform(*T2_LEVELS["gm"])), 4),
                round(float(rng.uniform(*T2_LEVELS["wm"])), 4))
    if contrast == "t1":
        wm = _template_t1_levels(resolution)[2]
        gm = wm * rng.uniform(*T1_RATIOS["gm"])
        csf = wm * rng.uniform(*T1_RATIOS["csf"])
        return (round(float(csf), 4), round(float(gm), 4), round(wm, 4))
    raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")


def synthesise_contrast(maps: dict[str, np.ndarray], contrast: str,
                        levels: tuple[float, float, float] | np.random.Generator,
                        resolution: int = 2) -> tuple[np.ndarray, dict[str, Any]]:
    """Clean image in [0, 1] of the given contrast from a subject's anatomy maps.

    Both contrasts are ``csf*L_csf + gm*L_gm + wm*L_wm`` with the subject's tissue levels
    plus the template's texture that the tissue maps do not explain: for ``t1`` the warped
    T1 template minus its own tissue model (so the neutral levels give back the template),
    for ``t2`` a faint inverted high-pass of it (CSF bright, GM > WM).

    Args:
        maps: From :func:`deform_anatomy`.
        contrast: ``t1`` or ``t2``.
        levels: ``(L_csf, L_gm, L_wm)`` or a generator to draw them (:func:`draw_levels`).
        resolution: Template resolution (the T1 template's own levels depend on it).
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if isinstance(levels, np.random.Generator):
        levels = draw_levels(contrast, levels, resolution)
    l_csf, l_gm, l_wm = levels
    img = maps["csf"] * l_csf + maps["gm"] * l_gm + maps["wm"] * l_wm
    if contrast == "t1":
        img = img + maps["texture"]
    else:
        detail = ndimage.gaussian_filter(maps["t1"], 1.0) - maps["t1"]
        img = img + 0.15 * detail
    img = np.clip(img, 0.0, 1.0) * maps["brain"]
    return img.astype(np.float32), {f"{contrast}_levels": [float(x) for x in levels]}


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


def _subject_anatomy(index: int, seed: int, resolution: int, anatomy: str | AnatomyRanges
                     ) -> tuple[Templates, np.random.Generator, dict[str, np.ndarray],
                                dict[str, Any]]:
    """Templates, the subject's generator (after the anatomy draw), tissue maps, draws."""
    tpl = load_templates(resolution)
    rng = np.random.default_rng([int(seed), int(index), 0])
    maps, p_anat = deform_anatomy(tpl, draw_anatomy(rng, anatomy))
    return tpl, rng, maps, p_anat


def subject_tissue_maps(index: int, *, seed: int = 0, resolution: int = 2,
                        anatomy: str | AnatomyRanges = "typical") -> dict[str, np.ndarray]:
    """The tissue maps of subject ``index`` (those :func:`make_subject` images, no lesion).

    Returns the maps of :func:`deform_anatomy` (``gm``, ``wm``, ``csf``, ``brain``,
    ``ventricles``, ...), e.g. to ask where a subject's false positives lie.

    Example:
        >>> m = subject_tissue_maps(3, anatomy="older")
        >>> bool((m["ventricles"] > 0.5).sum() > 0), m["brain"].shape
        (True, (99, 117, 95))
    """
    return _subject_anatomy(index, seed, resolution, anatomy)[2]


def make_subject(index: int, *, seed: int = 0, contrast: str = "t2", resolution: int = 2,
                 lesion: str | None = None, anatomy: str | AnatomyRanges = "typical"
                 ) -> Subject:
    """Generate subject ``index`` of the cohort with ``seed`` (deterministic).

    Args:
        index: Subject index (any non-negative integer; each gives a different subject).
        seed: Cohort seed.
        contrast: ``t2`` (T2-like from tissue maps) or ``t1``.
        resolution: Template resolution in mm (1 or 2).
        lesion: ``None`` (healthy) or one of :data:`disyre.demo.lesions.LESION_KINDS`.
        anatomy: Anatomy ranges or a profile of :data:`ANATOMY_PROFILES` (``typical``,
            ``older``).

    Returns:
        The :class:`Subject`.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if lesion is not None and lesion not in LESION_KINDS:
        raise ValueError(f"lesion must be None or one of {LESION_KINDS}, got {lesion!r}")
    if isinstance(anatomy, str) and anatomy not in ANATOMY_PROFILES:
        raise ValueError(f"anatomy must be one of {list(ANATOMY_PROFILES)}, got {anatomy!r}")
    tpl, rng, maps, p_anat = _subject_anatomy(index, seed, resolution, anatomy)
    if isinstance(anatomy, str):
        p_anat["profile"] = anatomy
    clean, p_con = synthesise_contrast(maps, contrast, draw_levels(contrast, rng, resolution),
                                       resolution)
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
        n_transfer: Held-out healthy subjects with ``older`` anatomy (split ``transfer``):
            larger ventricles and thinner cortex than any training subject, for checking
            that a threshold set on typical subjects still holds.

    Every subject but the ``transfer`` ones has ``typical`` anatomy.
    """

    contrast: str = "t2"
    resolution: int = 2
    seed: int = 0
    n_train: int = 16
    n_val: int = 4
    n_test_healthy: int = 4
    n_test_lesion: int = 8
    lesion_kinds: list[str] = field(default_factory=lambda: list(LESION_KINDS))
    n_transfer: int = 0

    def plan(self) -> list[tuple[int, str, str | None, str]]:
        """``(index, split, lesion kind, anatomy profile)`` of every subject, in order."""
        out: list[tuple[int, str, str | None, str]] = []
        i = 0
        for split, n, anatomy in (("train", self.n_train, "typical"),
                                  ("val", self.n_val, "typical"),
                                  ("test", self.n_test_healthy, "typical"),
                                  (TRANSFER_SPLIT, self.n_transfer, "older")):
            for _ in range(n):
                out.append((i, split, None, anatomy))
                i += 1
        for j in range(self.n_test_lesion):
            out.append((i, "test", self.lesion_kinds[j % len(self.lesion_kinds)], "typical"))
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
        if self.n_test_healthy < 0 or self.n_transfer < 0:
            raise ValueError("n_test_healthy and n_transfer must be >= 0")
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
        rows: One dict per subject (manifest columns plus ``lesion_kind`` and ``anatomy``).
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
    for index, split, kind, anatomy in tqdm(plan, desc="cohort", unit="subject",
                                            disable=not progress):
        s = make_subject(index, seed=spec.seed, contrast=spec.contrast,
                         resolution=spec.resolution, lesion=kind, anatomy=anatomy)
        img_rel = f"images/{s.name}.nii.gz"
        _save_nifti(s.image, s.affine, root / img_rel, np.float32)
        les_rel = ""
        if s.lesion_mask is not None:
            les_rel = f"labels/{s.name}_lesion.nii.gz"
            _save_nifti(s.lesion_mask, s.affine, root / les_rel, np.uint8)
        rows.append({"subject": s.name, "image": img_rel, "lesion_mask": les_rel,
                     "brain_mask": "", "split": split, "contrast": spec.contrast,
                     "lesion_kind": kind or "", "anatomy": anatomy})
        params[s.name] = s.params
    write_manifest([ManifestRow(subject=r["subject"], image=root / r["image"],
                                lesion_mask=root / r["lesion_mask"] if r["lesion_mask"] else None,
                                split=r["split"], contrast=r["contrast"]) for r in rows],
                   root / "manifest.csv", overwrite=True)
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
