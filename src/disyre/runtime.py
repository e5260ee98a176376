"""Device, precision and randomness: one place that decides where and how tensors compute.

``precision="auto"`` is a hardware decision (:func:`decide_precision`), read from capability
flags and never from a timing, so that a config resolves to the same precision on the same
machine whether it is idle or loaded: bf16 autocast on a GPU that supports bf16 and on a CPU
with native bf16 instructions (AVX512-BF16 or AMX), fp32 everywhere else. The decision is
logged once per process with its reason.

Example:
    >>> dev = resolve_device("cpu")
    >>> g = make_generator(0, dev)
    >>> decide_precision("fp32", dev).precision
    'fp32'
    >>> with autocast(dev, "fp32"):
    ...     pass
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from disyre.config import PRECISIONS

log = logging.getLogger(__name__)


#: CPU flags (``/proc/cpuinfo`` names) that mean bf16 matrix products run natively.
CPU_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")

#: CPU flags reported by :func:`cpu_info` (the ones that matter for speed here).
CPU_FLAGS_OF_INTEREST: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_vnni",
                                          "avx512_bf16", "amx_tile", "amx_bf16", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


# --------------------------------------------------------------------------------------------
# The CPU: model, flags, a matmul timing (for benchmarks)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """What this CPU is and which of :data:`CPU_FLAGS_OF_INTEREST` it has.

    Attributes:
        model: Model name (``/proc/cpuinfo``'s ``model name``, else ``platform.processor()``).
        arch: Machine architecture (``x86_64``, ``aarch64``, ...).
        flags: The flags of interest it has.
        bf16_native: True if it has a native bf16 matrix instruction set (AVX512-BF16, AMX),
            False if it is an x86 CPU without one, None if unknown (other architectures).
        cores: Logical CPUs torch sees (``torch.get_num_threads()`` at first call).
    """

    model: str
    arch: str
    flags: tuple[str, ...]
    bf16_native: bool | None
    cores: int

    def describe(self) -> str:
        """One line: model, architecture, the flags of interest."""
        return f"{self.model} ({self.arch}; flags: {' '.join(self.flags) or 'none of interest'})"


def _read_proc_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    try:
        text = Path(path).read_text()
    except OSError:
        return "", set()
    first: dict[str, str] = {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        first.setdefault(key.strip().lower(), val.strip())
    # x86: "model name" (its "model" is a number); ARM: "Model" or "Hardware", if anything
    model = next((first[k] for k in ("model name", "cpu model", "model", "hardware")
                  if first.get(k) and not first[k].isdigit()), "")
    flags = set((first.get("flags") or first.get("features") or "").split())
    return model, flags


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached).

    Example:
        >>> info = cpu_info()
        >>> isinstance(info.describe(), str)
        True
    """
    model, flags = _read_proc_cpuinfo()
    arch = platform.machine().lower()
    x86 = arch in ("x86_64", "amd64", "i686", "x86")
    if x86:
        # torch's own detection (the cpuinfo library), in case /proc/cpuinfo is absent
        probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported",
                  "avx512f": "_is_avx512_supported", "avx2": "_is_avx2_supported"}
        for flag, fn in probes.items():
            with contextlib.suppress(Exception):
                if getattr(torch.cpu, fn)():
                    flags.add(flag)
    have = tuple(f for f in CPU_FLAGS_OF_INTEREST if f in flags)
    native: bool | None = any(f in flags for f in CPU_BF16_FLAGS) if x86 else None
    return CpuInfo(model=model or platform.processor() or "unknown CPU", arch=arch or "unknown",
                   flags=have, bf16_native=native, cores=torch.get_num_threads())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_seconds(n: int, dtype: torch.dtype, device: str | torch.device = "cpu",
                   reps: int = 3) -> float:
    """Best-of-``reps`` seconds of one ``n x n`` by ``n x n`` product (after one warm-up).

    Args:
        n: Matrix side.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (or any matmul dtype).
        device: Where to run it.
        reps: Timed repetitions (the fastest counts).
    """
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(dtype: torch.dtype, device: str | torch.device = "cpu", n: int = 4096,
                  reps: int = 3) -> float:
    """Measured GFLOP/s of an ``n x n`` matrix product (``2 n^3`` FLOP): the practical peak
    (``benchmarks/speed/machine.py`` records it beside speed figures; no decision depends on it)."""
    return 2 * n ** 3 / matmul_seconds(n, dtype, device, reps) / 1e9


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionDecision:
    """The precision a computation runs in, and why.

    Attributes:
        requested: What the config asked for (``auto``, ``fp32`` or ``bf16``).
        precision: What runs: ``fp32`` (no autocast) or ``bf16`` (bf16 autocast).
        device: Device type (``cpu``, ``cuda``).
        reason: Why, in words (the hardware flag or capability behind ``auto``).
    """

    requested: str
    precision: str
    device: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """Autocast dtype (``None`` = plain fp32)."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``run.json``, ``config.json`` and reports."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.precision} on {self.device} (requested {self.requested}: {self.reason})"


@functools.lru_cache(maxsize=1)
def cpu_bf16_decision() -> tuple[bool, str]:
    """Whether ``auto`` runs bf16 on this CPU, and why (cached: decided once per process).

    bf16 exactly when the CPU flags (:func:`cpu_info`) show native bf16 matrix instructions
    (:data:`CPU_BF16_FLAGS`); fp32 otherwise (bf16 is emulated there and slower). No timing
    takes part, so the answer does not depend on the machine's load.
    """
    info = cpu_info()
    native = [f for f in CPU_BF16_FLAGS if f in info.flags]
    if native:
        return True, f"{info.model} has {'/'.join(native)}"
    if info.bf16_native is None:
        return False, (f"{info.model} ({info.arch}): no {'/'.join(CPU_BF16_FLAGS)} flag, "
                       "bf16 support unknown")
    return False, f"{info.model} has no native bf16 (no {'/'.join(CPU_BF16_FLAGS)})"


def _cuda_bf16(device: torch.device) -> tuple[bool, str]:
    try:
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        ok = torch.cuda.is_bf16_supported()
    try:
        name = torch.cuda.get_device_name(device)
    except Exception:
        name = "the GPU"
    return ok, f"{name} {'supports' if ok else 'does not support'} bf16"


_logged: set[tuple[str, str, str]] = set()


def decide_precision(precision: str, device: torch.device | str) -> PrecisionDecision:
    """Resolve ``precision`` (``auto``/``fp32``/``bf16``) on ``device``, with the reason.

    ``auto``: bf16 on CUDA when ``torch.cuda.is_bf16_supported()``; on a CPU see
    :func:`cpu_bf16_decision`; fp32 on other devices. The first ``auto`` decision per device
    type is logged (INFO).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    kind = device.type
    slow = False
    if precision != "auto":
        reason = "requested"
        if precision == "bf16" and kind == "cpu" and cpu_info().bf16_native is False:
            slow = True
            reason = (f"requested; {cpu_info().model} has no native bf16, expect it slower "
                      "than fp32")
        d = PrecisionDecision(precision, precision, kind, reason)
    elif kind == "cuda":
        ok, why = _cuda_bf16(device)
        d = PrecisionDecision("auto", "bf16" if ok else "fp32", kind, why)
    elif kind == "cpu":
        ok, why = cpu_bf16_decision()
        d = PrecisionDecision("auto", "bf16" if ok else "fp32", kind, why)
    else:
        d = PrecisionDecision("auto", "fp32", kind, f"no bf16 decision for {kind} devices")
    key = (d.requested, d.precision, kind)
    if key not in _logged and (precision == "auto" or slow):
        _logged.add(key)
        (log.warning if slow else log.info)("precision: %s", d)
    return d


def agree_precision(decision: PrecisionDecision, device: torch.device) -> PrecisionDecision:
    """Rank 0's ``auto`` decision on every rank of an initialised process group.

    Each process reads its own hardware, so under DDP on unlike machines the ranks could
    disagree; this makes them all follow rank 0. Outside a process group (or for explicit
    choices) it returns ``decision`` unchanged.
    """
    import torch.distributed as dist

    if decision.requested != "auto" or not (dist.is_available() and dist.is_initialized()) \
            or dist.get_world_size() < 2:
        return decision
    flag = torch.tensor([1.0 if decision.precision == "bf16" else 0.0], device=device)
    dist.broadcast(flag, src=0)
    precision = "bf16" if flag.item() > 0.5 else "fp32"
    if precision == decision.precision:
        return decision
    return PrecisionDecision("auto", precision, decision.device,
                             f"rank 0's decision (this rank: {decision.reason})")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device`` (``None`` = plain fp32).

    See :func:`decide_precision` for what ``auto`` means.
    """
    return decide_precision(precision, device).dtype


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    dtype = resolve_precision(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device``: all randomness flows through one of these."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None`` = leave unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


#: Set to ``0`` to leave the C allocator as it is (see :func:`retain_freed_memory`).
MALLOC_ENV: str = "DISYRE_RETAIN_MEMORY"


@functools.lru_cache(maxsize=1)
def retain_freed_memory() -> str:
    """Make glibc's ``malloc`` keep freed memory in the process, for CPU compute.

    Every training step and detection pass allocates and frees the network's activations
    (gigabytes for the `paper` network). By default glibc serves blocks above 32 MiB with
    ``mmap`` and returns freed heap tops to the system, so each pass faults all that memory in
    again (the kernel zeroes every page); the measured cost is in docs/training.md ("Speed
    levers"). This sets ``M_MMAP_MAX=0`` and
    ``M_TRIM_THRESHOLD=-1`` (``mallopt``): freed memory is reused, and the process's resident
    memory stays at its peak until it exits. Process-wide; done once per process. Set the
    environment variable ``DISYRE_RETAIN_MEMORY=0`` to leave the allocator alone.

    Returns:
        What was done, for the logs and the run folder (``"retained (glibc mallopt)"``, or
        why not: not Linux/glibc, or switched off).

    Example:
        >>> retain_freed_memory() in ("retained (glibc mallopt)", "off (DISYRE_RETAIN_MEMORY=0)",
        ...                           "unchanged (not glibc)")
        True
    """
    if os.environ.get(MALLOC_ENV, "1").strip() == "0":
        return f"off ({MALLOC_ENV}=0)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "unchanged (not glibc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, -1) == 1
    except (OSError, AttributeError) as e:  # pragma: no cover - glibc always has mallopt
        return f"unchanged (mallopt unavailable: {e})"
    if not ok:  # pragma: no cover
        return "unchanged (mallopt refused)"
    log.info("malloc keeps freed memory for reuse (mmap off, trim off); "
             "%s=0 switches this off", MALLOC_ENV)
    return "retained (glibc mallopt)"


#: The environment variables by which oneDNN's primitive cache and ideep's per-thread kernel
#: cache take their capacities, read once per process at their first use, and the values
#: detection on CPU gives them (:func:`uncached_cpu_kernels`). ``LRU_CACHE_CAPACITY=0``
#: crashes torch 2.13 at the first convolution: 1 is ideep's smallest working cache.
KERNEL_CACHE_ENV: dict[str, str] = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0",
                                    "LRU_CACHE_CAPACITY": "1"}

_kernel_caches: list[str] = []  # what uncached_cpu_kernels did in this process


def uncached_cpu_kernels(first_use: Callable[[], object]) -> str:
    """Run ``first_use``, the process's first network pass, with oneDNN's and ideep's kernel
    caches off, so that they stay off in this process: for detection on CPU.

    Both caches keep the compiled kernels of every input shape they have seen: thousands of
    small blocks per shape that ``malloc`` places among a pass's freed activations. The scans
    of a folder differ in shape (slices are cropped to the brain), so the heap fragments scan
    after scan and every pass spreads over more memory: a folder's peak grew with the number
    of scans (docs/detection.md, "Command line", its memory note: 1.37x a scan's peak over 30
    scans with the caches, 1.007x without). Without them a shape's kernels live for one call;
    a scan repeats its shape only over its few passes, so little is lost (0 to 5 % slower).

    Each library reads its variable (:data:`KERNEL_CACHE_ENV`) once, at its first use: they are
    set for ``first_use`` and removed after it (processes started later, training ones included,
    inherit the user's environment). A variable the user has set is left as it is: set
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 LRU_CACHE_CAPACITY=1024`` (their defaults) to keep
    the caches. Where oneDNN already ran in this process (training before detection in one
    process) its caches keep the capacity they started with. Done once per process.

    Args:
        first_use: A first network pass (a small input is enough).

    Returns:
        What was done, for the logs: ``"off"``, the variables the user set, or ``"unchanged
        (...)"``.
    """
    if _kernel_caches:
        return f"unchanged (already decided: {_kernel_caches[0]})"
    ours = {k: v for k, v in KERNEL_CACHE_ENV.items() if k not in os.environ}
    if not ours:
        said = ", ".join(f"{k}={os.environ[k]}" for k in KERNEL_CACHE_ENV)
        _kernel_caches.append(f"as the environment sets them ({said})")
        return _kernel_caches[0]
    os.environ.update(ours)
    try:
        first_use()
    finally:
        for k in ours:
            os.environ.pop(k, None)
    _kernel_caches.append("off" if len(ours) == len(KERNEL_CACHE_ENV) else
                          "off where not set: " + ", ".join(ours))
    log.info("CPU kernel caches %s for detection (memory flat over a folder's scans); "
             "ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 LRU_CACHE_CAPACITY=1024 keeps them",
             _kernel_caches[0])
    return _kernel_caches[0]


def release_freed_memory() -> bool:
    """Give the C allocator's free memory back to the system (glibc ``malloc_trim(0)``).

    :func:`retain_freed_memory` keeps freed memory in the process for the next network pass;
    between two scans of a folder that memory is free. Called once per scan, after its
    outputs are written: the resident memory after each of 6 scans of the demo-sized model,
    in one process, was 0.81-1.12 GiB without it and 0.42-0.45 GiB with it.

    Returns:
        Whether memory was handed back (``False`` off glibc or with nothing to give).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # pragma: no cover - glibc always has malloc_trim
        return False


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class TrainJobsDecision:
    """How many trainings run at once and with how many threads each, and why."""

    workers: int
    threads_each: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for run folders and reports)."""
        return asdict(self)


#: CPU flags under which trainings side by side, one thread each, beat one after the other
#: with every thread (the demo's network and batch; docs/demo.md, "Training side by side":
#: 1.29x the throughput on a 2-core Xeon with AMX, 1.00x on a 2-core EPYC with AVX512-BF16)
SIDE_BY_SIDE_FLAGS: tuple[str, ...] = ("amx_tile",)


def decide_train_jobs(n_jobs: int, device: str | torch.device = "auto",
                      requested: int | None = None) -> TrainJobsDecision:
    """How to run ``n_jobs`` independent trainings on ``device``.

    ``requested`` (>= 1) is followed as given. Otherwise (auto), from the hardware, as
    :func:`decide_precision` decides bf16: on a CPU with at least two cores and one of
    :data:`SIDE_BY_SIDE_FLAGS` (AMX), the trainings run side by side, up to one per core, the
    cores shared evenly; elsewhere (a GPU, one core, a CPU where side by side measured no
    faster) one after the other, each with every core.

    Example:
        >>> decide_train_jobs(1, "cpu").workers
        1
        >>> decide_train_jobs(3, "cpu", requested=1).reason
        'requested: one after the other'
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"train jobs must be >= 1, got {requested}")
        w = min(requested, max(n_jobs, 1))
        if w == 1:
            return TrainJobsDecision(1, None, "requested: one after the other")
        return TrainJobsDecision(w, max(1, usable_cores() // w), f"requested: {w} at once")
    dev = resolve_device(device)
    if n_jobs < 2:
        return TrainJobsDecision(1, None, "one training")
    if dev.type != "cpu":
        return TrainJobsDecision(1, None, f"{dev.type}: one after the other")
    cores = usable_cores()
    if cores < 2:
        return TrainJobsDecision(1, None, "one CPU core: one after the other")
    info = cpu_info()
    have = [f for f in SIDE_BY_SIDE_FLAGS if f in info.flags]
    if not have:
        return TrainJobsDecision(1, None, f"{info.model} has no {'/'.join(SIDE_BY_SIDE_FLAGS)}:"
                                 " one after the other, every core each (side by side measured"
                                 " no faster there)")
    w = min(n_jobs, cores)
    return TrainJobsDecision(w, cores // w, f"{info.model} has {'/'.join(have)}: {w} side by "
                             f"side, {cores // w} thread(s) each")
