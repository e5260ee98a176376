"""Optimizer phase of a training step: AdamW implementations and gradient clipping.

Times, on the parameters of a preset's network with random gradients, one AdamW step in each
implementation (torch's per-parameter ``loop``, ``foreach``, ``fused``; see
``disyre.training.loop.ADAMW_IMPLS``) and ``clip_grad_norm_`` with and without ``foreach``.
Median of ``--reps`` timed calls after two warm-ups; also checks that the implementations give
the same parameters (largest relative difference after 3 steps).

Usage::

    python -m benchmarks.speed.bench_optimizer --preset paper
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.args import at_least
from benchmarks.speed.machine import header, machine_info, time_it


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--reps", type=at_least(1), default=7)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    import torch

    from disyre.config import ModelConfig, RunConfig
    from disyre.model import build_model, count_parameters
    from disyre.training import make_optimizer

    dev = torch.device(a.device)
    print(header(machine_info(a.device)), flush=True)
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset(a.preset)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        m = build_model(cfg.model).to(dev)
        g = torch.Generator(device=dev).manual_seed(1)
        for q in m.parameters():
            q.grad = torch.randn(q.shape, generator=g, device=dev) * 1e-3
        return m

    def timed(fn) -> float:
        return time_it(fn, dev, a.reps, warmups=2)

    m0 = fresh()
    n = count_parameters(m0)
    print(f"{a.preset}: {n:,} parameters in {len(list(m0.parameters()))} tensors")
    finals = {}
    for impl in ("loop", "foreach", "fused"):
        m = fresh()
        opt, _ = make_optimizer(m, cfg, impl=impl)
        s = timed(opt.step)
        m = fresh()
        opt, _ = make_optimizer(m, cfg, impl=impl)
        for _ in range(3):
            opt.step()
        finals[impl] = torch.cat([q.detach().flatten() for q in m.parameters()])
        print(f"AdamW {impl:8} {1e3 * s:8.1f} ms/step", flush=True)
    ref = finals["loop"]
    for impl in ("foreach", "fused"):
        d = ((finals[impl] - ref).abs().max() / ref.abs().max()).item()
        print(f"  {impl} vs loop after 3 steps: max |diff| / max |param| = {d:.1e}")
    for foreach in (False, True):
        m = fresh()
        s = timed(lambda m=m, f=foreach: torch.nn.utils.clip_grad_norm_(m.parameters(), 1e9,
                                                                          foreach=f))
        print(f"clip_grad_norm_ foreach={foreach!s:5} {1e3 * s:8.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
