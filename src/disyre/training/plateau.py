"""Stopping at the plateau of the validation loss.

With ``train.patience`` = N > 0 a run stops when the loss on its healthy validation patches
(computed every ``train.val_every`` steps) has not improved for N validations in a row;
``train.steps`` stays the cap. An improvement must beat the best loss so far by the
fraction ``train.min_delta``. The rule sees the validation losses and nothing else: no
lesion, no label, no test scan.

Example:
    >>> plateau_reached([1.0, 0.8, 0.7, 0.71, 0.70, 0.72], patience=3)
    True
    >>> plateau_reached([1.0, 0.8, 0.7, 0.6, 0.5], patience=3)
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from disyre.io_utils import atomic_write_json

#: the run folder's record of when and why training stopped
STOP_FILE = "plateau.json"
#: why a run stopped: the plateau rule, or ``train.steps`` reached
REASONS = ("plateau", "cap")


def best_index(losses: Sequence[float], min_delta: float = 0.0) -> int:
    """Index of the last validation that improved on every earlier one by more than the
    fraction ``min_delta`` (-1 for no losses).

    Example:
        >>> best_index([1.0, 0.8, 0.79, 0.9], min_delta=0.05)  # 0.79 is not 5 % below 0.8
        1
    """
    best, at = float("inf"), -1
    for i, v in enumerate(losses):
        if at < 0 or v < best - min_delta * abs(best):
            best, at = float(v), i
    return at


def plateau_reached(losses: Sequence[float], patience: int, min_delta: float = 0.0) -> bool:
    """Whether the last ``patience`` validation losses brought no improvement.

    Args:
        losses: The validation losses in order (one per validation).
        patience: Validations without improvement that stop the run; 0 = never stop.
        min_delta: Relative improvement on the best loss so far that counts (0 = any).

    Returns:
        ``True`` when the best loss (see :func:`best_index`) is ``patience`` or more
        validations old.
    """
    if patience <= 0 or not losses:
        return False
    return len(losses) - 1 - best_index(losses, min_delta) >= patience


def write_stop_record(out_dir: str | Path, *, step: int, reason: str,
                      curve: Sequence[tuple[int, float]], patience: int, min_delta: float,
                      monitor: str) -> dict[str, Any]:
    """Write ``plateau.json`` in the run folder (atomically) and return its document.

    Args:
        out_dir: The run folder.
        step: The step training stopped at.
        reason: ``plateau`` or ``cap`` (:data:`REASONS`).
        curve: ``(step, validation loss)`` of every validation of the run.
        patience: ``train.patience``.
        min_delta: ``train.min_delta``.
        monitor: Which loss the rule read (``val_loss`` or ``val_loss_ema``).
    """
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
    losses = [v for _, v in curve]
    b = best_index(losses, min_delta)
    doc = {"step": int(step), "reason": reason, "patience": int(patience),
           "min_delta": float(min_delta), "monitor": monitor,
           "best": None if b < 0 else {"step": int(curve[b][0]), "loss": float(curve[b][1])},
           "curve": [[int(s), float(v)] for s, v in curve]}
    atomic_write_json(Path(out_dir) / STOP_FILE, doc)
    return doc
