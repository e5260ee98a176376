"""``disyre bids BIDS_DIR OUTPUT_DIR participant``: BIDS derivatives of a BIDS dataset.

On the dataset of :mod:`tests.helpers.bids` with the session's trained tiny run: maps on
their inputs' grids, names and sidecars as docs/bids.md documents them, the output folder
valid for bidsschematools' derivative rules, the refusal to overwrite, ``--continue``.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from disyre.cli import main
from disyre.data.bids import derivative_problems
from tests.helpers.bids import LESIONS, T2W, write_bids_dataset

RATES = {0.01: 0.35, 0.05: 0.2}


def _bound_thresholds(run):
    """thresholds.json in ``run``'s folder at two rates, bound to the tiny model's maps."""
    from disyre.inference import Detector
    from disyre.inference.thresholds import (
        Thresholds,
        bind_thresholds,
        save_thresholds,
        thresholds_path,
    )

    det = Detector.from_checkpoint(run, device="cpu")
    th = bind_thresholds(Thresholds(dict(RATES), 2, 1000, source="healthy"), det, run)
    return save_thresholds(thresholds_path(run), th)


@pytest.fixture()
def ds(tmp_path):
    return write_bids_dataset(tmp_path / "ds")


def _bids(*argv):
    return main(["bids", *map(str, argv), "--no-progress"])


def _expected(rel, restored=True):
    """The documented outputs of the scan ``rel`` (docs/bids.md)."""
    folder, name = rel.rsplit("/", 1)
    stem = name[: -len("_T2w.nii.gz")]
    names = [f"{stem}_space-T2w_label-anomaly_probseg", f"{stem}_space-T2w_label-anomaly_"
             "desc-fpr1_mask", f"{stem}_space-T2w_label-anomaly_desc-fpr5_mask"]
    if restored:
        names.append(f"{stem}_desc-restored_T2w")
    return {f"{folder}/{n}{ext}" for n in names for ext in (".nii.gz", ".json")}


def test_bids_app_writes_valid_derivatives(ds, tiny_run_copy, tmp_path, capsys):
    th_file = _bound_thresholds(tiny_run_copy)
    out = tmp_path / "out"
    assert _bids(ds, out, "participant", "--checkpoint", tiny_run_copy, "--participant-label",
                 "02", "--restored") == 0
    assert "disyre bids: 3 of 3 scan(s) written" in capsys.readouterr().out
    mine = [r for r in T2W if r.startswith("sub-02/")]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"dataset_description.json"}.union(*(_expected(r) for r in mine))
    assert derivative_problems(out) == []
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "disyre" and gen["Version"]
    assert gen["Description"].startswith(f"disyre bids {ds} {out} participant")
    assert (out / desc["DatasetLinks"]["raw"]).resolve() == ds.resolve()
    assert desc["SourceDatasets"] == [{"URL": ds.resolve().as_uri()}]
    meta = json.loads((tiny_run_copy / "checkpoints" / "last" / "config.json").read_text())
    for rel in mine:
        src = nib.load(ds / rel)
        stem = (out / rel).as_posix()[: -len("_T2w.nii.gz")]
        amap = nib.load(f"{stem}_space-T2w_label-anomaly_probseg.nii.gz")
        # every map on its input's grid and affine
        assert amap.shape == src.shape and np.allclose(amap.affine, src.affine), rel
        m = np.asarray(amap.dataobj)
        assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 and m.max() > 0
        side = json.loads(open(f"{stem}_space-T2w_label-anomaly_probseg.json").read())
        assert side["Sources"] == [f"bids:raw:{rel}"]
        assert side["Model"]["Step"] == meta["step"]
        recorded = meta["weights"]["sha256"]  # the checkpoint records its weights' hashes
        assert side["Model"]["WeightsSHA256"] == recorded and recorded["model.safetensors"]
        assert side["Thresholds"]["FalsePositiveRate"] == {"0.01": 0.35, "0.05": 0.2}
        assert side["Thresholds"]["File"] == str(th_file.resolve())
        assert side["InferenceSettings"]["levels"] == [0, 50]
        assert 0 <= side["Score"] <= 1
        for rate, desc_ in ((0.01, "fpr1"), (0.05, "fpr5")):
            mp = f"{stem}_space-T2w_label-anomaly_desc-{desc_}_mask"
            mask = nib.load(mp + ".nii.gz")
            assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)
            np.testing.assert_array_equal(np.asarray(mask.dataobj),
                                          (m > RATES[rate]).astype(np.uint8))
            ms = json.loads(open(mp + ".json").read())
            assert ms["Threshold"] == RATES[rate] and ms["FalsePositiveRate"] == rate
            assert ms["Sources"][1] == "bids::" + (
                f"{stem}_space-T2w_label-anomaly_probseg.nii.gz").removeprefix(
                    out.as_posix() + "/")
            assert ms["Score"] == side["Score"]
        rest = nib.load(f"{stem}_desc-restored_T2w.nii.gz")
        assert rest.shape == src.shape and np.allclose(rest.affine, src.affine)
    # the lesioned patient scans have the brighter maps where the lesions are
    les = np.asarray(nib.load(ds / LESIONS[mine[0]]).dataobj) > 0
    m = np.asarray(nib.load(str(out / mine[0]).replace(
        "_T2w.nii.gz", "_space-T2w_label-anomaly_probseg.nii.gz")).dataobj)
    assert m[les].mean() > 2 * m[~les & (m > 0)].mean()


def test_bids_app_refuses_overwrite_and_continues(ds, tiny_run_copy, tmp_path, capsys):
    _bound_thresholds(tiny_run_copy)
    out = tmp_path / "out"
    args = [ds, out, "participant", "--checkpoint", tiny_run_copy, "--session-label", "1"]
    assert _bids(*args) == 0
    ses1 = sorted(r for r in T2W if "/ses-1/" in r)
    stems = [str(out / r)[: -len("_T2w.nii.gz")] for r in ses1]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    capsys.readouterr()
    # a second run refuses to overwrite, in one line
    assert _bids(*args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds outputs" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == before
    # --continue: a scan whose mask is missing and one whose map is cut short are redone
    gone = f"{stems[0]}_space-T2w_label-anomaly_desc-fpr5_mask.nii.gz"
    cut = f"{stems[1]}_space-T2w_label-anomaly_probseg.nii.gz"
    (out / gone).unlink()
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    assert _bids(*args, "--continue") == 0
    text = capsys.readouterr().out
    assert f"2 of {len(ses1)} scan(s) written" in text and f"{len(ses1) - 2} already done" in text
    assert "2 redone" in text
    assert derivative_problems(out) == []
    np.asarray(nib.load(cut).dataobj)  # whole again
    # a finished folder: --continue has nothing to do; --overwrite recomputes every scan
    assert _bids(*args, "--continue") == 0
    assert f"0 of {len(ses1)} scan(s) written" in capsys.readouterr().out
    assert _bids(*args, "--overwrite") == 0
    assert f"{len(ses1)} of {len(ses1)} scan(s) written" in capsys.readouterr().out


def test_bids_app_one_line_errors(ds, tiny_run, tmp_path, capsys, caplog):
    run = tiny_run.path
    # no thresholds file: maps only, with a warning naming the file it looked for
    out = tmp_path / "maps_only"
    assert _bids(ds, out, "participant", "--checkpoint", run, "--participant-label", "03") == 0
    assert "warning(s)" in capsys.readouterr().out
    assert f"{tiny_run.path / 'thresholds.json'}: no thresholds file" in caplog.text
    assert sorted(p.name for p in out.rglob("*.nii.gz")) == [
        "sub-03_ses-1_space-T2w_label-anomaly_probseg.nii.gz"]
    for argv, words in (
            ([ds, tmp_path / "o1", "participant", "--checkpoint", run, "--participant-label",
              "07"], ["participant label(s) 07"]),
            ([tmp_path / "nothing", tmp_path / "o2", "participant", "--checkpoint", run],
             ["nothing", "dataset folder not found"]),
            ([ds, ds, "participant", "--checkpoint", run], ["is the input dataset"])):
        assert _bids(*argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words), err
    (ds / "dataset_description.json").unlink()
    assert _bids(ds, tmp_path / "o3", "participant", "--checkpoint", run) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset_description.json is missing" in err


def _doc_workflow():
    """The commands of docs/bids.md's "Workflow" block, as argument lists."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "bids.md").read_text()
    section = text.split("## Workflow", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line)[1:] for line in block.replace("\\\n", " ").splitlines()
            if line.startswith("disyre ")]


#: sizes the test adds to the documented commands (a tiny network, two training steps)
DOC_EXTRAS = {
    "prepare": ["--no-progress"],
    "train": ["--preset", "tiny", "--steps", "2", "--no-progress", "--set",
              "sampler.patch_size=32", "--set", "sampler.n_slices=2", "--set",
              "corruption.window=16"],
    "evaluate": ["--bootstrap", "0"],
    "bids": ["--no-progress"],
}


def test_docs_workflow_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = _doc_workflow()
    assert [c[0] for c in commands] == ["prepare", "train", "evaluate", "bids", "bids"]
    write_bids_dataset(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        assert main([*argv, *DOC_EXTRAS[argv[0]]]) == 0, argv
    out = capsys.readouterr().out
    # prepare: controls train/val, patients test with their lesion masks
    from disyre.data.manifest import read_manifest

    rows = read_manifest("prep/ds/manifest.csv")
    assert sorted(r.split for r in rows) == ["test"] * 3 + ["train"] * 2 + ["val"]
    assert all((r.lesion_mask is not None) == (r.split == "test") for r in rows)
    # evaluate saved thresholds bound to the run; bids made masks with them
    th = json.loads((tmp_path / "runs" / "t2" / "thresholds.json").read_text())
    deriv = tmp_path / "ds" / "derivatives" / "disyre"
    assert "disyre bids: 3 of 3 scan(s) written" in out
    assert f"disyre bids: 3 of {len(T2W)} scan(s) written to ds/derivatives/disyre, 3 already " \
           "done" in out
    maps = sorted(p.relative_to(deriv).as_posix() for p in deriv.rglob("*_probseg.nii.gz"))
    assert maps == sorted(r.replace("_T2w.nii.gz", "_space-T2w_label-anomaly_probseg.nii.gz")
                          for r in T2W)
    assert len(list(deriv.rglob("*_mask.nii.gz"))) == len(T2W) * len(th["fpr"])
    assert len(list(deriv.rglob("*_desc-restored_T2w.nii.gz"))) == 3  # 02's only
    assert derivative_problems(deriv) == []
    # the derivatives inside the dataset are not read as scans of it
    assert len(read_manifest("prep/ds/manifest.csv")) == len(T2W)
    from disyre.data.manifest import from_bids

    assert len(from_bids("ds", "T2w")) == len(T2W)
