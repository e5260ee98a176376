"""NIfTI input and output: validated loading into disyre's volume convention, exact write-back.

Inside disyre a volume is a float32 numpy array ``(D, H, W)``, **axial-first in canonical
RAS**: the file's voxel array reoriented to RAS (the ``nibabel.as_closest_canonical`` logic,
which permutes and flips axes but never resamples) and transposed from ``(X, Y, Z)`` to
``(Z, Y, X)``. ``vol[k]`` is the k-th axial slice (inferior -> superior), rows run posterior ->
anterior, columns left -> right. :class:`Scan` keeps what is needed to undo this, so maps
computed on the ``(D, H, W)`` array go back onto exactly the file's own grid and affine
(:func:`to_native`, :func:`save_like`), and overlay the input in ITK-SNAP, 3D Slicer or nibabel.

Every problem with a user's file raises :class:`InputError` (a ``ValueError``) whose message
starts with the file's path and says what is wrong.

Example:
    >>> import tempfile, pathlib, numpy as np, nibabel as nib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> arr = np.zeros((4, 5, 6), np.float32); arr[1:3, 1:4, 2:5] = 1.0
    >>> nib.save(nib.Nifti1Image(arr, np.diag([-1.0, -1.0, 2.0, 1.0])), d / "t1.nii.gz")
    >>> scan = load_scan(d / "t1.nii.gz")
    >>> scan.data.shape            # (Z, Y, X) in RAS
    (6, 5, 4)
    >>> save_like(scan.data * 2, scan, d / "map.nii.gz")
    >>> nib.load(d / "map.nii.gz").shape
    (4, 5, 6)
"""

from __future__ import annotations

import gzip
import logging
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from disyre.io_utils import atomic_path

__all__ = [
    "InputError",
    "Scan",
    "check_affine",
    "load_scan",
    "load_mask",
    "to_native",
    "to_canonical",
    "save_like",
    "voxel_size_text",
    "is_nifti_file",
    "NIFTI_SUFFIXES",
]

#: file name endings accepted as NIfTI
NIFTI_SUFFIXES = (".nii", ".nii.gz")

_RAS = axcodes2ornt(("R", "A", "S"))

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A user's input file or manifest is missing, unreadable or invalid.

    The message starts with the offending path and names the problem.
    """


@dataclass
class Scan:
    """A loaded volume in disyre's convention plus what is needed to write results back.

    Attributes:
        data: ``(D, H, W)`` float32, axial-first canonical RAS (see the module docstring).
        affine: The file's own 4x4 voxel-to-world affine (of its native array layout).
        header: The file's NIfTI header (a copy).
        path: Where the scan was read from.
        native_shape: Shape of the file's 3D voxel array (a one-frame 4D file gives 3D).
        ornt: The file's axis orientation (``nibabel.orientations`` array), used to undo the
            reorientation.
        offset: The background level subtracted from the file's intensities (0 unless the
            file holds a constant negative background, see :func:`load_scan`).
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path
    native_shape: tuple[int, int, int]
    ornt: np.ndarray
    offset: float = 0.0

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(D, H, W)`` (from the affine's column norms)."""
        perm = self.ornt[:, 0].astype(int)  # native axis i -> RAS axis perm[i]
        norms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        ras = np.empty(3)
        ras[perm] = norms
        return float(ras[2]), float(ras[1]), float(ras[0])


def voxel_size_text(affine: np.ndarray, spacing_dhw: Sequence[float] | None = None) -> str:
    """A voxel size for messages, in the file's own axis order ``i, j, k`` with the direction
    each axis runs toward: the one order every message uses.

    Args:
        affine: The file's affine (:attr:`Scan.affine`).
        spacing_dhw: Voxel sizes along disyre's ``(D, H, W)`` axes (:attr:`Scan.spacing`, a
            checkpoint's training ``spacing``), shown on the file's axes; default: the
            affine's own.

    Example:
        >>> voxel_size_text(np.diag([-1.0, -1.0, 5.0, 1.0]))
        '1 x 1 x 5 mm (file axes i, j, k toward L, P, S)'
        >>> voxel_size_text(np.diag([-1.0, -1.0, 5.0, 1.0]), spacing_dhw=(2.0, 2.0, 2.0))
        '2 x 2 x 2 mm (file axes i, j, k toward L, P, S)'
    """
    aff = np.asarray(affine, float)
    ornt = io_orientation(aff)
    if spacing_dhw is None:
        sizes = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    else:  # (D, H, W) = RAS axes (2, 1, 0); file axis i lies along RAS axis ornt[i, 0]
        sizes = np.asarray(spacing_dhw, float)[2 - ornt[:, 0].astype(int)]
    codes = nib.orientations.ornt2axcodes(ornt)
    return (" x ".join(f"{round(float(v), 2):g}" for v in sizes)
            + f" mm (file axes i, j, k toward {', '.join(codes)})")


def is_nifti_file(path: Path) -> bool:
    """Whether a folder entry is a NIfTI file (``.nii``/``.nii.gz``) to read.

    A broken symbolic link with such a name is no file, but it is not passed over in
    silence: a warning names it and its missing target.
    """
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    if path.is_symlink() and not path.exists():
        log.warning("%s: broken symbolic link (its target %s does not exist); skipped", path,
                    os.readlink(path))
        return False
    return path.is_file()


def nifti_stem(name: str) -> str:
    """A file name without ``.nii``/``.nii.gz`` (the default subject and output name).

    Example:
        >>> nifti_stem("sub-01_T2w.nii.gz"), nifti_stem("scan.NII")
        ('sub-01_T2w', 'scan')
    """
    low = name.lower()
    for suf in (".nii.gz", ".nii"):
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def check_nifti_path(path: str | Path, *, folder_ok: bool = False) -> Path:
    """``path`` if it is a readable NIfTI file name (or, with ``folder_ok``, a folder).

    Raises:
        InputError: A broken symbolic link (naming its target), nothing at ``path``, a
            folder where a file is wanted, or a file without a ``.nii``/``.nii.gz`` name.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: broken symbolic link (its target {os.readlink(path)} does "
                         "not exist)")
    if not path.exists():
        raise InputError(f"{path}: {'input' if folder_ok else 'file'} not found")
    if path.is_dir() and folder_ok:
        return path
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise InputError(f"{path}: not a NIfTI file (expected a .nii or .nii.gz name)")
    return path


def _load_gz(path: Path) -> nib.Nifti1Image:
    """Decompress a whole ``.nii.gz`` (so that the gzip CRC and length are checked: nibabel
    alone stops reading before the end and misses a damaged stream), then parse it."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        raise InputError(f"{path}: not a readable NIfTI file (not gzip-compressed)")
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(
            f"{path}: corrupt or truncated gzip file ({type(e).__name__}: {e})"
        ) from e
    sizes = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
    cls = nib.Nifti2Image if 540 in sizes else nib.Nifti1Image
    if not sizes & {348, 540}:
        raise InputError(f"{path}: not a readable NIfTI file (no NIfTI-1/2 header)")
    try:
        return cls.from_bytes(data)
    except Exception as e:  # bad magic, unsupported data type, short data
        raise InputError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e


def check_affine(affine: np.ndarray, path: str | Path) -> None:
    """Refuse a voxel-to-world affine that places no voxel: a non-finite entry, a zero
    column (a voxel of size 0) or a singular 3x3 part (axes not independent).

    Raises:
        InputError: One line naming the file and the problem.

    Example:
        >>> check_affine(np.diag([0.0, 1.0, 1.0, 1.0]), "a.nii")
        Traceback (most recent call last):
        ...
        disyre.data.nifti.InputError: a.nii: invalid affine: voxel size 0 along axis 0 ...
    """
    aff = np.asarray(affine, float)
    rows = "; ".join(" ".join(f"{v:g}" for v in r) for r in aff[:3])
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise InputError(f"{path}: invalid affine: an entry is not finite ([{rows}]); the "
                         "header's qform/sform is damaged")
    norms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    zero = [i for i in range(3) if norms[i] == 0]
    if zero:
        raise InputError(f"{path}: invalid affine: voxel size 0 along axis "
                         f"{', '.join(map(str, zero))} (a zero column: [{rows}]); the "
                         "header's qform/sform is damaged")
    cond = np.linalg.cond(aff[:3, :3] / norms)
    if not np.isfinite(cond) or cond > 1e6:
        raise InputError(f"{path}: invalid affine: singular (its voxel axes are not "
                         f"independent: [{rows}]); the header's qform/sform is damaged")


def _read(path: str | Path) -> tuple[nib.Nifti1Image, np.ndarray, Path]:
    """Open a NIfTI file and read its voxels as float32, shape-checked to 3D."""
    path = check_nifti_path(path)
    if path.name.lower().endswith(".gz"):
        img = _load_gz(path)
    else:
        try:
            img = nib.load(str(path))
        except Exception as e:  # nibabel raises many types for non-NIfTI / corrupt headers
            raise InputError(
                f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})"
            ) from e
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    check_affine(img.affine, path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        pass
    elif len(shape) == 4:
        raise InputError(
            f"{path}: 4D image with {shape[3]} frames {shape}; give a 3D volume "
            "(or a 4D file with a single frame)"
        )
    elif len(shape) != 3:
        raise InputError(f"{path}: {len(shape)}D image {shape}; expected a 3D volume")
    if min(shape[:3]) < 1:
        raise InputError(f"{path}: empty image of shape {shape}")
    try:
        data = img.get_fdata(dtype=np.float32)
    except Exception as e:  # truncated / corrupt gzip stream, short file, bad dtype
        raise InputError(
            f"{path}: cannot read the voxel data, the file is corrupt or truncated "
            f"({type(e).__name__}: {e})"
        ) from e
    data = data.reshape(shape[:3])
    return img, data, path


def _fix_nonfinite(data: np.ndarray, path: Path, nan_policy: str) -> np.ndarray:
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad:
        if nan_policy == "error":
            raise InputError(f"{path}: {n_bad} NaN/Inf voxel(s)")
        if nan_policy != "zero":
            raise ValueError(f"nan_policy must be 'zero' or 'error', got {nan_policy!r}")
        warnings.warn(f"{path}: {n_bad} NaN/Inf voxel(s) replaced by 0", stacklevel=3)
        data = np.where(bad, np.float32(0), data)
    return data


#: a negative minimum that this fraction of the volume's border voxels hold exactly is the
#: background of a scan stored with an intensity offset (see :func:`_fix_offset`)
OFFSET_BORDER_FRACTION: float = 0.5
#: more negative voxels than this fraction of the non-zero ones, without such a background,
#: is warned about (they count as background)
NEGATIVE_WARN_FRACTION: float = 0.01


def _border(data: np.ndarray) -> np.ndarray:
    """The voxels on the six faces of a 3D array (edges counted more than once)."""
    return np.concatenate([data[i].ravel() for i in (np.s_[0], np.s_[-1], np.s_[:, 0],
                                                      np.s_[:, -1], np.s_[:, :, 0],
                                                      np.s_[:, :, -1])])


def _fix_offset(data: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """Find and remove an intensity offset of the background; returns ``(data, offset)``.

    disyre's brain is the voxels > 0 (negatives count as background), so a scan stored with
    an offset (int16 as ``x / max * 3000 - 500``: background -500, the darkest brain voxels
    negative) would lose those voxels silently. A volume whose minimum is negative and held
    exactly by at least :data:`OFFSET_BORDER_FRACTION` of its border voxels has a constant
    background at that level: it is subtracted (background exactly 0 again), with a warning
    naming the file. Other negative voxels, when more than :data:`NEGATIVE_WARN_FRACTION` of
    the non-zero ones, are warned about and left to count as background. A volume without
    negative voxels (the usual case, background exactly 0) is returned unchanged.
    """
    low = float(data.min())
    if low >= 0:
        return data, 0.0
    if float(np.mean(_border(data) == low)) >= OFFSET_BORDER_FRACTION:
        warnings.warn(f"{path}: background at {low:g}, not 0 (an intensity offset); "
                      f"shifted by {-low:g} so that the background is 0", stacklevel=3)
        return data - np.float32(low), low
    n_neg = int(np.count_nonzero(data < 0))
    n_nonzero = int(np.count_nonzero(data))
    if n_neg > NEGATIVE_WARN_FRACTION * n_nonzero:
        warnings.warn(f"{path}: {n_neg} voxels ({100.0 * n_neg / n_nonzero:.1f} % of the "
                      f"non-zero ones, down to {low:g}) are negative and count as background; "
                      "an intensity offset? store the scan with its background at 0",
                      stacklevel=3)
    return data, 0.0


def to_canonical(native: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Native ``(i, j, k)`` array -> axial-first canonical ``(D, H, W)`` (a view when possible).

    Args:
        native: Array in the file's voxel layout.
        ornt: The file's orientation, ``nibabel.orientations.io_orientation(affine)``.

    Returns:
        The array reoriented to RAS and transposed to ``(Z, Y, X)``.
    """
    ras = apply_orientation(native, ornt_transform(ornt, _RAS))
    return ras.transpose(2, 1, 0)


def to_native(arr_dhw: np.ndarray, scan: Scan) -> np.ndarray:
    """Undo the reorientation: ``(D, H, W)`` array -> the file's own voxel layout.

    Args:
        arr_dhw: An array on the scan's full canonical grid (``scan.data.shape``).
        scan: The scan it was computed from.

    Returns:
        Array of shape ``scan.native_shape``, voxel-aligned with ``scan.affine``.
    """
    arr_dhw = np.asarray(arr_dhw)
    if arr_dhw.shape != scan.data.shape:
        raise ValueError(
            f"array of shape {arr_dhw.shape} does not match the scan's grid {scan.data.shape} "
            f"({scan.path}); uncrop it first"
        )
    ras = arr_dhw.transpose(2, 1, 0)
    native = apply_orientation(ras, ornt_transform(_RAS, scan.ornt))
    return np.ascontiguousarray(native)


def load_scan(path: str | Path, nan_policy: str = "zero") -> Scan:
    """Read and validate a 3D NIfTI volume into disyre's ``(D, H, W)`` convention.

    Args:
        path: ``.nii`` or ``.nii.gz`` file, 3D (or 4D with a single frame).
        nan_policy: ``"zero"`` warns and replaces NaN/Inf voxels by 0; ``"error"`` raises.

    A constant negative background (a scan stored with an intensity offset) is shifted to
    0, with a warning; many other negative voxels are warned about (they count as
    background). A scan without negative voxels is read as stored.

    Returns:
        The :class:`Scan`.

    Raises:
        InputError: Missing file, not NIfTI, corrupt or truncated data, 2D/5D or multi-frame
            4D data, NaN/Inf (with ``nan_policy="error"``), or an all-zero volume.
    """
    img, data, path = _read(path)
    data = _fix_nonfinite(data, path, nan_policy)
    data, offset = _fix_offset(data, path)
    if not np.any(data):
        raise InputError(f"{path}: all voxels are zero (empty volume)")
    ornt = io_orientation(img.affine)
    dhw = np.ascontiguousarray(to_canonical(data, ornt), dtype=np.float32)
    return Scan(
        data=dhw,
        affine=np.array(img.affine, dtype=np.float64),
        header=img.header.copy(),
        path=path,
        native_shape=tuple(int(s) for s in data.shape),
        ornt=ornt,
        offset=offset,
    )


def load_mask(path: str | Path, like: Scan, binarize: bool = False) -> np.ndarray:
    """Read a mask that lies on ``like``'s grid, as a bool ``(D, H, W)`` array.

    Args:
        path: ``.nii``/``.nii.gz`` mask (lesion or brain mask).
        like: The scan it belongs to; shape and affine must match the scan's file.
        binarize: Treat every voxel > 0 as foreground (repair for label maps such as
            BraTS ``seg`` with labels 1/2/4). Without it, a mask with values other than
            0 and 1 is an error.

    Returns:
        Bool array of shape ``like.data.shape``. An empty mask (a healthy case) is allowed.

    Raises:
        InputError: Unreadable file, shape or affine different from the scan's, NaN/Inf,
            or non-binary values without ``binarize``.
    """
    img, data, path = _read(path)
    if tuple(data.shape) != tuple(like.native_shape):
        raise InputError(
            f"{path}: mask shape {tuple(data.shape)} differs from its image's "
            f"{tuple(like.native_shape)} ({like.path})"
        )
    if not np.allclose(img.affine, like.affine, rtol=1e-5, atol=1e-3):
        raise InputError(
            f"{path}: mask affine differs from its image's ({like.path}); the mask must be "
            "on the image's grid\n"
            f"mask:\n{np.round(img.affine, 4)}\nimage:\n{np.round(like.affine, 4)}".replace(
                "\n", " "
            )
        )
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: mask has NaN/Inf voxels")
    if binarize:
        mask = data > 0
    else:
        values = np.unique(data)
        if not np.all(np.isin(values, (0.0, 1.0))):
            shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
            raise InputError(
                f"{path}: mask is not binary (values {shown}); expected 0/1 "
                "(for a label map, binarise it: every label > 0 is foreground)"
            )
        mask = data > 0.5
    return np.ascontiguousarray(to_canonical(mask, like.ornt))


def save_like(
    arr_dhw: np.ndarray, scan: Scan, path: str | Path, dtype: type | np.dtype = np.float32
) -> None:
    """Write a ``(D, H, W)`` array on exactly the grid, affine and orientation of ``scan``.

    The output has the file's own voxel layout, its affine, and its qform/sform codes, so
    it overlays the input in viewers. Maps are written as float32; pass ``dtype=np.uint8``
    for masks. The write is atomic (no half-written file on failure).

    Args:
        arr_dhw: Array of shape ``scan.data.shape`` (uncrop a cropped array first).
        scan: The scan the array belongs to.
        path: Output ``.nii`` or ``.nii.gz`` path (replaced if it exists).
        dtype: Stored data type.
    """
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: output name must end with .nii or .nii.gz")
    native = to_native(arr_dhw, scan).astype(dtype, copy=False)
    src = scan.header
    cls = nib.Nifti2Image if isinstance(src, nib.Nifti2Header) else nib.Nifti1Image
    hdr = src.copy()
    hdr.set_data_dtype(dtype)
    img = cls(native, scan.affine, header=hdr)
    qform, qcode = src.get_qform(coded=True)
    sform, scode = src.get_sform(coded=True)
    img.set_qform(qform if qform is not None else scan.affine, code=int(qcode or 0))
    img.set_sform(sform if sform is not None else scan.affine, code=int(scode or 0))
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0
    img.header["cal_max"] = 0
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
