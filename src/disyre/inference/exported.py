"""Run an exported network (:mod:`disyre.inference.export`) where detection calls the network.

:class:`OnnxNet` (ONNX Runtime) and :class:`TorchScriptNet` (``torch.jit.load``) are callables
``net(x (B,1,H,W), level (B,)) -> (B,1,H,W)`` like the PyTorch network, so every inference
procedure (v2 ensemble, v1 multi-step, the diffusion baselines' walk and patched
restorations) runs unchanged around them; no network code of disyre (no ``RestorationNet``,
no MONAI class) is built. :func:`load_export` checks the folder's manifest and returns the
runtime network with the run config, as :func:`~disyre.inference.detector.load_checkpoint`
does for a checkpoint; ``Detector.from_checkpoint(DIR)`` calls it for an export folder.

Example:
    >>> # net, cfg, meta = load_export("exports/t2")           # runtime "auto"
    >>> # net(torch.rand(2, 1, 64, 64), torch.tensor([0, 50])).shape
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from disyre.config import ConfigError, RunConfig, legacy_filled
from disyre.training.checkpoint import EXPORT_MANIFEST as MANIFEST_FILE
from disyre.training.checkpoint import file_sha256, is_export_folder

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RUNTIME", "RUNTIMES", "ExportError", "OnnxNet", "TorchScriptNet",
           "is_export_folder", "load_export", "verify_export"]

#: Export formats and the graph file each writes.
GRAPH_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts"}
EXPORT_FORMATS: tuple[str, ...] = tuple(GRAPH_FILES)
CONFIG_FILE = "config.json"
THRESHOLDS_FILE = "thresholds.json"
#: Version of the export folder's layout.
EXPORT_VERSION: int = 1
#: Input and output names of the graphs.
INPUT_NAMES: tuple[str, str] = ("image", "level")
OUTPUT_NAME: str = "restored"


class ExportError(ValueError):
    """An export failed or an export folder is incomplete, altered or unreadable (the message
    names the file)."""


#: Runtimes of an export folder and the graph file each reads.
RUNTIMES: dict[str, str] = {"onnxruntime": GRAPH_FILES["onnx"],
                            "torchscript": GRAPH_FILES["torchscript"]}
#: Preference of ``runtime="auto"``: the first runtime whose graph the folder holds. Set from
#: the CPU timings of ``benchmarks/speed/bench_export.py`` (docs/export.md, "Speed").
DEFAULT_RUNTIME: tuple[str, ...] = ("onnxruntime", "torchscript")


def verify_export(path: str | Path) -> dict[str, Any]:
    """Check an export folder against its manifest; returns its ``config.json``.

    Every file listed must exist with its recorded size and SHA-256, and a
    ``thresholds.json`` that the manifest does not list (put there after the export) is
    refused: thresholds apply to the maps they were fitted on.

    Raises:
        ExportError: One line naming the file and the problem.
    """
    path = Path(path)
    man_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(man_path.read_text())
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise TypeError("'files' is not an object")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ExportError(f"{man_path}: unreadable export manifest ({e})") from e
    if manifest.get("version", EXPORT_VERSION) > EXPORT_VERSION:
        raise ExportError(f"{man_path}: export format version {manifest['version']} is newer "
                          f"than this disyre reads ({EXPORT_VERSION}); update disyre")
    for name in (CONFIG_FILE, THRESHOLDS_FILE):
        if name not in listed and (path / name).exists():
            raise ExportError(f"{path / name}: not part of the export (absent from "
                              f"{MANIFEST_FILE}); remove it or export again")
    if CONFIG_FILE not in listed:
        raise ExportError(f"{man_path}: lists no {CONFIG_FILE}")
    for name, rec in sorted(listed.items()):
        f = path / name
        if Path(name).name != name:
            raise ExportError(f"{man_path}: lists {name!r}, not a file of the folder")
        if not f.is_file():
            raise ExportError(f"{f}: missing from the export folder (listed in "
                              f"{MANIFEST_FILE})")
        if f.stat().st_size != rec.get("bytes") or file_sha256(f) != rec.get("sha256"):
            raise ExportError(f"{f}: altered since the export (size or SHA-256 differs from "
                              f"{MANIFEST_FILE}); export the checkpoint again")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path / CONFIG_FILE}: unreadable ({e})") from e
    if not isinstance(meta, dict) or "run" not in meta or "export" not in meta:
        raise ExportError(f"{path / CONFIG_FILE}: not an export config (needs 'run' and "
                          "'export' sections)")
    return meta


def _level_array(level: Any, batch: int) -> np.ndarray:
    lv = torch.as_tensor(level).reshape(-1).to("cpu", torch.int64)
    if lv.numel() == 1:
        lv = lv.expand(batch)
    return np.ascontiguousarray(lv.numpy())


class _ExportedNet(nn.Module):
    """What both runtimes share: the input checks of the PyTorch network, the weights' hash."""

    runtime: str = ""

    def __init__(self, path: Path, min_size: int, weights_sha256: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.min_size = int(min_size)
        #: SHA-256 of the exported weights as the PyTorch checkpoint holds them (thresholds
        #: bind to it: :func:`disyre.inference.thresholds.weights_sha256`)
        self.weights_sha256 = weights_sha256
        self.compiled = True  # nothing to torch.compile: the graph is already built

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected input (B, 1, H, W), got {tuple(x.shape)}")
        if any(s % self.min_size for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be a multiple of "
                             f"{self.min_size} for this network")

    def extra_repr(self) -> str:
        return f"{self.path}, min_size={self.min_size}"


class OnnxNet(_ExportedNet):
    """An ONNX graph run by ONNX Runtime (CPU), called like the network: ``net(x, level)``.

    Args:
        path: The ``model.onnx`` file.
        min_size: Spatial sizes must be multiples of this.
        weights_sha256: Hash of the weights it was exported from.
        threads: ONNX Runtime intra-op threads (``None``: torch's thread count, so that
            ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` limit both runtimes alike).
    """

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, min_size: int, weights_sha256: str = "",
                 threads: int | None = None) -> None:
        super().__init__(Path(path), min_size, weights_sha256)
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - an install without the export extra
            raise ExportError(f"{path}: running an ONNX export needs onnxruntime "
                              "(pip install 'disyre[export]')") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes for a damaged graph
            raise ExportError(f"{path}: ONNX Runtime cannot load the graph "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                              ) from e

    def forward(self, x: torch.Tensor, level: Any) -> torch.Tensor:
        """Restored images ``(B, 1, H, W)`` float32, on ``x``'s device."""
        self._check(x)
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        image_name, level_name = INPUT_NAMES
        try:
            (out,) = self.session.run(None, {image_name: image,
                                             level_name: _level_array(level, x.shape[0])})
        except Exception as e:  # onnxruntime's own classes (a graph with fixed sizes, ...)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ExportError(f"{self.path}: ONNX Runtime failed on an input of shape "
                              f"{tuple(x.shape)} ({first})") from e
        return torch.from_numpy(out).to(x.device)


class TorchScriptNet(_ExportedNet):
    """A TorchScript module (``torch.jit.load``), called like the network: ``net(x, level)``.

    Args:
        path: The ``model.ts`` file.
        min_size: Spatial sizes must be multiples of this.
        weights_sha256: Hash of the weights it was exported from.
    """

    runtime = "torchscript"

    def __init__(self, path: str | Path, min_size: int, weights_sha256: str = "") -> None:
        super().__init__(Path(path), min_size, weights_sha256)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's own notice
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, OSError, ValueError) as e:
            raise ExportError(f"{path}: torch.jit cannot load the module "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                              ) from e

    def forward(self, x: torch.Tensor, level: Any) -> torch.Tensor:
        """Restored images ``(B, 1, H, W)``, on ``x``'s device."""
        self._check(x)
        lv = torch.as_tensor(_level_array(level, x.shape[0]), device=x.device)
        return self.module(x.float(), lv)


def load_export(path: str | Path, runtime: str = "auto", device: str | torch.device = "cpu",
                ) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """Load an export folder: ``(runtime network, RunConfig, config.json contents)``.

    The config's inference precision becomes ``fp32`` (the graphs compute in float32) and
    ``compile`` off (nothing to compile).

    Args:
        path: The export folder.
        runtime: ``auto`` (the first of :data:`DEFAULT_RUNTIME` whose graph the folder holds),
            ``onnxruntime`` or ``torchscript``.
        device: ONNX Runtime computes on the CPU; TorchScript moves to ``device``.

    Raises:
        ExportError: A missing, altered or unlisted file; no graph for ``runtime``.
        ConfigError: An unknown runtime.
    """
    path = Path(path)
    meta = verify_export(path)
    exp = meta["export"]
    if runtime == "auto":
        runtime = next((r for r in DEFAULT_RUNTIME if (path / RUNTIMES[r]).is_file()), "")
        if not runtime:
            raise ExportError(f"{path}: holds no graph ({', '.join(RUNTIMES.values())})")
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: choose from {['auto', *RUNTIMES]}")
    graph = path / RUNTIMES[runtime]
    if not graph.is_file():
        raise ExportError(f"{graph}: missing; this export holds {exp.get('formats')} (choose "
                          "a runtime that reads them)")
    try:
        cfg = RunConfig.from_dict(legacy_filled(meta["run"]))
    except (KeyError, ConfigError) as e:
        raise ExportError(f"{path / CONFIG_FILE}: invalid run config ({e})") from e
    cfg.inference.precision = "fp32"
    cfg.inference.compile = False
    from disyre.runtime import resolve_device

    device = resolve_device(device)
    args = (graph, int(exp["min_size"]), str(exp.get("weights_sha256", "")))
    if runtime == "onnxruntime":
        if device.type != "cpu":
            log.info("%s: ONNX Runtime computes on the CPU", graph)
        net: nn.Module = OnnxNet(*args)
    else:
        net = TorchScriptNet(*args).to(device)
    return net.eval(), cfg, meta
