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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disyre.data.nifti import InputError
from disyre.data.recipe_file import RECIPE_FILE, find_recipe, read_recipe

__all__ = ["PreprocessConfig", "PreprocessError", "RECIPE_FILE", "REGISTRATIONS",
           "write_recipe", "read_recipe", "find_recipe"]

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
