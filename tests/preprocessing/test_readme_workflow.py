"""The README's raw-scan workflow, run as written: relative paths, one command feeding the next.

In a work folder holding ``raw/head.nii.gz`` (the synthetic head of conftest.py), the session
fixture ``t1_run`` ran the first command; this test runs the rest from the same folder::

    disyre preprocess -i raw/ -o prep_raw/ --jobs 2          # t1_run (--spacing 3)
    disyre prepare --manifest prep_raw/manifest.csv
    disyre train --manifest prep_raw/manifest.csv -o runs/t2 --preset tiny ...
    disyre detect -i raw/ -o maps/ --checkpoint runs/t2 --preprocess

Only sizes are added (``--spacing 3``, a two-step tiny network) and two outputs of detect
(``--mode both --png``). The manifest holds paths relative to its own folder, so every command
finds the scans whatever the folder it runs from.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from disyre.cli import main
from disyre.data.manifest import read_manifest

TINY_TRAIN = ["--preset", "tiny", "--steps", "2", "--no-progress", "--set",
              "sampler.patch_size=32", "--set", "sampler.n_slices=2", "--set",
              "corruption.window=16"]


def test_readme_raw_scan_workflow(t1_run, monkeypatch, capsys):
    assert t1_run.rc == 0
    monkeypatch.chdir(t1_run.work)
    lines = (t1_run.out / "manifest.csv").read_text().splitlines()
    assert lines[1].startswith("head,head/head.nii.gz,,head/head_mask.nii.gz,train,t1")
    assert main(["prepare", "--manifest", "prep_raw/manifest.csv"]) == 0
    index = json.loads((t1_run.out / "cache" / "index.json").read_text())
    assert list(index["entries"]) == ["head"]
    assert main(["train", "--manifest", "prep_raw/manifest.csv", "-o", "runs/t2",
                 *TINY_TRAIN]) == 0
    # the checkpoint records the recipe found beside the training scans
    run = t1_run.work / "runs" / "t2"
    meta = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    recipe = meta["data"]["preprocessing"]
    assert recipe["template"] == "mni152" and recipe["spacing"] == t1_run.voxel_mm
    assert recipe["steps"] == ["reorient", "n4", "skull_strip:deepbet", "register:affine",
                               "resample"]
    # detect runs the recipe on the raw head and writes the map on the raw grid (MOOD)
    assert main(["detect", "-i", "raw/", "-o", "maps/", "--checkpoint", "runs/t2",
                 "--preprocess", "--mode", "both", "--png"]) == 0
    maps = t1_run.work / "maps"
    raw = nib.load(str(t1_run.path))
    amap = nib.load(str(maps / "head.nii.gz"))
    assert amap.shape == raw.shape and np.allclose(amap.affine, raw.affine)
    m = np.asarray(amap.dataobj)
    native = np.asarray(nib.load(str(t1_run.folder / "head_native_mask.nii.gz")).dataobj) > 0
    assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
    assert (m[~native] == 0).all() and (m[native] > 0).mean() > 0.5
    assert 0 <= float((maps / "head.nii.gz.txt").read_text()) <= 1
    assert (maps / "head_overlay.png").is_file()
    # the manifest reads the same from another folder
    monkeypatch.chdir(t1_run.work / "runs")
    (row,) = read_manifest("../prep_raw/manifest.csv")
    assert row.image.resolve() == t1_run.folder / "head.nii.gz"
    # a model without a recipe refuses --preprocess with one line
    monkeypatch.chdir(t1_run.work)
    del meta["data"]["preprocessing"]
    (run / "checkpoints" / "last" / "config.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["detect", "-i", "raw/", "-o", "maps2/", "--checkpoint", "runs/t2",
                 "--preprocess"]) == 1
    assert "records no preprocessing recipe" in capsys.readouterr().err
