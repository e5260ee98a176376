"""``disyre export``: a trained network as an ONNX graph or a TorchScript module, in a folder
that ``disyre detect --checkpoint`` and ``Detector.from_checkpoint`` load like a checkpoint
(docs/export.md).

Examples::

    disyre export --checkpoint runs/t2 -o exports/t2 --format onnx
    disyre export --checkpoint runs/t2 -o exports/t2 --format onnx torchscript --overwrite
    disyre detect -i scans/ -o maps/ --checkpoint exports/t2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from disyre.cli.options import add_output_argument

#: ``--format`` and ``--exporter`` choices (those of :mod:`disyre.inference.export`, named
#: here so that building the parser imports no torch)
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre export``."""
    p = subparsers.add_parser(
        "export",
        help="export a trained network to ONNX or TorchScript (with its detection settings)",
        description="Write the checkpoint's restoration network as an ONNX graph and/or a "
        "TorchScript module (dynamic batch and slice size), with its run config, codebook, "
        "thresholds and a manifest of file hashes. `disyre detect --checkpoint DIR` then runs "
        "it through ONNX Runtime (or torch.jit) with no PyTorch network built.",
    )
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="run folder (newest checkpoint) or checkpoint folder")
    add_output_argument(p, "export folder")
    p.add_argument("--format", dest="formats", nargs="+", choices=FORMATS,
                   default=["onnx"], help="onnx and/or torchscript (default onnx)")
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="ONNX exporter: dynamo (torch.export, default) or legacy (TorchScript "
                   "tracing, faster to export)")
    p.add_argument("--weights", choices=["auto", "ema", "model"], default="auto",
                   help="auto: the EMA weights when the run kept them (as detect uses)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``disyre export`` (:func:`disyre.inference.export.export_checkpoint`)."""
    import json

    from disyre.inference.export import CONFIG_FILE, export_checkpoint

    out = export_checkpoint(args.checkpoint, args.output, args.formats, exporter=args.exporter,
                            weights=args.weights, overwrite=args.overwrite)
    meta = json.loads((out / CONFIG_FILE).read_text())
    exp = meta["export"]
    diffs = ", ".join(f"{f} {d:.2g}" for f, d in exp["parity_max_abs"].items())
    print(f"exported {exp['source']} (step {meta.get('step')}, method "
          f"{meta['run']['corruption']['name']}) to {out}: "
          f"{', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))}; "
          f"largest difference from PyTorch on a check batch: {diffs}")
    return 0
