"""A tiny BIDS dataset written on the fly (docs/bids.md's example dataset).

Three participants (``participants.tsv``: ``01`` and ``03`` controls, ``02`` a patient), two
sessions, one ``acq-fast`` variant, a T1w beside one T2w, lesion masks of the patient in a
derivatives pipeline (``derivatives/lesions/``) and beside one scan, a brain mask in
derivatives. Scans are synthetic brains of :func:`tests.helpers.synthetic_cohort` scaled to
0..900, on 2 mm grids with different shapes and affines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.helpers.cohort import synthetic_cohort, write_nifti

#: participant -> group
GROUPS = {"01": "control", "02": "patient", "03": "control"}
#: the T2w scans: path from the root -> (shape of the axial-first volume, affine's diagonal)
T2W = {
    "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz": ((6, 40, 40), (2.0, 2.0, 2.0)),
    "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz": ((6, 40, 40), (-2.0, 2.0, 2.0)),
    "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz": ((6, 40, 40), (2.0, 2.0, 2.0)),
    "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_T2w.nii.gz": ((5, 40, 36), (2.0, 2.0, 2.4)),
    "sub-02/ses-2/anat/sub-02_ses-2_T2w.nii.gz": ((6, 40, 40), (2.0, 2.0, 2.0)),
    "sub-03/ses-1/anat/sub-03_ses-1_T2w.nii.gz": ((6, 40, 40), (2.0, -2.0, 2.0)),
}
#: scan -> its lesion mask (paths from the root)
LESIONS = {
    "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz":
        "derivatives/lesions/sub-02/ses-1/anat/sub-02_ses-1_label-lesion_mask.nii.gz",
    "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_T2w.nii.gz":
        "derivatives/lesions/sub-02/ses-1/anat/sub-02_ses-1_acq-fast_label-lesion_mask.nii.gz",
    "sub-02/ses-2/anat/sub-02_ses-2_T2w.nii.gz":
        "sub-02/ses-2/anat/sub-02_ses-2_label-lesion_mask.nii.gz",
}
BRAIN = {"sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz":
         "derivatives/lesions/sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz"}
T1W = {"sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz": "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"}


def _write(path: Path, vol_dhw: np.ndarray, diag: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, vol_dhw, np.diag([*diag, 1.0]), dhw=True)


def write_bids_dataset(root: Path, seed: int = 0) -> Path:
    """Write the dataset under ``root`` (created); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "disyre toy dataset", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    (root / "participants.tsv").write_text(
        "participant_id\tgroup\tage\n"
        + "".join(f"sub-{p}\t{g}\t{30 + i}\n" for i, (p, g) in enumerate(GROUPS.items())))
    rng = np.random.default_rng(seed)
    for i, (rel, (shape, diag)) in enumerate(T2W.items()):
        vol = synthetic_cohort(1, seed + i, shape)[0] * 900
        lesion = np.zeros(shape, bool)
        if rel in LESIONS:
            d, h, w = shape
            c = (d // 2, h // 2 + int(rng.integers(-4, 5)), w // 2 + int(rng.integers(-4, 5)))
            zz, yy, xx = np.ogrid[:d, :h, :w]
            lesion = ((zz - c[0]) ** 2 / 4 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16) & (vol > 0)
            vol[lesion] = 1000.0
            _write(root / LESIONS[rel], lesion.astype(np.uint8), diag)
        _write(root / rel, vol.astype(np.float32), diag)
        (root / rel.replace(".nii.gz", ".json")).write_text(json.dumps({"EchoTime": 0.1}))
        if rel in BRAIN:
            _write(root / BRAIN[rel], (vol > 0).astype(np.uint8), diag)
        if rel in T1W:
            _write(root / T1W[rel], vol.astype(np.float32), diag)
    (root / "derivatives" / "lesions" / "dataset_description.json").write_text(json.dumps(
        {"Name": "lesion masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "manual"}]}))
    return root
