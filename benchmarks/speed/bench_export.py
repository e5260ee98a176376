"""Export benchmark: CPU detection time of one volume through PyTorch (fp32, bf16), ONNX Runtime
and TorchScript, same machine, same process, same checkpoint.

The network is a preset (``small`` by default) with random re-initialised weights (every layer
PyTorch's default initialisation: timing does not depend on the weights, and the maps are not
trivially zero so their agreement means something), saved as a checkpoint and exported with
``disyre export`` to ONNX and TorchScript. Each runtime maps the same synthetic brain volume
with the default inference settings (v2 ensemble of 5 levels, whole slices, median filter) via
``Detector.map_preprocessed``: one untimed run, then ``--repeats`` timed runs; the table gives
their median and the largest difference from the PyTorch fp32 map. Volumes: ``demo`` (2 mm,
the demo's 95 x 117 x 99 voxels, axial-first), ``1mm`` (189 x 233 x 197) or ``D,H,W``.

Every argument is checked before any work. Examples::

    python -m benchmarks.speed.bench_export                       # demo and 1 mm volumes
    python -m benchmarks.speed.bench_export --volumes demo --repeats 5 --threads 2
    python -m benchmarks.speed.bench_export --preset tiny --volumes 8,40,44 --repeats 1

What it measured and which runtime became the default for exported models: docs/export.md,
"Speed".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: named volumes (axial-first D, H, W): the demo's at 2 mm and the same head at 1 mm
VOLUMES: dict[str, tuple[int, int, int]] = {"demo": (95, 117, 99), "1mm": (189, 233, 197)}
#: runtimes: PyTorch in fp32 and bf16 (autocast), the ONNX graph in ONNX Runtime, TorchScript
RUNTIMES: tuple[str, ...] = ("torch-fp32", "torch-bf16", "onnxruntime", "torchscript")
#: the runtimes of an export folder (``Detector.from_checkpoint(DIR, runtime=...)``)
EXPORTED: tuple[str, ...] = ("onnxruntime", "torchscript")


class ArgumentError(ValueError):
    """A bad argument (one line)."""


def parse_volumes(text: str) -> list[tuple[str, tuple[int, int, int]]]:
    """``"demo,1mm"`` or ``"demo;8,40,44"`` -> named shapes (``;`` separates volumes when a
    shape is given as ``D,H,W``).

    Example:
        >>> parse_volumes("demo")
        [('demo', (95, 117, 99))]
        >>> parse_volumes("8,40,44")
        [('8x40x44', (8, 40, 44))]
    """
    parts = text.split(";") if ";" in text or any(c.isdigit() for c in text.split(",")[0]) \
        else text.split(",")
    out = []
    for p in (p.strip() for p in parts):
        if p in VOLUMES:
            out.append((p, VOLUMES[p]))
            continue
        try:
            shape = tuple(int(v) for v in p.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 8:
            raise ArgumentError(f"--volumes {p!r}: a name ({', '.join(VOLUMES)}) or D,H,W "
                                "(each at least 8)")
        out.append(("x".join(map(str, shape)), shape))  # type: ignore[arg-type]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, all checked (before any network is built)."""
    from disyre.config import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default="demo,1mm",
                   help="demo, 1mm and/or D,H,W shapes (';' between shapes); default demo,1mm")
    p.add_argument("--runtimes", default=",".join(RUNTIMES),
                   help=f"comma list of {', '.join(RUNTIMES)} (default all)")
    p.add_argument("--preset", default="small", help=f"network preset ({', '.join(PRESETS)})")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per runtime (median)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads of torch and ONNX Runtime alike (0 = torch's default)")
    p.add_argument("--exporter", default="dynamo", help="ONNX exporter: dynamo or legacy")
    p.add_argument("--seed", type=int, default=0, help="weights and volume")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    try:
        a.volume_list = parse_volumes(a.volumes)
        a.runtime_list = [r.strip() for r in a.runtimes.split(",") if r.strip()]
        bad = [r for r in a.runtime_list if r not in RUNTIMES]
        if bad or not a.runtime_list:
            raise ArgumentError(f"--runtimes {a.runtimes!r}: choose from {', '.join(RUNTIMES)}")
        if "torch-fp32" not in a.runtime_list:  # the reference of the differences
            a.runtime_list.insert(0, "torch-fp32")
        if a.preset not in PRESETS:
            raise ArgumentError(f"--preset {a.preset!r}: choose from {', '.join(PRESETS)}")
        if a.repeats < 1 or a.threads < 0:
            raise ArgumentError("--repeats must be >= 1 and --threads >= 0")
        if a.exporter not in ("dynamo", "legacy"):
            raise ArgumentError(f"--exporter {a.exporter!r}: dynamo or legacy")
        if a.json is not None and not a.json.parent.is_dir():
            raise ArgumentError(f"--json {a.json}: folder {a.json.parent} does not exist")
    except ArgumentError as e:
        p.error(str(e))
    return a


def _checkpoint(root: Path, preset: str, seed: int) -> Path:
    """A one-step checkpoint of the preset with every layer re-initialised."""
    import torch

    from disyre.config import InferenceConfig, ModelConfig, RunConfig
    from disyre.model import build_model
    from disyre.training.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(preset)
    cfg.inference = InferenceConfig()  # the defaults: 5-level ensemble, whole slices
    net = build_model(cfg.model)
    with torch.no_grad():
        for m in net.modules():
            if m is not net and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        conv = net.unet.out[-1].conv  # predictions mostly inside [0, 1], as a trained net's
        conv.weight.mul_(0.25)
        conv.bias.fill_(0.5)
    save_checkpoint(root / "run" / "checkpoints", step=1, model=net, cfg=cfg, codebook=None,
                    state={})
    return root / "run"


def _volume(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.speed.bench_detect import synthetic_volume

    vol, _ = synthetic_volume(shape, seed=seed, lesions=2)
    return vol, vol > 0


def _detector(runtime: str, run: Path, export: Path):
    from disyre.inference import Detector

    if runtime.startswith("torch-"):
        return Detector.from_checkpoint(run, device="cpu", precision=runtime[6:])
    return Detector.from_checkpoint(export, device="cpu", runtime=runtime)


def run(args: argparse.Namespace) -> list[dict]:
    """Export once, then time every runtime on every volume; returns the table's rows."""
    import torch

    from benchmarks.speed.machine import header, machine_info
    from disyre.inference.export import export_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    print(header(machine_info("cpu")))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        root = Path(tmp)
        run_dir = _checkpoint(root, args.preset, args.seed)
        formats = [f for f, r in (("onnx", "onnxruntime"), ("torchscript", "torchscript"))
                   if r in args.runtime_list] or ["torchscript"]
        t0 = time.perf_counter()
        export = export_checkpoint(run_dir, root / "export", formats, exporter=args.exporter)
        print(f"export ({', '.join(formats)}, {args.exporter} exporter, preset {args.preset}): "
              f"{time.perf_counter() - t0:.1f} s")
        for name, shape in args.volume_list:
            vol, mask = _volume(shape, args.seed)
            ref = None
            for runtime in args.runtime_list:
                det = _detector(runtime, run_dir, export)
                amap = det.map_preprocessed(vol, mask)  # untimed: first-call setup
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    amap = det.map_preprocessed(vol, mask)
                    times.append(time.perf_counter() - t0)
                if ref is None:
                    ref = amap
                rows.append({"volume": name, "shape": list(shape), "runtime": runtime,
                             "precision": det.precision.precision,
                             "median_s": statistics.median(times), "min_s": min(times),
                             "repeats": args.repeats,
                             "max_abs_diff_vs_fp32": float(np.abs(amap - ref).max()),
                             "map_max": float(amap.max())})
                print(_row_text(rows[-1], rows), flush=True)
    return rows


def _row_text(row: dict, rows: list[dict]) -> str:
    base = next(r for r in rows if r["volume"] == row["volume"] and r["runtime"] == "torch-fp32")
    return (f"{row['volume']:>10} {'x'.join(map(str, row['shape'])):>12} {row['runtime']:>12}: "
            f"median {row['median_s']:8.3f} s (min {row['min_s']:.3f}, n={row['repeats']}), "
            f"{base['median_s'] / row['median_s']:5.2f}x torch-fp32, max |map - fp32 map| "
            f"{row['max_abs_diff_vs_fp32']:.2g}")


def summary(rows: list[dict]) -> list[str]:
    """One line per volume: the fastest runtime and the exported runtimes' order."""
    out = []
    for vol in dict.fromkeys(r["volume"] for r in rows):
        mine = sorted((r for r in rows if r["volume"] == vol), key=lambda r: r["median_s"])
        exported = [r for r in mine if r["runtime"] in EXPORTED]
        out.append(f"{vol}: fastest {mine[0]['runtime']} ({mine[0]['median_s']:.3f} s); order "
                   + " < ".join(r["runtime"] for r in mine)
                   + (f"; fastest exported runtime {exported[0]['runtime']}" if exported else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    print("\n".join(summary(rows)))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary(rows)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
