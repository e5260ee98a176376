"""Stopping at the validation loss's plateau (``train.patience``) and kept checkpoints
(``train.keep_steps``)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from disyre.config import ConfigError, RunConfig
from disyre.training import train
from disyre.training.checkpoint import list_checkpoints
from disyre.training.plateau import STOP_FILE, best_index, plateau_reached
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def cohort(tiny_cohort: list[np.ndarray]) -> list[np.ndarray]:
    return tiny_cohort


# ---------------------------------------------------------------- the rule
def test_rule_stops_on_a_flat_curve_and_not_on_a_falling_one() -> None:
    flat = [1.0, 0.6, 0.5, 0.5, 0.5, 0.5]
    assert not plateau_reached(flat[:5], patience=3)  # best at 2, two flat validations since
    assert plateau_reached(flat, patience=3)
    assert plateau_reached([1.0, 0.5, 0.52, 0.51, 0.53], patience=3)  # noisy, no new best
    falling = [1.0 * 0.9 ** i for i in range(20)]
    assert not plateau_reached(falling, patience=3)
    assert not plateau_reached(flat, patience=0)  # 0 = off
    assert not plateau_reached([], patience=1)


def test_min_delta_asks_for_a_relative_improvement() -> None:
    slow = [1.0 * 0.99 ** i for i in range(10)]  # 1 % better at each validation
    assert not plateau_reached(slow, patience=3)
    # 5 % needed: only 0.99^6 = 0.94 beats 1.0 by 5 %, then nothing beats 0.94 by 5 %
    assert plateau_reached(slow, patience=3, min_delta=0.05)
    assert best_index(slow, 0.05) == 6 and best_index(slow) == 9
    assert not plateau_reached(slow[:9], patience=3, min_delta=0.05)
    assert not plateau_reached(slow, patience=3, min_delta=0.005)


def test_rule_reads_the_losses_only() -> None:
    assert list(inspect.signature(plateau_reached).parameters) == ["losses", "patience",
                                                                   "min_delta"]


def test_config_checks() -> None:
    for key, bad in (("patience", -1), ("min_delta", 1.5), ("keep_steps", [0])):
        with pytest.raises(ConfigError, match=f"train.{key}"):
            RunConfig.from_dict({"train": {key: bad}})


# ---------------------------------------------------------------- the loop
def _flat(**kw: object) -> RunConfig:
    # lr 1e-12: the updates are below float32's resolution of the weights, the validation
    # loss is the same at every validation
    return tiny_config(steps=40, lr=1e-12, val_every=2, ckpt_every=2, **kw)


def _record(run: Path) -> dict:
    return json.loads((run / STOP_FILE).read_text())


def test_a_flat_run_stops_early_and_records_why(tmp_path: Path,
                                                cohort: Sequence[np.ndarray]) -> None:
    res = train(_flat(patience=3), cohort[:4], cohort[4:], tmp_path / "r", progress=False)
    # validations at 2, 4, 6, 8: the best is the first, three without improvement follow
    assert res.step == 8 and res.stop_reason == "plateau"
    rec = _record(tmp_path / "r")
    assert rec["step"] == 8 and rec["reason"] == "plateau" and rec["patience"] == 3
    assert [s for s, _ in rec["curve"]] == [2, 4, 6, 8]
    assert rec["best"]["step"] == 2 and rec["monitor"] == "val_loss"
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["stop"] == {"step": 8, "reason": "plateau"} and run["status"] == "done"
    assert list_checkpoints(tmp_path / "r" / "checkpoints")[-1].name == "step_0000008"
    # a learning run with the same patience runs to the cap and says so
    cap = train(tiny_config(steps=6, val_every=2, patience=3), cohort[:4], cohort[4:],
                tmp_path / "c", progress=False)
    assert cap.step == 6 and cap.stop_reason == "cap"
    assert _record(tmp_path / "c")["reason"] == "cap"


def test_patience_without_validation_is_refused(tmp_path: Path,
                                                cohort: Sequence[np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="train.patience needs a validation loss"):
        train(_flat(patience=3), cohort[:4], None, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_resume_restores_the_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  cohort: Sequence[np.ndarray]) -> None:
    from tests.test_training import _kill_after

    cfg = _flat(patience=3)
    straight = train(cfg, cohort[:4], cohort[4:], tmp_path / "a", progress=False)
    with monkeypatch.context() as mp:
        _kill_after(mp, 5)  # dies at step 6: the last checkpoint is step 4
        with pytest.raises(KeyboardInterrupt):
            train(cfg, cohort[:4], cohort[4:], tmp_path / "b", progress=False)
    rest = train(cfg, cohort[:4], cohort[4:], tmp_path / "b", resume=True, progress=False)
    # with the curve of steps 2 and 4 restored the run stops where the straight one did
    # (afresh, it would count from step 6 and stop at 12)
    assert rest.step == straight.step == 8 and rest.stop_reason == "plateau"
    assert _record(tmp_path / "b") == _record(tmp_path / "a")
    # resumed once more, a run stopped at its plateau stays stopped
    again = train(cfg, cohort[:4], cohort[4:], tmp_path / "b", resume=True, progress=False)
    assert again.step == 8 and again.losses == [] and again.stop_reason == "plateau"


def test_keep_steps_are_never_pruned(tmp_path: Path, cohort: Sequence[np.ndarray]) -> None:
    cfg = tiny_config(steps=8, ckpt_every=2, keep_last=1, keep_steps=[3, 4])
    train(cfg, cohort[:4], None, tmp_path, progress=False)
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_0000003", "step_0000004", "step_0000008"]
