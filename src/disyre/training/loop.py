"""The training loop: AdamW + cosine warm-up, MSE on x0, EMA, autocast, DDP, resume.

Single process::

    disyre train --cache CACHE -o runs/t2 --preset small

Several processes (one per GPU, or CPU processes with gloo)::

    torchrun --nproc_per_node=4 -m disyre train --cache CACHE -o runs/t2

Python::

    from disyre.training import train
    result = train(cfg, train_volumes, val_volumes, "runs/t2")
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.profiler import record_function

from disyre.config import ConfigError, RunConfig
from disyre.data.intensity import intensity_signature
from disyre.io_utils import atomic_write_json, prepare_output_dir, provenance
from disyre.model import build_model, compile_network, count_parameters, use_channels_last
from disyre.runtime import (
    agree_precision,
    autocast,
    cpu_info,
    decide_precision,
    resolve_device,
    retain_freed_memory,
)
from disyre.training import distributed as ddp
from disyre.training.batches import (
    VAL_STREAM,
    Batch,
    BatchSource,
    auto_grad_accum,
    batch_loss,
    micro_batch_shards,
)
from disyre.training.checkpoint import (
    STATE_FILE,
    read_checkpoint_meta,
    save_checkpoint,
)
from disyre.training.plateau import plateau_reached, write_stop_record

log = logging.getLogger(__name__)

RUN_MARKER = "run.json"
LOG_FILE = "train_log.csv"
LOG_FIELDS = ["step", "loss", "lr", "patches_per_s", "val_loss", "val_loss_ema"]


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        out_dir: The run folder.
        checkpoint: The last checkpoint folder written (``None`` on ranks other than 0).
        step: Optimizer steps done in total.
        losses: Training loss of each step run by this call (global-batch mean).
        val_losses: ``(step, val_loss)`` pairs.
        wall_s: Seconds spent in this call.
        patches_per_s: Training throughput of this call (global patches).
        stop_reason: ``plateau`` (``train.patience``) or ``cap`` (``train.steps`` reached).
    """

    out_dir: Path
    checkpoint: Path | None
    step: int
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    wall_s: float = 0.0
    patches_per_s: float = 0.0
    stop_reason: str = "cap"

    def summary(self) -> str:
        """A few human-readable lines about the run."""
        last = f"{self.losses[-1]:.5f}" if self.losses else "n/a"
        val = f", val loss {self.val_losses[-1][1]:.5f}" if self.val_losses else ""
        why = " (stopped at the validation loss's plateau)" if self.stop_reason == "plateau" \
            else ""
        return (f"trained to step {self.step}{why} in {self.wall_s:.1f} s "
                f"({self.patches_per_s:.1f} patches/s); last loss {last}{val}\n"
                f"checkpoint: {self.checkpoint}")


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate: linear warm-up then cosine decay to 0.

    Example:
        >>> f = lr_lambda(10, 110)
        >>> f(0), f(9), round(f(60), 3), f(110)
        (0.1, 1.0, 0.5, 0.0)
    """
    def f(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup_steps) / span)))
    return f


#: AdamW implementations: torch's per-parameter ``loop``, ``foreach`` (multi-tensor ops) and
#: ``fused`` (one kernel over all parameters); ``auto`` picks :func:`adamw_impl`'s choice.
ADAMW_IMPLS: tuple[str, ...] = ("auto", "loop", "foreach", "fused")


def adamw_impl(impl: str, device: torch.device | str) -> str:
    """The AdamW implementation ``impl`` resolves to on ``device``.

    ``auto`` is ``fused`` where torch has a fused AdamW for the device (CPU and CUDA among
    them), else ``loop``.

    Example:
        >>> adamw_impl("auto", "cpu")
        'fused'
    """
    if impl not in ADAMW_IMPLS:
        raise ConfigError(f"AdamW implementation must be one of {ADAMW_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    try:  # a private helper of torch's: without it, the plain loop
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused_on = _get_fused_kernels_supported_devices()
    except (ImportError, AttributeError):  # pragma: no cover - other torch versions
        fused_on = []
    return "fused" if torch.device(device).type in fused_on else "loop"


def make_optimizer(model: nn.Module, cfg: RunConfig, impl: str = "auto"
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and the warm-up + cosine scheduler of ``cfg.train``.

    Args:
        model: The network (its parameters' device decides ``auto``).
        cfg: The run config (``train.lr``, ``betas``, ``weight_decay``, ``eps``, ...).
        impl: AdamW implementation (:data:`ADAMW_IMPLS`); the same update up to float
            rounding, at different speeds.
    """
    t = cfg.train
    params = list(model.parameters())
    kind = adamw_impl(impl, params[0].device if params else "cpu")
    opt = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas),
                            weight_decay=t.weight_decay, eps=t.eps,
                            foreach={"loop": False, "foreach": True}.get(kind),
                            fused=kind == "fused")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t.warmup_steps, t.steps))
    return opt, sched


def _to_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               micro_batches: Sequence[Batch] | Callable[[int], Batch], n_micro: int, *,
               global_size: int, device: torch.device, precision: str = "auto",
               grad_clip: float | None = 1.0, channels_last: bool = False,
               world: ddp.DistInfo | None = None,
               timings: dict[str, float] | None = None) -> float:
    """One optimizer step over ``n_micro`` micro-batches (gradient accumulation).

    Each micro-batch's MSE is weighted by its share of the global batch, so the summed
    gradient equals that of the whole global batch (averaged over DDP ranks when ``model`` is
    wrapped in ``DistributedDataParallel``).

    Args:
        model: The network, possibly DDP-wrapped.
        optimizer: Its optimizer (the scheduler is stepped by the caller).
        micro_batches: The micro-batches, or a function ``i -> Batch`` drawing them lazily.
        n_micro: Number of micro-batches.
        global_size: Patches in the global batch (all ranks).
        device: Compute device.
        precision: ``auto``/``fp32``/``bf16`` autocast.
        grad_clip: Max gradient norm (``None``/``<= 0``: no clipping).
        channels_last: Feed 2D inputs in channels-last layout.
        world: Distributed info (``None``: a world of one).
        timings: If given, seconds spent in ``batch``/``forward``/``backward``/``optimizer``
            are added to it (CUDA is synchronised around each phase).

    Each phase also runs under a ``torch.profiler.record_function`` label of the same name
    (a few microseconds when no profiler runs), which ``benchmarks.speed.profile_step`` reads.

    Returns:
        The global-batch mean training loss of this step (same value on every rank).
    """
    world = world or ddp.DistInfo()
    sync = torch.cuda.synchronize if (timings is not None and device.type == "cuda") else None

    def tick() -> float:
        if sync is not None:
            sync()
        return time.perf_counter()

    optimizer.zero_grad(set_to_none=True)
    local_size = global_size / world.world_size
    total = torch.zeros((), device=device)
    for i in range(n_micro):
        t0 = tick()
        with record_function("batch"):
            b = micro_batches(i) if callable(micro_batches) else micro_batches[i]
            x = _to_input(b.corrupted.to(device, non_blocking=True), channels_last)
            y = b.target.to(device, non_blocking=True)
            lvl = b.level.to(device, non_blocking=True)
        t1 = tick()
        last = i == n_micro - 1
        ctx = model.no_sync() if (isinstance(model, DistributedDataParallel) and not last) \
            else _null()
        with ctx:
            with record_function("forward"):
                with autocast(device, precision):
                    pred = model(x, lvl)
                loss = batch_loss(pred, b, y)
                weighted = loss * (len(b) / local_size)
            t2 = tick()
            with record_function("backward"):
                weighted.backward()
        t3 = tick()
        total += weighted.detach()
        if timings is not None:
            for k, v in (("batch", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2)):
                timings[k] = timings.get(k, 0.0) + v
    t4 = tick()
    with record_function("optimizer"):
        if grad_clip and grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    t5 = tick()
    if timings is not None:
        timings["optimizer"] = timings.get("optimizer", 0.0) + t5 - t4
    return float(ddp.all_reduce_mean(total, world))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch], device: torch.device,
             precision: str = "auto", channels_last: bool = False) -> float:
    """Mean loss of ``model``'s restorations over fixed ``batches`` (patch-weighted): the
    MSE, or the batches' own loss where they carry another (:func:`batch_loss`)."""
    was_training = model.training
    model.eval()
    tot, n = 0.0, 0
    for b in batches:
        x = _to_input(b.corrupted.to(device), channels_last)
        with autocast(device, precision):
            pred = model(x, b.level.to(device))
        if b.region is None and b.loss == "mse":
            tot += float(torch.nn.functional.mse_loss(
                pred.float(), b.target.to(device).float(), reduction="sum")) / b.target[0].numel()
        else:
            tot += float(batch_loss(pred, b, b.target.to(device))) * len(b)
        n += len(b)
    model.train(was_training)
    return tot / max(n, 1)


def _check_precision(cfg: RunConfig, device: torch.device) -> None:
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision must be auto, fp32 or bf16, got "
                          f"{cfg.train.precision!r}")
    decide_precision(cfg.train.precision, device)


def _check_resume_config(cfg: RunConfig, saved: RunConfig, ckpt: Path) -> None:
    if saved.model != cfg.model:
        raise ConfigError(
            f"{ckpt}: checkpoint was made with another model config "
            f"(preset {saved.model.preset!r}, channels {saved.model.channels}) than requested "
            f"(preset {cfg.model.preset!r}, channels {cfg.model.channels}); resume with the "
            "same model settings or train into a new folder"
        )
    for sec in ("sampler", "corruption"):
        if getattr(saved, sec) != getattr(cfg, sec):
            log.warning("%s: resuming with a different %s config than the checkpoint's", ckpt,
                        sec)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(keep)


def _load_state(path: Path, device: torch.device) -> dict[str, Any]:
    """The resume state of a checkpoint (tensors and plain values only: ``weights_only``)."""
    import pickle

    from disyre.io_utils import CheckpointError

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: unreadable resume state ({e}); resume from another "
                              "checkpoint or train into a new folder") from e


def _mark_stopped(run_json: Path, error: BaseException, step: int) -> None:
    """Record in ``run.json`` that training stopped (``interrupted`` or ``failed``) and why."""
    import json

    try:
        doc = json.loads(run_json.read_text())
        doc.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
                   step=step, error=f"{type(error).__name__}: {error}")
        atomic_write_json(run_json, doc)
    except (OSError, ValueError) as e:
        log.warning("%s: could not record that training stopped (%s)", run_json, e)


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_identity() -> dict[str, Any]:
    """``{"pid", "host", "process_start"}`` of this process, recorded in a training run's
    ``run.json`` so that a later command can tell a run that died from one still going."""
    import os
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(),
            "process_start": _process_start(os.getpid())}


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` exists and is the one that started at ``start`` (if known)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


def run_status(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's ``run.json``, with its ``status`` as it stands now.

    A run records ``"status": "training"`` with its process (:func:`process_identity`) while
    it trains, and ``done``, ``interrupted`` or ``failed`` when it stops; a run killed
    outright (``kill -9``, out of memory, power cut) cannot record that. Here a ``training``
    status whose process is gone on this host reads ``interrupted`` (with a ``reason``);
    one whose process lives elsewhere, or that recorded none, stays ``training`` (with a
    ``reason`` saying it cannot be checked).

    Returns:
        The document (``status`` possibly changed, ``reason`` added), or ``None`` without a
        readable ``run.json``.
    """
    import json
    import socket

    path = Path(run_dir) / RUN_MARKER
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("status") != "training":
        return doc if isinstance(doc, dict) else None
    pid, host = doc.get("pid"), doc.get("host")
    if not isinstance(pid, int) or host is None:
        doc["reason"] = "the run recorded no process; it may have died"
    elif host != socket.gethostname():
        doc["reason"] = f"process {pid} on host {host}, not checked from here"
    elif _alive(pid, doc.get("process_start")):
        doc["reason"] = f"process {pid} on this host is still running"
        doc["running"] = True
    else:
        doc["status"] = "interrupted"
        doc["reason"] = (f"its process {pid} on {host} is gone without recording an end "
                         "(killed?)")
    return doc


def report_run_status(run_dir: str | Path, refuse_running: bool = False) -> str | None:
    """Log what a run folder's ``run.json`` says (:func:`run_status`) when the run did not
    finish; read by ``train --resume`` and whatever loads a run's checkpoint.

    Args:
        run_dir: A run folder (anything else: nothing is said).
        refuse_running: Raise when the run's process is still training (``--resume`` must not
            write into a folder another process writes to).

    Returns:
        The status (``None`` without ``run.json``).

    Raises:
        OutputExistsError: ``refuse_running`` and the run is still training on this host.
    """
    from disyre.io_utils import OutputExistsError
    from disyre.training.checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / RUN_MARKER).is_file() and run_dir.parent.name == "checkpoints":
        run_dir = run_dir.parent.parent  # a checkpoint folder: its run's run.json
    doc = run_status(run_dir)
    if doc is None:
        return None
    status = doc.get("status")
    if status not in ("interrupted", "failed", "training"):
        return status
    why = doc.get("reason") or doc.get("error") or "no reason recorded"
    if status == "training" and doc.get("running") and refuse_running:
        raise OutputExistsError(f"{run_dir}: a training run is still writing to this folder "
                                f"({why}); wait for it or stop it first")
    ckpt = latest_checkpoint(run_dir)
    newest = f"its newest checkpoint is {ckpt.name}" if ckpt else "it saved no checkpoint"
    said = {"interrupted": "training was interrupted", "failed": "training failed",
            "training": "run.json says training"}[status]
    log.warning("%s: %s (%s); %s", run_dir, said, why, newest)
    return status


def describe_training_data(volumes: Sequence[np.ndarray],
                           extra: dict[str, Any] | None = None,
                           masks: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """What a checkpoint records about its training data (``config.json``'s ``"data"``).

    Args:
        volumes: NormalizedVolume training volumes.
        extra: Further fields to record (``contrast``, ``spacing``, ...).
        masks: Their brain masks (default: the non-zero voxels).

    Returns:
        ``extra`` plus ``intensity_quantiles`` (mean signature over up to 32 volumes) and
        ``n_volumes``.
    """
    out = dict(extra or {})
    vols = list(volumes)[:32]
    brains = [np.asarray(v) > 0 for v in vols] if masks is None else list(masks)[:32]
    sigs = [intensity_signature(v, b) for v, b in zip(vols, brains, strict=True)]
    if sigs:
        out.setdefault("intensity_quantiles", [float(q) for q in np.mean(sigs, axis=0)])
    out.setdefault("n_volumes", len(volumes))
    return out


def train(cfg: RunConfig, train_volumes: Sequence[np.ndarray],
          val_volumes: Sequence[np.ndarray] | None, out_dir: str | Path, *,
          resume: bool = False, overwrite: bool = False,
          codebook: Sequence[float] | None = None, progress: bool = True,
          batch_source: BatchSource | None = None,
          data_info: dict[str, Any] | None = None,
          train_masks: Sequence[np.ndarray] | None = None,
          val_masks: Sequence[np.ndarray] | None = None) -> TrainResult:
    """Train the restoration network of ``cfg`` on healthy volumes.

    Args:
        cfg: Run config (model, sampler, corruption, train sections are used).
        train_volumes: Healthy training volumes ``(d, h, w)`` float32 in [0, 1].
        val_volumes: Held-out healthy volumes for the validation loss (``None``/empty: none).
        out_dir: Run folder (checkpoints, log, ``run.json``).
        resume: Continue from the newest checkpoint in ``out_dir`` (fresh start if none).
        overwrite: Allow a folder that already holds a run (its checkpoints may be replaced).
        codebook: Intensity codebook of the bias anomaly (stored in the checkpoint).
        progress: Show a progress bar (rank 0 only).
        batch_source: Replace the default :class:`BatchSource` (tests, benchmarks).
        data_info: Description of the training data stored in every checkpoint's
            ``config.json`` under ``"data"`` (e.g. ``{"contrast": "t2"}``); the mean
            :func:`~disyre.data.intensity.intensity_signature` of ``train_volumes`` is added
            as ``intensity_quantiles``, so that detection can warn about unlike scans.
        train_masks: Brain masks of ``train_volumes`` (e.g. the cache's): patch sampling,
            augmentation, corruption and the intensity signature take the brain from them
            (default: the non-zero voxels).
        val_masks: Brain masks of ``val_volumes``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        OutputExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        ConfigError: Invalid settings, or a checkpoint of another model config on resume.
        CheckpointError: A checkpoint could not be written (the previous one is intact).
    """
    t = cfg.train
    cfg.validate()
    device = resolve_device(t.device)
    _check_precision(cfg, device)
    data = describe_training_data(train_volumes, data_info, train_masks)
    world = ddp.init_distributed(device)
    device = ddp.local_device(device, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out_dir = Path(out_dir)
    old_threads = torch.get_num_threads()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    try:
        return _train(cfg, train_volumes, val_volumes, out_dir, device, world, resume=resume,
                      overwrite=overwrite, codebook=codebook, progress=progress,
                      batch_source=batch_source, data=data, train_masks=train_masks,
                      val_masks=val_masks)
    finally:
        torch.set_num_threads(old_threads)
        ddp.cleanup(world)


def _train(cfg: RunConfig, train_volumes: Sequence[np.ndarray],
           val_volumes: Sequence[np.ndarray] | None, out_dir: Path, device: torch.device,
           world: ddp.DistInfo, *, resume: bool, overwrite: bool,
           codebook: Sequence[float] | None, progress: bool,
           batch_source: BatchSource | None, data: dict[str, Any],
           train_masks: Sequence[np.ndarray] | None = None,
           val_masks: Sequence[np.ndarray] | None = None) -> TrainResult:
    t = cfg.train
    accum = t.grad_accum or auto_grad_accum(cfg.sampler.n_volumes, cfg.sampler.n_slices,
                                            cfg.sampler.patch_size, world.world_size, device)
    shards = micro_batch_shards(cfg.sampler.n_slices, world.world_size, accum, world.rank)
    global_size = cfg.sampler.n_volumes * cfg.sampler.n_slices
    codebook = None if codebook is None else [float(c) for c in codebook]
    if t.patience and (val_volumes is None or not len(val_volumes) or t.val_batches < 1):
        raise ConfigError("train.patience needs a validation loss: healthy validation "
                          "volumes and train.val_batches >= 1")
    if world.is_main:
        prepare_output_dir(out_dir, overwrite=overwrite or resume, marker=RUN_MARKER)
        if resume:
            report_run_status(out_dir, refuse_running=True)
    ddp.barrier(world)
    ckpt_root = out_dir / "checkpoints"

    # --- model, optimizer, EMA (same initial weights on every rank: seeded build) ---
    torch.manual_seed(t.seed)
    model = build_model(cfg.model).to(device)
    # the resolved precision (rank 0's under DDP) and layout, recorded in run.json/config.json
    prec = agree_precision(decide_precision(t.precision, device), device)
    use_cl = use_channels_last(cfg.model, device, t.channels_last, prec.precision)
    malloc = retain_freed_memory() if device.type == "cpu" else "unchanged (not a CPU run)"
    runtime = {"precision": prec.precision, "precision_requested": prec.requested,
               "precision_reason": prec.reason, "device": str(device), "channels_last": use_cl,
               "compile": t.compile, "grad_accum": accum, "malloc": malloc,
               "cpu": cpu_info().describe()}
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, cfg)
    ema = None
    if t.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay),
                            use_buffers=True)
    step = 0
    ckpt_path = None
    # (step, validation loss) the plateau rule reads: the EMA's where there is one (the
    # weights detection uses), else the network's; part of the resume state
    curve: list[tuple[int, float]] = []
    monitor = "val_loss_ema" if ema is not None else "val_loss"
    if resume:
        try:
            ckpt_path, meta = read_checkpoint_meta(out_dir)
        except FileNotFoundError:
            log.info("%s: no checkpoint to resume from; starting a new run", out_dir)
        if ckpt_path is not None:
            _check_resume_config(cfg, RunConfig.from_dict(meta["run"]), ckpt_path)
            state = _load_state(ckpt_path / STATE_FILE, device)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if ema is not None:
                if state.get("ema") is None:
                    raise ConfigError(f"{ckpt_path}: checkpoint has no EMA state but "
                                      "train.ema_decay is set")
                ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["torch_rng"])
            step = int(state["step"])
            curve = [(int(s), float(v)) for s, v in state.get("val_curve", [])]
            if t.patience and "val_curve" not in state:
                log.warning("%s: the checkpoint records no validation curve; the plateau "
                            "rule starts afresh", ckpt_path)
            saved_cb = meta.get("codebook")
            if saved_cb is not None:  # the corruption the weights were trained with
                if codebook is not None and codebook != [float(c) for c in saved_cb]:
                    log.info("resuming with the checkpoint's codebook %s, not %s", saved_cb,
                             codebook)
                codebook = [float(c) for c in saved_cb]
            log.info("resuming from %s (step %d)", ckpt_path, step)
    if t.compile:  # after the EMA copy and the resumed weights; keeps parameter names
        compile_network(model)
    if world.is_main:
        atomic_write_json(out_dir / RUN_MARKER, {
            "run": cfg.to_dict(), "codebook": codebook, "status": "training",
            **process_identity(), "world_size": world.world_size, "provenance": provenance(),
            "n_parameters": count_parameters(model), "runtime": runtime})
        if step > 0:
            _truncate_log(out_dir / LOG_FILE, step)
    net: nn.Module = model
    if world.enabled:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    src = batch_source or BatchSource(train_volumes, cfg, codebook, device, masks=train_masks)
    val_batches: list[Batch] = []
    if world.is_main and val_volumes is not None and len(val_volumes) and t.val_batches > 0:
        vsrc = BatchSource(val_volumes, cfg, codebook, device,
                           sampler_factory=src.sampler_factory, corruption=src.corruption,
                           masks=val_masks if train_masks is not None else None)
        all_shards = list(range(cfg.sampler.n_slices))
        val_batches = [vsrc.micro_batch(t.seed, i, all_shards, VAL_STREAM)
                       for i in range(t.val_batches)]

    # --- logging ---
    log_f = writer = tb = None
    if world.is_main:
        new = not (out_dir / LOG_FILE).is_file() or step == 0
        log_f = open(out_dir / LOG_FILE, "w" if new else "a", newline="")
        writer = csv.DictWriter(log_f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        if t.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; logging to %s only", LOG_FILE)
    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)

    result = TrainResult(out_dir=out_dir, checkpoint=ckpt_path, step=step)
    t_start = time.perf_counter()
    t_log, steps_since, loss_acc = t_start, 0, 0.0
    n_done = 0

    def save(at: int) -> Path:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(),
                 "ema": None if ema is None else ema.state_dict(),
                 "torch_rng": torch.get_rng_state(), "step": at,
                 "val_curve": [[s, v] for s, v in curve]}
        return save_checkpoint(ckpt_root, step=at, model=model, cfg=cfg, codebook=codebook,
                               state=state, ema=ema, keep_last=t.keep_last, data=data,
                               runtime=runtime, keep_steps=t.keep_steps)

    def at_plateau() -> bool:
        """The rule on rank 0's curve, agreed by every rank."""
        stop = world.is_main and plateau_reached([v for _, v in curve], t.patience,
                                                 t.min_delta)
        if world.enabled:
            flag = torch.tensor(float(stop), device=device)
            stop = float(ddp.all_reduce_mean(flag, world)) > 0
        return bool(stop)

    stop_reason = "cap"
    try:
        if t.patience and step < t.steps and at_plateau():  # resumed after a plateau stop
            stop_reason = "plateau"
        while step < t.steps and stop_reason == "cap":
            s = step
            loss = train_step(
                net, opt, lambda i, s=s: src.micro_batch(t.seed, s, shards[i]),
                len(shards), global_size=global_size, device=device,
                precision=prec.precision, grad_clip=t.grad_clip,
                channels_last=use_cl, world=world)
            lr = opt.param_groups[0]["lr"]
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            n_done += 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {step}; "
                                         "lower train.lr or use train.precision=fp32")
            result.losses.append(loss)
            loss_acc += loss
            steps_since += 1
            do_val = bool(val_batches) and (step % t.val_every == 0 or step == t.steps)
            do_log = step % t.log_every == 0 or step == t.steps or do_val
            row: dict[str, Any] = {}
            if do_val:
                vl = evaluate(model, val_batches, device, prec.precision)
                row["val_loss"] = f"{vl:.6g}"
                result.val_losses.append((step, vl))
                if ema is not None:
                    vl = evaluate(ema.module, val_batches, device, prec.precision)
                    row["val_loss_ema"] = f"{vl:.6g}"
                curve.append((step, vl))
            if do_log and world.is_main:
                now = time.perf_counter()
                pps = steps_since * global_size / max(now - t_log, 1e-9)
                row.update(step=step, loss=f"{loss_acc / steps_since:.6g}", lr=f"{lr:.4g}",
                           patches_per_s=f"{pps:.3g}")
                writer.writerow(row)
                log_f.flush()
                if tb is not None:
                    tb.add_scalar("loss/train", loss_acc / steps_since, step)
                    tb.add_scalar("lr", lr, step)
                    if "val_loss" in row:
                        tb.add_scalar("loss/val", float(row["val_loss"]), step)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_acc / steps_since:.4g}", lr=f"{lr:.2e}",
                                    pps=f"{pps:.1f}")
                t_log, steps_since, loss_acc = now, 0, 0.0
            if bar is not None:
                bar.update(1)
            if t.patience and (step % t.val_every == 0 or step == t.steps) and at_plateau():
                stop_reason = "plateau"
            if (step % t.ckpt_every == 0 or step == t.steps or step in t.keep_steps
                    or stop_reason == "plateau"):
                if world.is_main:
                    result.checkpoint = save(step)
                ddp.barrier(world)
    except BaseException as e:
        if world.is_main:  # run.json must not keep saying "training"
            _mark_stopped(out_dir / RUN_MARKER, e, step)
        raise
    finally:
        if bar is not None:
            bar.close()
        if log_f is not None:
            log_f.close()
        if tb is not None:
            tb.close()
    result.step = step
    result.stop_reason = stop_reason
    result.wall_s = time.perf_counter() - t_start
    result.patches_per_s = n_done * global_size / max(result.wall_s, 1e-9)
    if world.is_main:
        atomic_write_json(out_dir / RUN_MARKER, {
            "run": cfg.to_dict(), "codebook": codebook, "status": "done", "step": step,
            "wall_s": round(result.wall_s, 2),  # this call's training (a resumed run: since)
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "stop": {"step": step, "reason": stop_reason},
            "world_size": world.world_size, "provenance": provenance(),
            "n_parameters": count_parameters(model), "runtime": runtime})
        if t.patience:
            write_stop_record(out_dir, step=step, reason=stop_reason, curve=curve,
                              patience=t.patience, min_delta=t.min_delta, monitor=monitor)
        log.info("%s", result.summary())
    else:
        result.checkpoint = None
    return result
