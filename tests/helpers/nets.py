"""Tiny networks for tests that must be able to fail: one re-initialised, one trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disyre.config import InferenceConfig, ModelConfig, RunConfig, SamplerConfig
from disyre.model import RestorationNet, build_model


def reinit_tiny_net(seed: int = 0, cfg: ModelConfig | None = None, **build_kw: Any
                    ) -> RestorationNet:
    """The ``tiny`` network with every layer re-initialised (PyTorch's default init), in eval mode.

    ``cfg`` (default: the ``tiny`` preset) and ``build_kw`` (e.g. ``sdpa=False``) go to
    :func:`~disyre.model.build_model`, for a 3D or attention variant of the small network.

    MONAI zeroes the last convolution of the U-Net and of each residual block, which makes a
    fresh network output exactly 0 whatever its input and level. Here every layer gets
    PyTorch's default initialisation instead and the output convolution is scaled (weights x
    0.25, bias 0.5) so that predictions mostly fall inside [0, 1], where restoration does not
    clip them: the output then depends on the image, on the window around it and on the level.
    """
    torch.manual_seed(seed)
    net = build_model(cfg or ModelConfig.from_preset("tiny"), **build_kw)
    with torch.no_grad():
        for m in net.modules():
            if m is not net and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        conv = net.unet.out[-1].conv
        conv.weight.mul_(0.25)
        conv.bias.fill_(0.5)
    return net.eval()


def tiny_config(steps: int = 6, **train_kw: Any) -> RunConfig:
    """The ``tiny`` network on 32-px patches, 4 volumes x 2 slices per step, on the CPU.

    Its inference section (levels ``[0, 50]``, 32-px windows, stride 16) suits the 40-px slices
    of :func:`~tests.helpers.cohort.synthetic_cohort`.
    """
    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    cfg.sampler = SamplerConfig(n_volumes=4, n_slices=2, patch_size=32)
    cfg.corruption.window = 16
    cfg.corruption.augment = False
    cfg.inference = InferenceConfig(levels=[0, 50], window=32, stride=16, batch_size=64)
    t = cfg.train
    t.steps, t.lr, t.warmup_steps, t.device = steps, 2e-3, 2, "cpu"
    t.val_every, t.val_batches, t.ckpt_every, t.log_every = 1000, 1, 1000, 1
    t.channels_last = False
    t.precision = "fp32"  # exact comparisons; "auto" follows the CPU (bf16 where native)
    for k, v in train_kw.items():
        setattr(t, k, v)
    return cfg


#: training recipe of the session's shared checkpoint (about 3 s on 2 CPU cores)
SESSION_RUN = dict(steps=120, lr=3e-3, warmup_steps=10, val_every=60, log_every=20,
                   ema_decay=0.9)


def train_tiny_run(out: Path, cohort: Sequence[np.ndarray]) -> Any:
    """Train the tiny network of :data:`SESSION_RUN` on ``cohort[:4]`` (``cohort[4:]``
    validates) into ``out``; returns the :class:`~disyre.training.TrainResult`.

    The volumes are used as they are (brain intensities up to about 0.8, no intensity
    normalisation), and the checkpoint records 2 mm voxels (the spacing of
    :func:`~tests.helpers.cohort.write_nifti_cohort`). What the model learns in 120 steps is
    to keep restorations within the intensities it saw: a lesion brighter than any healthy
    tissue (normalised scans put it at 1) is restored towards tissue and stands out in the
    map (pixel AP 0.99-1.0 on 9 test scans), whereas lesions inside the healthy range are not
    found (AP about the prevalence when the training volumes are normalised too).
    """
    from disyre.training import train

    cfg = tiny_config(**SESSION_RUN)
    return train(cfg, cohort[:4], cohort[4:], out, progress=False,
                 data_info={"contrast": "t2", "spacing": [2.0, 2.0, 2.0]})


def save_tiny_checkpoint(run_dir: Path, net: torch.nn.Module | None = None,
                         cfg: RunConfig | None = None) -> Path:
    """Write ``net`` (default: :func:`reinit_tiny_net`) as a one-step checkpoint of a run."""
    from disyre.training.checkpoint import save_checkpoint

    cfg = cfg or tiny_config()
    return save_checkpoint(run_dir / "checkpoints", step=1, model=net or reinit_tiny_net(),
                           cfg=cfg, codebook=None, state={})
