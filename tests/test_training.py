"""Tests of the training loop: learning, resume, accumulation, checkpoints and bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from disyre.config import ConfigError, ModelConfig, SamplerConfig
from disyre.io_utils import OutputExistsError
from disyre.training import (
    BatchSource,
    CheckpointError,
    latest_checkpoint,
    load_model,
    lr_lambda,
    micro_batch_shards,
    train,
)
from disyre.training import checkpoint as ckpt_mod
from tests.helpers import tiny_config, write_nifti


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path, "cpu", weights="model")
    return model.state_dict()


@pytest.fixture(scope="module")
def cohort(tiny_cohort: list[np.ndarray]) -> list[np.ndarray]:
    return tiny_cohort


# ---------------------------------------------------------------- pure helpers
def test_lr_schedule_warmup_then_cosine() -> None:
    f = lr_lambda(4, 104)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(54) == pytest.approx(0.5)
    assert f(104) == pytest.approx(0.0)
    vals = [f(i) for i in range(4, 105)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))


def test_micro_batches_partition_the_shards() -> None:
    one = micro_batch_shards(12, world_size=1, grad_accum=2, rank=0)
    two = [micro_batch_shards(12, world_size=2, grad_accum=1, rank=r)[0] for r in range(2)]
    assert one == two == [list(range(6)), list(range(6, 12))]
    with pytest.raises(ConfigError, match="n_slices=12 must be a multiple"):
        micro_batch_shards(12, world_size=1, grad_accum=5, rank=0)


def test_auto_grad_accum_keeps_cpu_micro_batches_at_16_patches_of_128() -> None:
    from disyre.training import auto_grad_accum

    assert auto_grad_accum(8, 12, 128, 1, "cpu") == 6      # 96 patches: 6 x 16
    assert auto_grad_accum(8, 12, 128, 2, "cpu") == 3      # 48 per rank: 3 x 16
    assert auto_grad_accum(8, 12, 64, 1, "cpu") == 2       # 64 px: 2 x 48 patches
    assert auto_grad_accum(8, 2, 128, 1, "cpu") == 1       # 16 patches: one micro-batch
    assert auto_grad_accum(20, 1, 128, 1, "cpu") == 1      # one shard cannot be split
    assert auto_grad_accum(8, 12, 128, 1, "cuda") == 1


def test_shards_depend_only_on_seed_step_index(cohort: Sequence[np.ndarray]) -> None:
    cfg = tiny_config()
    a, b = BatchSource(cohort, cfg), BatchSource(cohort, cfg)
    b.shard(0, 0, 1)  # drawing other shards first changes nothing
    s1, s2 = a.shard(0, 3, 0), b.shard(0, 3, 0)
    assert torch.equal(s1.corrupted, s2.corrupted) and torch.equal(s1.level, s2.level)
    assert not torch.equal(a.shard(0, 4, 0).clean, s1.clean)
    assert s1.corrupted.shape == (4, 1, 32, 32)  # one slice of each of n_volumes volumes


# ---------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def trained(tiny_run):
    """The session's trained run (tests/conftest.py): 120 steps, EMA 0.9."""
    return tiny_run.path, tiny_run.result


def test_loss_falls(trained) -> None:
    _, res = trained
    first, last = np.mean(res.losses[:10]), np.mean(res.losses[-20:])
    assert last < 0.2 * first  # measured about 0.05
    assert res.val_losses[-1][1] < res.val_losses[0][1] * 1.05
    log = (trained[0] / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,lr,patches_per_s,val_loss")
    assert len(log) == 1 + 120 // 20


def test_trained_model_restores_planted_anomaly_better_than_identity(
        trained, cohort: Sequence[np.ndarray]) -> None:
    from disyre.corruption.dag import SyntheticAnomaly
    from disyre.data.sampler import PatchSampler

    out, _ = trained
    model, cfg = load_model(out, "cpu")
    x = PatchSampler(cohort[4:], SamplerConfig(2, 8, 32), seed=123).sample()
    res = SyntheticAnomaly("dag", window=16, bank_size=0)(x, torch.Generator().manual_seed(5),
                                                          alpha=0.8)
    with torch.no_grad():
        y = model(res.corrupted, res.level)
    m = res.mask > 0.5
    assert m.sum() > 100
    err_model = ((y - res.clean)[m] ** 2).mean()
    err_identity = ((res.corrupted - res.clean)[m] ** 2).mean()
    assert err_model < 0.6 * err_identity  # measured about 0.32


# ---------------------------------------------------------------- resume, accumulation
def _kill_after(monkeypatch: pytest.MonkeyPatch, n_steps: int) -> None:
    """Make the training loop die (like a killed job) when it starts step ``n_steps + 1``."""
    from disyre.training import loop

    real, calls = loop.train_step, {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] > n_steps:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(loop, "train_step", dying)


def test_resume_is_bit_identical_to_straight_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 cohort: Sequence[np.ndarray]) -> None:
    cfg = tiny_config(steps=6, ckpt_every=3, ema_decay=0.9)
    straight = train(cfg, cohort[:4], None, tmp_path / "a", progress=False)
    with monkeypatch.context() as mp:
        _kill_after(mp, 4)  # dies after step 4: the last checkpoint is step 3
        with pytest.raises(KeyboardInterrupt):
            train(cfg, cohort[:4], None, tmp_path / "b", progress=False)
    assert latest_checkpoint(tmp_path / "b").name == "step_0000003"
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, cohort[:4], None, tmp_path / "b", progress=False)
    rest = train(cfg, cohort[:4], None, tmp_path / "b", resume=True, progress=False)
    assert rest.step == 6
    assert rest.losses == straight.losses[3:]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ea, _ = load_model(tmp_path / "a", "cpu", weights="ema")
    eb, _ = load_model(tmp_path / "b", "cpu", weights="ema")
    assert all(torch.equal(p, q) for p, q in zip(ea.parameters(), eb.parameters(), strict=True))
    assert not torch.equal(next(ea.parameters()), wa[next(iter(wa))])  # EMA != raw weights
    rows = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 7)]


def test_grad_accumulation_matches_one_big_batch(tmp_path: Path,
                                                 cohort: Sequence[np.ndarray]) -> None:
    from disyre.model import build_model
    from disyre.training import train_step

    cfg = tiny_config()
    src = BatchSource(cohort[:4], cfg)
    grads = []
    for accum in (1, 2):
        torch.manual_seed(0)
        net = build_model(cfg.model)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        shards = micro_batch_shards(2, 1, accum, 0)
        train_step(net, opt, lambda i, sh=shards: src.micro_batch(0, 0, sh[i]), accum,
                   global_size=8, device=torch.device("cpu"), grad_clip=None,
                   precision="fp32")
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    # and whole runs follow the same loss curve
    one = train(tiny_config(steps=4), cohort[:4], None, tmp_path / "a", progress=False)
    two = train(tiny_config(steps=4, grad_accum=2), cohort[:4], None, tmp_path / "b",
                progress=False)
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)
    # grad_accum=0 (auto) resolves from the micro-batch budget, and the run records it
    from disyre.training import batches

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batches, "CPU_MICRO_BATCH_PIXELS", 4 * 32 * 32)  # 4 patches of 32 px
        auto = train(tiny_config(steps=4, grad_accum=0), cohort[:4], None, tmp_path / "c",
                     progress=False)
    assert json.loads((tmp_path / "c" / "run.json").read_text())["runtime"]["grad_accum"] == 2
    assert auto.losses == two.losses


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_keep_last(tmp_path: Path,
                                            cohort: Sequence[np.ndarray]) -> None:
    cfg = tiny_config(steps=4, ckpt_every=1, keep_last=2)
    res = train(cfg, cohort[:4], None, tmp_path, progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last", "step_0000003", "step_0000004"]
    assert res.checkpoint == tmp_path / "checkpoints" / "step_0000004"
    model, cfg2 = load_model(tmp_path, "cpu")
    assert cfg2 == cfg
    mode = ckpt_mod.file_mode()  # every file readable as any other output (not 0600)
    assert {f.name: f.stat().st_mode & 0o777 for f in res.checkpoint.iterdir()} == {
        f.name: mode for f in res.checkpoint.iterdir()}
    state = torch.load(res.checkpoint / "state.pt", weights_only=True)  # tensors and values only
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    # the rebuilt model needs only config.json + model.safetensors
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in ("config.json", "model.safetensors"):
        os.link(res.checkpoint / f, alone / f)
    m2, _ = load_model(alone)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(m2(x, torch.tensor([3, 70])), model(x, torch.tensor([3, 70])))


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               cohort: Sequence[np.ndarray]) -> None:
    real, calls = ckpt_mod.save_file, {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            real(*a, **kw)  # a half-written file, then the disk fills up
            raise OSError(28, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(ckpt_mod, "save_file", flaky)
    cfg = tiny_config(steps=4, ckpt_every=2)
    with pytest.raises(CheckpointError, match="step_0000002 is intact"):
        train(cfg, cohort[:4], None, tmp_path, progress=False)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_0000002"]
    assert latest_checkpoint(tmp_path).name == "step_0000002"
    model, _ = load_model(tmp_path)
    assert sum(p.numel() for p in model.parameters()) > 0
    monkeypatch.setattr(ckpt_mod, "save_file", real)
    res = train(cfg, cohort[:4], None, tmp_path, resume=True, progress=False)
    assert res.step == 4 and latest_checkpoint(tmp_path).name == "step_0000004"


# ---------------------------------------------------------------- bad input
def test_resume_with_another_model_config_is_refused(tmp_path: Path,
                                                     cohort: Sequence[np.ndarray]) -> None:
    train(tiny_config(steps=1), cohort[:4], None, tmp_path, progress=False)
    other = tiny_config(steps=2)
    other.model = ModelConfig.from_preset("tiny", channels=[8, 16, 32])
    with pytest.raises(ConfigError, match="another model config"):
        train(other, cohort[:4], None, tmp_path, resume=True, progress=False)


def test_bad_settings_are_refused(tmp_path: Path, cohort: Sequence[np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="grad_accum"):
        train(tiny_config(grad_accum=3), cohort[:4], None, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="precision"):
        train(tiny_config(precision="fp16"), cohort[:4], None, tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="no volumes"):
        train(tiny_config(), [], None, tmp_path / "c", progress=False)


def test_bf16_autocast_on_cpu_trains(tmp_path: Path, cohort: Sequence[np.ndarray]) -> None:
    res = train(tiny_config(steps=3, precision="bf16"), cohort[:4], cohort[4:], tmp_path,
                progress=False)
    assert all(np.isfinite(res.losses))
    assert load_model(tmp_path)[0].unet.conv_in.conv.weight.dtype == torch.float32


# ---------------------------------------------------------------- command line
def test_cli_trains_and_refuses_bad_input(tmp_path: Path, cohort: Sequence[np.ndarray],
                                          capsys: pytest.CaptureFixture[str]) -> None:

    from disyre.cli import main

    lines = ["subject,image,lesion_mask,brain_mask,split,contrast"]
    for i, v in enumerate(cohort[:3]):
        write_nifti(tmp_path / f"s{i}.nii.gz", v * 900, dhw=True)
        lines.append(f"s{i},s{i}.nii.gz,,,{'val' if i == 2 else 'train'},t2")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(lines).replace(",train,", ",test,") + "\n")
    small = ["--preset", "tiny", "--steps", "2", "--no-progress", "--set", "sampler.patch_size=32",
             "--set", "sampler.n_slices=2", "--set", "corruption.window=16"]
    run = str(tmp_path / "run")
    assert main(["train", "--manifest", str(tmp_path / "m.csv"), "-o", run, *small]) == 0
    model, cfg = load_model(run)
    assert cfg.model.preset == "tiny" and cfg.train.steps == 2
    assert main(["train", "--manifest", str(tmp_path / "m.csv"), "-o", run, *small]) == 1
    assert "already holds outputs" in capsys.readouterr().err
    assert main(["train", "--manifest", str(tmp_path / "test.csv"), "-o",
                 str(tmp_path / "r2"), *small]) == 1
    assert "test.csv: no healthy training subjects" in capsys.readouterr().err
    cache = str(tmp_path / "run" / "cache")
    assert main(["train", "--cache", cache, "-o", str(tmp_path / "r3"), *small,
                 "--set", "sampler.patch_size=128"]) == 1
    assert "more than 2x the largest cropped slice" in capsys.readouterr().err
    assert main(["train", "--cache", cache, "-o", run, *small, "--resume",
                 "--set", "model.channels=[8,16,32]"]) == 1
    assert "another model config" in capsys.readouterr().err


def test_damaged_weights_are_a_clear_error(tmp_path: Path, cohort: Sequence[np.ndarray]) -> None:
    res = train(tiny_config(steps=1), cohort[:4], None, tmp_path, progress=False)
    w = res.checkpoint / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable, truncated"):
        load_model(tmp_path)


# ---------------------------------------------------------------- stopping cleanly
def _run_json(path: Path) -> dict:
    import json

    return json.loads((path / "run.json").read_text())


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cohort: Sequence[np.ndarray],
        capsys: pytest.CaptureFixture[str]) -> None:
    from disyre.training import loop

    real, calls = loop.train_step, {"n": 0}

    def diverging(*a, **kw):
        calls["n"] += 1
        loss = real(*a, **kw)
        return float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(loop, "train_step", diverging)
    with pytest.raises(FloatingPointError, match="loss became nan at step 3"):
        train(tiny_config(steps=6, ckpt_every=2), cohort[:4], None, tmp_path, progress=False)
    doc = _run_json(tmp_path)
    assert doc["status"] == "failed" and "nan" in doc["error"] and doc["step"] == 3
    assert latest_checkpoint(tmp_path).name == "step_0000002"
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path).values())


def test_unwritable_checkpoint_folder_fails_cleanly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cohort: Sequence[np.ndarray],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The checkpoint folder turns read-only mid-training: one error line from the CLI, the
    previous checkpoint intact, and run.json saying that training failed."""
    from disyre.cli import main
    from tests.helpers import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "c", n_train=3, n_val=1, n_test_lesion=0,
                                  n_test_healthy=0)
    real, calls = ckpt_mod.save_file, {"n": 0}

    def read_only(*a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # as an unwritable folder makes safetensors fail
            raise PermissionError(13, "Permission denied", a[1])
        return real(*a, **kw)

    monkeypatch.setattr(ckpt_mod, "save_file", read_only)
    run = tmp_path / "run"
    assert main(["train", "--manifest", str(manifest), "-o", str(run), *CLI_SMALL, "--steps",
                 "4", "--set", "train.ckpt_every=2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "step_0000004/model.safetensors: could not write checkpoint" in err
    assert "Permission denied" in err
    assert "step_0000002 is intact" in err
    doc = _run_json(run)
    assert doc["status"] == "failed" and "Permission denied" in doc["error"]
    assert latest_checkpoint(run).name == "step_0000002"


def test_a_killed_run_reads_as_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           cohort: Sequence[np.ndarray],
                                           caplog: pytest.LogCaptureFixture) -> None:
    """``kill -9`` leaves run.json saying "training": with the run's process gone, the next
    reader (loading the model, ``--resume``) reports the run as interrupted; a run whose
    process still trains is not resumed over."""
    import socket
    import subprocess
    import sys

    from disyre.inference import Detector
    from disyre.training.loop import run_status

    cfg = tiny_config(steps=3, ckpt_every=1)
    with monkeypatch.context() as mp:
        _kill_after(mp, 1)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, cohort[:4], None, tmp_path, progress=False)
    doc = _run_json(tmp_path)
    assert doc["status"] == "interrupted"  # recorded by the run itself
    assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    doc.update(status="training", pid=dead.pid)  # what kill -9 leaves behind
    (tmp_path / "run.json").write_text(json.dumps(doc))
    now = run_status(tmp_path)
    assert now["status"] == "interrupted" and f"process {dead.pid}" in now["reason"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="disyre.training.loop"):
        Detector.from_checkpoint(tmp_path, device="cpu")
    assert f"{tmp_path}: training was interrupted (its process {dead.pid} on " in caplog.text
    assert "its newest checkpoint is step_0000001" in caplog.text
    # elsewhere, it cannot be checked; a process that still runs is not resumed over
    (tmp_path / "run.json").write_text(json.dumps({**doc, "host": "elsewhere"}))
    assert run_status(tmp_path)["status"] == "training"
    (tmp_path / "run.json").write_text(json.dumps({**doc, "pid": os.getpid()}))
    assert run_status(tmp_path)["status"] == "training"
    with pytest.raises(OutputExistsError, match="a training run is still writing to this "
                       "folder"):
        train(cfg, cohort[:4], None, tmp_path, resume=True, progress=False)
    (tmp_path / "run.json").write_text(json.dumps(doc))
    caplog.clear()
    with caplog.at_level("WARNING", logger="disyre.training.loop"):
        assert train(cfg, cohort[:4], None, tmp_path, resume=True, progress=False).step == 3
    assert "training was interrupted" in caplog.text
    assert _run_json(tmp_path)["status"] == "done"


# ---------------------------------------------------------------- command line: resume
CLI_SMALL = ["--preset", "tiny", "--no-progress", "--set", "sampler.patch_size=32",
             "sampler.n_slices=2", "corruption.window=16", "train.log_every=1"]


def test_cli_resume_continues_with_the_saved_codebook_and_records_spacing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from disyre.cli import main
    from disyre.corruption import bias
    from tests.helpers import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "c", n_train=3, n_val=1, n_test_lesion=0,
                                  n_test_healthy=0, spacing=2.0)
    run = tmp_path / "run"
    assert main(["train", "--manifest", str(manifest), "-o", str(run), *CLI_SMALL,
                 "--steps", "2"]) == 0
    meta = json.loads((latest_checkpoint(run) / "config.json").read_text())
    assert meta["data"]["spacing"] == [2.0, 2.0, 2.0] and meta["data"]["contrast"] == "t2"
    first = meta["codebook"]
    assert first is not None

    def no_refit(*a, **kw):
        raise AssertionError("resume refitted the codebook")

    monkeypatch.setattr(bias, "fit_codebook", no_refit)
    assert main(["train", "--manifest", str(manifest), "-o", str(run), *CLI_SMALL,
                 "--steps", "4", "--resume"]) == 0
    assert latest_checkpoint(run).name == "step_0000004"
    meta = json.loads((latest_checkpoint(run) / "config.json").read_text())
    assert meta["codebook"] == first and meta["step"] == 4
    assert _run_json(run)["status"] == "done"
    rows = (run / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_resume_reuses_the_checkpoints_codebook(tmp_path: Path,
                                               cohort: Sequence[np.ndarray]) -> None:
    import json

    train(tiny_config(steps=2), cohort[:4], None, tmp_path, codebook=[0.1, 0.5, 0.9],
          progress=False)
    train(tiny_config(steps=3), cohort[:4], None, tmp_path, codebook=[0.2, 0.3, 0.4],
          resume=True, progress=False)
    meta = json.loads((latest_checkpoint(tmp_path) / "config.json").read_text())
    assert meta["codebook"] == [0.1, 0.5, 0.9] and meta["step"] == 3


def test_detection_warns_about_a_scan_of_another_voxel_size(tiny_run, tmp_path) -> None:

    from disyre.inference import Detector

    det = Detector.from_checkpoint(tiny_run.path, device="cpu")
    assert det.reference["spacing"] == [2.0, 2.0, 2.0]
    det.resample = False  # --no-resample: mapped on its own grid, with a warning
    for mm, warned in ((2.0, False), (1.0, True)):
        write_nifti(tmp_path / f"{mm}.nii.gz", tiny_run.cohort[4] * 900,
                    np.diag([mm, mm, mm, 1.0]), dhw=True)
        res = det.predict(tmp_path / f"{mm}.nii.gz")
        assert any("differs from the training data's 2 x 2 x 2 mm" in w
                   for w in res.warnings) == warned


def test_ema_weights_are_used_by_default(tiny_run) -> None:
    from disyre.inference import Detector

    det = Detector.from_checkpoint(tiny_run.path, device="cpu")
    ema, _ = load_model(tiny_run.path, "cpu", weights="ema")
    raw, _ = load_model(tiny_run.path, "cpu", weights="model")
    ours = det.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in ema.state_dict().items())
    assert any(not torch.equal(ours[k], v) for k, v in raw.state_dict().items())
