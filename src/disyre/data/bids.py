"""BIDS datasets: file names, the scans of a dataset, its participants, and the validator.

A small reader built on the BIDS schema (``bidsschematools``): the schema gives the entities,
their order and the file-name rules (as regular expressions), and this module walks the
dataset's ``sub-*/[ses-*/]anat/`` folders itself. pybids would index the whole dataset into a
database on every call and its import alone takes about half a second, which ``disyre prepare``
and ``disyre bids`` do not need (docs/bids.md, "Why not pybids").

- :func:`parse_name` / :class:`BidsName`: ``sub-01_ses-1_acq-fast_T2w.nii.gz`` -> entities,
  suffix, extension (and back, in the schema's entity order).
- :func:`find_scans`: every scan of one suffix (``T2w``) of a dataset, filtered by
  participant and session labels, with one-line warnings for names that break the rules
  and for empty ``anat`` folders.
- :func:`find_mask`: the lesion or brain mask of a scan, beside it or in a derivatives
  pipeline folder (``derivatives/<pipeline>/sub-*/...``), matched on the scan's entities.
- :func:`read_participants`, :func:`healthy_rule`: ``participants.tsv`` and the
  ``--healthy "group=control"`` rule.
- :func:`derivative_problems`: the file names of a derivatives dataset checked against the
  schema's rules for derivatives (the validator of ``disyre bids``' output).

The manifest builders (``--layout bids``, ``atlas``, ``camcan``) live in
:mod:`disyre.data.manifest` and use this reader.

Example:
    >>> n = parse_name("sub-01_ses-1_acq-fast_T2w.nii.gz")
    >>> n.entities, n.suffix, n.extension
    ({'sub': '01', 'ses': '1', 'acq': 'fast'}, 'T2w', '.nii.gz')
    >>> n.with_(space="T2w", label="anomaly", suffix="probseg").filename
    'sub-01_ses-1_acq-fast_space-T2w_label-anomaly_probseg.nii.gz'
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from disyre.data.nifti import InputError, is_nifti_file

__all__ = [
    "ID_ENTITIES",
    "BidsName",
    "BidsScan",
    "BidsListing",
    "parse_name",
    "entity_order",
    "scan_id",
    "find_scans",
    "find_mask",
    "read_participants",
    "healthy_rule",
    "strip_label",
    "name_problem",
    "derivative_problems",
    "CONTRASTS",
]

log = logging.getLogger(__name__)

#: Entities kept in a manifest's subject id (in this order when present).
ID_ENTITIES: tuple[str, ...] = ("sub", "ses", "acq", "rec", "run")
#: BIDS suffix -> disyre's contrast name (the manifest's ``contrast`` column).
CONTRASTS: dict[str, str] = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair", "PDw": "pd",
                             "T2starw": "t2star", "PD": "pd", "T1map": "t1map"}
#: Entity order of BIDS 1.11 (used when the schema cannot be loaded).
_FALLBACK_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part",
                   "space", "atlas", "seg", "res", "label", "desc")
_KV = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9+]+)$")
_EXT = re.compile(r"^([^.]*)(\..*)?$")
DESCRIPTION = "dataset_description.json"


@lru_cache(maxsize=1)
def _schema():  # noqa: ANN202 - bidsschematools' Namespace
    from bidsschematools import schema

    return schema.load_schema()


@lru_cache(maxsize=1)
def entity_order() -> tuple[str, ...]:
    """Short entity names (``sub``, ``ses``, ...) in the order BIDS file names use them."""
    try:
        sch = _schema()
        return tuple(sch.objects.entities[e]["name"] for e in sch.rules.entities)
    except Exception:  # pragma: no cover - the schema ships with bidsschematools
        return _FALLBACK_ORDER


@dataclass(frozen=True)
class BidsName:
    """A BIDS file name: ``entities`` (short names, file order), ``suffix``, ``extension``."""

    entities: dict[str, str]
    suffix: str
    extension: str

    @property
    def filename(self) -> str:
        """The file name, entities in the schema's order."""
        order = entity_order()
        keys = sorted(self.entities, key=lambda k: (order.index(k) if k in order
                                                    else len(order), k))
        parts = [f"{k}-{self.entities[k]}" for k in keys] + [self.suffix]
        return "_".join(parts) + self.extension

    def with_(self, suffix: str | None = None, extension: str | None = None,
              **entities: str | None) -> BidsName:
        """A copy with other entities (``None`` drops one), suffix or extension."""
        ent = {**self.entities}
        for k, v in entities.items():
            if v is None:
                ent.pop(k, None)
            else:
                ent[k] = v
        return BidsName(ent, self.suffix if suffix is None else suffix,
                        self.extension if extension is None else extension)

    def get(self, entity: str) -> str | None:
        """The value of ``entity`` (short name), or ``None``."""
        return self.entities.get(entity)


def parse_name(name: str) -> BidsName | None:
    """Entities, suffix and extension of a BIDS-like file name; ``None`` if it is not one
    (no ``sub-`` first, a part that is not ``key-value``, a repeated entity).

    Example:
        >>> parse_name("sub-01_T1w.nii").suffix, parse_name("scan_T1w.nii") is None
        ('T1w', True)
    """
    m = _EXT.match(name)
    if m is None:
        return None
    stem, ext = m.group(1), m.group(2) or ""
    parts = stem.split("_")
    if len(parts) < 2 or not parts[0].startswith("sub-"):
        return None
    ent: dict[str, str] = {}
    for p in parts[:-1]:
        kv = _KV.match(p)
        if kv is None or kv.group(1) in ent:
            return None
        ent[kv.group(1)] = kv.group(2)
    if not re.fullmatch(r"[a-zA-Z0-9]+", parts[-1]):
        return None
    return BidsName(ent, parts[-1], ext)


def scan_id(name: BidsName, entities: Sequence[str] = ID_ENTITIES) -> str:
    """The manifest subject id of a scan: its ``entities`` that are present, joined.

    Example:
        >>> scan_id(parse_name("sub-01_ses-2_acq-fast_run-1_T2w.nii.gz"))
        'sub-01_ses-2_acq-fast_run-1'
    """
    return "_".join(f"{k}-{name.entities[k]}" for k in entities if k in name.entities)


def strip_label(label: str, entity: str) -> str:
    """A label as BIDS Apps take it: ``01`` or ``sub-01`` -> ``01``."""
    return label[len(entity) + 1:] if label.startswith(f"{entity}-") else label


# ---- the rules ---------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def _rules(derivative: bool) -> tuple[re.Pattern[str], ...]:
    from bidsschematools import rules

    sch = _schema()
    regs = rules.regexify_filename_rules(sch.rules.files.common, sch, level=2)
    regs += rules.regexify_filename_rules(sch.rules.files.deriv.imaging, sch, level=1)
    if not derivative:
        regs += rules.regexify_filename_rules(sch.rules.files.raw, sch, level=2)
    return tuple(re.compile(r["regex"]) for r in regs)


def name_problem(relpath: str, derivative: bool = False) -> str | None:
    """Why a file's path (relative to the dataset's root, ``/``-separated) breaks the BIDS
    file-name rules of the schema, or ``None`` if a rule matches it.

    Raw datasets are checked against the raw, common and derivative rules (lesion masks such
    as ``_label-lesion_mask`` often sit beside the scans); ``derivative=True`` checks against
    the common and derivative rules only.

    Example:
        >>> name_problem("sub-01/anat/sub-01_T2w.nii.gz") is None
        True
        >>> name_problem("sub-01/anat/sub-01_T2w_copy.nii.gz")
        'no BIDS file-name rule matches it'
    """
    if any(r.fullmatch(relpath) for r in _rules(derivative)):
        return None
    name = relpath.rsplit("/", 1)[-1]
    p = parse_name(name)
    if p is not None:
        sub_dir = next((d for d in relpath.split("/")[:-1] if d.startswith("sub-")), None)
        if sub_dir is not None and sub_dir != f"sub-{p.entities.get('sub')}":
            return f"its sub- entity is not its folder's {sub_dir}"
    return "no BIDS file-name rule matches it"


def derivative_problems(root: str | Path) -> list[str]:
    """The BIDS validation problems of a derivatives dataset, one line each (empty: valid).

    Checked: ``dataset_description.json`` exists and holds ``Name``, ``BIDSVersion``,
    ``DatasetType: "derivative"`` and ``GeneratedBy`` (a list of objects with ``Name``);
    every file name (path from the root) matches one of the schema's rules for derivatives
    or for every dataset (``rules.files.deriv`` and ``rules.files.common``): its entities,
    their order, their values (alphanumeric), the suffix and extension allowed with them,
    and its folders (``sub-X/[ses-Y/]anat/`` holding ``sub-X_[ses-Y_]...`` files).
    """
    root = Path(root)
    problems = []
    desc = root / DESCRIPTION
    if not desc.is_file():
        problems.append(f"{desc}: missing")
    else:
        try:
            d = json.loads(desc.read_text())
        except (OSError, json.JSONDecodeError) as e:
            d = {}
            problems.append(f"{desc}: unreadable JSON ({e})")
        for key in ("Name", "BIDSVersion", "DatasetType", "GeneratedBy"):
            if d and key not in d:
                problems.append(f"{desc}: lacks {key}")
        if d.get("DatasetType", "derivative") != "derivative":
            problems.append(f"{desc}: DatasetType is {d['DatasetType']!r}, not 'derivative'")
        gen = d.get("GeneratedBy", [{"Name": "?"}])
        if not (isinstance(gen, list) and gen and all(isinstance(g, dict) and "Name" in g
                                                      for g in gen)):
            problems.append(f"{desc}: GeneratedBy must be a list of objects with a Name")
    for p in sorted(root.rglob("*")):
        if p.is_dir() or p.name.startswith("."):
            continue
        rel = p.relative_to(root).as_posix()
        why = name_problem(rel, derivative=True)
        if why is not None:
            problems.append(f"{p}: {why}")
    return problems


# ---- the dataset -------------------------------------------------------------------------------

@dataclass
class BidsScan:
    """A scan of a BIDS dataset: its file, parsed name, and path from the dataset's root."""

    path: Path
    name: BidsName
    relpath: str

    @property
    def id(self) -> str:
        """:func:`scan_id` of the scan."""
        return scan_id(self.name)


@dataclass
class BidsListing:
    """What :func:`find_scans` found: ``scans`` (sorted) and one-line ``warnings``."""

    root: Path
    scans: list[BidsScan]
    warnings: list[str] = field(default_factory=list)


def _check_dataset(root: Path, require_description: bool) -> None:
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    if require_description and not (root / DESCRIPTION).is_file():
        raise InputError(f"{root}: not a BIDS dataset ({DESCRIPTION} is missing)")


def _anat_folders(root: Path, any_depth: bool) -> list[Path]:
    if not any_depth:
        subs = [s for s in root.glob("sub-*") if s.is_dir()]
        found = [s / "anat" for s in subs] + [s / "anat" for s in root.glob("sub-*/ses-*")]
        return sorted(p for p in found if p.is_dir())
    out = []
    for p in root.rglob("anat"):
        rel = p.relative_to(root).parts
        if p.is_dir() and "derivatives" not in rel and any(x.startswith("sub-") for x in rel):
            out.append(p)
    return sorted(out)


def find_scans(root: str | Path, suffix: str, *, datatype: str = "anat",
               participant_labels: Iterable[str] | None = None,
               session_labels: Iterable[str] | None = None,
               require_description: bool = True, check_names: bool = True,
               any_depth: bool = False) -> BidsListing:
    """Every NIfTI scan ``*_<suffix>.nii[.gz]`` in the ``anat`` folders of a BIDS dataset.

    Args:
        root: The dataset's root (holding ``dataset_description.json``).
        suffix: ``T1w``, ``T2w``, ``FLAIR``, ...
        datatype: Only ``anat`` is read.
        participant_labels: Keep these subjects only (``01`` or ``sub-01``).
        session_labels: Keep these sessions only (``1`` or ``ses-1``).
        require_description: A missing ``dataset_description.json`` is an error.
        check_names: Warn about, and skip, files of the ``anat`` folders whose names break the
            schema's rules (:func:`name_problem`), and warn about empty ``anat`` folders.
        any_depth: ``sub-*`` folders anywhere under ``root`` (not under ``derivatives/``),
            e.g. ATLAS's site folders; default: ``root/sub-*/[ses-*/]anat``.

    Raises:
        InputError: ``root`` missing or (``require_description``) not a BIDS dataset;
            a participant or session label that matches no scan.
    """
    root = Path(root)
    if datatype != "anat":
        raise ValueError(f"datatype {datatype!r}: only anat is read")
    _check_dataset(root, require_description)
    subs = {strip_label(s, "sub") for s in participant_labels or ()}
    sess = {strip_label(s, "ses") for s in session_labels or ()}
    listing = BidsListing(root, [])

    def warn(msg: str) -> None:
        listing.warnings.append(msg)
        log.warning("%s", msg)

    found_subs, found_sess = set(), set()
    for anat in _anat_folders(root, any_depth):
        entries = sorted(p for p in anat.iterdir() if not p.name.startswith("."))
        if not entries:
            if check_names:
                warn(f"{anat}: empty anat folder (no scans)")
            continue
        for p in entries:
            low = p.name.lower()
            if not low.endswith((".nii", ".nii.gz")):
                continue
            rel = p.relative_to(root).as_posix()
            if check_names and not any_depth:
                why = name_problem(rel)
                if why is not None:
                    warn(f"{p}: not a valid BIDS file name ({why}); skipped")
                    continue
            n = parse_name(p.name)
            if n is None or n.suffix != suffix or "sub" not in n.entities:
                continue
            if not is_nifti_file(p):
                continue
            found_subs.add(n.entities["sub"])
            found_sess.add(n.entities.get("ses"))
            if subs and n.entities["sub"] not in subs:
                continue
            if sess and n.entities.get("ses") not in sess:
                continue
            listing.scans.append(BidsScan(p, n, rel))
    for label, have, what in ((subs, found_subs, "participant"), (sess, found_sess, "session")):
        missing = sorted(label - have)
        if missing:
            raise InputError(f"{root}: no {suffix} scan of {what} label(s) "
                             f"{', '.join(missing)}")
    listing.scans.sort(key=lambda s: s.relpath)
    return listing


def _mask_folders(scan: BidsScan, root: Path) -> list[Path]:
    sub = f"sub-{scan.name.entities['sub']}"
    ses = scan.name.get("ses")
    rel = Path(sub) / (f"ses-{ses}" if ses else "") / "anat"
    out = [scan.path.parent]
    deriv = root / "derivatives"
    if deriv.is_dir():
        for pipe in sorted(p for p in deriv.iterdir() if p.is_dir()):
            out += [pipe / rel, *sorted(pipe.glob(f"*/{rel.as_posix()}"))]
    return [d for d in out if d.is_dir()]


def find_mask(scan: BidsScan, root: str | Path,
              kinds: Sequence[Mapping[str, str]]) -> Path | None:
    """The mask file (``*_mask.nii[.gz]``) of ``scan``: beside it, or in a derivatives
    pipeline folder ``root/derivatives/<pipeline>/sub-X/[ses-Y/]anat/``.

    A mask matches when its ``sub`` and ``ses`` are the scan's, each of its ``acq``, ``rec``,
    ``run``, ``space``, ``ce`` is the scan's, and it has the entities of one of ``kinds``
    (e.g. ``[{"label": "lesion"}]``; values compared without case). The most specific match
    (most entities shared with the scan) wins; the first in path order among equals.

    Example:
        >>> # find_mask(scan, "ds", [{"label": "lesion"}])  # ..._label-lesion_mask.nii.gz
    """
    root = Path(root)
    best: tuple[int, str, Path] | None = None
    se = scan.name.entities
    for folder in _mask_folders(scan, root):
        for p in sorted(folder.iterdir()):
            n = parse_name(p.name)
            if n is None or n.suffix != "mask" or not is_nifti_file(p):
                continue
            e = n.entities
            if e.get("sub") != se["sub"] or e.get("ses") != se.get("ses"):
                continue
            if any(k in e and e[k] != se.get(k) for k in ("acq", "rec", "run", "space", "ce")):
                continue
            if not any(all(e.get(k, "").lower() == v.lower() for k, v in kind.items())
                       for kind in kinds):
                continue
            shared = sum(e.get(k) == v for k, v in se.items())
            key = (-shared, str(p), p)
            if best is None or key[:2] < best[:2]:
                best = key
    return None if best is None else best[2]


def read_participants(root: str | Path) -> dict[str, dict[str, str]]:
    """``participants.tsv`` of a dataset: ``{label (without sub-): {column: value}}``.

    Raises:
        InputError: The file is missing or has no ``participant_id`` column.
    """
    path = Path(root) / "participants.tsv"
    if not path.is_file():
        raise InputError(f"{path}: participants file not found")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if "participant_id" not in (reader.fieldnames or []):
            raise InputError(f"{path}: no participant_id column")
        return {strip_label(r["participant_id"].strip(), "sub"):
                {k: (v or "").strip() for k, v in r.items() if k} for r in reader}


def healthy_rule(rule: str, participants: Mapping[str, Mapping[str, str]],
                 source: str | Path = "participants.tsv") -> set[str]:
    """The participant labels that ``rule`` (``"column=value[,value...]"``) marks healthy.

    Example:
        >>> sorted(healthy_rule("group=control,hc", {"01": {"group": "control"},
        ...                                          "02": {"group": "patient"}}))
        ['01']

    Raises:
        InputError: ``rule`` is not ``column=value``, or the column is not in the file.
    """
    col, sep, values = rule.partition("=")
    col = col.strip()
    wanted = {v.strip() for v in values.split(",") if v.strip()}
    if not sep or not col or not wanted:
        raise InputError(f"--healthy {rule!r}: expected COLUMN=VALUE[,VALUE...], "
                         "e.g. group=control")
    cols = set().union(*(r.keys() for r in participants.values())) if participants else set()
    if col not in cols:
        raise InputError(f"{source}: no column {col!r} (has {', '.join(sorted(cols))})")
    return {p for p, r in participants.items() if r.get(col, "") in wanted}
