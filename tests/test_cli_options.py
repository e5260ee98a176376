"""One CLI vocabulary: shared flags, deprecated spellings, shared run preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from disyre.cli import COMMANDS, build_parser, main
from disyre.cli.options import DEFAULT_BOOTSTRAP

#: commands that show progress bars
PROGRESS = ("preprocess", "prepare", "train", "detect", "benchmark", "demo")
#: the minimal arguments each command needs to parse
REQUIRED = {
    "preprocess": ["-i", "raw"], "prepare": [], "corruptions": [],
    "train": ["--cache", "c"], "detect": ["-i", "s", "--checkpoint", "r"],
    "evaluate": ["--manifest", "m.csv", "--maps", "maps"],
    "benchmark": ["--manifest", "m.csv"], "demo": [], "export": ["--checkpoint", "r"],
    "bids": ["ds", "x", "participant", "--checkpoint", "r"],
}
#: commands that follow the BIDS-Apps calling convention: ``BIDS_DIR OUTPUT_DIR LEVEL``
#: (the output folder is positional, no -o)
BIDS_APPS = ("bids",)


def _help(cmd: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_shows_one_output_spelling(cmd, capsys):
    text = _help(cmd, capsys)
    if cmd in BIDS_APPS:
        assert "bids_dir output_dir {participant}" in text and "--output" not in text
        return
    assert "-o OUTPUT, --output OUTPUT" in text
    assert "--out " not in text and "--out\n" not in text and "-o/--out " not in text
    if cmd in PROGRESS:
        assert "--no-progress" in text
    if cmd == "benchmark":
        assert "--cache-dir" in text and "--cache CACHE" not in text


@pytest.mark.parametrize("cmd", COMMANDS)
def test_output_parses_everywhere(cmd):
    if cmd in BIDS_APPS:
        assert build_parser().parse_args([cmd, *REQUIRED[cmd]]).output_dir == Path("x")
        return
    args = build_parser().parse_args([cmd, *REQUIRED[cmd], "-o", "x"])
    assert args.output == Path("x")


@pytest.mark.parametrize("cmd", ["train", "detect", "evaluate", "benchmark", "preprocess",
                                 "demo", "corruptions"])
def test_output_is_required(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([cmd, *REQUIRED[cmd]])
    assert e.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["prepare", "demo", "corruptions"])
def test_deprecated_out_still_works_and_warns_once(cmd, capsys):
    args = build_parser().parse_args([cmd, *REQUIRED[cmd], "--out", "a", "--out", "b"])
    assert args.output == Path("b")
    err = capsys.readouterr().err
    assert err.count("warning: --out is deprecated") == 1 and "use -o/--output" in err


def test_benchmark_cache_is_now_cache_dir(capsys):
    args = build_parser().parse_args(["benchmark", *REQUIRED["benchmark"], "-o", "b",
                                      "--cache", "c"])
    assert args.cache_dir == Path("c")
    assert "--cache is deprecated" in capsys.readouterr().err and not hasattr(args, "cache")
    args = build_parser().parse_args(["benchmark", *REQUIRED["benchmark"], "-o", "b",
                                      "--cache-dir", "d"])
    assert args.cache_dir == Path("d")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("cmd", PROGRESS)
def test_no_progress_accepted(cmd):
    p = build_parser()
    assert p.parse_args([cmd, *REQUIRED[cmd], "-o", "x", "--no-progress"]).no_progress
    assert not p.parse_args([cmd, *REQUIRED[cmd], "-o", "x"]).no_progress


def test_one_bootstrap_default():
    p = build_parser()
    for cmd in ("evaluate", "benchmark"):
        assert p.parse_args([cmd, *REQUIRED[cmd], "-o", "x"]).bootstrap == DEFAULT_BOOTSTRAP


def test_prepare_no_progress_reaches_the_cache(tmp_path, monkeypatch):
    import disyre.data.cache as cache_mod
    from tests.helpers.cohort import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "c", n_train=1, n_val=1, n_test_lesion=0,
                                  n_test_healthy=0)
    seen = []
    real = cache_mod.prepare_cache

    def spy(*a, **kw):
        seen.append(kw.get("progress"))
        return real(*a, **kw)

    monkeypatch.setattr(cache_mod, "prepare_cache", spy)
    assert main(["prepare", "--manifest", str(manifest), "-o", str(tmp_path / "p"),
                 "--no-progress"]) == 0
    assert main(["prepare", "--manifest", str(manifest), "-o", str(tmp_path / "p")]) == 0
    assert seen == [False, True]


def test_train_and_benchmark_refuse_a_too_small_volume_alike(tmp_path, capsys):
    from tests.helpers.cohort import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "c", n_train=2, n_val=1, n_test_lesion=1)
    small = ["--no-progress", "--set", "model.preset=tiny", "sampler.patch_size=128"]
    assert main(["train", "--manifest", str(manifest), "-o", str(tmp_path / "r"), *small]) == 1
    via_train = capsys.readouterr().err.strip().splitlines()
    assert main(["benchmark", "--manifest", str(manifest), "-o", str(tmp_path / "b"),
                 "--methods", "dag,reference", *small]) == 1
    via_bench = capsys.readouterr().err.strip().splitlines()
    assert len(via_train) == len(via_bench) == 1
    msg = via_train[0].split("error: ", 1)[1]
    assert msg.startswith(f"{manifest}: sampler.patch_size=128 is more than 2x the largest")
    assert via_bench[0].split("error: ", 1)[1] == msg
    assert not (tmp_path / "b" / "dag").exists()  # refused before any training


def test_prepare_run_codebook(tmp_path):
    from disyre.config import ConfigError, RunConfig
    from disyre.corruption.bias import fit_codebook
    from disyre.training.prepare import prepare_run
    from tests.helpers.cohort import synthetic_cohort
    from tests.helpers.nets import save_tiny_checkpoint

    vols = synthetic_cohort(3, seed=0)
    cfg = RunConfig()
    cfg.model.preset = "tiny"
    cfg.sampler.patch_size = 32
    cfg.corruption.window = 16
    cb = prepare_run(cfg, vols, source="m.csv")
    assert cb == fit_codebook(vols, k=5, seed=cfg.train.seed)
    assert prepare_run(cfg, vols, source="m.csv", fit=False) is None
    assert prepare_run(cfg, vols, source="m.csv", codebook=[0.1, 0.5]) == [0.1, 0.5]
    # a resumable run keeps its checkpoint's codebook: nothing is fitted
    assert prepare_run(cfg, vols, source="m.csv", resume_dir=tmp_path) == cb  # no checkpoint
    save_tiny_checkpoint(tmp_path)
    assert prepare_run(cfg, vols, source="m.csv", resume_dir=tmp_path) is None
    cfg.corruption.codebook = [0.2, 0.4]
    assert prepare_run(cfg, vols, source="m.csv") == [0.2, 0.4]
    with pytest.raises(ConfigError, match="m.csv: no healthy training subjects"):
        prepare_run(cfg, [], source="m.csv")
    cfg.corruption.window = 64
    with pytest.raises(ConfigError, match="corruption.window=64 is larger"):
        prepare_run(cfg, [np.zeros((2, 40, 40), np.float32)], source="m.csv")


@pytest.mark.parametrize("writer", ["torch.save", "save_file"])
def test_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch, writer):
    """A failed write names the file in one line; ``last`` keeps the previous checkpoint."""
    import disyre.training.checkpoint as ck
    from disyre.io_utils import CheckpointError
    from tests.helpers.nets import reinit_tiny_net, tiny_config

    root = tmp_path / "checkpoints"
    net, cfg = reinit_tiny_net(), tiny_config()
    ck.save_checkpoint(root, step=1, model=net, cfg=cfg, codebook=None, state={})

    def full(*a, **kw):
        if writer == "torch.save":  # torch's own words for a full disk
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "3456 vs 3344\nframe #0: c10::...")
        raise OSError(28, "No space left on device")

    if writer == "torch.save":
        monkeypatch.setattr(ck.torch, "save", full)
        bad = "state.pt"
    else:
        monkeypatch.setattr(ck, "save_file", full)
        bad = "model.safetensors"
    with pytest.raises(CheckpointError) as e:
        ck.save_checkpoint(root, step=2, model=net, cfg=cfg, codebook=None, state={})
    msg = str(e.value)
    assert "\n" not in msg and "inline_container" not in msg and "frame #0" not in msg
    assert msg.startswith(f"{root / 'step_0000002' / bad}: could not write checkpoint")
    assert "step_0000001 is intact" in msg
    if writer == "save_file":
        assert "no space left on device" in msg
    assert ck.latest_checkpoint(tmp_path).name == "step_0000001"
    assert not (root / "step_0000002").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
