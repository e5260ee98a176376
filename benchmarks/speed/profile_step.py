"""Profile one training step (default: `paper`, 16 patches of 128 px) with ``torch.profiler``.

Prints where the step's time goes: by phase (batch, forward, backward, optimizer) and op type
(convolution, matrix product, attention, GroupNorm, activation, element-wise, copies/layout,
optimizer, ...), then the top ops by self time. The step is the training loop's own
``train_step``, whose phases carry ``torch.profiler.record_function`` labels; one or two
unprofiled warm-up steps come first (two with ``--compile``, whose first step compiles).
On CUDA, times are GPU kernel times. On the CPU freed memory is retained as in training
(``DISYRE_RETAIN_MEMORY=0``: not).

Usage::

    python -m benchmarks.speed.profile_step                                   # paper, 16, auto
    python -m benchmarks.speed.profile_step --precision bf16 --channels-last on --top 30
    python -m benchmarks.speed.profile_step --device cuda --batch 96 --trace step.json  # trace
    python -m benchmarks.speed.profile_step --precision bf16 --by-shape 15  # convolutions by shape
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from benchmarks.args import at_least, new_file

PHASES = ("batch", "forward", "backward", "optimizer")

#: op type -> substrings of aten/profiler op names (first match wins, in this order)
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("optimizer", ("_foreach", "adamw", "adam", "clip_grad", "optimizer")),
    ("attention", ("scaled_dot_product", "flash", "efficient_attention", "softmax", "sdpa")),
    ("convolution", ("conv", "mkldnn_convolution", "cudnn", "winograd")),
    ("matrix product", ("addmm", "::mm", "bmm", "matmul", "linear", "einsum", "gemm")),
    ("group norm", ("group_norm", "groupnorm", "native_group_norm")),
    ("activation", ("silu", "gelu", "sigmoid", "relu")),
    ("upsample/pool", ("upsample", "interpolate", "pool")),
    ("copy/layout", ("copy_", "_to_copy", "::to", "contiguous", "clone", "cat", "permute",
                     "transpose", "view", "reshape", "expand", "empty", "as_strided", "fill_",
                     "zero_", "memcpy", "memset")),
    ("reduction/loss", ("mse", "sum", "mean", "norm", "::max", "::min")),
    ("element-wise", ("add", "mul", "sub", "div", "pow", "sqrt", "exp", "lerp", "where",
                      "clamp", "neg", "rsqrt")),
]


def category(name: str) -> str:
    """Op type of a profiler event name (``aten::convolution`` -> ``convolution``)."""
    n = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in n for k in keys):
            return cat
    return "other"


def _self_time_us(ev, cuda: bool) -> float:
    if cuda:
        for attr in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(ev, attr):
                return float(getattr(ev, attr))
        return 0.0
    return float(ev.self_cpu_time_total)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch", type=at_least(1), default=16,
                   help="patches per step (one micro-batch)")
    p.add_argument("--patch", type=at_least(8), default=128)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--compile", action="store_true", help="torch.compile the network first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--top", type=at_least(1), default=25, help="top ops to list")
    p.add_argument("--trace", type=new_file, default=None, help="also write a Chrome trace here")
    p.add_argument("--by-shape", type=at_least(0), default=0, metavar="N",
                   help="also list the N costliest convolution calls by shape, with GFLOP/s")
    a = p.parse_args(argv)

    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from disyre.config import ModelConfig, RunConfig, SamplerConfig
    from disyre.model import build_model, compile_network, use_channels_last
    from disyre.runtime import (
        cpu_info,
        decide_precision,
        resolve_device,
        retain_freed_memory,
    )
    from disyre.training import BatchSource, make_optimizer, train_step

    dev = resolve_device(a.device)
    cuda = dev.type == "cuda"
    if not cuda:
        print(f"allocator: {retain_freed_memory()} (as in training)")
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(a.preset)
    cfg.sampler = SamplerConfig(n_volumes=a.batch, n_slices=1, patch_size=a.patch)
    cfg.corruption.augment = False
    cfg.corruption.window = min(cfg.corruption.window, a.patch // 2)
    prec = decide_precision(a.precision, dev)
    rng = np.random.default_rng(0)
    vols = []
    for _ in range(4):
        v = np.zeros((40, 136, 162), np.float32)
        v[5:35, 10:126, 12:150] = rng.random((30, 116, 138), dtype=np.float32) * 0.5 + 0.3
        vols.append(v)
    src = BatchSource(vols, cfg, device=dev)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev)
    cl = {"on": True, "off": False}.get(a.channels_last)
    cl = use_channels_last(cfg.model, dev, precision=prec.precision) if cl is None else cl
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt, _ = make_optimizer(model, cfg)
    if a.compile:
        compile_network(model)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def step(s: int) -> None:
        # the training loop's own step (its phases carry the profiler labels of PHASES)
        train_step(model, opt, lambda i: src.micro_batch(0, s, [0]), 1, global_size=a.batch,
                   device=dev, precision=prec.precision, grad_clip=cfg.train.grad_clip,
                   channels_last=cl)
        sync()

    t0 = time.perf_counter()
    for s in range(2 if a.compile else 1):
        step(s)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    step(10)
    plain = time.perf_counter() - t0
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=a.by_shape > 0) as prof:
        step(11)
    if a.trace:
        prof.export_chrome_trace(a.trace)

    print(f"profile of one training step: preset {a.preset}, {a.batch} patches of {a.patch} px, "
          f"{prec.precision} ({prec.reason}), channels-last {'on' if cl else 'off'}, "
          f"compile {'on' if a.compile else 'off'}, {dev}")
    print(f"machine: {cpu_info().describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads"
          + (f"; {torch.cuda.get_device_name(dev)}" if cuda else ""))
    print(f"warm-up {warm:.2f} s; unprofiled step {plain:.3f} s "
          f"({a.batch / plain:.1f} patches/s)\n")

    events = list(prof.events())
    spans = {ev.name: ev.time_range for ev in events if ev.name in PHASES}
    table: dict[tuple[str, str], float] = defaultdict(float)
    for ev in events:
        if ev.name in PHASES:
            continue
        t = _self_time_us(ev, cuda)
        if t <= 0:
            continue
        start = ev.time_range.start
        phase = next((ph for ph, r in spans.items() if r.start <= start <= r.end), "other")
        table[(phase, category(ev.name))] += t
    total = sum(table.values()) or 1.0
    cats = sorted({c for _, c in table}, key=lambda c: -sum(v for (_, cc), v in table.items()
                                                           if cc == c))
    phases = [ph for ph in (*PHASES, "other") if any(k[0] == ph for k in table)]
    unit = "GPU kernel" if cuda else "CPU self"
    print(f"{unit} time by phase and op type (ms; % of {total / 1e3:.1f} ms):")
    print(f"{'op type':16}" + "".join(f"{ph:>11}" for ph in phases) + f"{'total':>11}{'%':>6}")
    for c in cats:
        row = [table.get((ph, c), 0.0) for ph in phases]
        print(f"{c:16}" + "".join(f"{v / 1e3:11.1f}" for v in row)
              + f"{sum(row) / 1e3:11.1f}{100 * sum(row) / total:6.1f}")
    col = [sum(v for (ph, _), v in table.items() if ph == p_) for p_ in phases]
    print(f"{'all':16}" + "".join(f"{v / 1e3:11.1f}" for v in col) + f"{total / 1e3:11.1f}")
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"\ntop {a.top} ops by {unit.lower()} time:")
    print(prof.key_averages().table(sort_by=sort, row_limit=a.top, max_name_column_width=48))
    if a.by_shape:
        print_conv_shapes(prof, a.by_shape, cuda)
    return 0


def conv_flop(name: str, shapes: list) -> float | None:
    """FLOP of one convolution call from its recorded input shapes (``None``: not a 2D
    convolution). Forward: stride 1 is assumed (a strided call is over-counted); backward:
    the output size comes from the gradient, input and weight gradients both counted."""
    try:
        if "backward" in name:
            (n, o, ho, wo), _, (_, c, kh, kw) = shapes[0], shapes[1], shapes[2]
            return 2.0 * 2 * n * o * ho * wo * c * kh * kw
        (n, _, h, w), (o, c, kh, kw) = shapes[0], shapes[1]
        return 2.0 * n * o * h * w * c * kh * kw
    except (ValueError, TypeError, IndexError):
        return None


def print_conv_shapes(prof, n: int, cuda: bool) -> None:
    """The ``n`` costliest convolution calls grouped by input shapes, with GFLOP/s."""
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        if "conv" not in e.key:
            continue
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us <= 0:
            continue
        flop = conv_flop(e.key, e.input_shapes)
        rate = f"{flop * e.count / us / 1e3:8.0f}" if flop else f"{'-':>8}"
        rows.append((us, f"{us / 1e3:9.1f} {e.count:6d} {rate}  {e.key:30} "
                         f"{str(e.input_shapes[:3])[:90]}"))
    print(f"\nthe {n} costliest convolution calls by shape (GFLOP/s: forward at stride 1; "
          "the backward counts input and weight gradients):")
    print(f"{'ms':>9} {'calls':>6} {'GFLOP/s':>8}  {'op':30} input shapes")
    for _, line in sorted(rows, reverse=True)[:n]:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
