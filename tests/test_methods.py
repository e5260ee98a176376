"""The method registry (:mod:`disyre.methods`): every method declares its whole recipe, the
config refuses unknown methods and a method's own rules in one line, and a method registered
in one place is usable by validation, corruption, training and detection."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import disyre.methods
from disyre.config import ConfigError, CorruptionConfig, RunConfig, apply_overrides
from disyre.corruption.base import Corruption, CorruptionResult
from disyre.corruption.schedule import level_of
from disyre.methods import base as registry
from disyre.methods import get_method, get_restoration, make_corruption, method_names
from tests.helpers import synthetic_cohort, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_registry_holds_every_method_in_order() -> None:
    # the built-in methods first, in this order; a method module added later comes after them
    assert method_names()[:7] == ("dag", "fpi", "bias", "gaussian", "dae", "anoddpm", "pddpm")
    with pytest.raises(ConfigError) as e:
        get_method("ddim")
    msg = str(e.value)
    assert "\n" not in msg and "unknown method 'ddim'" in msg and "pddpm" in msg


@pytest.mark.parametrize("name", method_names())
def test_every_method_declares_its_whole_recipe(name: str) -> None:
    m = get_method(name)
    assert m.name == name and m.title and m.publication and m.sources
    assert all(isinstance(s, str) and s for s in m.sources)
    from disyre.training.batches import TRAINING_LOSSES

    assert m.target in ("clean", "noise") and (m.loss, m.loss_region) in TRAINING_LOSSES
    assert m.network == "preset" and m.max_level in (99, 999)
    assert isinstance(m.augment, bool) and isinstance(m.foreground_weighting, bool)
    assert m.restorations and all(get_restoration(r) for r in m.restorations)
    assert m.inference["method"] == m.restorations[0]
    # its defaults make a valid run, and its corruption is a Corruption of that name
    rc = m.run_config(RunConfig())
    rc.corruption.window = 16
    rc.validate()
    assert m.validate(rc) == []
    corr = make_corruption(rc.corruption)
    assert isinstance(corr, Corruption) and corr.name == name
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 4:28, 4:28] = 0.5
    res = corr(x, torch.Generator().manual_seed(0))
    assert (res.target is not None) == (m.target == "noise")
    assert int(res.level.max()) <= m.max_level


def test_an_unknown_method_and_a_methods_rule_are_refused_through_from_dict() -> None:
    d = RunConfig().to_dict()
    d["corruption"]["name"] = "nope"
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    msg = str(e.value)
    assert "\n" not in msg and "corruption.name must be one of dag, fpi" in msg and "nope" in msg
    d = get_method("dae").run_config(RunConfig()).to_dict()
    RunConfig.from_dict(d)  # its own recipe passes
    d["inference"]["levels"] = [0, 50]
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    msg = str(e.value)
    assert "\n" not in msg and "levels=[0] for corruption.name=dae" in msg


def test_an_unknown_method_is_refused_by_the_cli_set_in_one_line(tmp_path: Path) -> None:
    """In a fresh interpreter: the CLI itself installs the registry before it builds the
    config (nothing imported by the tests helps)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-m", "disyre", "train", "--cache", str(tmp_path / "cache"), "-o",
         str(tmp_path / "run"), "--set", "corruption.name=nope"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    err = out.stderr.strip()
    assert out.returncode == 1 and err.count("\n") == 0, err
    assert "corruption.name must be one of dag" in err and "'nope'" in err
    assert not (tmp_path / "run").exists()


def test_a_methods_rule_is_refused_by_the_cli_set_in_one_line(tmp_path: Path, capsys) -> None:
    from disyre.cli import main

    rc = main(["train", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "run"),
               "--set", "corruption.name=dae", "--set", "inference.levels=[0,50]"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and "corruption.name=dae" in err, err


def test_switching_method_applies_its_inference_recipe() -> None:
    cfg = apply_overrides(RunConfig(), ["corruption.name=pddpm"])
    assert (cfg.inference.method, cfg.inference.levels) == ("patched", [499])
    kept = apply_overrides(RunConfig(), ["inference.levels=[0,40]", "corruption.name=fpi"])
    assert kept.inference.levels == [0, 40]  # DISYRE's family keeps compatible settings
    back = apply_overrides(cfg, ["corruption.name=gaussian"])
    assert back.inference.method == "ensemble" and back.inference.levels == [0, 20, 40, 60, 80]


# --------------------------------------------------------------------------------------------
# a method added in one place
# --------------------------------------------------------------------------------------------


class Dim:
    """A toy corruption: the patch dimmed by half its severity."""

    name = "dim"

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 alpha: float | torch.Tensor | None = None, *,
                 brain: torch.Tensor | None = None) -> CorruptionResult:
        sev = torch.rand(x.shape[0], generator=generator, device=x.device)
        return CorruptionResult(x * (1 - 0.5 * sev.view(-1, 1, 1, 1)), x, torch.ones_like(x),
                                sev, level_of(sev))

    def inference_input(self, x: torch.Tensor, level: torch.Tensor | int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        return x


def _dim(cfg: CorruptionConfig, codebook=None, *, bank_size: int = 512) -> Dim:
    return Dim()


def _at_most_50(cfg: RunConfig) -> list[str]:
    top = max(cfg.inference.levels)
    return [] if top <= 50 else [f"inference.levels must be <= 50 for dim, got {top}"]


@pytest.fixture()
def dim_method(monkeypatch: pytest.MonkeyPatch) -> disyre.methods.Method:
    """The toy method ``dim``, registered for one test (the registry is restored after)."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    return disyre.methods.register(disyre.methods.Method(
        name="dim", title="dimming", publication="a test's toy method", sources=("this test",),
        make_corruption=_dim, restorations=("ensemble",),
        inference={"method": "ensemble", "levels": [0, 30]}, own_inference=True,
        augment=False, validate=_at_most_50))


def test_a_method_registered_in_one_place_validates_corrupts_trains_and_detects(
        dim_method, tmp_path: Path) -> None:
    from disyre.inference import Detector
    from disyre.training import BatchSource, train
    from disyre.training.batches import shard_seed

    cfg = apply_overrides(tiny_config(steps=2), ["corruption.name=dim", "inference.window=0",
                                                 "corruption.augment=null"])
    assert cfg.inference.levels == [0, 30]  # its inference recipe
    with pytest.raises(ConfigError, match="inference.levels must be <= 50 for dim"):
        RunConfig.from_dict({**cfg.to_dict(), "inference": {
            **cfg.to_dict()["inference"], "levels": [0, 80]}})
    assert isinstance(make_corruption(cfg.corruption), Dim)
    cohort = synthetic_cohort(6, seed=0)
    # batches: its corruption, and no augmentation (its recipe has none; the config
    # leaves it to the method)
    src = BatchSource(cohort[:4], cfg)
    s = shard_seed(0, 1, 0)
    clean, b = src.sample_shard(s), src.shard(0, 1, 0)
    assert torch.equal(b.clean, clean) and b.noise is None
    ratio = b.corrupted.sum((1, 2, 3)) / clean.sum((1, 2, 3))
    assert bool(((ratio >= 0.5) & (ratio <= 1)).all()) and not torch.allclose(ratio,
                                                                               torch.ones(1))
    res = train(cfg, cohort[:4], cohort[4:], tmp_path / "run", progress=False)
    assert len(res.losses) == 2 and all(np.isfinite(res.losses))
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text())
    assert meta["run"]["corruption"]["name"] == "dim"
    det = Detector.from_checkpoint(tmp_path / "run", device="cpu")
    amap = det.map_preprocessed(cohort[5], cohort[5] > 0)
    assert amap.shape == cohort[5].shape and np.isfinite(amap).all()


def test_a_methods_augment_field_is_its_default_and_the_config_overrides_it(dim_method
                                                                            ) -> None:
    on, off, own = (CorruptionConfig(augment=True), CorruptionConfig(augment=False),
                    CorruptionConfig())
    assert own.augment is None
    assert get_method("dag").augments(own) and not dim_method.augments(own)
    assert get_method("dag").augments(on) and not get_method("dag").augments(off)
    assert dim_method.augments(on) and not dim_method.augments(off)
    assert not dataclasses.replace(get_method("dag"), augment=False).augments(own)
