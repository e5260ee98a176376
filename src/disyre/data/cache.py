"""NormalizedVolume-volume cache: NIfTI files are read and normalised once, then memory-mapped.

:func:`prepare_cache` loads every manifest row (validated, see :mod:`disyre.data.nifti`),
normalises it (:mod:`disyre.data.intensity`) and stores, per subject, the cropped image
(float32), its brain mask (bool) and, where given, its lesion mask (bool) as ``.npy`` files,
with ``index.json`` recording for each subject the input files' fingerprints (path, size,
``mtime_ns``, SHA-1 of the first and last MiB), the preprocessing config, the crop box and the
full grid. A later call reuses every subject whose inputs and config are unchanged, and
re-processes only the others. Every file is written atomically, and the index is updated after
each subject, so an interrupted run keeps what it finished.

Layout::

    cache_dir/index.json
    cache_dir/<subject>.image.npy     (d, h, w) float32 in [0, 1]
    cache_dir/<subject>.mask.npy      (d, h, w) bool brain mask
    cache_dir/<subject>.lesion.npy    (d, h, w) bool, only with a lesion mask

Example:
    >>> from disyre.data.manifest import read_manifest            # doctest: +SKIP
    >>> cache = prepare_cache(read_manifest("manifest.csv"), "cache")  # doctest: +SKIP
    >>> train = cache.volumes("train")   # list of memory-mapped (d, h, w) arrays  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disyre.config import IntensityConfig
from disyre.data.intensity import normalize
from disyre.data.manifest import ManifestRow
from disyre.data.nifti import InputError, load_mask, load_scan
from disyre.io_utils import atomic_path, atomic_write_json

__all__ = ["CacheEntry", "VolumeCache", "prepare_cache", "fingerprint", "INDEX_NAME"]

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
_VERSION = 1
_MIB = 1 << 20


def fingerprint(path: str | Path) -> dict[str, Any]:
    """Identity of an input file: resolved path, size, ``mtime_ns`` and a SHA-1 of its first
    and last MiB (cheap even for large files)."""
    path = Path(path).resolve()
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if st.st_size > 2 * _MIB:
            f.seek(-_MIB, os.SEEK_END)
            h.update(f.read(_MIB))
        elif st.st_size > _MIB:
            h.update(f.read())
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha1": h.hexdigest()}


@dataclass
class CacheEntry:
    """One cached subject; arrays are opened memory-mapped on access.

    Attributes:
        subject, split, contrast: From the manifest row.
        directory: The cache folder.
        files: ``{"image": name, "mask": name, "lesion": name | None}`` inside ``directory``.
        bbox: ``[(start, stop)] * 3`` of the crop in the full ``(D, H, W)`` grid.
        full_shape: The full ``(D, H, W)`` grid of the scan.
        source: The image file the entry was made from.
        affine: The image file's affine.
    """

    subject: str
    split: str
    contrast: str
    directory: Path
    files: dict[str, str | None]
    bbox: list[tuple[int, int]]
    full_shape: tuple[int, int, int]
    source: str
    affine: list[list[float]]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(D, H, W)`` (as :attr:`disyre.data.nifti.Scan.spacing`)."""
        from nibabel.orientations import io_orientation

        aff = np.asarray(self.affine, float)
        perm = io_orientation(aff)[:, 0].astype(int)
        ras = np.empty(3)
        ras[perm] = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        return float(ras[2]), float(ras[1]), float(ras[0])

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """The crop box as three slices into the full grid."""
        return tuple(slice(a, b) for a, b in self.bbox)  # type: ignore[return-value]

    def _open(self, key: str) -> np.ndarray | None:
        name = self.files.get(key)
        return None if name is None else np.load(self.directory / name, mmap_mode="r")

    def image(self) -> np.ndarray:
        """Cropped preprocessed image, ``(d, h, w)`` float32, memory-mapped."""
        return self._open("image")  # type: ignore[return-value]

    def mask(self) -> np.ndarray:
        """Cropped brain mask, ``(d, h, w)`` bool, memory-mapped."""
        return self._open("mask")  # type: ignore[return-value]

    def lesion(self) -> np.ndarray | None:
        """Cropped lesion mask, ``(d, h, w)`` bool (memory-mapped), or ``None``."""
        return self._open("lesion")


class VolumeCache:
    """The cached subjects of one manifest (see :func:`prepare_cache`).

    Attributes:
        directory: The cache folder.
        entries: One :class:`CacheEntry` per subject, in manifest order.
        processed: Subjects (re)computed by the call that made this object.
        reused: Subjects taken from the cache unchanged.
    """

    def __init__(self, directory: Path, entries: list[CacheEntry], processed: int = 0,
                 reused: int = 0) -> None:
        self.directory = Path(directory)
        self.entries = entries
        self.processed = processed
        self.reused = reused

    def __len__(self) -> int:
        return len(self.entries)

    def select(self, split: str | None = None) -> list[CacheEntry]:
        """Entries of one split (all entries for ``None``)."""
        return [e for e in self.entries if split is None or e.split == split]

    def subjects(self, split: str | None = None) -> list[str]:
        """Subject ids of one split."""
        return [e.subject for e in self.select(split)]

    def volumes(self, split: str | None = None) -> list[np.ndarray]:
        """Memory-mapped ``(d, h, w)`` float32 images of one split."""
        return [e.image() for e in self.select(split)]

    def masks(self, split: str | None = None) -> list[np.ndarray]:
        """Memory-mapped brain masks of one split."""
        return [e.mask() for e in self.select(split)]

    def lesions(self, split: str | None = None) -> list[np.ndarray | None]:
        """Memory-mapped lesion masks of one split (``None`` where a subject has none)."""
        return [e.lesion() for e in self.select(split)]

    def describe(self, split: str | None = "train") -> dict[str, Any]:
        """What a checkpoint records about its training scans: their ``contrast`` (joined by
        commas) and median voxel size ``spacing`` (mm along D, H, W), which detection
        compares with each scan's."""
        entries = self.select(split)
        contrasts = sorted({e.contrast for e in entries if e.contrast})
        spacing = np.median([e.spacing for e in entries], axis=0) if entries else None
        out: dict[str, Any] = {
            "contrast": ",".join(contrasts) or None,
            "spacing": None if spacing is None else [round(float(v), 4) for v in spacing]}
        from disyre.data.recipe_file import find_recipe

        recipe = find_recipe(e.source for e in entries)  # written by `disyre preprocess`
        if recipe:
            out["preprocessing"] = recipe
        return out

    @classmethod
    def open(cls, directory: str | Path) -> VolumeCache:
        """Every subject recorded in an existing cache folder's index."""
        directory = Path(directory)
        index = _read_index(directory)
        if index is None:
            raise InputError(f"{directory / INDEX_NAME}: cache index not found or unreadable")
        return cls(directory, [_entry(directory, s, e) for s, e in index["entries"].items()])


def _safe_name(subject: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", subject).lstrip(".") or "subject"
    if safe != subject:
        safe += "-" + hashlib.sha1(subject.encode()).hexdigest()[:8]
    return safe


def _read_index(directory: Path) -> dict[str, Any] | None:
    p = directory / INDEX_NAME
    if not p.is_file():
        return None
    try:
        index = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s: unreadable cache index, rebuilding the cache", p)
        return None
    if index.get("version") != _VERSION or not isinstance(index.get("entries"), dict):
        return None
    return index


def _entry(directory: Path, subject: str, e: dict[str, Any]) -> CacheEntry:
    return CacheEntry(subject=subject, split=e["split"], contrast=e["contrast"],
                      directory=directory, files=e["files"],
                      bbox=[tuple(b) for b in e["bbox"]], full_shape=tuple(e["full_shape"]),
                      source=e["inputs"]["image"]["path"], affine=e["affine"])


def _inputs(row: ManifestRow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("image", "brain_mask", "lesion_mask"):
        p = getattr(row, key)
        if p is None:
            out[key] = None
            continue
        if not Path(p).is_file():
            raise InputError(f"{p}: file not found ({key} of subject {row.subject!r})")
        out[key] = fingerprint(p)
    out["binarize_lesion"] = bool(row.binarize_lesion)
    return out


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(arr))


def _process(row: ManifestRow, directory: Path, cfg: IntensityConfig) -> dict[str, Any]:
    scan = load_scan(row.image, nan_policy=cfg.nan_policy)
    brain = load_mask(row.brain_mask, scan) if row.brain_mask else None
    lesion = (load_mask(row.lesion_mask, scan, binarize=row.binarize_lesion)
              if row.lesion_mask else None)
    try:
        pre = normalize(scan.data, brain, cfg, spacing=scan.spacing)
    except ValueError as e:
        raise InputError(f"{row.brain_mask or row.image}: {e}") from e
    safe = _safe_name(row.subject)
    files: dict[str, str | None] = {"image": f"{safe}.image.npy", "mask": f"{safe}.mask.npy",
                                    "lesion": f"{safe}.lesion.npy" if lesion is not None else None}
    _save_npy(directory / files["image"], pre.image)
    _save_npy(directory / files["mask"], pre.mask)
    outside_crop = 0
    if lesion is not None:
        _save_npy(directory / files["lesion"], lesion[pre.bbox])
        outside_crop = int(lesion.sum()) - int(lesion[pre.bbox].sum())
        if outside_crop:
            log.warning("%s: %d lesion voxels lie outside the brain's bounding box and are "
                        "not cached (evaluate the NIfTI files with 'disyre evaluate' to count "
                        "them)", row.lesion_mask, outside_crop)
    return {
        "files": files,
        "bbox": [[s.start, s.stop] for s in pre.bbox],
        "full_shape": list(pre.full_shape),
        "native_shape": list(scan.native_shape),
        "affine": scan.affine.tolist(),
        "intensity_low": pre.low,
        "intensity_high": pre.high,
        "lesion_voxels_outside_crop": outside_crop,
    }


def prepare_cache(rows: Sequence[ManifestRow], cache_dir: str | Path,
                  cfg: IntensityConfig | None = None, skip_bad: bool = False,
                  progress: bool = True) -> VolumeCache:
    """Preprocess the manifest's scans into ``cache_dir``, reusing unchanged subjects.

    Args:
        rows: Manifest rows (see :func:`disyre.data.manifest.read_manifest`).
        cache_dir: Cache folder (created if needed; may hold other subjects).
        cfg: Preprocessing config; a change re-processes every subject.
        skip_bad: Log and leave out subjects whose files are invalid instead of raising.
        progress: Show a progress bar over the subjects (on a terminal).

    Returns:
        A :class:`VolumeCache` over ``rows`` (minus skipped ones), with ``processed`` and
        ``reused`` counts.

    Raises:
        InputError: An invalid input file (naming it), unless ``skip_bad``.
    """
    cfg = cfg or IntensityConfig()
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    index = _read_index(directory) or {"version": _VERSION, "entries": {}}
    cfg_d = asdict(cfg)
    entries, processed, reused = [], 0, 0
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI)
    bar_off = None if progress and len(rows) > 1 else True
    for row in tqdm(rows, desc="cache", unit="subject", disable=bar_off, dynamic_ncols=True):
        try:
            inputs = _inputs(row)
        except InputError as e:
            if not skip_bad:
                raise
            log.warning("skipping subject %s: %s", row.subject, e)
            continue
        old = index["entries"].get(row.subject)
        ok = (old is not None and old.get("inputs") == inputs and old.get("intensity") == cfg_d
              and all((directory / f).is_file() for f in old["files"].values() if f))
        if ok:
            reused += 1
            if old["split"] != row.split or old["contrast"] != row.contrast:
                old["split"], old["contrast"] = row.split, row.contrast
                atomic_write_json(directory / INDEX_NAME, index)
        else:
            try:
                info = _process(row, directory, cfg)
            except InputError as e:
                if not skip_bad:
                    raise
                log.warning("skipping subject %s: %s", row.subject, e)
                continue
            log.debug("cached %s (%s)", row.subject, row.image)
            index["entries"][row.subject] = {"split": row.split, "contrast": row.contrast,
                                             "inputs": inputs, "intensity": cfg_d, **info}
            atomic_write_json(directory / INDEX_NAME, index)
            processed += 1
        entries.append(_entry(directory, row.subject, index["entries"][row.subject]))
    if not (directory / INDEX_NAME).is_file():
        atomic_write_json(directory / INDEX_NAME, index)
    log.info("cache %s: %d subject(s) preprocessed, %d reused", directory, processed, reused)
    return VolumeCache(directory, entries, processed=processed, reused=reused)
