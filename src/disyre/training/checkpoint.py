"""Checkpoints: written atomically, enough to rebuild the model alone or to resume a run.

Layout of a run folder::

    run.json                       run config + status (marks the folder as a run)
    train_log.csv                  step, loss, lr, patches_per_s, val_loss[, val_loss_ema]
    checkpoints/step_0001000/      model.safetensors  (weights of the network)
                                   ema.safetensors    (EMA weights, when EMA is on)
                                   config.json        {"run", "codebook", "step",
                                                       "provenance", "n_parameters",
                                                       "weights": {"sha256": {file: hex},
                                                                   "method": name}}
                                   state.pt           optimizer, scheduler, EMA, RNG, step
    checkpoints/last -> step_0001000

A checkpoint folder is written under a hidden temporary name and renamed into place; ``last``
is a symbolic link replaced atomically. A failure while saving leaves the previous checkpoint
and ``last`` untouched.

The weights are bound to their checkpoint: ``config.json`` records the SHA-256 of each weights
file and the method that made them (``corruption.name``); :func:`load_model` checks both and
refuses another run's weights (:class:`WeightsMismatchError`) unless told not to check.
Checkpoints written before the record existed load with a warning.

Example:
    >>> # model, cfg = load_model("runs/t2", device="cpu")   # a run folder or a step folder
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import nn

from disyre.config import ConfigError, RunConfig, legacy_filled
from disyre.io_utils import CheckpointError, file_mode, provenance

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "WeightsMismatchError", "check_weights_record", "file_sha256",
           "latest_checkpoint", "list_checkpoints", "load_model", "read_checkpoint_meta",
           "save_checkpoint", "step_dir_name"]

_STEP_RE = re.compile(r"^step_(\d+)$")
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
#: File that marks an export folder (``disyre export``; :mod:`disyre.inference.export`).
EXPORT_MANIFEST = "manifest.json"


def is_export_folder(path: str | Path) -> bool:
    """Whether ``path`` is an export folder (its manifest and config.json, no weights)."""
    path = Path(path)
    return (path / EXPORT_MANIFEST).is_file() and (path / CONFIG_FILE).is_file()


#: Flag of the CLI (``check_weights=False`` in Python) that loads weights failing the check.
ALLOW_WEIGHTS_FLAG = "--allow-weights-mismatch"


class WeightsMismatchError(CheckpointError, ValueError):
    """A weights file is not the one its checkpoint recorded, or was made by another method."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint at ``step``."""
    return f"step_{step:07d}"


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``ckpt_root``, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_RE.match(p.name)) and p.is_dir() and (p / CONFIG_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest checkpoint of a run folder (or ``path`` itself if it is a checkpoint)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file():
        return path
    if is_export_folder(path):  # its config.json describes its checkpoint
        return path
    root = path / "checkpoints"
    last = root / "last"
    if last.exists() and (last / CONFIG_FILE).is_file():
        return root / os.readlink(last) if last.is_symlink() else last
    found = list_checkpoints(root)
    return found[-1] if found else None


def _state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(ckpt_root: str | Path, *, step: int, model: nn.Module, cfg: RunConfig,
                    codebook: list[float] | None, state: dict[str, Any],
                    ema: nn.Module | None = None, keep_last: int = 3,
                    data: dict[str, Any] | None = None,
                    runtime: dict[str, Any] | None = None,
                    keep_steps: Sequence[int] = ()) -> Path:
    """Write the checkpoint of ``step`` atomically, point ``last`` at it, prune old ones.

    Args:
        ckpt_root: The run's ``checkpoints`` folder.
        step: Number of optimizer steps done.
        model: The network (unwrapped, not DDP).
        cfg: The run config.
        codebook: Intensity codebook used by the corruption.
        state: Resume state (optimizer, scheduler, RNG, ...), saved with ``torch.save``.
        ema: The EMA network (its weights go to ``ema.safetensors``), if any.
        keep_last: Number of checkpoints to keep (older ones are deleted; ``<= 0`` keeps all).
        data: Description of the training data (contrast, intensity signature), if known.
        runtime: How the run computed (resolved precision and why, device, layout, compile).
        keep_steps: Steps whose checkpoints are never pruned (``train.keep_steps``).

    Returns:
        The checkpoint folder.

    Raises:
        CheckpointError: Writing failed; the previous checkpoint is intact.
    """
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{final.name}_{os.getpid()}"
    writing = ""
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        meta = {
            "run": cfg.to_dict(),
            "codebook": None if codebook is None else [float(c) for c in codebook],
            "step": int(step),
            "provenance": provenance(),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "ema": ema is not None,
            "data": data or {},
        }
        if runtime is not None:
            meta["runtime"] = runtime
        writing = MODEL_FILE
        save_file(_state_dict_cpu(model), str(tmp / MODEL_FILE), metadata={"step": str(step)})
        if ema is not None:
            writing = EMA_FILE
            save_file(_state_dict_cpu(ema.module), str(tmp / EMA_FILE),
                      metadata={"step": str(step)})
        meta["weights"] = {
            "sha256": {f: file_sha256(tmp / f) for f in (MODEL_FILE, EMA_FILE)
                       if (tmp / f).is_file()},
            "method": cfg.corruption.name}
        writing = STATE_FILE
        torch.save(state, tmp / STATE_FILE)
        writing = CONFIG_FILE
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        writing = ""
        for f in tmp.iterdir():
            os.chmod(f, file_mode())  # safetensors writes 0600: others could not read it
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving a step (a resumed run): swap out the old folder
            old = root / f".old_{final.name}_{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        link_tmp = root / f".last_{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            link_tmp.unlink()
        os.symlink(final.name, link_tmp)
        os.replace(link_tmp, root / "last")
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        prev = latest_checkpoint(root.parent)
        raise CheckpointError(
            f"{final / writing if writing else final}: could not write checkpoint "
            f"({_write_failure(e, root)}); "
            + (f"the previous checkpoint {prev} is intact" if prev else "no earlier checkpoint")
        ) from e
    if keep_last > 0:
        kept = {step_dir_name(k) for k in keep_steps}
        for old in list_checkpoints(root)[:-keep_last]:
            if old.name not in kept:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _write_failure(e: BaseException, root: Path) -> str:
    """One line saying why a checkpoint write failed (not the writer's internals).

    torch reports a full disk as ``[enforce fail at inline_container.cc:...] ... file write
    failed``: a nearly full file system is then named as the cause.
    """
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    lines = str(e).strip().splitlines()
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", lines[0] if lines else "")
    text = text or type(e).__name__
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return text
    if free < 64 * 2**20:
        return f"no space left on device ({free // 2**20} MiB free: {text})"
    return text


def read_checkpoint_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Find the checkpoint at ``path`` (run or checkpoint folder) and read its config.json."""
    path = Path(path)
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no checkpoint found (expected a run folder with "
                                f"checkpoints/ or a checkpoint folder with {CONFIG_FILE})")
    try:
        meta = json.loads((ckpt / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt / CONFIG_FILE}: unreadable checkpoint config ({e})") from e
    return ckpt, meta


_warned_unbound: set[str] = set()


def check_weights_record(ckpt: Path, meta: dict[str, Any], file: str, digest: str,
                         method: str, *, check: bool = True) -> None:
    """Check that the weights ``file`` of checkpoint ``ckpt`` (SHA-256 ``digest``) are the ones
    its ``config.json`` (``meta``) recorded, made by the run's ``method``.

    A checkpoint without the record (an earlier release) is warned about once per folder;
    with ``check=False`` a mismatch is a warning instead of an error.

    Raises:
        WeightsMismatchError: Another hash, or another method recorded beside it.
    """
    rec = meta.get("weights")
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), dict):
        if str(ckpt) not in _warned_unbound:
            _warned_unbound.add(str(ckpt))
            log.warning("%s: %s records no hash of its weights (a checkpoint of an earlier "
                        "release): cannot check that %s belongs to this run", ckpt,
                        CONFIG_FILE, file)
        return
    problem = ""
    recorded_method = rec.get("method")
    if recorded_method is not None and recorded_method != method:
        problem = (f"the weights were recorded as made by {recorded_method!r} but the run "
                   f"config's method is {method!r}")
    elif file not in rec["sha256"]:
        problem = f"{CONFIG_FILE} records no hash for {file}"
    elif rec["sha256"][file] != digest:
        problem = (f"SHA-256 {digest[:12]} is not the {str(rec['sha256'][file])[:12]} recorded "
                   f"in {CONFIG_FILE} (weights of another run or method?)")
    if not problem:
        return
    if not check:
        log.warning("%s: %s; loaded anyway (%s)", ckpt / file, problem, ALLOW_WEIGHTS_FLAG)
        return
    raise WeightsMismatchError(f"{ckpt / file}: weights do not belong to this checkpoint: "
                               f"{problem}; pass {ALLOW_WEIGHTS_FLAG} (check_weights=False) "
                               "to load them anyway")


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               weights: str = "auto", check_weights: bool = True
               ) -> tuple[nn.Module, RunConfig]:
    """Rebuild the trained network from a checkpoint's config.json and safetensors alone.

    Args:
        path: A checkpoint folder, or a run folder (its newest checkpoint is used).
        device: Where to put the model (``"auto"``: CUDA if available).
        weights: ``"auto"`` (EMA weights when the run kept them, else the raw ones),
            ``"ema"`` or ``"model"``.
        check_weights: Refuse weights whose SHA-256 or method differs from what the
            checkpoint recorded (``False``: a warning; :func:`check_weights_record`).

    Returns:
        ``(model in eval mode, RunConfig of the run)``.

    Raises:
        FileNotFoundError: No checkpoint at ``path``.
        WeightsMismatchError: The weights are not the ones the checkpoint recorded.
        CheckpointError: The files are unreadable or do not match the stored config.
    """
    from disyre.model import build_model
    from disyre.runtime import resolve_device

    ckpt, meta = read_checkpoint_meta(path)
    if is_export_folder(ckpt):
        raise CheckpointError(f"{ckpt}: an exported model (no PyTorch weights); load it with "
                              "Detector.from_checkpoint or disyre detect --checkpoint")
    try:
        # a config saved before a fidelity switch existed was made with its legacy value
        cfg = RunConfig.from_dict(legacy_filled(meta["run"]))
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{ckpt / CONFIG_FILE}: invalid run config ({e})") from e
    if weights not in ("auto", "ema", "model"):
        raise ValueError(f"weights must be auto, ema or model, got {weights!r}")
    file = MODEL_FILE
    if weights == "ema" or (weights == "auto" and (ckpt / EMA_FILE).is_file()):
        file = EMA_FILE
    if not (ckpt / file).is_file():
        raise CheckpointError(f"{ckpt / file}: missing")
    model = build_model(cfg.model)
    try:
        raw = (ckpt / file).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{ckpt / file}: unreadable weights file ({e})") from e
    try:
        weights_file = load_bytes(raw)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{ckpt / file}: unreadable, truncated or damaged weights file "
                              f"({e})") from e
    check_weights_record(ckpt, meta, file, hashlib.sha256(raw).hexdigest(),
                         cfg.corruption.name, check=check_weights)
    del raw
    try:
        model.load_state_dict(weights_file)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt / file}: weights do not match the model config ({e})") \
            from e
    return model.to(resolve_device(device)).eval(), cfg
