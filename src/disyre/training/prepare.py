"""What every training run needs before its first step: checked volumes and a codebook.

``disyre train``, ``disyre benchmark`` (and :mod:`disyre.demo` through it) and Python users
call :func:`prepare_run`, so a setting that cannot work with the data gets the same one-line
error everywhere, and the bias anomaly's codebook is fitted the same way.

Example:
    >>> from disyre.training.prepare import prepare_run  # doctest: +SKIP
    >>> codebook = prepare_run(cfg, train_volumes, source="cohort.csv",
    ...                        train_masks=masks)  # doctest: +SKIP
    >>> train(cfg, train_volumes, val_volumes, "runs/a", codebook=codebook)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from disyre.config import ConfigError, RunConfig
from disyre.methods import get_method

#: patches may be at most this many times the largest cropped slice side (the rest is padding)
MAX_PATCH_OVER_SLICE = 2.0

#: levels of the fitted intensity codebook
CODEBOOK_LEVELS = 5


def check_volumes(cfg: RunConfig, train_volumes: Sequence[np.ndarray],
                  source: str | Path) -> None:
    """Refuse settings that cannot work with these volumes (one clear error).

    Args:
        cfg: The run config.
        train_volumes: The healthy training volumes, ``(D, H, W)`` each.
        source: What the volumes came from (a manifest, a cache), named in the error.

    Raises:
        ConfigError: No training volume, a patch far larger than the slices, a patch size the
            network cannot take, or an anomaly window larger than the patch.
    """
    from disyre.model import build_model

    if not train_volumes:
        raise ConfigError(f"{source}: no healthy training subjects (rows with split 'train')")
    P = cfg.sampler.patch_size
    side = max(max(v.shape[1:]) for v in train_volumes)
    if P > MAX_PATCH_OVER_SLICE * side:
        raise ConfigError(
            f"{source}: sampler.patch_size={P} is more than {MAX_PATCH_OVER_SLICE:g}x the "
            f"largest cropped slice ({side} px); lower sampler.patch_size")
    step = build_model(cfg.model).min_size
    if P % step:
        raise ConfigError(f"sampler.patch_size={P} must be a multiple of {step} for model "
                          f"preset {cfg.model.preset!r}")
    if get_method(cfg.corruption.name).anomaly_window and cfg.corruption.window > P:
        raise ConfigError(f"corruption.window={cfg.corruption.window} is larger than "
                          f"sampler.patch_size={P}")


def prepare_run(cfg: RunConfig, train_volumes: Sequence[np.ndarray], *, source: str | Path,
                train_masks: Sequence[np.ndarray] | None = None,
                codebook: Sequence[float] | None = None, fit: bool = True,
                resume_dir: str | Path | None = None) -> list[float] | None:
    """Check the volumes against the config; the codebook the run trains with.

    Args:
        cfg: The run config.
        train_volumes: The healthy training volumes.
        source: What the volumes came from, named in errors.
        train_masks: Brain masks of ``train_volumes`` (the codebook's foreground).
        codebook: A codebook fitted already (e.g. for another method on the same volumes).
        fit: Fit a codebook when neither the config nor ``codebook`` gives one.
        resume_dir: The run folder when resuming: a run with a checkpoint keeps the codebook
            saved with it (nothing is fitted).

    Returns:
        ``cfg.corruption.codebook``, else ``codebook``, else a fitted one (``None`` when
        ``fit`` is false or a resumed run has a checkpoint).

    Raises:
        ConfigError: See :func:`check_volumes`.
    """
    check_volumes(cfg, train_volumes, source)
    if cfg.corruption.codebook is not None:
        return list(cfg.corruption.codebook)
    if codebook is not None:
        return [float(c) for c in codebook]
    if not fit:
        return None
    if resume_dir is not None:
        from disyre.training.checkpoint import latest_checkpoint

        if latest_checkpoint(resume_dir):
            return None
    from disyre.corruption.bias import fit_codebook

    return fit_codebook(train_volumes, k=CODEBOOK_LEVELS, seed=cfg.train.seed, masks=train_masks)
