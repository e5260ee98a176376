"""Trainings side by side: the decision from the device and cores, and the same models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disyre import runtime
from disyre.runtime import decide_train_jobs
from disyre.training import load_model
from disyre.training.parallel import TrainJob, train_many
from tests.helpers import tiny_config


def _cpu(flags: tuple[str, ...]) -> runtime.CpuInfo:
    return runtime.CpuInfo(model="Test CPU", arch="x86_64", flags=flags, bf16_native=True,
                           cores=2)


def test_decision_follows_cpu_flags_cores_and_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    # AVX512-BF16 without AMX: side by side measured no faster, one after the other
    monkeypatch.setattr(runtime, "cpu_info", lambda: _cpu(("avx512f", "avx512_bf16")))
    plain = decide_train_jobs(2, "cpu")
    assert plain.workers == 1 and "no amx_tile" in plain.reason
    assert decide_train_jobs(2, "cpu", requested=2).workers == 2  # asked for: followed
    monkeypatch.setattr(runtime, "cpu_info", lambda: _cpu(("avx512_bf16", "amx_tile")))
    two = decide_train_jobs(2, "cpu")
    assert (two.workers, two.threads_each) == (2, 1) and "side by side" in two.reason
    assert decide_train_jobs(3, "cpu").workers == 2  # at most one per core
    assert decide_train_jobs(1, "cpu").workers == 1
    assert decide_train_jobs(2, "cpu", requested=1).workers == 1
    monkeypatch.setattr(runtime, "usable_cores", lambda: 8)
    eight = decide_train_jobs(2, "cpu")
    assert (eight.workers, eight.threads_each) == (2, 4)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 1)
    assert decide_train_jobs(2, "cpu").workers == 1
    with pytest.raises(ValueError, match=">= 1"):
        decide_train_jobs(2, "cpu", requested=0)


def test_side_by_side_trains_the_same_models_as_one_after_the_other(
        tiny_cohort: list[np.ndarray], tmp_path) -> None:
    vols, val = tiny_cohort[:4], tiny_cohort[4:]
    a, b = tiny_config(steps=5, seed=1), tiny_config(steps=5, seed=2)
    b.corruption.name = "dae"
    b.inference.levels = [0]

    def jobs(root):
        return [TrainJob(a, vols, val, root / "a"), TrainJob(b, vols, val, root / "b")]

    alone = train_many(jobs(tmp_path / "seq"), workers=1, threads_each=1, progress=False)
    side = train_many(jobs(tmp_path / "par"), workers=2, threads_each=1, progress=False)
    assert [d.step for d in side] == [d.step for d in alone] == [5, 5]
    for x, y in zip(alone, side, strict=True):
        wx = load_model(x.out_dir, "cpu")[0].state_dict()
        wy = load_model(y.out_dir, "cpu")[0].state_dict()
        assert all(torch.equal(wx[k], wy[k]) for k in wx)  # same threads: the same weights
    # and the two jobs did train different models (the seed and the method reached each)
    wa = load_model(side[0].out_dir, "cpu")[0].state_dict()
    wb = load_model(side[1].out_dir, "cpu")[0].state_dict()
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)
