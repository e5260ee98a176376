"""Export a trained network out of PyTorch: an ONNX graph or a TorchScript module, plus what
detection needs besides the weights, in one folder that :class:`~disyre.inference.Detector`
loads like a checkpoint (docs/export.md).

An export folder holds:

- ``model.onnx`` (``--format onnx``) and/or ``model.ts`` (``--format torchscript``): the
  restoration network ``P(x, level)`` alone, inputs ``image`` float32 ``(B, 1, H, W)`` and
  ``level`` int64 ``(B,)``, output ``restored`` float32 ``(B, 1, H, W)``; the batch and the
  spatial sizes are dynamic (``H`` and ``W`` multiples of the network's ``min_size``, which
  detection pads to, as it does for the PyTorch network);
- ``config.json``: the checkpoint's ``config.json`` (run config with its method and inference
  settings, codebook, step, training-data description) plus an ``export`` section (formats,
  exporter, source checkpoint, the SHA-256 of the weights, the network's ``min_size``,
  versions);
- ``thresholds.json``: the run's calibrated thresholds, when it has them, as they are (their
  binding names the checkpoint's step and weights hash, which the export records);
- ``manifest.json``: the SHA-256 and size of each of these files. Loading checks it: a
  missing, altered or unlisted file is refused in one line naming it
  (:func:`disyre.inference.exported.verify_export`).

Every learned method (``dag``, ``dae``, ``anoddpm``, ``pddpm``, ``gaussian``, ``fpi``,
``bias``) uses the same network, so every one exports: the procedures around the network
(ensemble, multi-step, the diffusion baselines' walk and patched restorations, their noise)
are disyre's numpy/torch code and run unchanged around the exported graph.

Example:
    >>> # export_checkpoint("runs/t2", "exports/t2", formats=["onnx"])
    >>> # Detector.from_checkpoint("exports/t2").predict("sub-01_T2w.nii.gz")
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from disyre.config import ConfigError
from disyre.inference.exported import (
    CONFIG_FILE,
    EXPORT_FORMATS,
    EXPORT_VERSION,
    GRAPH_FILES,
    INPUT_NAMES,
    OUTPUT_NAME,
    THRESHOLDS_FILE,
    ExportError,
    OnnxNet,
    TorchScriptNet,
    file_sha256,
)
from disyre.io_utils import atomic_path, atomic_write_json, prepare_output_dir, provenance
from disyre.training.checkpoint import EXPORT_MANIFEST as MANIFEST_FILE

log = logging.getLogger(__name__)

#: ONNX exporters: ``dynamo`` (``torch.export``, torch's default) or ``legacy`` (TorchScript
#: tracing, ``torch.onnx.export(dynamo=False)``; about 15x faster to export, same graph maths).
ONNX_EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
#: ONNX opset of the graphs.
OPSET: int = 18
#: Largest difference allowed between the network and its export on the check of
#: :func:`graph_difference` (float32 rounding is about 1e-6).
PARITY_TOLERANCE: float = 1e-4


class _Graph(nn.Module):
    """The network as exported: ``(image, level) -> restored``, nothing else."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.unet = net.unet

    def forward(self, image: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.unet(image, timesteps=level)


def _example(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracing inputs: 2 images of 2 x ``min_size`` pixels (sizes stay dynamic)."""
    side = 2 * int(net.min_size)
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, side, side, generator=gen), torch.tensor([0, 50])


@contextlib.contextmanager
def _log_level(logger: logging.Logger, level: int) -> Iterator[None]:
    old = logger.level
    logger.setLevel(max(level, old))
    try:
        yield
    finally:
        logger.setLevel(old)


def _export_onnx(graph: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path,
                 exporter: str) -> None:
    image, level = INPUT_NAMES
    quiet = logging.getLogger("onnxscript")  # its graph optimiser logs each rewrite at INFO
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            _log_level(quiet, logging.WARNING):
        warnings.simplefilter("ignore")  # tracer and exporter chatter, not the user's concern
        if exporter == "dynamo":
            b, h, w = (torch.export.Dim(n) for n in ("batch", "height", "width"))
            torch.onnx.export(graph, example, str(path), dynamo=True, external_data=False,
                              input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              opset_version=OPSET, verbose=False,
                              dynamic_shapes={"image": {0: b, 2: h, 3: w}, "level": {0: b}})
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(graph, example, str(path), dynamo=False,
                              input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              opset_version=OPSET,
                              dynamic_axes={image: axes, level: {0: "batch"}, OUTPUT_NAME: axes})


def _export_torchscript(graph: nn.Module, example: tuple[torch.Tensor, torch.Tensor],
                        path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


def export_checkpoint(checkpoint: str | Path, out: str | Path,
                      formats: Sequence[str] = ("onnx",), *, exporter: str = "dynamo",
                      weights: str = "auto", overwrite: bool = False) -> Path:
    """Export a checkpoint's network and detection settings into the folder ``out``.

    Args:
        checkpoint: Run folder (its newest checkpoint) or checkpoint folder.
        out: Export folder (created; refused when it holds files, unless ``overwrite``).
        formats: ``onnx`` and/or ``torchscript`` (:data:`EXPORT_FORMATS`).
        exporter: ONNX exporter, ``dynamo`` or ``legacy`` (:data:`ONNX_EXPORTERS`).
        weights: ``auto`` (EMA weights when the run kept them), ``ema`` or ``model``.
        overwrite: Replace the files of an existing export folder.

    Returns:
        The export folder.

    Raises:
        ConfigError: An unknown format or exporter.
        OutputExistsError: ``out`` holds files and ``overwrite`` is false.
        FileNotFoundError, CheckpointError: No readable checkpoint at ``checkpoint``.
    """
    from disyre import __version__
    from disyre.inference.thresholds import thresholds_path, weights_sha256
    from disyre.training.checkpoint import load_model, read_checkpoint_meta

    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        raise ConfigError(f"export format {bad[0] if bad else 'none'!r}: choose from "
                          f"{list(EXPORT_FORMATS)}")
    if exporter not in ONNX_EXPORTERS:
        raise ConfigError(f"ONNX exporter {exporter!r}: choose from {list(ONNX_EXPORTERS)}")
    ckpt, meta = read_checkpoint_meta(checkpoint)
    if "export" in meta:
        raise ConfigError(f"{checkpoint}: is already an export folder; export its checkpoint")
    out = prepare_output_dir(out, overwrite=overwrite)
    net, _cfg = load_model(ckpt, "cpu", weights=weights)
    net = net.float().eval()
    graph = _Graph(net).eval()
    example = _example(net)
    files: list[str] = []
    # an older manifest first: a folder being rewritten is never taken for a complete export
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for fmt in formats:
        name = GRAPH_FILES[fmt]
        log.info("exporting %s to %s", ckpt, out / name)
        with atomic_path(out / name) as tmp:
            if fmt == "onnx":
                _export_onnx(graph, example, tmp, exporter)
            else:
                _export_torchscript(graph, example, tmp)
        files.append(name)
    for stale in set(GRAPH_FILES.values()) - set(files):  # a previous export's other format
        (out / stale).unlink(missing_ok=True)
    parity = {fmt: graph_difference(net, out / GRAPH_FILES[fmt], fmt) for fmt in formats}
    for fmt, diff in parity.items():
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(f"{out / GRAPH_FILES[fmt]}: the exported graph differs from the "
                              f"PyTorch network by {diff:.3g} (max abs, tolerance "
                              f"{PARITY_TOLERANCE:g})")
    meta = dict(meta)
    meta["export"] = {
        "version": EXPORT_VERSION,
        "formats": formats,
        "exporter": exporter if "onnx" in formats else None,
        "opset": OPSET if "onnx" in formats else None,
        "source": str(Path(ckpt).resolve()),
        "weights": weights,
        "weights_sha256": weights_sha256(net),
        "min_size": int(net.min_size),
        "parity_max_abs": parity,
        "inputs": {"image": "float32 (B, 1, H, W)", "level": "int64 (B,)"},
        "output": {"restored": "float32 (B, 1, H, W)"},
        "disyre": __version__,
        "provenance": provenance(),
    }
    atomic_write_json(out / CONFIG_FILE, meta)
    files.append(CONFIG_FILE)
    th = thresholds_path(checkpoint)
    (out / THRESHOLDS_FILE).unlink(missing_ok=True)
    if th.is_file():
        _copy_thresholds(th, out / THRESHOLDS_FILE, meta["export"]["weights_sha256"])
        files.append(THRESHOLDS_FILE)
    manifest = {"version": EXPORT_VERSION,
                "files": {n: {"sha256": file_sha256(out / n), "bytes": (out / n).stat().st_size}
                          for n in sorted(files)}}
    atomic_write_json(out / MANIFEST_FILE, manifest)
    return out


def graph_difference(net: nn.Module, graph: str | Path, fmt: str, batch: int = 3) -> float:
    """Largest absolute difference between ``net`` and an exported graph of it on random
    images at three levels, at a size other than the one traced (checks the dynamic shapes).

    Example:
        >>> # graph_difference(net, "exports/t2/model.onnx", "onnx")  # about 1e-6
    """
    m = int(net.min_size)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, 3 * m, 4 * m, generator=gen)
    level = torch.tensor([0, 50, 99][:batch] + [0] * max(0, batch - 3))
    runner = OnnxNet(graph, m) if fmt == "onnx" else TorchScriptNet(graph, m)
    with torch.inference_mode():
        ref = net(x, level).float()
        got = runner(x, level).float()
    return float((ref - got).abs().max())


def _copy_thresholds(src: Path, dst: Path, weights_hash: str) -> None:
    """Copy the run's thresholds as they are; warn when they were fitted on other weights."""
    from disyre.inference.thresholds import load_thresholds

    th = load_thresholds(src)  # a damaged file is refused here, not at detection
    fitted = (th.checkpoint or {}).get("weights_sha256")
    if fitted and fitted != weights_hash:
        log.warning("%s: fitted on other weights (sha256 %s, these are %s): copied, but "
                    "`disyre detect --threshold fpr=...` will refuse them", src, fitted[:12],
                    weights_hash[:12])
    atomic_write_json(dst, json.loads(src.read_text()))
