"""Small things that were silently wrong: the startup line of the diffusion baselines, a negative
stride with whole slices, the position of a redone scan, an empty method list."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from disyre.config import ConfigError, InferenceConfig, RunConfig, apply_overrides
from disyre.data.nifti import InputError
from tests.helpers import write_nifti


def _scans(d: Path, names: list[str]) -> None:
    d.mkdir()
    for i, n in enumerate(names):
        vol = np.zeros((40, 44, 6), np.float32)
        vol[5:30, 5:35, 1:5] = 100.0 + i
        write_nifti(d / n, vol, np.diag([2.0, 2.0, 2.0, 1.0]))


class _Stub:
    """A detector whose every scan fails (only the startup line is looked at)."""

    def __init__(self, inference: InferenceConfig) -> None:
        self.inference = inference
        self.device = "cpu"
        self.precision = SimpleNamespace(precision="fp32", reason="asked")

    def predict(self, scan: Path, **_: object) -> None:
        raise InputError(f"{scan}: not mapped here")


@pytest.mark.parametrize("inference, said, not_said", [
    (InferenceConfig(method="walk", levels=[249], steps=25),
     "AnoDDPM walk from step 249 (25 network passes)", "multistep"),
    (InferenceConfig(method="patched", levels=[499]), "patched DDPM at step 499", "multistep"),
    (InferenceConfig(method="multistep", steps=5), "v1 multistep (5 steps)", "levels -"),
    (InferenceConfig(levels=[0, 50]), "v2 ensemble, levels [0, 50]", "multistep"),
])
def test_detect_startup_line_names_the_restoration(tmp_path, caplog, inference, said, not_said):
    from disyre.inference.files import detect_files

    _scans(tmp_path / "in", ["a.nii.gz", "b.nii.gz"])
    with caplog.at_level(logging.INFO):
        s = detect_files(tmp_path / "in", tmp_path / "out", _Stub(inference), mode="sample",
                         progress=False)
    assert len(s.failed) == 2
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("detect:"))
    assert said in line and not_said not in line, line


def test_negative_stride_is_refused_with_whole_slices() -> None:
    with pytest.raises(ConfigError, match="inference.stride"):
        apply_overrides(RunConfig(), ["inference.window=0", "inference.stride=-3"])


def test_a_redone_scan_is_logged_at_its_place(tiny_run, tmp_path, caplog) -> None:
    from disyre.cli import main

    _scans(tmp_path / "in", ["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    argv = ["detect", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--checkpoint",
            str(tiny_run.path), "--mode", "sample", "--no-progress"]
    assert main(argv) == 0
    (tmp_path / "out" / "b.nii.gz.txt").write_text("")  # damaged: redone by --continue
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--continue"]) == 0
    done = [r.getMessage() for r in caplog.records if "b.nii.gz: score" in r.getMessage()]
    assert done and done[0].startswith("[2/3] b.nii.gz"), done


@pytest.mark.parametrize("methods", ["", " , "])
def test_an_empty_method_list_says_so(methods: str) -> None:
    from disyre.benchmark import normalise_methods

    with pytest.raises(ConfigError) as e:
        normalise_methods(methods)
    assert "no method" in str(e.value) and "unknown method" not in str(e.value)


def test_detect_releases_each_scans_result_before_the_next(tmp_path) -> None:
    """A folder's peak memory is one scan's: nothing of a written scan is kept."""
    import gc
    import weakref

    from disyre.inference.files import detect_files

    _scans(tmp_path / "in", ["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    alive: list[weakref.ref] = []
    seen: list[int] = []

    class Result:
        score = 0.5

        def __init__(self) -> None:
            self.big = np.zeros(10, np.float32)

    def predict(d: object, scan: Path, **_: object) -> Result:
        gc.collect()
        seen.append(sum(r() is not None for r in alive))
        r = Result()
        alive.append(weakref.ref(r))
        return r

    s = detect_files(tmp_path / "in", tmp_path / "out", _Stub(InferenceConfig()),
                     mode="sample", progress=False, predict=predict)
    assert s.ok and len(s.written) == 3
    assert seen == [0, 0, 0]
