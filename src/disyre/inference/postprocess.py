"""Post-processing of anomaly maps as the publications did it.

Each method's paper post-processes its maps in its own way before thresholding and scoring:
the brain mask eroded so that the reconstruction errors at the brain's edge do not count, a
median filter (2D per axial slice or 3D), and, after thresholding, the removal of connected
components too small to be a lesion. These functions do each step on an axial-first
``(D, H, W)`` map (numpy/scipy only); :class:`PostProcessing` describes one method's recipe and
the constants below record the published ones.

Example:
    >>> m = np.zeros((3, 8, 8), np.float32); m[1, 4, 4] = 1.0  # one isolated bright voxel
    >>> brain = np.ones_like(m, bool)
    >>> float(PostProcessing(median_size=3, median_dim=2).apply(m, brain).max())
    0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIMS = (2, 3)


def _check_dim(dim: int, what: str) -> None:
    if dim not in DIMS:
        raise ValueError(f"{what} must be 2 (per axial slice) or 3 (the volume), got {dim}")


def erode_mask(mask: np.ndarray, iterations: int, dim: int = 2, connectivity: int = 1
               ) -> np.ndarray:
    """The brain mask eroded ``iterations`` times (binary erosion, voxels outside the array
    count as background).

    Args:
        mask: ``(D, H, W)`` brain mask (non-zero = brain).
        iterations: Erosion steps; 0 returns the mask as booleans.
        dim: 2 erodes each axial slice on its own (in-plane neighbours only); 3 the volume.
        connectivity: The structuring element, as ``scipy.ndimage.generate_binary_structure``:
            1 = face neighbours (a cross in 2D), ``dim`` = every neighbour (a square / cube).

    Returns:
        Boolean ``(D, H, W)`` mask.

    Example:
        >>> m = np.ones((1, 5, 5), bool)
        >>> int(erode_mask(m, 1).sum())  # the 3 x 3 core of the slice is left
        9
    """
    _check_dim(dim, "erosion dim")
    mask = np.asarray(mask) != 0
    if iterations < 0:
        raise ValueError(f"erosion iterations must be >= 0, got {iterations}")
    if iterations == 0:
        return mask
    from scipy import ndimage

    st = ndimage.generate_binary_structure(dim, connectivity)
    if dim == 2:
        st = st[None]  # no neighbours across slices
    return ndimage.binary_erosion(mask, structure=st, iterations=iterations, border_value=0)


def median_filter_map(amap: np.ndarray, brain: np.ndarray, size: int, dim: int = 3
                      ) -> np.ndarray:
    """A map after a median filter: each voxel takes the median of its ``size``-voxel cube
    (``dim`` 3) or of its ``size x size`` square in its axial slice (``dim`` 2)
    (``scipy.ndimage.median_filter``, edges reflected); then everything outside ``brain``
    is set to 0 again. ``size`` 0 or 1 returns the map. This is the filter of
    ``inference.median_filter`` (``dim`` 3).

    Example:
        >>> m = np.zeros((5, 5, 5), np.float32); m[2, 2, 2] = 1  # one isolated voxel
        >>> float(median_filter_map(m, m >= 0, 3).max())
        0.0
    """
    _check_dim(dim, "median filter dim")
    if size <= 1:
        return np.asarray(amap, np.float32)
    from scipy.ndimage import median_filter

    shape = (size,) * 3 if dim == 3 else (1, size, size)
    return np.where(brain, median_filter(amap, size=shape), 0).astype(np.float32)


def remove_small_components(binary: np.ndarray, max_voxels: int, connectivity: int = 3
                            ) -> np.ndarray:
    """A thresholded map without its connected components of at most ``max_voxels`` voxels.

    Args:
        binary: ``(D, H, W)`` thresholded map.
        max_voxels: Components of this many voxels or fewer are removed; 0 removes nothing.
        connectivity: Neighbours that connect two voxels, as
            ``scipy.ndimage.generate_binary_structure``: 1 = 6 (faces), 2 = 18 (and edges),
            3 = 26 (and corners; the publications').

    Returns:
        Boolean array of ``binary``'s shape.

    Example:
        >>> b = np.zeros((4, 4, 4), bool); b[0, 0, 0] = True; b[2:4, 2:4, 2:4] = True
        >>> int(remove_small_components(b, 7).sum())  # the single voxel goes, 8 voxels stay
        8
    """
    binary = np.asarray(binary) != 0
    if max_voxels < 0:
        raise ValueError(f"max_voxels must be >= 0, got {max_voxels}")
    if max_voxels == 0 or not binary.any():
        return binary
    from scipy import ndimage

    lab, _ = ndimage.label(binary, structure=ndimage.generate_binary_structure(
        binary.ndim, connectivity))
    sizes = np.bincount(lab.ravel())
    keep = sizes > max_voxels
    keep[0] = False
    return keep[lab]


@dataclass(frozen=True)
class PostProcessing:
    """One method's post-processing recipe. The default is the identity.

    Attributes:
        erosion_iterations: Brain-mask erosion steps (0 = none); the map is zeroed outside the
            eroded mask.
        erosion_dim: 2 = per axial slice, 3 = the volume.
        erosion_connectivity: Structuring element of the erosion (1 = face neighbours).
        median_size: Median filter size (0 or 1 = none).
        median_dim: 2 = ``size x size`` per axial slice, 3 = ``size``-voxel cube.
        cc_max_voxels: After thresholding, connected components of at most this many voxels
            are removed (0 = none).
        cc_connectivity: Connectivity of those components (3 = 26 neighbours).
        foreground_weighting: Whether the windows' maps are weighted by their foreground
            fraction when blended (``inference.foreground_weighting``); recorded here for the
            detection to set, not applied by :meth:`apply`, which sees the blended map.
    """

    erosion_iterations: int = 0
    erosion_dim: int = 2
    erosion_connectivity: int = 1
    median_size: int = 0
    median_dim: int = 3
    cc_max_voxels: int = 0
    cc_connectivity: int = 3
    foreground_weighting: bool = False

    def __post_init__(self) -> None:
        _check_dim(self.erosion_dim, "erosion_dim")
        _check_dim(self.median_dim, "median_dim")
        for name in ("erosion_iterations", "median_size", "cc_max_voxels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def apply(self, amap: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The continuous steps: the map zeroed outside the (eroded) brain mask, then the
        median filter (re-zeroed outside that mask).

        Args:
            amap: ``(D, H, W)`` anomaly map.
            mask: ``(D, H, W)`` brain mask.

        Returns:
            float32 ``(D, H, W)`` map.
        """
        amap = np.asarray(amap, np.float32)
        if amap.shape != np.shape(mask):
            raise ValueError(f"map {amap.shape} and mask {np.shape(mask)} differ in shape")
        brain = erode_mask(mask, self.erosion_iterations, self.erosion_dim,
                           self.erosion_connectivity)
        out = np.where(brain, amap, 0).astype(np.float32)
        return median_filter_map(out, brain, self.median_size, self.median_dim)

    def apply_binary(self, binary: np.ndarray) -> np.ndarray:
        """The step after thresholding: small connected components removed."""
        return remove_small_components(binary, self.cc_max_voxels, self.cc_connectivity)


#: nothing changed
IDENTITY = PostProcessing()

#: DISYRE and the shared harness: the 3-voxel 3D median filter of ``inference.median_filter``
#: inside the brain mask, windows weighted by their foreground (``inference`` defaults).
DISYRE = PostProcessing(median_size=3, median_dim=3, foreground_weighting=True)

#: ``dae`` (Kascenas et al., MIDL 2022; the authors' code, ``src/denoising.py`` ``get_scores``
#: and ``src/cc_filter.py``): the foreground mask kept where at least 24 of the 25 pixels of
#: its 5 x 5 in-plane window are foreground (about 2 px of erosion; here 2 steps of a 3 x 3
#: square, i.e. a full 5 x 5 square), the map multiplied by it, a 2D 5 x 5 median filter per
#: slice; optionally, after thresholding, 3D components (26-connected) of at most 20 voxels
#: removed (``cc_max_voxels=20``; the code reports the Dice with and without it).
DAE = PostProcessing(erosion_iterations=2, erosion_dim=2, erosion_connectivity=2,
                     median_size=5, median_dim=2)
#: ``dae`` with the optional connected-component step
DAE_CC = PostProcessing(erosion_iterations=2, erosion_dim=2, erosion_connectivity=2,
                        median_size=5, median_dim=2, cc_max_voxels=20, cc_connectivity=3)

#: ``pddpm`` (Behrendt et al., MIDL 2023; the public code's ``src/utils/utils_eval.py``,
#: ``_test_step``): the brain mask eroded per axial slice with the 2D cross, in-plane size // 25
#: iterations (3 at the 96 px evaluation grid), the map multiplied by it; a 3D 5 x 5 x 5
#: median filter; after thresholding, 26-connected components of at most 7 voxels removed.
PDDPM = PostProcessing(erosion_iterations=3, erosion_dim=2, erosion_connectivity=1,
                       median_size=5, median_dim=3, cc_max_voxels=7, cc_connectivity=3)

#: ``anoddpm`` (Wyatt et al., CVPRW 2022; the authors' code): the squared error, no
#: post-processing
ANODDPM = IDENTITY

#: ``andi`` (Frotscher et al., arXiv 2312.01904; ``conf/eval.yml`` ``kernel_size: 5``): a 3D
#: 5 x 5 x 5 median filter, nothing else
ANDI = PostProcessing(median_size=5, median_dim=3)

#: the published recipe of each method name
PUBLISHED: dict[str, PostProcessing] = {"dag": DISYRE, "dae": DAE, "pddpm": PDDPM,
                                        "anoddpm": ANODDPM, "andi": ANDI}


def shared_recipe(median_filter: int) -> PostProcessing:
    """The shared protocol: ``median_filter`` voxels in 3D inside the brain mask, nothing
    after thresholding (``inference.median_filter``; DISYRE's published recipe at 3).

    Example:
        >>> shared_recipe(3) == PostProcessing(median_size=3, median_dim=3)
        True
    """
    return PostProcessing(median_size=median_filter, median_dim=3)


def recipe_for(method: str, protocol: str, median_filter: int = 3) -> PostProcessing:
    """The post-processing of ``method``'s maps under ``protocol``
    (``inference.postprocessing``).

    ``shared``: :func:`shared_recipe`. ``published``: the method's recipe of
    :data:`PUBLISHED`; a method whose published recipe is DISYRE's, or that has none of its
    own (the ablations, the Gaussian foil, the reference), gets the shared one, so that its
    maps follow ``inference.median_filter`` under both protocols.

    Args:
        method: ``corruption.name`` of the run (or ``reference``).
        protocol: ``published`` or ``shared``.
        median_filter: ``inference.median_filter`` (the shared recipe's size).

    Example:
        >>> recipe_for("pddpm", "published") is PDDPM, recipe_for("pddpm", "shared").median_size
        (True, 3)
        >>> recipe_for("dag", "published", median_filter=0).median_size
        0
    """
    if protocol not in ("published", "shared"):
        raise ValueError(f"post-processing protocol must be published or shared, got "
                         f"{protocol!r}")
    own = PUBLISHED.get(method, DISYRE)
    if protocol == "shared" or own is DISYRE:
        return shared_recipe(median_filter)
    return own


def recipe_text(recipe: PostProcessing) -> str:
    """The steps of ``recipe`` in words.

    Example:
        >>> recipe_text(PDDPM)  # doctest: +NORMALIZE_WHITESPACE
        'the brain mask eroded 3 steps per axial slice, a 5 x 5 x 5 median filter, connected
        components of at most 7 voxels removed after thresholding'
        >>> recipe_text(IDENTITY)
        'none'
    """
    parts = []
    if recipe.erosion_iterations:
        where = "per axial slice" if recipe.erosion_dim == 2 else "in 3D"
        parts.append(f"the brain mask eroded {recipe.erosion_iterations} steps {where}")
    if recipe.median_size > 1:
        k = recipe.median_size
        parts.append(f"a {' x '.join([str(k)] * recipe.median_dim)} median filter"
                     + (" per axial slice" if recipe.median_dim == 2 else ""))
    if recipe.cc_max_voxels:
        parts.append(f"connected components of at most {recipe.cc_max_voxels} voxels "
                     "removed after thresholding")
    return ", ".join(parts) or "none"


def describe(recipe: PostProcessing, protocol: str) -> dict[str, object]:
    """What a report records of a map's post-processing (``metrics.json``'s
    ``post_processing``): the protocol, the recipe's fields, its steps in words, and
    ``median_filter`` (the 3D filter's size when the recipe is the shared one, else
    ``None``).

    Example:
        >>> describe(shared_recipe(3), "shared")["median_filter"]
        3
        >>> describe(DAE, "published")["median_filter"] is None
        True
    """
    from dataclasses import asdict

    shared = recipe == shared_recipe(recipe.median_size)
    return {"protocol": protocol, "median_filter": recipe.median_size if shared else None,
            "steps": recipe_text(recipe), **asdict(recipe)}
