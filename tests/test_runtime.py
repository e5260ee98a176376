"""Tests of the device/precision decisions: ``precision=auto`` follows the hardware flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from disyre import runtime
from disyre.config import ModelConfig, RunConfig, SamplerConfig
from disyre.model import build_model
from disyre.runtime import CpuInfo, autocast, decide_precision

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def fresh_decision():
    """Forget the cached CPU decision before and after the test."""
    runtime.cpu_bf16_decision.cache_clear()
    yield
    runtime.cpu_bf16_decision.cache_clear()


def _cpu(native: bool | None, flags: tuple[str, ...] = (), arch: str = "x86_64") -> CpuInfo:
    return CpuInfo(model="Test CPU", arch=arch, flags=flags, bf16_native=native, cores=2)


def _patch_probe(monkeypatch: pytest.MonkeyPatch, info: CpuInfo) -> list[int]:
    """Substitute the CPU flags, and make any matmul timing count (the decision must not time
    anything); returns the list of timing calls."""
    calls: list[int] = []

    def timing(*a: object, **k: object) -> float:
        calls.append(1)
        return 1.0

    monkeypatch.setattr(runtime, "cpu_info", lambda: info)
    monkeypatch.setattr(runtime, "matmul_seconds", timing)
    return calls


# ---------------------------------------------------------------- the decision, flags substituted
@pytest.mark.parametrize("info, expected, why", [
    (_cpu(True, ("avx512f", "avx512_bf16")), "bf16", "has avx512_bf16"),
    (_cpu(True, ("amx_tile", "amx_bf16")), "bf16", "has amx_bf16"),
    (_cpu(False, ("avx2", "avx512f")), "fp32", "no native bf16"),
    (_cpu(None, ("bf16",), "aarch64"), "fp32", "bf16 support unknown"),
    (_cpu(None, (), "aarch64"), "fp32", "bf16 support unknown"),
])
def test_auto_on_cpu_follows_the_flags_without_timing(monkeypatch: pytest.MonkeyPatch,
                                                      fresh_decision, info: CpuInfo,
                                                      expected: str, why: str) -> None:
    calls = _patch_probe(monkeypatch, info)
    d = decide_precision("auto", torch.device("cpu"))
    assert (d.requested, d.precision, d.device) == ("auto", expected, "cpu")
    assert why in d.reason and "Test CPU" in d.reason
    assert d.dtype == (torch.bfloat16 if expected == "bf16" else None)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == d.dtype
    assert decide_precision("auto", "cpu") == d
    assert not calls  # nothing was timed


def test_auto_is_the_same_on_a_loaded_machine(monkeypatch: pytest.MonkeyPatch,
                                              fresh_decision) -> None:
    """A loaded machine (bf16 products timed slower than fp32) decides as an idle one."""
    monkeypatch.setattr(runtime, "cpu_info", lambda: _cpu(True, ("avx512_bf16",)))
    idle = decide_precision("auto", "cpu")
    runtime.cpu_bf16_decision.cache_clear()
    monkeypatch.setattr(runtime, "matmul_seconds",
                        lambda n, dtype, *a, **k: 10.0 if dtype == torch.bfloat16 else 1.0)
    assert decide_precision("auto", "cpu") == idle and idle.precision == "bf16"


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_cuda_follows_is_bf16_supported(monkeypatch: pytest.MonkeyPatch,
                                                supported: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    d = decide_precision("auto", torch.device("cuda"))
    assert d.precision == ("bf16" if supported else "fp32")
    assert ("does not support" in d.reason) != supported


def test_explicit_choices_are_kept_and_fp16_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                       fresh_decision) -> None:
    _patch_probe(monkeypatch, _cpu(False))
    assert decide_precision("fp32", "cpu").precision == "fp32"
    d = decide_precision("bf16", "cpu")
    assert d.precision == "bf16" and "slower" in d.reason  # allowed, with a warning
    for bad in ("fp16", "float32", "AUTO"):
        with pytest.raises(ValueError, match="auto, fp32, bf16"):
            decide_precision(bad, "cpu")


def test_rank_agreement_outside_a_process_group_changes_nothing() -> None:
    d = runtime.PrecisionDecision("auto", "bf16", "cpu", "probe")
    assert runtime.agree_precision(d, torch.device("cpu")) is d


AGREE = """
import json, os, torch, torch.distributed as dist
from disyre.runtime import PrecisionDecision, agree_precision
dist.init_process_group("gloo")
rank = dist.get_rank()
mine = PrecisionDecision("auto", "bf16" if rank == 0 else "fp32", "cpu", f"probe of {rank}")
d = agree_precision(mine, torch.device("cpu"))
print(json.dumps([rank, d.precision, d.reason]))
dist.destroy_process_group()
"""


def test_ranks_follow_rank_zeros_decision(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", AGREE], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for _, e in outs]
    res = sorted(json.loads(o.strip().splitlines()[-1]) for o, _ in outs)
    assert res[0] == [0, "bf16", "probe of 0"]
    assert res[1][:2] == [1, "bf16"] and "rank 0's decision" in res[1][2]


# ---------------------------------------------------------------- reading the flags
def test_proc_cpuinfo_parsing(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\n"
                 "model name\t: AMD EPYC 9R14 96-Core Processor\n"
                 "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n\n"
                 "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    model, flags = runtime._read_proc_cpuinfo(str(f))
    assert model == "AMD EPYC 9R14 96-Core Processor"
    assert {"avx512_bf16", "amx_tile", "avx2"} <= flags and "other" not in flags
    assert runtime._read_proc_cpuinfo(str(tmp_path / "missing")) == ("", set())


def test_this_machines_decision_is_its_flags(fresh_decision) -> None:
    info = runtime.cpu_info()
    assert info.model and set(info.flags) <= set(runtime.CPU_FLAGS_OF_INTEREST)
    ok, why = runtime.cpu_bf16_decision()
    assert ok == any(f in info.flags for f in runtime.CPU_BF16_FLAGS) and info.model in why
    assert (ok is True) == (info.bf16_native is True)


# ---------------------------------------------------------------- autocast really runs bf16
def _random_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(ModelConfig.from_preset("tiny")).eval()
    for p in net.parameters():  # a fresh MONAI U-Net outputs exactly zero
        torch.nn.init.normal_(p, std=0.05)
    return net


def _conv_dtypes(net: torch.nn.Module, x: torch.Tensor, device: torch.device,
                 precision: str) -> tuple[set[torch.dtype], torch.Tensor]:
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.no_grad(), autocast(device, precision):
            y = net(x, torch.tensor([0, 40], device=device))
    finally:
        for h in hooks:
            h.remove()
    return seen, y.float()


@pytest.mark.parametrize("chosen", ["bf16", "fp32"])
def test_auto_autocast_runs_the_network_in_the_chosen_dtype_on_cpu(
        monkeypatch: pytest.MonkeyPatch, fresh_decision, chosen: str) -> None:
    _patch_probe(monkeypatch, _cpu(True, ("avx512_bf16",)) if chosen == "bf16" else _cpu(False))
    net, dev = _random_net(), torch.device("cpu")
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    dtypes, y = _conv_dtypes(net, x, dev, "auto")
    _, ref = _conv_dtypes(net, x, dev, "fp32")
    err = (y - ref).abs().max().item() / ref.abs().max().item()
    if chosen == "bf16":
        assert dtypes == {torch.bfloat16}
        assert 0 < err < 0.05  # bf16 rounding: different, but close (8-bit mantissa)
    else:
        assert dtypes == {torch.float32}
        assert err == 0


# ---------------------------------------------------------------- the run folder records it
def _cohort() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    vols = []
    for _ in range(3):
        v = np.zeros((4, 32, 32), np.float32)
        v[:, 4:28, 4:28] = 0.3 + 0.5 * rng.random((4, 24, 24), dtype=np.float32)
        vols.append(v)
    return vols


@pytest.mark.parametrize("requested, native, expected", [("auto", True, "bf16"),
                                                         ("auto", False, "fp32"),
                                                         ("fp32", True, "fp32")])
def test_training_records_resolved_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fresh_decision, requested: str,
                                             native: bool, expected: str) -> None:
    from disyre.training import train

    _patch_probe(monkeypatch, _cpu(native, ("avx512_bf16",) if native else ("avx2",)))
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    cfg.sampler = SamplerConfig(n_volumes=2, n_slices=1, patch_size=32)
    cfg.corruption.window = 16
    t = cfg.train
    t.steps, t.warmup_steps, t.device, t.precision, t.ckpt_every = 2, 1, "cpu", requested, 2
    res = train(cfg, _cohort(), None, tmp_path / "run", progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    meta = json.loads((res.checkpoint / "config.json").read_text())
    for rt in (run["runtime"], meta["runtime"]):
        assert rt["precision"] == expected and rt["precision_requested"] == requested
        assert rt["precision_reason"] and rt["device"] == "cpu"
        assert rt["compile"] is False and rt["channels_last"] is False
    assert run["run"]["train"]["precision"] == requested  # the config keeps what was asked


@pytest.mark.parametrize("requested, native, expected", [("auto", True, "bf16"),
                                                         ("auto", False, "fp32"),
                                                         ("bf16", True, "bf16")])
def test_detector_reports_resolved_precision(monkeypatch: pytest.MonkeyPatch, fresh_decision,
                                             requested: str, native: bool,
                                             expected: str) -> None:
    from disyre.inference import Detector

    _patch_probe(monkeypatch, _cpu(native, ("avx512_bf16",) if native else ("avx2",)))
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    cfg.inference.precision = requested
    det = Detector(_random_net(), cfg, device="cpu")
    d = det.precision
    assert (d.requested, d.precision) == (requested, expected)
    assert d.to_dict()["reason"] == d.reason


# ---------------------------------------------------------- CUDA (benchmarks/tools/gpu_check.sh)
@needs_cuda
def test_cuda_auto_precision_and_bf16_autocast() -> None:
    dev = torch.device("cuda")
    d = decide_precision("auto", dev)
    assert d.precision == ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False)
                           else "fp32")
    net = _random_net().to(dev)
    x = torch.rand(2, 1, 32, 32, device=dev)
    dtypes, y = _conv_dtypes(net, x, dev, "bf16")
    _, ref = _conv_dtypes(net, x, dev, "fp32")
    assert dtypes == {torch.bfloat16}
    assert (y - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_freed_memory_kept_for_reuse_is_handed_back_between_scans() -> None:
    """With freed memory retained (detection's setting), a freed 400 MB array stays resident
    until release_freed_memory hands it back (run in a fresh process: the setting is
    process-wide)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = """
import os, numpy as np
from disyre.runtime import release_freed_memory, retain_freed_memory
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20
retain_freed_memory()
blocks = [np.ones(1 << 20) for _ in range(50)]  # 50 x 8 MB, below any mmap threshold
del blocks[::2]  # holes: freed but not at the heap's top
before = rss()
del blocks
after_free = rss()
release_freed_memory()
print(before, after_free, rss())
"""
    env = {**os.environ, "DISYRE_RETAIN_MEMORY": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    before, after_free, after_release = map(int, out.stdout.split())
    assert after_free > before - 50  # retained: freed, still resident
    assert after_release < after_free - 300  # handed back


_KERNEL_CACHE_CODE = """
import os, torch
from disyre.config import ModelConfig, RunConfig
from disyre.inference import Detector
from disyre.methods.base import forward
from tests.helpers.nets import reinit_tiny_net
cfg = RunConfig()
cfg.model = ModelConfig.from_preset("tiny")
det = Detector(reinit_tiny_net(1), cfg, device="cpu", channels_last=False)
print("ENV", *[os.environ.get(k, "-") for k in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY",
                                                "LRU_CACHE_CAPACITY")], flush=True)
x, lv = torch.rand(2, 1, 48, 48), torch.zeros(2, dtype=torch.long)
with torch.inference_mode():
    forward(det.model, x, lv, "fp32", False)
    print("SECOND PASS", flush=True)
    forward(det.model, x, lv, "fp32", False)
"""


@pytest.mark.parametrize("user_env", [{}, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024",
                                           "LRU_CACHE_CAPACITY": "1024"}])
def test_detection_on_cpu_runs_without_kernel_caches(user_env: dict[str, str]) -> None:
    """A detector's passes compile their kernels afresh (oneDNN's verbose log says
    ``cache_miss`` for a shape it has run before) so that scans of other shapes do not
    fragment the heap, in a fresh process; the variables are gone after the first pass, and
    those a user sets are kept (with them the second pass hits the cache)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in runtime.KERNEL_CACHE_ENV}
    env.update(user_env, ONEDNN_VERBOSE="2")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root),
                                         env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _KERNEL_CACHE_CODE], capture_output=True,
                         text=True, check=True, env=env, cwd=root).stdout
    said = next(line.split()[1:] for line in out.splitlines() if line.startswith("ENV "))
    second = out.split("SECOND PASS", 1)[1]
    hits = second.count("create:cache_hit,cpu,convolution")
    misses = second.count("create:cache_miss,cpu,convolution")
    if user_env:
        assert said == ["1024", "1024"] and hits > 0 and misses == 0
    else:
        assert said == ["-", "-"]  # set for the first pass only
        assert misses > 0 and hits == 0
