"""``disyre detect``: MOOD-style folder in / folder out, sharding, thresholds, bad inputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from disyre.cli import main


@pytest.fixture()
def ckpt(tiny_run):
    """The session's trained tiny run (inference: levels [0, 50], 32-px windows, stride 16)."""
    return tiny_run.path


def _scan(path, shape=(40, 44, 6), affine=None, seed=0):
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    x, y, z = shape
    vol[3:x - 4, 5:y - 2, 1:z - 1] = rng.uniform(100, 900, (x - 7, y - 7, z - 2))
    nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 1.5, 1.0]) if affine is None
                             else affine), path)
    return vol


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _scan(d / "a.nii.gz", seed=1)
    _scan(d / "b.nii", shape=(36, 40, 5), affine=np.eye(4), seed=2)
    _scan(d / "c.nii.gz", seed=3)
    (d / "README.txt").write_text("not a scan")
    return d


RUN_CLI = "import sys; from disyre.cli import main; sys.exit(main(sys.argv[1:]))"


def _detect(*argv):
    return main(["detect", *map(str, argv)])


def test_folder_mode_writes_one_map_per_scan(folder, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "both") == 0
    for name in ("a.nii.gz", "b.nii", "c.nii.gz"):
        src, m = nib.load(folder / name), nib.load(out / name)
        assert m.shape == src.shape
        np.testing.assert_allclose(m.affine, src.affine)
        data = np.asarray(m.dataobj)
        assert data.dtype == np.float32 and 0 <= data.min() and data.max() <= 1
        assert (data[np.asarray(src.dataobj) == 0] == 0).all()
        score = float((out / f"{name}.txt").read_text())
        assert 0 <= score <= 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.nii.gz", "b.nii", "c.nii.gz", "a.nii.gz.txt", "b.nii.txt", "c.nii.gz.txt"])
    text = capsys.readouterr().out
    assert "README.txt" in text and "3 of 3" in text


def test_existing_outputs_refused_without_overwrite(folder, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "sample") == 0
    before = (out / "a.nii.gz.txt").read_text()
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "sample") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "sample",
                   "--overwrite") == 0
    assert (out / "a.nii.gz.txt").read_text() == before  # deterministic


def test_shards_equal_single_process(folder, ckpt, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _detect("-i", folder, "-o", one, "--checkpoint", ckpt) == 0
    assert _detect("-i", folder, "-o", two, "--checkpoint", ckpt, "--shard", "0/2") == 0
    assert sorted(p.name for p in two.iterdir()) == ["a.nii.gz", "c.nii.gz"]
    monkeypatch.setenv("RANK", "1")  # as torchrun sets it
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _detect("-i", folder, "-o", two, "--checkpoint", ckpt) == 0
    for name in ("a.nii.gz", "b.nii", "c.nii.gz"):
        np.testing.assert_array_equal(np.asarray(nib.load(one / name).dataobj),
                                      np.asarray(nib.load(two / name).dataobj))


@pytest.mark.slow  # two fresh interpreters; test_shards_equal_single_process covers the split
def test_shards_in_two_processes(folder, ckpt, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RUN_CLI, "detect", "-i", str(folder),
                               "-o", str(tmp_path / "par"), "--checkpoint", str(ckpt),
                               "--shard", f"{i}/2"], env=env, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert _detect("-i", folder, "-o", tmp_path / "seq", "--checkpoint", ckpt) == 0
    for name in ("a.nii.gz", "b.nii", "c.nii.gz"):
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "par" / name).dataobj),
                                      np.asarray(nib.load(tmp_path / "seq" / name).dataobj))


def test_thresholds_masks_restored_and_png(folder, tiny_run_copy, tmp_path, capsys):
    ckpt = tiny_run_copy
    scan = folder / "a.nii.gz"
    out = tmp_path / "o1"
    assert _detect("-i", scan, "-o", out, "--checkpoint", ckpt, "--threshold", "fpr=0.05") == 1
    assert "thresholds.json" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    (ckpt / "thresholds.json").write_text(json.dumps({"fpr": {"0.01": 0.3, "0.05": 0.1}}))
    assert _detect("-i", scan, "-o", out, "--checkpoint", ckpt, "--threshold", "fpr=0.05",
                   "--save-restored", "--png") == 0
    amap = np.asarray(nib.load(out / "a.nii.gz").dataobj)
    mask = nib.load(out / "a_mask.nii.gz")
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (amap > 0.1).astype(np.uint8))
    assert nib.load(out / "a_restored.nii.gz").shape == amap.shape
    assert (out / "a_overlay.png").read_bytes()[:4] == b"\x89PNG"
    # a plain number works too
    assert _detect("-i", scan, "-o", out, "--checkpoint", ckpt, "--threshold", "0.02",
                   "--overwrite") == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out / "a_mask.nii.gz").dataobj),
                                  (amap > 0.02).astype(np.uint8))


def test_bad_checkpoint_is_one_clear_error(folder, tmp_path, capsys):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"nonsense")
    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", fake) == 1
    err = capsys.readouterr().err
    assert "fake" in err and "checkpoint" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_scan_in_folder_is_reported_and_others_written(folder, ckpt, tmp_path, capsys):
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii", "c.nii.gz"]
    assert "broken.nii.gz" in capsys.readouterr().out


def test_scan_smaller_than_window(tmp_path, ckpt):
    src = tmp_path / "small.nii.gz"
    _scan(src, shape=(20, 18, 4))
    out = tmp_path / "out"
    assert _detect("-i", src, "-o", out, "--checkpoint", ckpt, "--set",
                   "inference.window=64") == 0
    assert nib.load(out / "small.nii.gz").shape == (20, 18, 4)


def test_bad_arguments(folder, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert _detect("-i", tmp_path / "missing", "-o", out, "--checkpoint", ckpt) == 1
    assert "missing" in capsys.readouterr().err
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--shard", "2/2") == 1
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--set", "train.lr=1") == 1
    assert _detect("-i", folder, "-o", folder, "--checkpoint", ckpt) == 1
    assert "input folder" in capsys.readouterr().err
