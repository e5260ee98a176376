"""A synthetic raw head with a known answer, for tests and benchmarks (no download).

The brain is the MNI152 2009 template that nilearn ships (1 mm, skull-stripped, with its
grey/white-matter maps); around it lie shells of outer CSF, skull (inner table, marrow, outer
table), subcutaneous fat and skin, with T1- or T2-like intensities and irregular thickness.
That head is then seen by a "scanner": a known random rigid or affine transform between the
subject and the template, a raw grid of any voxel size and axis order (e.g. sagittal PIR
slices), a smooth multiplicative bias field and Rician-like noise. Everything the preprocessing
must recover is returned alongside: the brain mask on the raw grid and the transform.

Example:
    >>> head = make_raw_head(seed=0, voxel_mm=4.0, shape=(48, 48, 48))
    >>> head.image.shape, head.brain.dtype
    ((48, 48, 48), dtype('bool'))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["SyntheticHead", "make_raw_head", "head_in_template_space", "random_transform",
           "raw_affine"]

#: (outer radius in mm beyond the brain mask, T1 value, T2 value) of each shell, inside out
SHELLS: tuple[tuple[float, float, float], ...] = (
    (1.5, 0.10, 0.95),  # outer CSF
    (3.0, 0.03, 0.03),  # inner table (cortical bone: no signal)
    (5.5, 0.45, 0.35),  # diploe (fatty marrow)
    (7.0, 0.03, 0.03),  # outer table
    (10.5, 0.85, 0.55),  # subcutaneous fat
    (12.5, 0.40, 0.30),  # skin and muscle
)
#: T2-weighted intensities of white matter, grey matter and CSF
T2_TISSUE = (0.35, 0.55, 1.0)


@dataclass
class SyntheticHead:
    """A raw head scan and its ground truth.

    Attributes:
        image: ``(X, Y, Z)`` float32 scan in the raw file's own voxel layout.
        affine: The raw scan's 4x4 voxel-to-world (mm) matrix.
        brain: ``(X, Y, Z)`` bool brain mask on the raw grid (the truth skull stripping aims at).
        to_template: 4x4 matrix taking the subject's world (mm) coordinates to the template's
            (the transform registration aims at).
        bias: ``(X, Y, Z)`` float32 multiplicative bias field that was applied.
    """

    image: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    to_template: np.ndarray
    bias: np.ndarray

    def nifti(self):  # noqa: ANN201 - nibabel.Nifti1Image
        """The scan as a ``nibabel.Nifti1Image``."""
        import nibabel as nib

        img = nib.Nifti1Image(self.image.astype(np.float32), self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img

    def template_to_raw_voxel(self, xyz_mm: np.ndarray) -> np.ndarray:
        """Raw voxel coordinates of template-world points ``(N, 3)`` (the inverse mapping)."""
        pts = np.c_[np.atleast_2d(xyz_mm), np.ones(len(np.atleast_2d(xyz_mm)))]
        m = np.linalg.inv(self.affine) @ np.linalg.inv(self.to_template)
        return (pts @ m.T)[:, :3]


@functools.lru_cache(maxsize=2)
def head_in_template_space(contrast: str = "t1", resolution: int = 1, pad_mm: int = 20,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic head on the (padded) 1 mm or 2 mm MNI152 grid.

    Args:
        contrast: ``"t1"`` (the template's own intensities inside the brain) or ``"t2"``
            (white matter dark, CSF bright, from the tissue maps).
        resolution: 1 or 2 (mm), the template grid used.
        pad_mm: Margin added around the template's grid, room for the shells.
        seed: Seed of the shells' thickness variation.

    Returns:
        ``(head, brain, affine)``: float32 head in [0, 1], bool brain mask, RAS affine
        (read-only arrays, cached).
    """
    from disyre.demo.anatomy import load_templates

    tpl = load_templates(resolution=resolution)
    pad = [(pad_mm // resolution, pad_mm // resolution)] * 3
    brain = np.pad(tpl.brain > 0, pad)
    if contrast == "t1":
        inside = np.pad(tpl.t1, pad)
    elif contrast == "t2":
        wm, gm, csf = (np.pad(a, pad) for a in (tpl.wm, tpl.gm, tpl.csf))
        inside = T2_TISSUE[0] * wm + T2_TISSUE[1] * gm + T2_TISSUE[2] * csf
    else:
        raise ValueError(f"contrast must be 't1' or 't2', got {contrast!r}")
    rng = np.random.default_rng(seed)
    # distance (mm) outside the brain, computed on a 2 mm grid (interpolated: fast)
    step = 2 // resolution
    dist = ndimage.distance_transform_edt(~brain[::step, ::step, ::step]) * 2.0
    dist = _upsample(dist, brain.shape) if step > 1 else dist.astype(np.float32)
    coarse = rng.standard_normal([s // (8 // resolution) + 2 for s in brain.shape])
    wobble = _upsample(ndimage.gaussian_filter(coarse.astype(np.float32), 1.5), brain.shape)
    wobble *= 0.25 / max(float(np.abs(wobble).max()), 1e-6)
    dist = dist / (1.0 + wobble)  # shells 25 % thicker or thinner in places
    head = np.where(brain, inside, 0).astype(np.float32)
    lower = 0.0
    for outer, v1, v2 in SHELLS:
        shell = ~brain & (dist > lower) & (dist <= outer)
        head[shell] = v1 if contrast == "t1" else v2
        lower = outer
    affine = tpl.affine.copy()
    affine[:3, 3] -= (pad_mm // resolution) * np.diag(affine)[:3]
    for a in (head, brain):
        a.setflags(write=False)
    return head, brain, affine


def _upsample(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation of a coarse grid onto ``shape`` (corner-aligned)."""
    zoom = [(t - 1) / max(s - 1, 1) for s, t in zip(a.shape, shape, strict=True)]
    out = ndimage.zoom(a.astype(np.float32), zoom, order=1, grid_mode=False)
    return out[tuple(slice(0, t) for t in shape)]


def random_transform(rng: np.random.Generator, kind: str = "affine", max_deg: float = 12.0,
                     max_shift_mm: float = 12.0, max_scale: float = 0.08) -> np.ndarray:
    """A random 4x4 subject-to-template transform (rotation about the origin, shift, scale).

    Args:
        rng: Random generator.
        kind: ``"rigid"`` (rotation + shift) or ``"affine"`` (also per-axis scaling and a
            small shear).
        max_deg: Largest rotation about each axis, degrees.
        max_shift_mm: Largest shift along each axis.
        max_scale: Largest relative scaling along each axis (affine only).
    """
    ang = np.radians(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = rz @ ry @ rx
    if kind == "affine":
        shear = np.eye(3)
        shear[0, 1], shear[1, 2] = rng.uniform(-0.04, 0.04, 2)
        m = m @ np.diag(1 + rng.uniform(-max_scale, max_scale, 3)) @ shear
    elif kind != "rigid":
        raise ValueError(f"kind must be 'rigid' or 'affine', got {kind!r}")
    out = np.eye(4)
    out[:3, :3] = m
    out[:3, 3] = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    return out


def raw_affine(shape: tuple[int, int, int], voxel_mm: float | tuple[float, float, float],
               axes: str = "PIR") -> np.ndarray:
    """Voxel-to-world matrix of a grid centred on the world origin.

    Args:
        shape: Grid shape.
        voxel_mm: Voxel size (one number or one per axis).
        axes: Direction each voxel axis points to (nibabel's axis codes, e.g. ``"RAS"``,
            ``"LAS"``, ``"PIR"`` for sagittal slices).
    """
    vox = np.broadcast_to(np.asarray(voxel_mm, float), (3,))
    unit = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    aff = np.zeros((4, 4))
    aff[3, 3] = 1
    for i, code in enumerate(axes.upper()):
        world_axis, sign = unit[code]
        aff[world_axis, i] = sign * vox[i]
    centre = (np.asarray(shape, float) - 1) / 2
    aff[:3, 3] = -aff[:3, :3] @ centre
    return aff


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator,
                strength: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(quadratic polynomial)``, about +-strength over the
    central 60 % of the grid (where the head lies)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape],
                        indexing="ij", sparse=True)
    x, y, z = grids
    c = rng.uniform(-1, 1, 9)
    poly = (c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * y * z + c[5] * x * z
            + c[6] * x * x + c[7] * y * y + c[8] * z * z)
    centre = tuple(slice(s // 5, s - s // 5) for s in shape)  # where the head lies
    poly = poly - poly[centre].mean()
    poly *= np.log1p(strength) / max(float(np.abs(poly[centre]).max()), 1e-6)
    return np.exp(poly).astype(np.float32)


def make_raw_head(seed: int = 0, contrast: str = "t1", kind: str = "affine",
                  voxel_mm: float | tuple[float, float, float] = 1.0,
                  shape: tuple[int, int, int] = (256, 256, 256), axes: str = "PIR",
                  bias: float = 0.3, noise: float = 0.015, scale: float = 800.0,
                  max_deg: float = 12.0, max_shift_mm: float = 12.0,
                  to_template: np.ndarray | None = None) -> SyntheticHead:
    """A raw head scan with skull, in a random pose, with a bias field and noise.

    Args:
        seed: Seed of the pose, bias field and noise.
        contrast: ``"t1"`` or ``"t2"``.
        kind: ``"rigid"`` or ``"affine"`` subject-to-template transform.
        voxel_mm: Raw voxel size (mm; one number or one per axis).
        shape: Raw grid shape.
        axes: Raw axis directions (see :func:`raw_affine`).
        bias: Bias-field strength (about +-``bias`` relative).
        noise: Noise standard deviation relative to the brightest tissue.
        scale: Scanner units of intensity 1 (raw scans are not in [0, 1]).
        max_deg, max_shift_mm: Pose range (see :func:`random_transform`).
        to_template: Use this subject-to-template transform instead of a random one (e.g. a
            second contrast of the same subject: the T1's transform times a small motion).

    Returns:
        The :class:`SyntheticHead`.
    """
    rng = np.random.default_rng(seed)
    vox_mm = np.broadcast_to(np.asarray(voxel_mm, float), (3,))
    res = 2 if vox_mm.min() >= 2 else 1  # coarse scans are drawn from the 2 mm template
    head, brain, tpl_affine = head_in_template_space(contrast, resolution=res)
    to_tpl = random_transform(rng, kind, max_deg=max_deg, max_shift_mm=max_shift_mm)
    if to_template is not None:
        to_tpl = np.asarray(to_template, float)
    aff = raw_affine(shape, voxel_mm, axes)
    # raw voxel -> subject world -> template world -> template voxel
    m = np.linalg.inv(tpl_affine) @ to_tpl @ aff
    sigma = np.where(vox_mm > 1.1 * res, vox_mm / (2.5 * res), 0.0)  # partial volume
    src = ndimage.gaussian_filter(head, sigma=sigma) if sigma.any() else head
    image = ndimage.affine_transform(src, m[:3, :3], m[:3, 3], output_shape=shape, order=1,
                                     mode="constant", cval=0.0).astype(np.float32)
    truth = ndimage.affine_transform(brain.astype(np.float32), m[:3, :3], m[:3, 3],
                                     output_shape=shape, order=1, mode="constant") > 0.5
    field = _bias_field(shape, rng, bias)
    image *= field
    n1 = rng.standard_normal(shape, dtype=np.float32) * noise
    n2 = rng.standard_normal(shape, dtype=np.float32) * noise
    image = np.sqrt((image + n1) ** 2 + n2 ** 2) * scale  # magnitude: Rician noise
    return SyntheticHead(image=image.astype(np.float32), affine=aff, brain=truth,
                         to_template=to_tpl, bias=field)
