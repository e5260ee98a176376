"""``disyre detect``: MOOD-style folder in / folder out, sharding, thresholds, bad inputs."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from disyre.cli import main
from tests.helpers import write_nifti


@pytest.fixture()
def ckpt(tiny_run):
    """The session's trained tiny run (inference: levels [0, 50], 32-px windows, stride 16)."""
    return tiny_run.path


def _scan(path, shape=(40, 44, 6), affine=None, seed=0):
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    x, y, z = shape
    vol[3:x - 4, 5:y - 2, 1:z - 1] = rng.uniform(100, 900, (x - 7, y - 7, z - 2))
    write_nifti(path, vol, np.diag([-1.0, -1.0, 1.5, 1.0]) if affine is None else affine)
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
        ["a.nii.gz", "b.nii", "c.nii.gz", "a.nii.gz.txt", "b.nii.txt", "c.nii.gz.txt",
         "disyre_maps.json"])
    made = json.loads((out / "disyre_maps.json").read_text())["maps"]
    assert sorted(made) == ["a.nii.gz", "b.nii", "c.nii.gz"]
    assert made["a.nii.gz"]["inference"]["levels"] == [0, 50]
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
    assert sorted(p.name for p in two.iterdir()) == ["a.nii.gz", "c.nii.gz",
                                                     "disyre_maps_shard0of2.json"]
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
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii", "c.nii.gz",
                                                     "disyre_maps.json"]
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


# ---- behaviour with the trained tiny model ---------------------------------------------------

def _lesioned_scan(path, seed=7, spacing=2.0):
    """A synthetic brain like the training ones, with a bright ball; returns its lesion mask."""
    from tests.helpers.cohort import plant_lesion, synthetic_cohort

    vol, les = plant_lesion(synthetic_cohort(1, seed)[0], seed)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    write_nifti(path, vol * 900, aff, dhw=True)
    return les.transpose(2, 1, 0), vol.transpose(2, 1, 0) > 0


def test_detect_finds_a_planted_lesion(ckpt, tmp_path):
    from sklearn.metrics import average_precision_score

    les, brain = _lesioned_scan(tmp_path / "s.nii.gz")
    assert _detect("-i", tmp_path / "s.nii.gz", "-o", tmp_path / "out", "--checkpoint",
                   ckpt) == 0
    amap = np.asarray(nib.load(tmp_path / "out" / "s.nii.gz").dataobj)
    ap = average_precision_score(les[brain], amap[brain])
    assert les[brain].mean() < 0.1 and ap > 0.8  # measured 0.99-1.0 on 9 scans


def test_detect_mask_and_precision(ckpt, tmp_path, caplog):
    les, brain = _lesioned_scan(tmp_path / "s.nii.gz")
    half = brain.copy()
    half[: half.shape[0] // 2] = False
    nib.save(nib.Nifti1Image(half.astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])),
             tmp_path / "mask.nii.gz")
    assert _detect("-i", tmp_path / "s.nii.gz", "-o", tmp_path / "m", "--checkpoint", ckpt,
                   "--mask", tmp_path / "mask.nii.gz") == 0
    masked = np.asarray(nib.load(tmp_path / "m" / "s.nii.gz").dataobj)
    assert (masked[~half] == 0).all() and (masked[half] > 0).mean() > 0.9
    for prec in ("fp32", "bf16"):
        with caplog.at_level("INFO"):
            assert _detect("-i", tmp_path / "s.nii.gz", "-o", tmp_path / prec, "--checkpoint",
                           ckpt, "--precision", prec) == 0
        assert f"precision {prec}" in caplog.text
    fp32, bf16 = (np.asarray(nib.load(tmp_path / p / "s.nii.gz").dataobj)
                  for p in ("fp32", "bf16"))
    assert 0 < np.abs(bf16 - fp32).max() < 0.05  # bf16 was used, and keeps the map


def test_evaluate_checkpoint_save_thresholds_then_detect_at_that_fpr(tiny_run_copy, tmp_path,
                                                                     capsys):
    from disyre.training import latest_checkpoint
    from tests.helpers import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "cohort", n_val=2, n_test_lesion=2,
                                  n_test_healthy=1, seed=3)
    rep = tmp_path / "rep"
    step = latest_checkpoint(tiny_run_copy)  # a checkpoint folder: thresholds go to its run
    assert main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(step),
                 "-o", str(rep), "--save-thresholds", "--bootstrap", "0"]) == 0
    assert "pixel AP" in capsys.readouterr().out
    m = json.loads((rep / "metrics.json").read_text())
    assert m["n_cases_with_lesion"] == 2
    assert m["pixel"]["ap"] > 5 * m["pixel"]["prevalence"]  # the model finds the lesions
    saved = json.loads((tiny_run_copy / "thresholds.json").read_text())
    assert saved == json.loads((rep / "thresholds.json").read_text())
    assert not (step / "thresholds.json").exists()
    # bound to the maps they were fitted on: the run's inference settings and checkpoint
    assert saved["inference"]["levels"] == [0, 50] and saved["inference"]["window"] == 32
    assert saved["checkpoint"]["step"] == json.loads((step / "config.json").read_text())["step"]
    assert len(saved["checkpoint"]["weights_sha256"]) == 64
    t = float(saved["fpr"]["0.01"])
    scan = manifest.parent / "s2.nii.gz"
    out = tmp_path / "det"
    assert _detect("-i", scan, "-o", out, "--checkpoint", tiny_run_copy, "--threshold",
                   "fpr=0.01") == 0
    text = capsys.readouterr().out
    assert f"mask threshold {t:.4g} (fpr=0.01 from {tiny_run_copy / 'thresholds.json'})" in text
    amap = np.asarray(nib.load(out / "s2.nii.gz").dataobj)
    mask = np.asarray(nib.load(out / "s2_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, (amap > t).astype(np.uint8))
    assert 0 < mask.sum() < (amap > 0).sum()
    # the 2-level ensemble's thresholds on 1-level maps: refused, naming both settings
    assert _detect("-i", scan, "-o", tmp_path / "det1", "--checkpoint", tiny_run_copy,
                   "--threshold", "fpr=0.01", "--set", "inference.levels=[0]") == 1
    err = capsys.readouterr().err
    assert "levels=[0, 50]" in err and "levels=[0]" in err and err.count("\n") == 1
    assert not (tmp_path / "det1").exists() or not any((tmp_path / "det1").iterdir())
    # evaluate with a given thresholds file checks the same binding
    th = tiny_run_copy / "thresholds.json"
    assert main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(tiny_run_copy),
                 "-o", str(tmp_path / "rep1"), "--thresholds-file", str(th), "--bootstrap", "0",
                 "--set", "inference.levels=[0]"]) == 1
    err = capsys.readouterr().err
    assert "levels=[0, 50]" in err and "levels=[0]" in err and err.count("\n") == 1
    assert main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(tiny_run_copy),
                 "-o", str(tmp_path / "rep2"), "--thresholds-file", str(th), "--bootstrap", "0",
                 "--set", "inference.levels=[0]", "--allow-threshold-mismatch"]) == 0
    m1 = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    assert m1["thresholds"]["fpr"]["0.01"] == saved["fpr"]["0.01"]


# ---- faults a user hits ----------------------------------------------------------------------

def test_outputs_never_replace_inputs_or_each_other(folder, ckpt, tmp_path, capsys):
    scan = folder / "a.nii.gz"
    before = scan.read_bytes()
    assert _detect("-i", scan, "-o", folder, "--checkpoint", ckpt, "--overwrite") == 1
    err = capsys.readouterr().err
    assert "would replace the input" in err and "a.nii.gz" in err
    assert scan.read_bytes() == before
    d = tmp_path / "twins"
    d.mkdir()
    _scan(d / "a.nii", seed=1)
    _scan(d / "a.nii.gz", seed=2)
    out = tmp_path / "out"
    assert _detect("-i", d, "-o", out, "--checkpoint", ckpt, "--save-restored") == 1
    err = capsys.readouterr().err
    assert "a.nii and a.nii.gz would both write a_restored.nii.gz" in err
    assert not out.exists() or not any(out.iterdir())
    assert _detect("-i", d, "-o", out, "--checkpoint", ckpt) == 0  # maps alone: a.nii, a.nii.gz
    assert sorted(p.name for p in out.iterdir()) == ["a.nii", "a.nii.gz", "disyre_maps.json"]


def test_unwritable_output_folder_fails_before_any_work(folder, ckpt, tmp_path, capsys,
                                                        monkeypatch):
    from disyre.inference import Detector

    def no_model(*a, **kw):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(Detector, "from_checkpoint", no_model)
    (tmp_path / "file").write_text("x")
    assert _detect("-i", folder, "-o", tmp_path / "file" / "out", "--checkpoint", ckpt) == 1
    err = capsys.readouterr().err.strip()
    assert "not writable" in err and "Traceback" not in err and err.count("\n") == 0


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_folder_fails_before_any_work(folder, ckpt, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert _detect("-i", folder, "-o", ro, "--checkpoint", ckpt) == 1
    finally:
        ro.chmod(0o700)
    assert "not writable" in capsys.readouterr().err


def test_truncated_weights_are_one_clear_error(tiny_run_copy, folder, tmp_path, capsys):
    from disyre.training import latest_checkpoint

    w = latest_checkpoint(tiny_run_copy) / "ema.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert _detect("-i", folder, "-o", tmp_path / "out", "--checkpoint", tiny_run_copy) == 1
    err = capsys.readouterr().err.strip()
    assert "ema.safetensors" in err and "truncated" in err and err.count("\n") == 0


def test_a_second_run_never_replaces_the_first_runs_outputs(folder, ckpt, tmp_path, capsys,
                                                             monkeypatch):
    """Two runs into one folder: each checks at the start, but a file that appears while a
    run works (the other run wrote it) is not replaced."""
    from disyre.inference import Detector

    out = tmp_path / "out"
    real = Detector.predict

    def other_run_writes_b(self, scan, *a, **kw):
        res = real(self, scan, *a, **kw)
        if scan.name == "b.nii":
            (out / "b.nii").write_bytes(b"the other run's map")
        return res

    monkeypatch.setattr(Detector, "predict", other_run_writes_b)
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt) == 1
    assert (out / "b.nii").read_bytes() == b"the other run's map"
    assert "b.nii: exists" in capsys.readouterr().out
    assert (out / "a.nii.gz").is_file() and (out / "c.nii.gz").is_file()


def test_continue_skips_finished_scans(folder, ckpt, tmp_path, capsys, monkeypatch):
    from disyre.inference import Detector

    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "both") == 0
    (out / "b.nii.txt").unlink()  # b was interrupted after its map
    (out / "c.nii.gz").write_bytes(b"")  # and c's map is empty
    kept = (out / "a.nii.gz").stat().st_mtime_ns
    seen = []
    real = Detector.predict
    monkeypatch.setattr(Detector, "predict",
                        lambda self, scan, *a, **kw: seen.append(scan.name) or real(self, scan,
                                                                                     *a, **kw))
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "both") == 1
    assert "--continue" in capsys.readouterr().err
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "both",
                   "--continue") == 0
    assert seen == ["b.nii", "c.nii.gz"]
    assert (out / "a.nii.gz").stat().st_mtime_ns == kept
    assert float((out / "b.nii.txt").read_text()) > 0
    assert nib.load(out / "c.nii.gz").shape == nib.load(folder / "c.nii.gz").shape
    assert "2 of 3 scan(s) written" in capsys.readouterr().out
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--continue",
                   "--overwrite") == 1


def test_overlay_keeps_the_callers_matplotlib_backend(ckpt, tmp_path):
    import matplotlib

    from disyre.inference import Detector, save_overlay_png

    _lesioned_scan(tmp_path / "s.nii.gz")
    res = Detector.from_checkpoint(ckpt, device="cpu").predict(tmp_path / "s.nii.gz")
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # as a notebook has its own
    try:
        save_overlay_png(res, tmp_path / "o.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"


# ---- the library behind the command, and the faults of a user's first runs -------------------

def test_detect_files_from_python_without_the_cli(folder, tiny_run_copy, tmp_path, capsys):
    """The Python example of docs/detection.md ("Python API")."""
    from disyre.data.nifti import InputError
    from disyre.inference import Detector, detect_files
    from disyre.io_utils import OutputExistsError

    _bound_thresholds(tiny_run_copy)  # as `disyre evaluate --save-thresholds` writes it
    det = Detector.from_checkpoint(tiny_run_copy)
    out = tmp_path / "out"
    summary = detect_files(folder, out, det, checkpoint=tiny_run_copy, mode="both",
                           threshold="fpr=0.05", png=True, progress=False)
    assert summary.ok and [p.name for p in summary.written] == ["a.nii.gz", "b.nii",
                                                                 "c.nii.gz"]
    assert [p.name for p in summary.others] == ["README.txt"]
    assert summary.threshold.value == 0.1
    assert summary.threshold.path == tiny_run_copy / "thresholds.json"
    for scan, score in summary.scores.items():
        assert float((out / f"{scan.name}.txt").read_text()) == pytest.approx(score, abs=1e-6)
        amap = np.asarray(nib.load(out / scan.name).dataobj)
        assert amap.shape == nib.load(scan).shape
        mask = np.asarray(nib.load(out / f"{scan.name.split('.')[0]}_mask.nii.gz").dataobj)
        np.testing.assert_array_equal(mask, (amap > 0.1).astype(np.uint8))
    assert (out / "b_overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert "3 of 3 scan(s) written" in summary.report()
    assert "scans" not in capsys.readouterr().err  # progress=False: no bar
    with pytest.raises(OutputExistsError, match="--overwrite"):
        detect_files(folder, out, det, mode="both", progress=False)
    again = detect_files(folder, out, det, checkpoint=tiny_run_copy, mode="both",
                         threshold="fpr=0.05", png=True, continue_=True, progress=False)
    assert again.written == [] and len(again.skipped) == 3
    with pytest.raises(InputError, match="missing"):
        detect_files(tmp_path / "missing", out, det)


def _bound_thresholds(run, **inference):
    """thresholds.json in ``run``'s folder, bound to the tiny model's maps."""
    from disyre.inference import Detector
    from disyre.inference.thresholds import (
        Thresholds,
        bind_thresholds,
        save_thresholds,
        thresholds_path,
    )

    det = Detector.from_checkpoint(run, device="cpu", **inference)
    th = bind_thresholds(Thresholds({0.05: 0.1}, 1, 100), det, run)
    return save_thresholds(thresholds_path(run), th)


def test_thresholds_refused_on_maps_made_otherwise(folder, tiny_run_copy, tmp_path, capsys,
                                                   caplog):
    """Fault: thresholds fitted on 2-level maps were applied to 1-level maps without a word."""
    scan = folder / "a.nii.gz"
    _bound_thresholds(tiny_run_copy)
    args = ["-i", scan, "--checkpoint", tiny_run_copy, "--threshold", "fpr=0.05"]
    assert _detect(*args, "-o", tmp_path / "same") == 0
    capsys.readouterr()
    assert _detect(*args, "-o", tmp_path / "one", "--set", "inference.levels=[0]") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "thresholds.json" in err
    assert "levels=[0, 50]" in err and "levels=[0]" in err and "--allow-threshold-mismatch" in err
    assert not (tmp_path / "one").exists() or not any((tmp_path / "one").iterdir())
    with caplog.at_level("WARNING"):
        assert _detect(*args, "-o", tmp_path / "one", "--set", "inference.levels=[0]",
                       "--allow-threshold-mismatch") == 0
    assert "applied anyway" in caplog.text and "levels=[0]" in caplog.text
    # another checkpoint: thresholds bound to other weights
    doc = json.loads((tiny_run_copy / "thresholds.json").read_text())
    doc["checkpoint"]["weights_sha256"] = "0" * 64
    (tiny_run_copy / "thresholds.json").write_text(json.dumps(doc))
    assert _detect(*args, "-o", tmp_path / "other") == 1
    assert "checkpoint" in capsys.readouterr().err
    # a file without the records (an older disyre): applied, with a warning that says so
    (tiny_run_copy / "thresholds.json").write_text(json.dumps({"fpr": {"0.05": 0.1}}))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _detect(*args, "-o", tmp_path / "old") == 0
    assert "cannot check" in caplog.text


def test_thresholds_looked_up_only_in_the_run_folder(folder, tiny_run_copy, tmp_path, capsys,
                                                     monkeypatch):
    """Fault: with ``--checkpoint run`` an unrelated thresholds.json in the current folder
    (the run's parent) was used, and the output never named it."""
    monkeypatch.chdir(tiny_run_copy.parent)
    (tiny_run_copy.parent / "thresholds.json").write_text(
        json.dumps({"fpr": {"0.05": 0.9}}))  # unrelated
    scan = folder / "a.nii.gz"
    run = tiny_run_copy.name  # relative, as typed: its parent is the current folder
    assert _detect("-i", scan, "-o", tmp_path / "o1", "--checkpoint", run, "--threshold",
                   "fpr=0.05") == 1
    err = capsys.readouterr().err
    assert f"{run}/thresholds.json: no thresholds file in the checkpoint's run folder" in err
    _bound_thresholds(tiny_run_copy)
    for ckpt in (run, f"{run}/checkpoints/last"):  # a run folder or one of its checkpoints
        out = tmp_path / ckpt.replace("/", "_")
        assert _detect("-i", scan, "-o", out, "--checkpoint", ckpt, "--threshold",
                       "fpr=0.05") == 0
        assert f"mask threshold 0.1 (fpr=0.05 from {run}/thresholds.json)" in \
            capsys.readouterr().out
    explicit = tiny_run_copy.parent / "thresholds.json"
    assert _detect("-i", scan, "-o", tmp_path / "o2", "--checkpoint", run, "--threshold",
                   "fpr=0.05", "--thresholds-file", explicit) == 0
    assert f"(fpr=0.05 from {explicit})" in capsys.readouterr().out


def test_continue_redoes_a_map_that_does_not_read_whole(folder, ckpt, tmp_path, caplog,
                                                         monkeypatch, capsys):
    """Fault: a map cut short (its header reads, its data does not) counted as done."""
    from disyre.inference import Detector

    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--png") == 0
    cut = out / "c.nii.gz"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert nib.load(cut).shape == nib.load(folder / "c.nii.gz").shape  # the header reads
    png = out / "a_overlay.png"
    png.write_bytes(png.read_bytes()[:300])  # a PNG cut short
    seen = []
    real = Detector.predict
    monkeypatch.setattr(Detector, "predict",
                        lambda self, scan, *a, **kw: seen.append(scan.name) or real(self, scan,
                                                                                     *a, **kw))
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--png",
                       "--continue") == 0
    assert seen == ["a.nii.gz", "c.nii.gz"]
    assert "c.nii.gz" in caplog.text and "does not read whole" in caplog.text
    assert "a_overlay.png" in caplog.text and "computing it again" in caplog.text
    assert "2 redone" in capsys.readouterr().out
    assert np.asarray(nib.load(cut).dataobj).shape == nib.load(folder / "c.nii.gz").shape


@pytest.mark.parametrize("writer", ["map", "score"])
def test_full_disk_is_one_line_naming_the_file(folder, ckpt, tmp_path, capsys, monkeypatch,
                                               writer):
    """Fault: ``[Errno 28] No space left on device`` without the file."""
    import errno
    import os

    from disyre.inference import DetectionResult

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if writer == "map":
        monkeypatch.setattr(DetectionResult, "save_map", full)
    else:
        from disyre.inference import files

        monkeypatch.setattr(files, "_write_text", full)
    out = tmp_path / "out"
    name = "a.nii.gz" if writer == "map" else "a.nii.gz.txt"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--mode", "both",
                   "--no-progress") == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"disyre detect: error: cannot write {out / name}: "
                   f"{os.strerror(errno.ENOSPC)}")
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary left


def test_broken_link_reported_and_overall_progress(folder, ckpt, tmp_path, capsys, caplog):
    """Fault: a dangling .nii.gz symbolic link was skipped without a word, and a folder of N
    scans showed one bar per scan but no overall x/N."""
    (folder / "ghost.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    with caplog.at_level("WARNING"):
        assert _detect("-i", folder, "-o", tmp_path / "out", "--checkpoint", ckpt) == 0
    cap = capsys.readouterr()
    assert "ghost.nii.gz: broken symbolic link" in caplog.text
    assert "skipped 1 broken symbolic link(s): ghost.nii.gz" in cap.out
    assert re.search(r"scans: +100%.*3/3", cap.err)
    assert _detect("-i", folder, "-o", tmp_path / "quiet", "--checkpoint", ckpt,
                   "--no-progress") == 0
    assert "scans:" not in capsys.readouterr().err


def test_evaluate_maps_checks_the_thresholds_binding_as_checkpoint_does(tiny_run_copy,
                                                                        tmp_path, capsys):
    """detect records what made its maps; evaluate --maps checks a thresholds file against it."""
    import shutil

    from tests.helpers import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "cohort", n_val=0, n_test_lesion=2,
                                  n_test_healthy=1, seed=3)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        shutil.copy(manifest.parent / f"s{i}.nii.gz", imgs)
    th = _bound_thresholds(tiny_run_copy)  # fitted on maps of levels [0, 50]
    other, same = tmp_path / "maps_levels0", tmp_path / "maps"
    assert _detect("-i", imgs, "-o", other, "--checkpoint", tiny_run_copy, "--no-progress",
                   "--set", "inference.levels=[0]") == 0
    assert _detect("-i", imgs, "-o", same, "--checkpoint", tiny_run_copy, "--no-progress") == 0
    capsys.readouterr()

    def evaluate(maps, out, *extra):
        return main(["evaluate", "--manifest", str(manifest), "--maps", str(maps), "-o",
                     str(tmp_path / out), "--thresholds-file", str(th), "--bootstrap", "0",
                     *extra])

    assert evaluate(other, "rep_other") == 1
    err = capsys.readouterr().err
    assert "levels=[0, 50]" in err and "levels=[0]" in err and err.count("\n") == 1
    assert not (tmp_path / "rep_other" / "metrics.json").exists()
    assert evaluate(other, "rep_allowed", "--allow-threshold-mismatch") == 0
    assert evaluate(same, "rep_same") == 0
    assert "cannot check" not in capsys.readouterr().err


def test_scan_with_a_damaged_affine_is_listed_and_the_others_written(folder, ckpt, tmp_path,
                                                                    capsys):
    import io

    bad = folder / "bad.nii"
    vol = np.zeros((40, 44, 6), np.float32)
    vol[5:30, 5:30, 1:5] = 500.0
    nib.save(nib.Nifti1Image(vol, np.eye(4)), bad)
    raw = bad.read_bytes()  # a header another program damaged: a NaN in the sform
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"] = [np.nan, 0.0, 0.0, 0.0]
    bad.write_bytes(hdr.binaryblock + raw[len(hdr.binaryblock):])
    out = tmp_path / "out"
    assert _detect("-i", folder, "-o", out, "--checkpoint", ckpt, "--no-progress") == 1
    text = capsys.readouterr().out
    assert "failed 1 scan(s):" in text and f"{bad}: invalid affine" in text
    assert all((out / n).is_file() for n in ("a.nii.gz", "b.nii", "c.nii.gz"))
