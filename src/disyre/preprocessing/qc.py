"""The QC figure people check first: the brain mask on the raw scan, the brain on the template.

Top row: the bias-corrected raw scan (axial, coronal, sagittal slices through the brain's
centre) with the brain mask's outline in red. Bottom row: the registered brain on the template
grid with the template's edges in cyan; a misregistration shows as edges that cut across the
brain's anatomy or stray outside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save_qc_png"]


def _ras(arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel as nib

    ornt = nib.io_orientation(affine)
    return nib.apply_orientation(arr, nib.orientations.ornt_transform(ornt,
                                                                      [[0, 1], [1, 1], [2, 1]]))


def _views(vol: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of an RAS ``(X, Y, Z)`` volume, ready for imshow."""
    x, y, z = centre
    return [vol[:, :, z].T, vol[:, y, :].T, vol[x, :, :].T]


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return tuple(s // 2 for s in mask.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in np.round(idx.mean(0)))  # type: ignore[return-value]


def _edges(vol: np.ndarray) -> np.ndarray:
    """Strong intensity edges of a template (gradient magnitude above its 85th percentile)."""
    from scipy import ndimage

    g = np.sqrt(sum(ndimage.sobel(ndimage.gaussian_filter(vol, 0.7), axis=a) ** 2
                    for a in range(3)))
    inside = g[vol > 0]
    return g > (np.percentile(inside, 85) if inside.size else np.inf)


def save_qc_png(pre: Any, path: str | Path) -> None:
    """Write the QC figure of a :class:`~disyre.preprocessing.pipeline.Preprocessed` scan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from disyre.io_utils import atomic_path

    raw = _ras(pre.corrected, pre.affine)
    raw_mask = _ras(pre.native_mask, pre.affine)
    tpl = pre.template
    brain = _ras(pre.image, tpl.affine)
    edges = _ras(_edges(tpl.image), tpl.affine)
    hi = float(np.percentile(raw[raw > 0], 99.5)) if (raw > 0).any() else 1.0
    bhi = float(np.percentile(brain[brain > 0], 99.5)) if (brain > 0).any() else 1.0
    fig, axes = plt.subplots(2, 3, figsize=(10, 7))
    titles = ("axial", "coronal", "sagittal")
    for ax, im, m, t in zip(axes[0], _views(raw, _centre(raw_mask)),
                            _views(raw_mask, _centre(raw_mask)), titles, strict=True):
        ax.imshow(im, cmap="gray", origin="lower", vmin=0, vmax=hi)
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"raw scan, brain mask ({t})", fontsize=9)
    c = _centre(_ras(tpl.mask, tpl.affine))
    for ax, im, e, t in zip(axes[1], _views(brain, c), _views(edges, c), titles, strict=True):
        ax.imshow(im, cmap="gray", origin="lower", vmin=0, vmax=bhi)
        ax.imshow(np.ma.masked_where(~e, e.astype(float)), cmap="cool", origin="lower",
                  alpha=0.6, vmin=0, vmax=1)
        ax.set_title(f"registered brain, template edges ({t})", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{pre.subject}: brain {pre.brain_ml:.0f} mL, Dice with the template's brain "
                 f"{pre.dice:.3f}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
