"""Parts of ``benchmarks/tools/gpu_check.sh``: the DDP check (run under torchrun) and the table.

Subcommands::

    python -m benchmarks.tools.gpu_check ddp --device cuda --steps 30 --json R/ddp.json   # torchrun
    python -m benchmarks.tools.gpu_check table R --out gpu_check.md [--recipe-steps 100000]

``table`` reads what the shell script left in the results folder ``R``: ``<name>.json`` (the
step's result: the last line of its output that parses as JSON) and ``<name>.status``
(``rc seconds limit``), and prints one Markdown table: a row per check, with its failure (exit
status, time-out, the last error line of its log) in place of figures where it did not work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.args import at_least, new_file

#: DDP gradient volume of the `paper` U-Net (fp32 gradients), bytes.
PAPER_GRAD_BYTES = 26_296_929 * 4
#: Assumed all-reduce bus bandwidth between 8 GPUs of one node (NVLink), for the estimate.
ASSUMED_BUS_GBPS = 300.0


def ddp(args: argparse.Namespace) -> int:
    """Under torchrun: the library's loop for a few steps, then DDP-wrapped timed steps."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from disyre.config import ModelConfig, RunConfig, SamplerConfig
    from disyre.model import build_model, use_channels_last
    from disyre.runtime import decide_precision, resolve_device
    from disyre.training import BatchSource, make_optimizer, micro_batch_shards, train, train_step

    dev = resolve_device(args.device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(0)
    vols = []
    for _ in range(12):
        v = np.zeros((args.depth, 136, 162), np.float32)
        v[2:-2, 10:126, 12:150] = rng.random((args.depth - 4, 116, 138), dtype=np.float32) * 0.5 \
            + 0.3
        vols.append(v)
    out: dict = {"backend": backend, "world_size": world, "device": str(dev)}

    # 1. the library's training loop under torchrun (checkpoint, run.json), a few steps
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        cfg = RunConfig()
        cfg.model = ModelConfig.from_preset(args.preset)
        cfg.sampler = SamplerConfig(n_volumes=4, n_slices=2, patch_size=128)
        cfg.corruption.augment = False
        t = cfg.train
        t.steps, t.warmup_steps, t.ckpt_every, t.device = 3, 1, 3, str(dev)
        res = train(cfg, vols[:4], None, Path(d) / "run", progress=False)
        if rank == 0:
            run = json.loads((Path(d) / "run" / "run.json").read_text())
            out["loop"] = {"steps": res.step, "losses": res.losses, "runtime": run["runtime"],
                           "checkpoint": res.checkpoint is not None,
                           "seconds": time.perf_counter() - t0}

    # 2. DDP-wrapped steps: what one of 8 GPUs does in the recipe laid out as 12 volumes x 8
    #    slices (96 patches; one shard of 12 patches per GPU)
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(args.preset)
    cfg.sampler = SamplerConfig(n_volumes=12, n_slices=8, patch_size=128)
    cfg.corruption.augment = False
    prec = decide_precision(args.precision, dev)
    src = BatchSource(vols, cfg, device=dev)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev)
    cl = use_channels_last(cfg.model, dev, precision=prec.precision)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt, _ = make_optimizer(model, cfg)
    shards = micro_batch_shards(8, 8, 1, 0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for s in range(args.steps + 1):
        t0 = time.perf_counter()
        train_step(net, opt, lambda i, s=s: src.micro_batch(0, s, shards[i]), 1,
                   global_size=12, device=dev, precision=prec.precision, channels_last=cl)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if s:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out.update(patches_per_gpu=12, precision=prec.precision, channels_last=cl,
               steps=args.steps, s_per_step=med, patches_per_s=12 / med)
    if dev.type == "cuda":
        out["gpu_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


def _load(r: Path, name: str) -> tuple[dict | None, str]:
    """(result, failure text) of step ``name``."""
    st = (r / f"{name}.status")
    if not st.is_file():
        return None, "not run"
    parts = st.read_text().split()
    rc, secs = int(parts[0]), float(parts[1])
    limit = parts[2] if len(parts) > 2 else "?"
    res = None
    f = r / f"{name}.json"
    if f.is_file():
        text = f.read_text(errors="replace")
        try:  # the whole file, else its last line holding a JSON object
            res = json.loads(text)
        except json.JSONDecodeError:
            for line in reversed(text.splitlines()):
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(res, dict):
                    break
        if not isinstance(res, dict):
            res = None
    if rc == 0 and res is not None:
        return res, ""
    if rc == 125:
        return None, "skipped: out of time budget"
    if rc in (124, 137):
        return None, f"TIME-OUT after {limit} s"
    log = r / f"{name}.log"
    last = ""
    if log.is_file():
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        errs = [ln for ln in lines if "Error" in ln or "error" in ln or "FAILED" in ln]
        last = (errs or lines or [""])[-1][:160]
    return None, f"FAILED (exit {rc} after {secs:.0f} s){': ' + last if last else ''}"


def _flops(gflops: float) -> str:
    return f"{gflops / 1e3:.1f} TFLOP/s" if gflops >= 1e3 else f"{gflops:.0f} GFLOP/s"


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(args: argparse.Namespace) -> int:
    """Print (and write) the one table of the GPU check; a row that cannot be read says so."""
    r = Path(args.results)
    rows: list[list[str]] = []
    loaded = {n: _load(r, n) for n in ("env", "peak", "tests", "train_eager", "train_compiled",
                                       "ddp", "detect_windows", "detect_whole")}
    peak = loaded["peak"][0] or {}
    bf16_peak = (peak.get("peaks") or {}).get("bf16")
    best: list = []  # (label, result) of the fastest training row

    def frac(gflops: float | None) -> str:
        if gflops is None or not bf16_peak:
            return "-"
        return f"{100 * gflops / bf16_peak:.0f} %"

    def add(check: str, result: str, s_step=None, pps=None, s_vol=None, mem=None, pk="-",
            notes: str = "") -> None:
        rows.append([check, result, _f(s_step, ".4f"), _f(pps, ".0f"), _f(s_vol, ".1f"),
                     _f(mem, ".2f"), pk, notes])

    def env_row() -> None:
        env, err = loaded["env"]
        if env is None:
            return add("environment", err)
        add("environment", "ok", notes=f"{env.get('gpu') or env.get('cpu')}; torch "
            f"{env.get('torch')}, CUDA {env.get('cuda')}; Python {env.get('python')}; "
            f"auto precision: {env.get('auto_precision')} ({env.get('auto_reason')})")

    def tests_row() -> None:
        tests, err = loaded["tests"]
        summary = ""
        if (r / "tests.json").is_file():
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                summary = json.loads((r / "tests.json").read_text()).get("summary", "")
        add("CUDA-marked tests", summary if tests else f"{err}; {summary or 'no summary'}",
            notes="pytest -k cuda: test_runtime, test_model, corruption")

    def peak_row() -> None:
        p, err = loaded["peak"]
        if p is None:
            return add("matmul peak", err)
        p = p["peaks"]
        add(f"matmul peak ({p['n']}^2)", f"bf16 {_flops(p['bf16'])}", pk="100 %",
            notes=f"fp32 {_flops(p['fp32'])} (measured now; the reference of the % column)")

    def train_row(name: str, label: str) -> None:
        d, err = loaded[name]
        label = label.format(d.get("preset") if d else args.preset)
        if d is None:
            return add(label, err)
        note = f"{d['steps']} steps of {d['batch']} patches ({d['accum']} micro-batch)"
        if d.get("compile_s") is not None:
            note += f"; compile {d['compile_s']:.0f} s (first step {d['first_step_s']:.0f} s)"
        add(label, "ok", d["s_per_step"], d["patches_per_s"], None, d.get("gpu_peak_gib"),
            frac(d.get("gflops")), note)
        if not best or d["s_per_step"] < best[1]["s_per_step"]:
            best[:] = [label, d]

    def ddp_row() -> None:
        dd, err = loaded["ddp"]
        if dd is None:
            return add("DDP, 1 GPU via torchrun", err)
        loop = dd.get("loop") or {}
        rt = loop.get("runtime") or {}
        gfl = best[1].get("gflop_per_patch", 0) * dd["patches_per_s"] if best else None
        add("DDP, 1 GPU via torchrun", "ok", dd["s_per_step"], dd["patches_per_s"], None,
            dd.get("gpu_peak_gib"), frac(gfl),
            f"{dd.get('backend')}, {dd.get('patches_per_gpu')} patches/GPU (one of 8 GPUs' "
            f"share of 96); library loop: {loop.get('steps')} steps, checkpoint "
            f"{'written' if loop.get('checkpoint') else 'MISSING'}, precision "
            f"{rt.get('precision')} ({rt.get('precision_reason')})")

    def detect_row(name: str, label: str) -> None:
        d, err = loaded[name]
        shape = (d or {}).get("shape") or [int(v) for v in args.shape.split(",")]
        label = label.format((d or {}).get("net") or args.preset,
                             "x".join(map(str, (shape[1], shape[2], shape[0]))))
        if d is None:
            return add(label, err)
        note = (f"{d.get('resolved_precision')}, batch {d.get('batch')}, "
                f"{d.get('n_inputs')} network inputs, {d['s_slice'] * 1e3:.1f} ms/slice")
        if d.get("compile_s") is not None:
            note += f", compile {d['compile_s']:.0f} s"
        add(label, "ok", None, None, d["s_volume"], d.get("gpu_peak_gib"),
            frac(d.get("gflops_per_s")), note)

    for label, fn in (
            ("environment", env_row), ("CUDA-marked tests", tests_row),
            ("matmul peak", peak_row),
            ("train eager", lambda: train_row("train_eager", "train {}, bf16, channels-last")),
            ("train compiled", lambda: train_row("train_compiled",
                                                 "train {}, bf16, channels-last, compiled")),
            ("DDP", ddp_row),
            ("detect windows", lambda: detect_row("detect_windows",
                                                  "detect {} {}, v2-5, 128 px windows")),
            ("detect whole slices", lambda: detect_row("detect_whole",
                                                       "detect {} {}, v2-5, whole slices"))):
        try:
            fn()
        except Exception as e:  # a malformed result must not cost the table
            add(label, f"result unreadable ({type(e).__name__}: {e})")

    head = ["check", "result", "s/step", "patches/s", "s/volume", "peak GPU mem GiB",
            "% of bf16 peak", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    lines += ["", *on_paper(args.recipe_steps, best, loaded)]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"table written to {args.out}")
    return 0


def on_paper(n: int, best: list, loaded: dict) -> list[str]:
    """The full recipe's time at the measured s/step, on 1 GPU and on 8 with torchrun."""
    out = [f"On paper, the full recipe ({n:,} steps of 96 patches, 128 px):"]
    try:
        if best:
            s1 = best[1]["s_per_step"]
            out.append(f"- 1 GPU: {n:,} x {s1:.4f} s/step ({best[0]}) = {n * s1:,.0f} s = "
                       f"{n * s1 / 3600:.1f} h")
            ce, cc = loaded["train_eager"][0], loaded["train_compiled"][0]
            if ce and cc and cc.get("compile_s") is not None:
                gain = n * (ce["s_per_step"] - cc["s_per_step"])
                out.append(f"- compile: {cc['compile_s']:.0f} s once, against {n:,} x "
                           f"({ce['s_per_step']:.4f} - {cc['s_per_step']:.4f}) s = "
                           f"{gain:,.0f} s saved over the run")
        else:
            out.append("- 1 GPU: no training figure measured")
        dd = loaded["ddp"][0]
        if dd is not None:
            ar = 2 * 7 / 8 * PAPER_GRAD_BYTES / (ASSUMED_BUS_GBPS * 1e9)
            s8 = dd["s_per_step"] + ar
            out.append(f"- 8 GPUs with torchrun (sampler 12 volumes x 8 slices: 12 patches "
                       f"per GPU): {n:,} x ({dd['s_per_step']:.4f} s measured at 12 patches + "
                       f"{ar * 1e3:.2f} ms all-reduce of {PAPER_GRAD_BYTES / 1e6:.0f} MB at an "
                       f"assumed {ASSUMED_BUS_GBPS:.0f} GB/s, not overlapped) = "
                       f"{n * s8:,.0f} s = {n * s8 / 3600:.1f} h (upper bound: DDP overlaps "
                       "the all-reduce with the backward pass)")
        else:
            out.append("- 8 GPUs: no DDP figure measured")
    except Exception as e:
        out.append(f"- estimate unavailable ({type(e).__name__}: {e})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("ddp", help="DDP check (launch with torchrun)")
    d.add_argument("--device", default="cuda")
    d.add_argument("--preset", default="paper")
    d.add_argument("--precision", default="bf16")
    d.add_argument("--steps", type=at_least(1), default=30)
    d.add_argument("--depth", type=at_least(1), default=40, help="slices of the synthetic volumes")
    d.add_argument("--json", type=new_file, required=True)
    t = sub.add_parser("table", help="print the table from a results folder")
    t.add_argument("results")
    t.add_argument("--out", default=None)
    t.add_argument("--recipe-steps", type=at_least(1), default=100_000)
    t.add_argument("--preset", default="paper", help="for the labels of rows that did not run")
    t.add_argument("--shape", default="155,240,240", help="D,H,W of the detection volume")
    a = p.parse_args(argv)
    return ddp(a) if a.cmd == "ddp" else table(a)


if __name__ == "__main__":
    sys.exit(main())
