"""A checkpoint's weights are bound to it: SHA-256 and method recorded at save, checked at load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from disyre.cli import main
from disyre.inference import Detector
from disyre.training.checkpoint import CONFIG_FILE, EMA_FILE, MODEL_FILE, latest_checkpoint
from tests.helpers import save_tiny_checkpoint, tiny_config, write_nifti
from tests.helpers.cohort import phantom


def _foreign_weights_into(run: Path, tmp_path: Path) -> Path:
    """Copy another run's weights (another method: ``dae``) into ``run``'s newest checkpoint."""
    cfg = tiny_config()
    cfg.corruption.name = "dae"
    other = save_tiny_checkpoint(tmp_path / "other", cfg=cfg)
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    for f in (MODEL_FILE, EMA_FILE):
        if (ckpt / f).is_file():
            shutil.copyfile(other / MODEL_FILE, ckpt / f)
    return ckpt


def test_checkpoint_records_hash_and_method(tiny_run) -> None:
    meta = json.loads((latest_checkpoint(tiny_run.path) / CONFIG_FILE).read_text())
    rec = meta["weights"]
    assert rec["method"] == meta["run"]["corruption"]["name"]
    assert set(rec["sha256"]) == {MODEL_FILE, EMA_FILE}
    assert all(len(h) == 64 for h in rec["sha256"].values())


def test_weights_of_another_run_are_refused(tiny_run_copy: Path, tmp_path: Path, capsys
                                            ) -> None:
    ckpt = _foreign_weights_into(tiny_run_copy, tmp_path)
    with pytest.raises(ValueError, match="weights") as e:
        Detector.from_checkpoint(tiny_run_copy, device="cpu")
    assert str(ckpt / EMA_FILE) in str(e.value) and "\n" not in str(e.value)
    scan = tmp_path / "s.nii.gz"
    write_nifti(scan, 900 * phantom((6, 40, 40))[0], np.diag([2.0, 2.0, 2.0, 1.0]), dhw=True)
    argv = ["detect", "-i", str(scan), "-o", str(tmp_path / "o"), "--checkpoint",
            str(tiny_run_copy), "--no-progress"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "--allow-weights-mismatch" in err and str(ckpt / EMA_FILE) in err
    assert not (tmp_path / "o" / "s.nii.gz").exists()
    assert main([*argv, "--allow-weights-mismatch"]) == 0  # the user knows what they do
    assert (tmp_path / "o" / "s.nii.gz").is_file()
    Detector.from_checkpoint(tiny_run_copy, device="cpu", check_weights=False)


def test_method_recorded_beside_the_hash_must_agree(tiny_run_copy: Path) -> None:
    ckpt = latest_checkpoint(tiny_run_copy)
    meta = json.loads((ckpt / CONFIG_FILE).read_text())
    meta["weights"]["method"] = "pddpm"
    (ckpt / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="pddpm"):
        Detector.from_checkpoint(tiny_run_copy, device="cpu")


def test_checkpoint_without_hash_loads_with_a_warning(tiny_run_copy: Path, caplog) -> None:
    ckpt = latest_checkpoint(tiny_run_copy)
    meta = json.loads((ckpt / CONFIG_FILE).read_text())
    del meta["weights"]  # as written by the previous release
    (ckpt / CONFIG_FILE).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        Detector.from_checkpoint(tiny_run_copy, device="cpu")
    assert any("no hash" in r.getMessage() and str(ckpt) in r.getMessage()
               for r in caplog.records)
