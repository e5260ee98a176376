"""Dataset manifests: which files, which split, which labels; and builders for common layouts.

A manifest is a CSV file with the columns ``subject,image,lesion_mask,brain_mask,split,contrast``
(plus an optional ``binarize_lesion`` column, ``1`` when the lesion file is a label map whose
labels > 0 all count as lesion, e.g. BraTS ``seg``, and an optional ``t1`` column, the same
subject's T1-weighted scan, which ``disyre preprocess`` uses to skull-strip and register other
contrasts). Empty cells mean "none".

Paths: in the CSV a relative path is relative to the **manifest's own folder** (never to the
current folder), so a manifest and its scans can move together; in memory
(:class:`ManifestRow`) a path is one the running process can open (absolute, or relative to
the current folder). Two functions convert, and every reader and writer goes through them:
:func:`resolve_entry` (CSV cell -> usable path; :func:`read_manifest`) and
:func:`manifest_entry` (usable path -> CSV cell; :func:`write_manifest`, which stores files
inside the manifest's folder relative to it and others absolute).

Builders write manifests from the layouts users have on disk:

- :func:`from_folder`: any folder and glob pattern (one scan per file);
- :func:`from_brats`: BraTS 2020/2021, ``<case>/<case>_t1.nii.gz`` (``_t1ce``, ``_t2``,
  ``_flair``) with ``<case>/<case>_seg.nii.gz``;
- :func:`from_bids`: any BIDS dataset, ``sub-*/[ses-*/]anat/*_<suffix>.nii.gz`` with lesion
  and brain masks beside the scans or in ``derivatives/`` and ``participants.tsv`` marking
  healthy subjects (:mod:`disyre.data.bids` reads it);
- :func:`from_atlas`: ATLAS v2.0 (BIDS), ``[site/]sub-*/ses-*/anat/*_T1w.nii.gz`` with
  ``*_label-L_desc-T1lesion_mask.nii.gz``;
- :func:`from_camcan`: CamCAN (BIDS), ``sub-CC*/anat/sub-CC*_T1w.nii.gz`` / ``_T2w``;
- :func:`from_ixi`: IXI, ``IXI002-Guys-0828-T1.nii.gz`` (``-T2``, ``-PD``).

Example:
    >>> rows = [ManifestRow("s1", "/data/s1.nii.gz", split="train", contrast="t1")]
    >>> rows[0].subject, rows[0].lesion_mask is None
    ('s1', True)
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from disyre.data.nifti import NIFTI_SUFFIXES, InputError, is_nifti_file, nifti_stem
from disyre.io_utils import atomic_write_text

__all__ = [
    "COLUMNS",
    "ManifestRow",
    "read_manifest",
    "write_manifest",
    "resolve_entry",
    "manifest_entry",
    "validate_rows",
    "assign_splits",
    "from_folder",
    "from_brats",
    "from_bids",
    "from_atlas",
    "from_camcan",
    "from_ixi",
    "LAYOUTS",
    "build_manifest",
]

COLUMNS = ("subject", "image", "lesion_mask", "brain_mask", "split", "contrast", "binarize_lesion",
           "t1")
_REQUIRED = ("subject", "image")
_PATH_COLUMNS = ("image", "lesion_mask", "brain_mask", "t1")

log = logging.getLogger(__name__)


@dataclass
class ManifestRow:
    """One scan of a dataset.

    Attributes:
        subject: Unique id (also names the scan's outputs).
        image: Path of the NIfTI image.
        lesion_mask: Path of the ground-truth anomaly mask, or ``None``.
        brain_mask: Path of a brain mask, or ``None`` (then brain = non-zero voxels).
        split: ``train``, ``val``, ``test`` or any label.
        contrast: ``t1``, ``t2``, ``flair``, ... (free text, lower case by convention).
        binarize_lesion: The lesion file is a label map: every label > 0 is lesion.
        t1: The same subject's T1-weighted scan (for preprocessing other contrasts), or
            ``None``.
    """

    subject: str
    image: Path
    lesion_mask: Path | None = None
    brain_mask: Path | None = None
    split: str = "train"
    contrast: str = ""
    binarize_lesion: bool = False
    t1: Path | None = None

    def __post_init__(self) -> None:
        self.subject = str(self.subject)
        self.image = Path(self.image)
        self.lesion_mask = Path(self.lesion_mask) if self.lesion_mask else None
        self.brain_mask = Path(self.brain_mask) if self.brain_mask else None
        self.t1 = Path(self.t1) if self.t1 else None


def resolve_entry(value: str, manifest: str | Path) -> tuple[Path, bool]:
    """The path a manifest cell names, as the running process can open it.

    A relative cell is relative to the manifest's folder. A manifest written by an older
    ``disyre preprocess`` holds paths relative to the folder it was run from: such a cell,
    when it names no file relative to the manifest but does relative to the current folder,
    is taken from the current folder, and the second value is ``True`` so that the caller can
    say so (:func:`read_manifest` logs one warning per manifest).

    Args:
        value: The cell (not empty); ``~`` is expanded.
        manifest: The manifest file.

    Returns:
        ``(path, from_cwd)``.

    Example:
        >>> resolve_entry("s1/s1.nii.gz", "prep/manifest.csv")[0].as_posix()
        'prep/s1/s1.nii.gz'
        >>> resolve_entry("/data/s1.nii.gz", "prep/manifest.csv")[0].as_posix()
        '/data/s1.nii.gz'
    """
    q = Path(value).expanduser()
    if q.is_absolute():
        return q, False
    p = Path(manifest).parent / q
    if not p.exists() and q.is_file():
        return q, True
    return p, False


def manifest_entry(path: str | Path | None, manifest: str | Path, relative: bool = True) -> str:
    """The CSV cell that names ``path`` (absolute, or relative to the current folder) in the
    manifest file ``manifest``: the inverse of :func:`resolve_entry`.

    Args:
        path: The file (``None`` or empty gives an empty cell).
        manifest: The manifest file the cell is written to.
        relative: Write a file inside the manifest's folder relative to that folder (so that
            the folder can move); files outside it are always written absolute.

    Example:
        >>> manifest_entry("prep/s1/s1.nii.gz", "prep/manifest.csv")
        's1/s1.nii.gz'
        >>> manifest_entry("/data/s1.nii.gz", "prep/manifest.csv")
        '/data/s1.nii.gz'
    """
    if path is None or not str(path):
        return ""
    full = os.path.abspath(Path(path).expanduser())
    if relative:
        for f, base in ((full, os.path.abspath(Path(manifest).parent)),
                        (os.path.realpath(full), os.path.realpath(Path(manifest).parent))):
            if os.path.commonpath([f, base]) == base:
                return Path(os.path.relpath(f, base)).as_posix()
    return full


def validate_rows(rows: Sequence[ManifestRow], source: str | Path,
                  check_files: bool = True, line_of: Sequence[int] | None = None) -> None:
    """Check a manifest's rows: non-empty, unique subject ids, existing files.

    Args:
        rows: The rows.
        source: Name used in error messages (the manifest path or the builder's root).
        check_files: Also check that every referenced file exists.
        line_of: CSV line number of each row, for messages (default: ``i + 2``).

    Raises:
        InputError: Naming ``source``, the row and the problem.
    """
    if not rows:
        raise InputError(f"{source}: manifest is empty (no rows)")
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        line = line_of[i] if line_of else i + 2
        where = f"{source}: line {line} (subject {r.subject!r})"
        if not r.subject or not r.subject.strip():
            raise InputError(f"{source}: line {line}: empty subject id")
        if r.subject in seen:
            raise InputError(
                f"{where}: duplicate subject id, first used on line {seen[r.subject]}"
            )
        seen[r.subject] = line
        if not str(r.image) or str(r.image) == ".":
            raise InputError(f"{where}: empty image path")
        if not check_files:
            continue
        for col in ("image", "lesion_mask", "brain_mask", "t1"):
            p = getattr(r, col)
            if p is not None and not Path(p).is_file():
                raise InputError(f"{where}: {col} file not found: {p}")


def read_manifest(path: str | Path, check_files: bool = True,
                  required: Sequence[str] = _REQUIRED) -> list[ManifestRow]:
    """Read and validate a manifest CSV.

    Args:
        path: The CSV file.
        check_files: Check that every referenced file exists.
        required: Columns the caller needs (default ``subject`` and ``image``; evaluation
            also needs ``split``: without it every row would read as a training scan).

    Returns:
        The rows, with paths resolved against the manifest's folder (:func:`resolve_entry`).

    Raises:
        InputError: Missing/unreadable file, missing columns, empty manifest, duplicate
            subject ids, missing files (naming the manifest, line and subject).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the manifest ({e})") from e
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError(f"{path}: manifest is empty (no header, no rows)")
    missing = [c for c in (*_REQUIRED, *required) if c not in header]
    if missing:
        why = (" (which rows are train, val or test scans)" if "split" in missing else "")
        raise InputError(
            f"{path}: manifest lacks column(s) {sorted(set(missing), key=missing.index)}{why}; "
            f"expected {','.join(COLUMNS[:6])}"
        )
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise InputError(f"{path}: unknown manifest column(s) {unknown}; known: {list(COLUMNS)}")
    rows, lines, from_cwd = [], [], []
    for rec in reader:
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
        if not any(rec.values()):
            continue

        def p(col: str, rec: dict[str, str] = rec) -> Path | None:
            v = rec.get(col, "")
            if not v:
                return None
            q, cwd = resolve_entry(v, path)
            if cwd:
                from_cwd.append(v)
            return q

        rows.append(ManifestRow(
            subject=rec.get("subject", ""),
            image=p("image") or Path(""),
            lesion_mask=p("lesion_mask"),
            brain_mask=p("brain_mask"),
            split=rec.get("split", "") or "train",
            contrast=rec.get("contrast", ""),
            binarize_lesion=rec.get("binarize_lesion", "").lower() in ("1", "true", "yes"),
            t1=p("t1"),
        ))
        lines.append(reader.line_num)
    if from_cwd:
        log.warning("%s: %d path(s) (e.g. %s) name no file relative to the manifest's folder "
                    "and were taken relative to the current folder (a manifest written by an "
                    "older disyre); rewrite it, e.g. by running the same `disyre preprocess` "
                    "again (finished subjects are skipped)", path, len(from_cwd), from_cwd[0])
    validate_rows(rows, path, check_files=check_files, line_of=lines)
    return rows


def write_manifest(rows: Sequence[ManifestRow], path: str | Path, overwrite: bool = False,
                   relative: bool = True) -> None:
    """Write a manifest CSV atomically.

    The rows' paths are ones this process can open (absolute, or relative to the current
    folder, as :func:`read_manifest` returns them). Files inside the CSV's folder are written
    relative to it, so that the folder can move with its scans; others absolute
    (:func:`manifest_entry`).

    Args:
        rows: The rows (validated first; the files are not opened).
        path: Output CSV path.
        overwrite: Replace an existing file.
        relative: ``False`` writes every path absolute.

    Raises:
        InputError: Invalid rows.
        disyre.io_utils.OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    from disyre.io_utils import OutputExistsError

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: manifest already exists; pass --overwrite to replace it")
    validate_rows(rows, path, check_files=False)

    def _p(f: str | Path | None) -> str:
        return manifest_entry(f, path, relative=relative)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([
            r.subject,
            _p(r.image),
            _p(r.lesion_mask),
            _p(r.brain_mask),
            r.split,
            r.contrast,
            "1" if r.binarize_lesion else "",
            _p(r.t1),
        ])
    atomic_write_text(path, buf.getvalue())


def assign_splits(rows: Sequence[ManifestRow], val_fraction: float, seed: int = 0,
                  from_split: str = "train", to_split: str = "val") -> list[ManifestRow]:
    """Move a deterministic random ``val_fraction`` of the ``from_split`` rows to ``to_split``.

    The choice depends only on the sorted subject ids and ``seed`` (not on file order).

    Returns:
        New rows, in the input order.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    pool = sorted(r.subject for r in rows if r.split == from_split)
    n_val = int(round(val_fraction * len(pool)))
    if val_fraction > 0 and len(pool) > 1:
        n_val = min(max(n_val, 1), len(pool) - 1)
    rng = np.random.default_rng(seed)
    chosen = {pool[i] for i in rng.permutation(len(pool))[:n_val]}
    return [replace(r, split=to_split) if r.subject in chosen else r for r in rows]


def _finish(rows: list[ManifestRow], root: Path, what: str, val_fraction: float | None,
            seed: int) -> list[ManifestRow]:
    if not rows:
        raise InputError(f"{root}: no {what} found")
    rows.sort(key=lambda r: r.subject)
    if val_fraction:
        rows = assign_splits(rows, val_fraction, seed, from_split=rows[0].split)
    validate_rows(rows, root, check_files=False)
    return rows


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    return root


def _nifti(p: Path) -> bool:
    return is_nifti_file(p)  # a broken symbolic link is named in a warning


def from_folder(root: str | Path, pattern: str = "*.nii.gz", split: str = "train",
                contrast: str = "", val_fraction: float | None = None,
                seed: int = 0) -> list[ManifestRow]:
    """One row per NIfTI file matching ``pattern`` (a glob relative to ``root``; ``**`` recurses).

    Subject ids are the file names without ``.nii``/``.nii.gz``; where two files share a
    name, their relative paths (``/`` -> ``_``) are used instead.
    """
    root = _check_root(root)
    files = sorted(p for p in root.glob(pattern) if _nifti(p))
    stems = [nifti_stem(p.name) for p in files]
    dup = {s for s in stems if stems.count(s) > 1}
    rows = []
    for p, s in zip(files, stems, strict=True):
        if s in dup:
            s = nifti_stem(str(p.relative_to(root))).replace("/", "_").replace("\\", "_")
        rows.append(ManifestRow(s, p, split=split, contrast=contrast))
    return _finish(rows, root, f"NIfTI files matching {pattern!r}", val_fraction, seed)


def _find(folder: Path, stem: str) -> Path | None:
    for suf in NIFTI_SUFFIXES[::-1]:
        p = folder / f"{stem}{suf}"
        if _nifti(p):
            return p
    return None


def from_brats(root: str | Path, contrast: str = "t2", split: str = "test",
               val_fraction: float | None = None, seed: int = 0) -> list[ManifestRow]:
    """BraTS 2020/2021: ``<case>/<case>_<contrast>.nii.gz`` with ``<case>/<case>_seg.nii.gz``.

    Case folders are searched at any depth under ``root``. The segmentation's labels (1, 2, 4)
    are all lesion (``binarize_lesion``). Cases without ``_seg`` (validation releases) get no
    lesion mask.

    Args:
        contrast: ``t1``, ``t1ce``, ``t2`` or ``flair``.
    """
    root = _check_root(root)
    contrast = contrast.lower()
    if contrast not in ("t1", "t1ce", "t2", "flair"):
        raise ValueError(f"BraTS contrast must be t1, t1ce, t2 or flair, got {contrast!r}")
    rows = []
    for d in sorted({p.parent for p in root.rglob(f"*_{contrast}.nii*")}):
        img = _find(d, f"{d.name}_{contrast}")
        if img is None:
            continue
        seg = _find(d, f"{d.name}_seg")
        rows.append(ManifestRow(d.name, img, lesion_mask=seg, split=split, contrast=contrast,
                                binarize_lesion=seg is not None))
    return _finish(rows, root, f"BraTS cases <case>/<case>_{contrast}.nii.gz", val_fraction, seed)


def from_bids(root: str | Path, suffix: str = "T1w", contrast: str | None = None,
              split: str = "train", healthy: str | None = None,
              participant_label: Sequence[str] | None = None,
              session_label: Sequence[str] | None = None,
              val_fraction: float | None = None, seed: int = 0, *,
              lesion: Sequence[dict[str, str]] = ({"label": "lesion"},),
              brain: Sequence[dict[str, str]] = ({"label": "brain"}, {"desc": "brain"}),
              require_description: bool = True, check_names: bool = True,
              any_depth: bool = False, what: str | None = None) -> list[ManifestRow]:
    """A BIDS dataset: one row per ``sub-*/[ses-*/]anat/*_<suffix>.nii[.gz]`` scan
    (:func:`disyre.data.bids.find_scans`).

    The subject id keeps the scan's ``sub``, ``ses``, ``acq``, ``rec`` and ``run`` entities
    (``sub-01_ses-2_acq-fast``). The lesion mask is the scan's ``*_label-lesion_mask``
    (``lesion``), the brain mask its ``*_label-brain_mask`` or ``*_desc-brain_mask``
    (``brain``), found beside the scan or in ``derivatives/<pipeline>/``
    (:func:`disyre.data.bids.find_mask`); ``t1`` is the ``_T1w`` scan of the same entities
    for another suffix.

    Args:
        suffix: The BIDS suffix of the scans (``T1w``, ``T2w``, ``FLAIR``, ...).
        contrast: The manifest's contrast (default from the suffix: ``T2w`` -> ``t2``).
        split: Split of every row, or of the rows not marked healthy by ``healthy``.
        healthy: ``"column=value[,value]"`` of ``participants.tsv`` marking healthy subjects:
            their scans get split ``train``, the others ``test``.
        participant_label: Keep these subjects only (``01`` or ``sub-01``).
        session_label: Keep these sessions only.
        val_fraction: Move this fraction of the ``train`` rows (with ``healthy``; else of
            all rows) to ``val``.
        lesion: Entities that make a mask a lesion mask (any of them).
        brain: Entities that make a mask a brain mask.
        require_description: A missing ``dataset_description.json`` is an error.
        check_names: Warn about and skip files whose names break BIDS; warn about empty
            ``anat`` folders.
        any_depth: ``sub-*`` folders at any depth (not only at the root).
        what: What the error says was not found.

    Raises:
        InputError: Not a BIDS dataset, no scan, a bad ``healthy`` rule (one line each).
    """
    from disyre.data import bids

    root = _check_root(root)
    listing = bids.find_scans(root, suffix, participant_labels=participant_label,
                              session_labels=session_label,
                              require_description=require_description,
                              check_names=check_names, any_depth=any_depth)
    contrast = (contrast or bids.CONTRASTS.get(suffix, suffix.lower())).lower()
    well: set[str] | None = None
    if healthy:
        people = bids.read_participants(root)
        well = bids.healthy_rule(healthy, people, root / "participants.tsv")
        unknown = sorted({s.name.entities["sub"] for s in listing.scans} - set(people))
        if unknown:
            log.warning("%s: participant(s) %s not listed; not marked healthy",
                        root / "participants.tsv", ", ".join(f"sub-{u}" for u in unknown))
    rows = []
    for s in listing.scans:
        t1 = None
        if suffix != "T1w":
            t1 = _find(s.path.parent, nifti_stem(s.name.with_(suffix="T1w").filename))
        row_split = split
        if well is not None:
            row_split = "train" if s.name.entities["sub"] in well else "test"
        rows.append(ManifestRow(s.id, s.path, lesion_mask=bids.find_mask(s, root, lesion),
                                brain_mask=bids.find_mask(s, root, brain), split=row_split,
                                contrast=contrast, t1=t1))
    ids = [r.subject for r in rows]
    for r, s in zip(rows, listing.scans, strict=True):
        if ids.count(r.subject) > 1:  # told apart by another entity (ce-, echo-, part-)
            r.subject = bids.scan_id(s.name, tuple(s.name.entities))
    if not rows:
        raise InputError(f"{root}: no "
                         + (what or f"BIDS scans sub-*/[ses-*/]anat/*_{suffix}.nii.gz"))
    rows.sort(key=lambda r: r.subject)
    if val_fraction:
        rows = assign_splits(rows, val_fraction, seed,
                             from_split="train" if healthy else split)
    validate_rows(rows, root, check_files=False)
    return rows


def from_atlas(root: str | Path, contrast: str = "t1", split: str = "test",
               val_fraction: float | None = None, seed: int = 0) -> list[ManifestRow]:
    """ATLAS v2.0 (BIDS): ``[site/]sub-*/ses-*/anat/*_T1w.nii.gz`` and the lesion mask
    ``*_label-L_desc-T1lesion_mask.nii.gz`` next to it (subject id ``sub-X_ses-Y``):
    :func:`from_bids` with ATLAS's lesion label and its site folders."""
    if contrast.lower() != "t1":
        raise ValueError(f"ATLAS v2.0 holds T1-weighted scans only, got contrast {contrast!r}")
    return from_bids(root, "T1w", "t1", split=split, val_fraction=val_fraction, seed=seed,
                     lesion=({"label": "L", "desc": "T1lesion"},), brain=(),
                     require_description=False, check_names=False, any_depth=True,
                     what="ATLAS scans sub-*/ses-*/anat/*_T1w.nii.gz")


def from_camcan(root: str | Path, contrast: str = "t1", split: str = "train",
                val_fraction: float | None = None, seed: int = 0) -> list[ManifestRow]:
    """CamCAN (BIDS): ``sub-CC*/anat/sub-CC*_T1w.nii.gz`` (``_T2w`` for ``contrast="t2"``),
    at any depth under ``root``; a T2 row's ``t1`` is the ``_T1w`` scan beside it, if any:
    :func:`from_bids` without the dataset checks (CamCAN's release folders)."""
    suffix = {"t1": "T1w", "t2": "T2w"}.get(contrast.lower())
    if suffix is None:
        raise ValueError(f"CamCAN contrast must be t1 or t2, got {contrast!r}")
    return from_bids(root, suffix, contrast.lower(), split=split, val_fraction=val_fraction,
                     seed=seed, lesion=(), brain=(), require_description=False,
                     check_names=False, any_depth=True,
                     what=f"CamCAN scans sub-*/anat/sub-*_{suffix}.nii.gz")


def from_ixi(root: str | Path, contrast: str = "t1", split: str = "train",
             val_fraction: float | None = None, seed: int = 0) -> list[ManifestRow]:
    """IXI: ``IXI002-Guys-0828-T1.nii.gz`` (``-T2``, ``-PD``); subject id ``IXI002-Guys-0828``.

    A T2/PD row's ``t1`` is the subject's ``-T1`` scan found anywhere under ``root``, if any.
    """
    root = _check_root(root)
    tag = {"t1": "T1", "t2": "T2", "pd": "PD"}.get(contrast.lower())
    if tag is None:
        raise ValueError(f"IXI contrast must be t1, t2 or pd, got {contrast!r}")
    pat = re.compile(rf"^(IXI\d+-[A-Za-z]+-\d+)-{tag}\.nii(\.gz)?$")
    t1_pat = re.compile(r"^(IXI\d+-[A-Za-z]+-\d+)-T1\.nii(\.gz)?$")
    files = sorted(root.rglob("IXI*"))
    t1s = {m.group(1): p for p in files if (m := t1_pat.match(p.name)) and p.is_file()}
    rows = []
    for p in files:
        m = pat.match(p.name)
        if m and _nifti(p):
            t1 = t1s.get(m.group(1)) if tag != "T1" else None
            rows.append(ManifestRow(m.group(1), p, split=split, contrast=contrast.lower(),
                                    t1=t1))
    return _finish(rows, root, f"IXI scans IXI*-{tag}.nii.gz", val_fraction, seed)


#: layout name -> builder, as used by ``disyre prepare --layout``
LAYOUTS: dict[str, Callable[..., list[ManifestRow]]] = {
    "folder": from_folder,
    "brats": from_brats,
    "bids": from_bids,
    "atlas": from_atlas,
    "camcan": from_camcan,
    "ixi": from_ixi,
}


def build_manifest(layout: str, root: str | Path, **kw: object) -> list[ManifestRow]:
    """Call the builder of ``layout`` (a key of :data:`LAYOUTS`); ``None`` options are dropped."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    return LAYOUTS[layout](root, **{k: v for k, v in kw.items() if v is not None})
