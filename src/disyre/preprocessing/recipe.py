"""The preprocessing recipe: which template, grid and steps bring a raw scan into model space.

``disyre preprocess`` writes the recipe as ``preprocessing.json`` in its output folder (next to
``manifest.csv``); training finds it from its scans' paths (:func:`find_recipe`) and records it
in every checkpoint's ``config.json`` (``data.preprocessing``), so that detection can run the
same recipe on a raw scan (``disyre detect --preprocess``).

This module imports neither antspyx nor deepbet: reading a recipe costs nothing.

Example:
    >>> cfg = PreprocessConfig(template="mni152", spacing=2.0, registration="affine")
    >>> PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> cfg.steps()
    ['reorient', 'n4', 'skull_strip:deepbet', 'register:affine', 'resample']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disyre.data.nifti import InputError

__all__ = ["PreprocessConfig", "PreprocessError", "RECIPE_FILE", "REGISTRATIONS",
           "write_recipe", "read_recipe", "find_recipe"]

#: name of the recipe file written next to a preprocessed data set's manifest
RECIPE_FILE = "preprocessing.json"
#: registration types (antspyx ``type_of_transform`` of each)
REGISTRATIONS = {"rigid": "Rigid", "affine": "Affine", "syn": "SyN"}
_VERSION = 1


class PreprocessError(InputError):
    """One subject could not be preprocessed (no brain found, failed registration check, ...).

    The message starts with the subject's file and gives the figure that failed.
    """


@dataclass
class PreprocessConfig:
    """How raw scans are brought onto the template grid (the recipe a checkpoint records).

    Attributes:
        template: ``"mni152"`` (the MNI152 2009 brain that nilearn ships, 1 mm) or the path of
            any skull-stripped NIfTI (e.g. a BraTS scan, to work on the BraTS/SRI24 grid).
        spacing: Output voxel size in mm (isotropic); ``None`` keeps the template's grid.
        registration: ``"rigid"``, ``"affine"`` (default) or ``"syn"`` (affine + deformable).
        n4: Run N4 bias-field correction (on the head, before skull stripping).
        skull_strip: Run deepbet; ``False`` for scans that are already skull-stripped (the
            brain is then the non-zero voxels).
        min_dice: Refuse a subject whose registered brain mask overlaps the template's brain
            with a Dice below this.
        min_brain_ml: Refuse a subject whose brain mask is smaller than this (no brain found).
        template_sha1: SHA-1 of a template file (filled in when the recipe is written), so
            that detection can tell that a template file changed.
    """

    template: str = "mni152"
    spacing: float | None = None
    registration: str = "affine"
    n4: bool = True
    skull_strip: bool = True
    min_dice: float = 0.8
    min_brain_ml: float = 300.0
    template_sha1: str | None = None

    def __post_init__(self) -> None:
        self.template = str(self.template)
        if self.registration not in REGISTRATIONS:
            raise ValueError(f"registration must be one of {sorted(REGISTRATIONS)}, "
                             f"got {self.registration!r}")
        if self.spacing is not None:
            self.spacing = float(self.spacing)
            if not 0.2 <= self.spacing <= 10:
                raise ValueError(f"spacing must be in [0.2, 10] mm, got {self.spacing}")
        if not 0 <= self.min_dice <= 1:
            raise ValueError(f"min_dice must be in [0, 1], got {self.min_dice}")

    def steps(self) -> list[str]:
        """The steps in the order they run (recorded with the recipe)."""
        out = ["reorient"]
        if self.n4:
            out.append("n4")
        if self.skull_strip:
            out.append("skull_strip:deepbet")
        return out + [f"register:{self.registration}", "resample"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with ``steps`` and a format version)."""
        d = dataclasses.asdict(self)
        d["steps"] = self.steps()
        d["version"] = _VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict` (``steps``, ``version`` and recorded extras ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def same_recipe(self, other: PreprocessConfig) -> bool:
        """Whether two configs produce the same outputs (thresholds aside)."""
        keys = ("template", "spacing", "registration", "n4", "skull_strip")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def write_recipe(folder: str | Path, cfg: PreprocessConfig, grid: dict[str, Any]) -> Path:
    """Write ``folder/preprocessing.json``: the recipe plus its output grid (shape, affine)."""
    from disyre.io_utils import atomic_write_json, provenance

    path = Path(folder) / RECIPE_FILE
    atomic_write_json(path, {**cfg.to_dict(), "grid": grid, "provenance": provenance()})
    return path


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file (as written by :func:`write_recipe`).

    Raises:
        InputError: Unreadable file or not a recipe.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable preprocessing recipe ({e})") from e
    if not isinstance(d, dict) or "template" not in d or "steps" not in d:
        raise InputError(f"{path}: not a preprocessing recipe (no 'template'/'steps')")
    return d


def find_recipe(images: Iterable[str | Path], levels: int = 2) -> dict[str, Any] | None:
    """The recipe that produced a set of scans, from ``preprocessing.json`` beside them.

    Looks in each scan's folder and up to ``levels`` parent folders (``disyre preprocess``
    writes ``OUT/preprocessing.json`` and ``OUT/<subject>/<subject>.nii.gz``).

    Args:
        images: Paths of the (training) scans.
        levels: Parent folders to search above each scan's folder.

    Returns:
        The recipe dict (without provenance), or ``None`` when no scan has one.

    Raises:
        InputError: Some scans have a recipe and others none, or two recipes differ.
    """
    found: dict[Path, dict[str, Any]] = {}
    without: list[str] = []
    recipes: dict[str, tuple[str, dict[str, Any]]] = {}
    for img in images:
        folder = Path(img).parent
        hit = None
        for d in [folder, *list(folder.parents)[:levels]]:
            if d in found or (d / RECIPE_FILE).is_file():
                if d not in found:
                    rec = read_recipe(d / RECIPE_FILE)
                    rec.pop("provenance", None)
                    found[d] = rec
                hit = found[d]
                break
        if hit is None:
            without.append(str(img))
            continue
        key = json.dumps(hit, sort_keys=True)
        recipes.setdefault(key, (str(img), hit))
    if not recipes:
        return None
    if len(recipes) > 1:
        (a, ra), (b, rb) = list(recipes.values())[:2]
        raise InputError(f"{a} and {b} come from different preprocessing recipes "
                         f"({ra.get('template')} {ra.get('steps')} vs {rb.get('template')} "
                         f"{rb.get('steps')}); train on scans preprocessed alike")
    if without:
        raise InputError(f"{without[0]}: has no {RECIPE_FILE} beside it while other training "
                         "scans do; train on scans preprocessed alike")
    return next(iter(recipes.values()))[1]
