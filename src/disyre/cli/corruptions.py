"""``disyre corruptions``: a gallery of what each corruption does to one slice.

Rows: ``dag``, ``fpi``, ``bias``, ``gaussian`` and the anomaly mask of ``dag``; columns: the
clean slice, then increasing severity (the same anomaly growing in strength).

Examples::

    disyre corruptions -o gallery.png
    disyre corruptions -o gallery.png --image sub-01_T2w.nii.gz --seed 3 --overwrite
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from disyre.cli.options import add_output_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre corruptions``."""
    p = subparsers.add_parser(
        "corruptions",
        help="figure of each corruption variant at increasing severity",
        description="Corrupt one axial slice with each variant (dag, fpi, bias, gaussian) at "
        "increasing severity and save the grid as a PNG. Default slice: the MNI152 T1 "
        "template shipped with nilearn.",
    )
    add_output_argument(p, "output PNG", deprecated=("--out",))
    p.add_argument("--image", type=Path, default=None,
                   help="NIfTI scan to show (default: nilearn's MNI152 T1 template)")
    p.add_argument("--slice", type=int, default=None,
                   help="axial slice index of the preprocessed volume (default: middle)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anomalies")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o/--output file")
    p.set_defaults(func=run)


def _template_dhw() -> np.ndarray:
    """nilearn's MNI152 T1 template (1 mm), axial-first canonical RAS."""
    import nibabel as nib

    from disyre.cli import CLIError
    from disyre.data.nifti import to_canonical

    try:
        from nilearn.datasets import load_mni152_template
    except ImportError as e:
        raise CLIError("the default image needs nilearn (pip install nilearn); "
                       "or pass --image") from e
    img = load_mni152_template(resolution=1)
    data = np.asarray(img.get_fdata(), dtype=np.float32)
    return to_canonical(data, nib.orientations.io_orientation(img.affine))


def run(args: argparse.Namespace) -> int:
    """Build and save the gallery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from disyre.cli import CLIError
    from disyre.corruption.gallery import GALLERY_ALPHAS, gallery_rows
    from disyre.data.intensity import normalize
    from disyre.data.nifti import load_scan
    from disyre.io_utils import OutputExistsError, atomic_path

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise CLIError(f"{out}: the gallery is written as PNG; give a .png file name")
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out}: exists; pass --overwrite to replace it")
    if args.image:
        scan = load_scan(args.image)
        vol, spacing = scan.data, scan.spacing
    else:
        vol, spacing = _template_dhw(), (1.0, 1.0, 1.0)
    source = str(args.image) if args.image else "MNI152 T1 template"
    pre = normalize(vol, spacing=spacing)
    img = pre.image
    k = img.shape[0] // 2 if args.slice is None else args.slice
    if not 0 <= k < img.shape[0]:
        raise CLIError(f"{source}: slice {k} outside [0, {img.shape[0] - 1}] of the "
                       "foreground crop")
    if min(img.shape[1:]) < 64:
        raise CLIError(f"{source}: foreground of {img.shape[1]}x{img.shape[2]} pixels is "
                       "smaller than the 64 px anomaly window")
    donors = [j for j in (k - 12, k - 6, k + 6, k + 12) if 0 <= j < img.shape[0]
              and img[j].any()]
    if not img[k].any():
        raise CLIError(f"{source}: slice {k} holds no brain")
    slices = torch.from_numpy(np.ascontiguousarray(img[[k, *donors]]))[:, None]
    rows = gallery_rows(slices, seed=args.seed, alphas=GALLERY_ALPHAS)

    clean = slices[0, 0].numpy()
    ncol = len(GALLERY_ALPHAS) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.9 * ncol, 1.9 * len(rows) * clean.shape[0]
                                                       / clean.shape[1] + 0.6), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        # rows run posterior -> anterior: origin "lower" shows anterior at the top
        axes[r, 0].imshow(clean, cmap="gray", vmin=0, vmax=1, origin="lower")
        axes[r, 0].set_ylabel(name, fontsize=10)
        for c, im in enumerate(imgs.numpy()):
            ax = axes[r, c + 1]
            cmap = "magma" if name.endswith("mask") else "gray"
            ax.imshow(im, cmap=cmap, vmin=0, vmax=1, origin="lower")
            if r == 0:
                ax.set_title(f"alpha = {GALLERY_ALPHAS[c]:g}", fontsize=9)
    axes[0, 0].set_title("clean", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"disyre corruptions: {source}, axial slice {k}, seed {args.seed}", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
