"""The preprocessing recipe file beside a preprocessed data set, read without preprocessing.

``disyre preprocess`` writes ``preprocessing.json`` (:mod:`disyre.preprocessing.recipe`);
the data stage reads it back here (:func:`find_recipe`), so that the volume cache can record
the recipe of its scans without importing the preprocessing stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from disyre.data.nifti import InputError

__all__ = ["RECIPE_FILE", "read_recipe", "find_recipe"]

#: name of the recipe file written next to a preprocessed data set's manifest
RECIPE_FILE = "preprocessing.json"


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
