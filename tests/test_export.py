"""``disyre export``: the exported graphs give the PyTorch maps, and a damaged export is refused.

The parity tests compare whole detections (windows or whole slices, the ensemble, the walk,
the patched restoration, their noise) made through ONNX Runtime from an export folder with
those of the PyTorch network in fp32, on the same checkpoint and scan; with no network class
of disyre or MONAI built while the export is loaded and run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from disyre.cli import main
from tests.helpers import write_nifti

ROOT = Path(__file__).resolve().parents[1]
#: largest difference allowed between an exported model's maps and the PyTorch fp32 maps
TOL = 1e-4

#: inference recipes of the baselines, with a short walk (3 network passes) for speed
BASELINES = {"dae": dict(method="ensemble", levels=[0]),
             "anoddpm": dict(method="walk", levels=[249], steps=3),
             "pddpm": dict(method="patched", levels=[499])}
LEARNED = ("dag", "fpi", "bias", "gaussian", "dae", "anoddpm", "pddpm")


def _lesioned_scan(path: Path, seed: int = 7) -> np.ndarray:
    """A synthetic brain like the training ones with a bright ball, 2 mm voxels."""
    from tests.helpers.cohort import plant_lesion, synthetic_cohort

    vol, _les = plant_lesion(synthetic_cohort(1, seed)[0], seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, vol * 900, np.diag([2.0, 2.0, 2.0, 1.0]), dhw=True)
    return vol


def _method_checkpoint(run: Path, method: str) -> Path:
    """A one-step checkpoint of ``method`` holding the re-initialised tiny network."""
    from tests.helpers.nets import reinit_tiny_net, save_tiny_checkpoint, tiny_config

    cfg = tiny_config()
    cfg.corruption.name = method
    for k, v in BASELINES.get(method, {}).items():
        setattr(cfg.inference, k, v)
    cfg.inference.precision = "fp32"
    save_tiny_checkpoint(run, net=reinit_tiny_net(), cfg=cfg)
    return run


def _map(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _export_detect(export: Path, scan: Path, runtime: str = "auto", **overrides):
    """The detection of ``scan`` through ``export`` (no network class may be built)."""
    from disyre.inference import Detector
    from disyre.inference.exported import OnnxNet, TorchScriptNet

    det = Detector.from_checkpoint(export, device="cpu", runtime=runtime, **overrides)
    assert isinstance(det.model, OnnxNet if runtime in ("auto", "onnxruntime")
                      else TorchScriptNet)
    return det.predict(scan).anomaly_map


@pytest.fixture()
def no_network_code_after(monkeypatch):
    """Call it to fail any later construction of a network class in the test."""
    from monai.networks.nets import DiffusionModelUNet

    import disyre.model

    def refuse(*_a, **_k):
        raise AssertionError("a network class was built")

    def activate() -> None:
        monkeypatch.setattr(disyre.model.RestorationNet, "__init__", refuse)
        monkeypatch.setattr(DiffusionModelUNet, "__init__", refuse)
        monkeypatch.setattr(disyre.model, "build_model", refuse)

    return activate


# ---- parity ----------------------------------------------------------------------------------

def _docs_workflow() -> list[list[str]]:
    """The commands of docs/export.md's "Workflow" block, as argument lists."""
    import re
    import shlex

    text = (ROOT / "docs" / "export.md").read_text()
    section = text.split("## Workflow", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line)[1:] for line in block.replace("\\\n", " ").splitlines()
            if line.startswith("disyre ")]


def test_docs_workflow_onnx_maps_equal_pytorch_fp32_maps(bound_run, tmp_path, monkeypatch,
                                                         capsys):
    """DISYRE (the session's trained run): docs/export.md's commands as written, default
    (dynamo) exporter; the maps through ONNX Runtime equal the PyTorch fp32 maps."""
    commands = _docs_workflow()
    assert [c[0] for c in commands] == ["export", "detect", "detect"]
    assert commands[0][commands[0].index("--checkpoint") + 1] == "runs/t2"
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    shutil.copytree(bound_run, work / "runs" / "t2", symlinks=True)
    _lesioned_scan(work / "scans" / "s.nii.gz")
    _lesioned_scan(work / "scans" / "t.nii.gz", seed=8)
    monkeypatch.chdir(work)
    for argv in commands:
        assert main(argv) == 0, argv
    assert (work / "exports" / "t2" / "model.onnx").is_file()
    for name in ("s.nii.gz", "t.nii.gz"):
        got, want = _map(work / "maps" / name), _map(work / "maps_torch" / name)
        assert want.max() > 0.05 and got.shape == want.shape
        assert np.abs(got - want).max() < TOL, (name, np.abs(got - want).max())
        mask = "maps/" + name.replace(".nii.gz", "_mask.nii.gz")
        np.testing.assert_array_equal(_map(work / mask),
                                      _map(work / "maps_torch" / Path(mask).name))
    assert "fpr=0.01 from exports/t2/thresholds.json" in capsys.readouterr().out


@pytest.mark.slow  # CI: the dae through ONNX Runtime in the every-method test (legacy exporter)
@pytest.mark.parametrize("method", ["dae"])
def test_onnx_maps_equal_pytorch_fp32_maps(method, tmp_path, no_network_code_after):
    """The autoencoder, default (dynamo) exporter (DISYRE: the docs workflow above); windows
    of the run's config and whole slices (another size than traced: dynamic H, W)."""
    from disyre.inference import Detector
    from disyre.inference.export import export_checkpoint

    run = _method_checkpoint(tmp_path / "run", method)
    scan = tmp_path / "s.nii.gz"
    _lesioned_scan(scan)
    export = export_checkpoint(run, tmp_path / "export", ["onnx"])
    ref = Detector.from_checkpoint(run, device="cpu", precision="fp32")
    assert type(ref.model).__name__ == "RestorationNet"
    want = {w: ref.predict(scan).anomaly_map if w == 32 else
            Detector.from_checkpoint(run, device="cpu", precision="fp32",
                                     window=0).predict(scan).anomaly_map for w in (32, 0)}
    no_network_code_after()
    for window in (32, 0):
        got = _export_detect(export, scan, window=window)
        assert got.shape == want[window].shape
        assert want[window].max() > 0.05  # a map worth comparing
        assert np.abs(got - want[window]).max() < TOL, (window, np.abs(got - want[window]).max())
    assert (json.loads((export / "config.json").read_text())["export"]["parity_max_abs"]["onnx"]
            < TOL)


@pytest.mark.parametrize("method", LEARNED)
def test_every_learned_method_exports_with_parity(method, tmp_path, no_network_code_after):
    """Every method of the registry through ONNX Runtime and TorchScript (legacy exporter)."""
    from disyre.inference import Detector
    from disyre.inference.export import export_checkpoint

    run = _method_checkpoint(tmp_path / "run", method)
    scan = tmp_path / "s.nii.gz"
    _lesioned_scan(scan)
    export = export_checkpoint(run, tmp_path / "export", ["onnx", "torchscript"],
                               exporter="legacy")
    want = Detector.from_checkpoint(run, device="cpu").predict(scan).anomaly_map
    assert want.max() > 0.05
    no_network_code_after()
    for runtime in ("onnxruntime", "torchscript"):
        got = _export_detect(export, scan, runtime)
        assert np.abs(got - want).max() < TOL, (runtime, np.abs(got - want).max())


# ---- the export folder -----------------------------------------------------------------------

@pytest.fixture()
def bound_run(tiny_run_copy):
    """The trained run with thresholds bound to its checkpoint and inference settings."""
    from disyre.inference import Detector
    from disyre.inference.thresholds import (
        Thresholds,
        bind_thresholds,
        save_thresholds,
        thresholds_path,
    )

    det = Detector.from_checkpoint(tiny_run_copy, device="cpu")
    th = bind_thresholds(Thresholds({0.01: 0.05, 0.05: 0.02}, 2, 1000), det, tiny_run_copy)
    save_thresholds(thresholds_path(tiny_run_copy), th)
    return tiny_run_copy


def test_export_carries_config_codebook_and_thresholds(bound_run, tmp_path, capsys):
    scan = tmp_path / "scans" / "s.nii.gz"
    _lesioned_scan(scan)
    exp = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(bound_run), "-o", str(exp), "--format",
                 "torchscript"]) == 0
    assert "largest difference from PyTorch" in capsys.readouterr().out
    files = json.loads((exp / "manifest.json").read_text())["files"]
    assert sorted(files) == ["config.json", "model.ts", "thresholds.json"]
    meta = json.loads((exp / "config.json").read_text())
    src = json.loads((bound_run / "checkpoints" / "last" / "config.json").read_text())
    assert meta["run"] == src["run"] and meta["step"] == src["step"]
    assert meta["codebook"] == src["codebook"]
    assert json.loads((exp / "thresholds.json").read_text()) == json.loads(
        (bound_run / "thresholds.json").read_text())
    # the thresholds apply: their binding (step, weights hash) holds for the export
    out = tmp_path / "maps"
    assert main(["detect", "-i", str(scan), "-o", str(out), "--checkpoint", str(exp),
                 "--threshold", "fpr=0.01"]) == 0
    amap, mask = _map(out / "s.nii.gz"), _map(out / "s_mask.nii.gz")
    np.testing.assert_array_equal(mask, (amap > 0.05).astype(mask.dtype))
    assert 0 < mask.sum()
    # other inference settings: refused, as for the checkpoint
    capsys.readouterr()
    assert main(["detect", "-i", str(scan), "-o", str(tmp_path / "m1"), "--checkpoint",
                 str(exp), "--threshold", "fpr=0.01", "--set", "inference.levels=[0]"]) == 1
    err = capsys.readouterr().err
    assert "levels=[0, 50]" in err and err.count("\n") == 1
    # a runtime whose graph the export lacks: one line naming the file
    assert main(["detect", "-i", str(scan), "-o", str(tmp_path / "m2"), "--checkpoint",
                 str(exp), "--runtime", "onnxruntime"]) == 1
    err = capsys.readouterr().err
    assert f"{exp / 'model.onnx'}: missing" in err and err.count("\n") == 1
    # a second export into the folder needs --overwrite
    assert main(["export", "--checkpoint", str(bound_run), "-o", str(exp)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # an export folder is not a checkpoint to export or to rebuild in PyTorch
    assert main(["export", "--checkpoint", str(exp), "-o", str(tmp_path / "e2")]) == 1
    assert "already an export folder" in capsys.readouterr().err
    from disyre.io_utils import CheckpointError
    from disyre.training.checkpoint import load_model

    with pytest.raises(CheckpointError, match="an exported model"):
        load_model(exp)


def _tamper_missing(exp: Path) -> str:
    (exp / "model.onnx").unlink()
    return "model.onnx: missing"


def _tamper_graph(exp: Path) -> str:
    data = bytearray((exp / "model.onnx").read_bytes())
    data[-5] ^= 1  # one flipped bit
    (exp / "model.onnx").write_bytes(bytes(data))
    return "model.onnx: altered"


def _tamper_thresholds(exp: Path) -> str:
    th = json.loads((exp / "thresholds.json").read_text())
    th["fpr"]["0.01"] = 0.5  # other thresholds
    (exp / "thresholds.json").write_text(json.dumps(th))
    return "thresholds.json: altered"


def _tamper_added_thresholds(exp: Path) -> str:
    man = json.loads((exp / "manifest.json").read_text())
    del man["files"]["thresholds.json"]  # as if exported without them, then added by hand
    (exp / "manifest.json").write_text(json.dumps(man))
    return "thresholds.json: not part of the export"


def _tamper_config(exp: Path) -> str:
    meta = json.loads((exp / "config.json").read_text())
    meta["run"]["inference"]["levels"] = [0, 80]
    (exp / "config.json").write_text(json.dumps(meta))
    return "config.json: altered"


@pytest.mark.parametrize("tamper", [_tamper_missing, _tamper_graph, _tamper_thresholds,
                                    _tamper_added_thresholds, _tamper_config])
def test_tampered_export_is_refused_in_one_line(tamper, bound_run, tmp_path, capsys,
                                               tampered_base):
    exp = tmp_path / "exp"
    shutil.copytree(tampered_base, exp)
    scan = tmp_path / "s.nii.gz"
    _lesioned_scan(scan)
    expected = tamper(exp)
    capsys.readouterr()
    assert main(["detect", "-i", str(scan), "-o", str(tmp_path / "maps"), "--checkpoint",
                 str(exp)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{exp / expected.split(':')[0]}:" in err, err
    assert expected in err, err
    assert not (tmp_path / "maps" / "s.nii.gz").exists()


@pytest.fixture()
def tampered_base(bound_run, tmp_path_factory):
    """An ONNX export (legacy exporter) of the bound run, to copy and damage."""
    from disyre.inference.export import export_checkpoint

    return export_checkpoint(bound_run, tmp_path_factory.mktemp("base") / "exp", ["onnx"],
                             exporter="legacy")


def test_export_arguments_are_checked(tiny_run, tmp_path):
    from disyre.cli.export import EXPORTERS, FORMATS
    from disyre.config import ConfigError
    from disyre.inference.export import EXPORT_FORMATS, ONNX_EXPORTERS, export_checkpoint

    assert FORMATS == EXPORT_FORMATS and EXPORTERS == ONNX_EXPORTERS
    with pytest.raises(ConfigError, match="'openvino'"):
        export_checkpoint(tiny_run.path, tmp_path / "e", ["openvino"])
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        export_checkpoint(tmp_path / "nothing", tmp_path / "e")
    assert not (tmp_path / "e").exists()


# ---- the benchmark, at tiny size ---------------------------------------------------------------

def test_bench_export_runs_every_runtime_at_tiny_size(tmp_path, capsys):
    from benchmarks.speed.bench_export import main as bench

    out = tmp_path / "bench.json"
    assert bench(["--preset", "tiny", "--volumes", "8,40,44", "--repeats", "1", "--exporter",
                  "legacy", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["torch-fp32", "torch-bf16", "onnxruntime",
                                            "torchscript"]
    by = {r["runtime"]: r for r in rows}
    assert by["torch-fp32"]["map_max"] > 0.05  # re-initialised weights: a real map
    assert by["onnxruntime"]["max_abs_diff_vs_fp32"] < TOL
    assert by["torchscript"]["max_abs_diff_vs_fp32"] < TOL
    assert all(r["median_s"] > 0 for r in rows)
    assert "fastest exported runtime" in capsys.readouterr().out
    # arguments are checked before any work: one line, nothing built
    with pytest.raises(SystemExit):
        bench(["--volumes", "demo;8,40", "--json", str(tmp_path / "b2.json")])
    assert "--volumes '8,40'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench(["--runtimes", "openvino"])
    assert "--runtimes 'openvino'" in capsys.readouterr().err
    assert not (tmp_path / "b2.json").exists()


def test_graph_failure_is_one_line(tmp_path):
    """A graph that ONNX Runtime cannot run on an input (here: fixed sizes) names the file."""
    import torch

    from disyre.inference.export import INPUT_NAMES, _Graph
    from disyre.inference.exported import ExportError, OnnxNet
    from tests.helpers.nets import reinit_tiny_net

    path = tmp_path / "fixed.onnx"
    torch.onnx.export(_Graph(reinit_tiny_net()).eval(), (torch.rand(1, 1, 8, 8),
                      torch.tensor([0])), str(path), dynamo=False,
                      input_names=list(INPUT_NAMES), opset_version=18)
    net = OnnxNet(path, min_size=4)
    assert net(torch.rand(1, 1, 8, 8), torch.tensor([3])).shape == (1, 1, 8, 8)
    with pytest.raises(ExportError, match=r"fixed.onnx: ONNX Runtime failed on an input of "
                       r"shape \(1, 1, 12, 16\)") as e:
        net(torch.rand(1, 1, 12, 16), torch.tensor([3]))
    assert "\n" not in str(e.value)
