"""The restoration network ``P(x, level)``: a level-conditioned U-Net predicting the clean image.

The network is MONAI's ``DiffusionModelUNet`` (sinusoidal embedding of the corruption level,
residual blocks, optional self-attention), one channel in and out, predicting ``x0`` directly
(not the noise). Sizes come from :data:`disyre.config.PRESETS`: ``paper`` is the authors'
network (26,296,929 parameters), ``small`` a CPU-sized one, ``tiny`` one for tests.
The network can be built in 3D (``ModelConfig.spatial_dims=3``, inputs ``(B, 1, D, H, W)``),
but the data, corruptions and windows of disyre are 2D: a run config must keep
``spatial_dims=2`` (:meth:`disyre.config.RunConfig.validate`).

Speed levers (each checked against the plain network in ``tests/test_model.py``):

- attention through ``torch.nn.functional.scaled_dot_product_attention`` (MONAI's
  ``use_flash_attention`` flag; always on, ``sdpa=False`` gives MONAI's einsum reference);
- channels-last memory layout (:func:`use_channels_last`: per device and preset);
- ``torch.compile`` of the U-Net (:func:`compile_network`; ``train.compile`` /
  ``inference.compile``, off by default). Inductor also fuses each GroupNorm with the SiLU
  that follows it, so there is no separate fused GroupNorm+SiLU module.

Example:
    >>> import torch
    >>> from disyre.config import ModelConfig
    >>> net = build_model(ModelConfig.from_preset("tiny"))
    >>> x = torch.rand(2, 1, 32, 32)
    >>> net(x, torch.tensor([0, 50])).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from disyre.config import ConfigError, ModelConfig
from disyre.corruption.schedule import T


class RestorationNet(nn.Module):
    """Level-conditioned U-Net that maps a corrupted image to its clean version.

    Args:
        cfg: Architecture (see :class:`disyre.config.ModelConfig`).
        sdpa: Attention through ``scaled_dot_product_attention`` (default); ``False`` gives
            MONAI's explicit einsum/softmax attention (same parameters, the reference).

    Attributes:
        cfg: The config the network was built from.
        unet: The wrapped ``monai.networks.nets.DiffusionModelUNet``.
    """

    def __init__(self, cfg: ModelConfig, sdpa: bool = True) -> None:
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        self.unet = DiffusionModelUNet(
            spatial_dims=cfg.spatial_dims,
            in_channels=1,
            out_channels=1,
            channels=tuple(cfg.channels),
            attention_levels=tuple(cfg.attention_levels),
            num_res_blocks=cfg.num_res_blocks,
            num_head_channels=cfg.num_head_channels,
            norm_num_groups=cfg.norm_num_groups,
            # torch's scaled_dot_product_attention: same parameters, faster, less memory
            use_flash_attention=sdpa,
        )

    @property
    def min_size(self) -> int:
        """Spatial sizes must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.cfg.channels) - 1)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Predict the clean image.

        Args:
            x: Corrupted images ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)`` in 3D), in [0, 1].
            level: Corruption levels ``(B,)`` (int64, in ``[0, 99]``, growing with severity;
                diffusion steps in ``[0, 999]`` for the diffusion baselines).

        Returns:
            The predicted clean images ``x0_hat``, same shape as ``x``.
        """
        if x.dim() != self.cfg.spatial_dims + 2 or x.shape[1] != 1:
            raise ValueError(
                f"expected input (B, 1, {'D, ' if self.cfg.spatial_dims == 3 else ''}H, W), "
                f"got {tuple(x.shape)}"
            )
        bad = [s for s in x.shape[2:] if s % self.min_size]
        if bad:
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} must be a multiple of {self.min_size} "
                f"for a {len(self.cfg.channels)}-level network"
            )
        level = torch.as_tensor(level, device=x.device)
        if level.dim() == 0:
            level = level.expand(x.shape[0])
        return self.unet(x, timesteps=level.long())


def _validate(cfg: ModelConfig) -> None:
    if cfg.spatial_dims not in (2, 3):
        raise ConfigError(f"model.spatial_dims must be 2 or 3, got {cfg.spatial_dims}")
    if len(cfg.channels) != len(cfg.attention_levels):
        raise ConfigError(
            f"model.channels ({len(cfg.channels)} levels) and model.attention_levels "
            f"({len(cfg.attention_levels)}) must have the same length"
        )
    bad = [c for c in cfg.channels if c % cfg.norm_num_groups]
    if bad:
        raise ConfigError(
            f"model.channels {cfg.channels} must all be multiples of "
            f"model.norm_num_groups={cfg.norm_num_groups}"
        )


def build_model(cfg: ModelConfig, sdpa: bool = True) -> RestorationNet:
    """Build the restoration network of ``cfg`` (weights freshly initialised).

    Args:
        cfg: Model config; a preset name alone is resolved through ``ModelConfig.from_preset``.
        sdpa: See :class:`RestorationNet`.

    Returns:
        A :class:`RestorationNet` on the CPU, in train mode.
    """
    return RestorationNet(cfg, sdpa=sdpa)


#: Channels-last on the CPU, per (preset, precision, mode) with mode ``train`` or
#: ``inference`` (2D only; missing = off). On CUDA channels-last is always on. An entry is on
#: only where channels-last was clearly the faster layout; the measurements behind each entry
#: are in docs/training.md ("Speed levers": off for training) and docs/detection.md
#: ("Benchmark": on for detection with ``paper`` and ``small``).
CPU_CHANNELS_LAST: dict[tuple[str, str, str], bool] = {
    ("paper", "fp32", "inference"): True,
    ("paper", "bf16", "inference"): True,
    ("small", "fp32", "inference"): True,
    ("small", "bf16", "inference"): True,
}

#: where a network runs in :func:`use_channels_last`
CHANNELS_LAST_MODES: tuple[str, ...] = ("train", "inference")


def use_channels_last(cfg: ModelConfig, device: torch.device | str, allowed: bool = True,
                      precision: str = "fp32", mode: str = "train") -> bool:
    """Whether to run the network channels-last (``train.channels_last`` is ``allowed``).

    Channels-last where it helps: on CUDA for every 2D network, on the CPU for the
    ``(preset, precision, mode)`` triples marked in :data:`CPU_CHANNELS_LAST`; never for 3D
    networks or when not ``allowed``.

    Args:
        cfg: The network's config (``spatial_dims``, ``preset``).
        device: Where it runs.
        allowed: ``False`` rules it out.
        precision: The resolved precision it runs in (``fp32`` or ``bf16``).
        mode: ``train`` (forward and backward) or ``inference`` (forward only).

    Example:
        >>> use_channels_last(ModelConfig.from_preset("small"), "cuda")
        True
    """
    if mode not in CHANNELS_LAST_MODES:
        raise ValueError(f"mode must be one of {CHANNELS_LAST_MODES}, got {mode!r}")
    if not allowed or cfg.spatial_dims != 2:
        return False
    if torch.device(device).type == "cuda":
        return True
    return CPU_CHANNELS_LAST.get((cfg.preset, precision, mode), False)


def compile_network(model: nn.Module, **kwargs: object) -> nn.Module:
    """``torch.compile`` the network's U-Net in place (parameter names stay unchanged).

    Compilation happens at the first forward pass (minutes on a 2-core CPU, even for the
    ``tiny`` network) and again for new input shapes. Compile before wrapping the network in
    DDP.

    Args:
        model: A :class:`RestorationNet` (or any module; its ``unet`` if it has one).
        **kwargs: Passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic``, ...).

    Returns:
        ``model`` itself, with ``model.compiled = True``.
    """
    target = getattr(model, "unet", model)
    target.compile(**kwargs)
    model.compiled = True
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


#: number of corruption levels the network is conditioned on
NUM_LEVELS: int = T
