"""Training batches as reproducible shards: the data of a step depends on (seed, step) only.

The global batch of ``n_volumes x n_slices`` patches is made of ``n_slices`` *shards*; a shard
is one random axial slice from each of ``n_volumes`` random volumes (so every shard mixes
subjects, and the foreign textures of the anomalies come from other subjects), corrupted.
Shard ``i`` of step ``s`` is drawn from generators seeded by ``(seed, s, i)``, so

- one process with 2 accumulation micro-batches and 2 DDP processes with 1 micro-batch each
  see exactly the same patches and corruptions (a micro-batch is a run of consecutive shards);
- changing ``grad_accum`` (to fit memory) does not change what the network is trained on;
- a resumed run draws the same batches as a straight run, with no sampler state to save.

For that the corruption must be stateless: the synthetic anomalies are built without a
foreign-patch bank (``bank_size=0``: textures come from the other images of the shard).

Example:
    >>> micro_batch_shards(n_shards=12, world_size=2, grad_accum=2, rank=1)
    [[6, 7, 8], [9, 10, 11]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from disyre.config import ConfigError, RunConfig, SamplerConfig
from disyre.corruption import augment_pair
from disyre.methods import get_method
from disyre.runtime import make_generator

#: stream ids mixed into shard seeds so that training and validation never share draws
TRAIN_STREAM = 0
VAL_STREAM = 1


def shard_seed(seed: int, step: int, shard: int, stream: int = TRAIN_STREAM) -> int:
    """A 63-bit seed for shard ``shard`` of step ``step`` (independent streams per tuple)."""
    ss = np.random.SeedSequence([int(seed), int(stream), int(step), int(shard)])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1 << 31, 1])


#: On a CPU, ``train.grad_accum=0`` splits a step into micro-batches of at most this many
#: pixels: 16 patches of 128x128 (measured: docs/training.md#measured-on-a-quiet-cpu).
CPU_MICRO_BATCH_PIXELS: int = 16 * 128 * 128


def auto_grad_accum(n_volumes: int, n_slices: int, patch_size: int, world_size: int,
                    device: torch.device | str) -> int:
    """Micro-batches per process for ``train.grad_accum=0``.

    One on a GPU; on a CPU the fewest that keep each micro-batch at most
    :data:`CPU_MICRO_BATCH_PIXELS` pixels (a micro-batch is a run of whole shards, so their
    number divides the shards of a process; one if no split fits).

    Example:
        >>> auto_grad_accum(8, 12, 128, 1, "cpu")  # 96 patches: 6 micro-batches of 16
        6
        >>> auto_grad_accum(8, 12, 128, 1, "cuda")
        1
    """
    if torch.device(device).type != "cpu":
        return 1
    local = max(1, n_slices // max(1, world_size))
    for k in range(1, local + 1):
        if local % k == 0 and n_volumes * (local // k) * patch_size ** 2 <= CPU_MICRO_BATCH_PIXELS:
            return k
    return local


def micro_batch_shards(n_shards: int, world_size: int, grad_accum: int,
                       rank: int) -> list[list[int]]:
    """Shard indices of each micro-batch of ``rank``.

    Args:
        n_shards: Shards per global batch (``SamplerConfig.n_slices``).
        world_size: Number of DDP processes.
        grad_accum: Micro-batches per process and step.
        rank: This process's rank.

    Returns:
        ``grad_accum`` lists of consecutive shard indices.

    Raises:
        ConfigError: ``n_shards`` is not a multiple of ``world_size * grad_accum``.
    """
    parts = world_size * grad_accum
    if grad_accum < 1 or n_shards % parts:
        raise ConfigError(
            f"sampler.n_slices={n_shards} must be a multiple of world size ({world_size}) x "
            f"train.grad_accum ({grad_accum})"
        )
    k = n_shards // parts
    first = rank * grad_accum
    return [list(range((first + i) * k, (first + i + 1) * k)) for i in range(grad_accum)]


@dataclass
class Batch:
    """A corrupted training batch.

    Attributes:
        corrupted: Network input ``(B, 1, P, P)``.
        clean: Clean patches ``(B, 1, P, P)``.
        level: Corruption levels ``(B,)`` int64.
        noise: The noise, where the method's network learns to predict it
            (``Method.target == "noise"``: ``anoddpm``); else ``None``.
        region: Where the loss applies, ``(B, 1, P, P)`` weights (the corruption's mask,
            for ``Method.loss_region == "box"``); ``None``: every pixel.
        loss: The loss (``Method.loss``): ``mse`` or ``l1``.
    """

    corrupted: torch.Tensor
    clean: torch.Tensor
    level: torch.Tensor
    noise: torch.Tensor | None = None
    region: torch.Tensor | None = None
    loss: str = "mse"

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    @property
    def target(self) -> torch.Tensor:
        """What the network learns to output: the noise where set, else the clean patch."""
        return self.clean if self.noise is None else self.noise


#: the losses the training loop implements: (``Method.loss``, ``Method.loss_region``)
TRAINING_LOSSES: tuple[tuple[str, str], ...] = (("mse", "patch"), ("l1", "patch"),
                                                ("mse", "box"), ("l1", "box"))


def batch_loss(pred: torch.Tensor, batch: Batch, target: torch.Tensor | None = None
               ) -> torch.Tensor:
    """The training loss of ``pred`` on ``batch``: the mean of the squared (``mse``) or
    absolute (``l1``) error over every pixel, or over the pixels of ``batch.region``
    (weighted by it) when set.

    Example:
        >>> x = torch.zeros(1, 1, 2, 2)
        >>> box = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> b = Batch(x, x, torch.zeros(1, dtype=torch.long), region=box, loss="l1")
        >>> float(batch_loss(torch.tensor([[[[0.5, 9.0], [9.0, 9.0]]]]), b))
        0.5
    """
    y = (batch.target if target is None else target).float()
    pred = pred.float()
    if batch.region is None and batch.loss == "mse":
        return torch.nn.functional.mse_loss(pred, y)  # the shared objective, as it always was
    err = (pred - y).abs() if batch.loss == "l1" else (pred - y) ** 2
    if batch.region is None:
        return err.mean()
    w = batch.region.to(err.device, err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def training_corruption(cfg: RunConfig, codebook: Sequence[float] | None = None) -> Any:
    """The corruption of the method ``cfg.corruption.name`` in its stateless form (no
    foreign-patch bank)."""
    return get_method(cfg.corruption.name).make_corruption(cfg.corruption, codebook,
                                                           bank_size=0)


SamplerFactory = Callable[[Sequence[np.ndarray], SamplerConfig, int], Any]


class BatchSource:
    """Draws shards: patches from the data layer's sampler, corrupted by the corruption stage.

    Args:
        volumes: Training volumes ``(d, h, w)`` float32 in [0, 1].
        cfg: Run config (sampler, corruption).
        codebook: Intensity codebook for the bias anomaly (``None``: corruption default).
        device: Where corruption runs (its generator lives there).
        sampler_factory: ``(volumes, shard_cfg, seed) -> sampler`` with ``.sample()`` and a
            ``numpy.random.Generator`` in ``.rng``; default
            :class:`disyre.data.sampler.PatchSampler`. With ``masks`` it is called with
            ``masks=`` too and must offer ``.sample_pair()``.
        corruption: ``(x, generator) -> CorruptionResult``; default the method's
            (:func:`training_corruption`). With ``masks``
            it is called with ``brain=`` too.
        masks: Brain masks of ``volumes`` (e.g. the cache's): the sampler, the augmentation
            and the corruption then take the brain from them instead of from ``x > 0``.
    """

    def __init__(self, volumes: Sequence[np.ndarray], cfg: RunConfig,
                 codebook: Sequence[float] | None = None,
                 device: torch.device | str = "cpu", *,
                 sampler_factory: SamplerFactory | None = None,
                 corruption: Callable[..., Any] | None = None,
                 masks: Sequence[np.ndarray] | None = None) -> None:
        if len(volumes) == 0:
            raise ConfigError("no volumes to draw training patches from")
        method = get_method(cfg.corruption.name)
        self.loss, self.loss_region = method.objective(cfg)
        if (self.loss, self.loss_region) not in TRAINING_LOSSES:
            raise ConfigError(f"method {method.name}: training has no {self.loss} loss over "
                              f"the {self.loss_region}")
        self.target = method.target
        self.volumes = list(volumes)
        self.masks = None if masks is None else list(masks)
        self.device = torch.device(device)
        self.shard_cfg = SamplerConfig(n_volumes=cfg.sampler.n_volumes, n_slices=1,
                                       patch_size=cfg.sampler.patch_size)
        self.n_shards = cfg.sampler.n_slices
        whole = method.trains_on_whole_slices(cfg)
        if sampler_factory is None:
            from functools import partial

            from disyre.data.sampler import PatchSampler

            sampler_factory = (partial(PatchSampler, whole_slices=True,
                                       size_multiple=2 ** (len(cfg.model.channels) - 1))
                               if whole else PatchSampler)
        if corruption is None:
            corruption = training_corruption(cfg, codebook)
            if whole and hasattr(corruption, "on_brain"):
                corruption.on_brain = True  # a box of detection's grid that holds brain
        self.sampler_factory = sampler_factory
        # built once (it indexes the brain slices of every volume); reseeded per shard
        if self.masks is None:
            self.sampler = sampler_factory(self.volumes, self.shard_cfg, 0)
        else:
            self.sampler = sampler_factory(self.volumes, self.shard_cfg, 0, masks=self.masks)
        if not hasattr(self.sampler, "rng"):
            raise TypeError("the patch sampler must keep its numpy Generator in .rng")
        self.corruption = corruption
        self.augment = method.augments(cfg.corruption)
        self.augment_recipe = cfg.corruption.augment_recipe

    def sample_shard(self, seed: int) -> torch.Tensor:
        """Clean patches ``(n_slices, 1, P, P)`` of one shard (no corruption)."""
        return self._draw(seed)[0]

    def _draw(self, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.sampler.rng = np.random.default_rng(seed)
        if self.masks is None:
            return self.sampler.sample(), None
        return self.sampler.sample_pair()

    def corrupt(self, x: torch.Tensor, seed: int, brain: torch.Tensor | None = None) -> Batch:
        """Augment (if configured) and corrupt clean patches; generator seeded by ``seed``.

        ``brain`` (the patches' brain mask) travels through the augmentation to the
        corruption; without it both take the non-zero pixels.
        """
        g = make_generator(seed, self.device)
        x = x.to(self.device, non_blocking=True)
        if brain is not None:
            brain = brain.to(self.device, non_blocking=True)
        if self.augment:
            x, aug_brain = augment_pair(x, brain, g, recipe=self.augment_recipe)
            brain = aug_brain if brain is not None else None
        r = self.corruption(x, g) if brain is None else self.corruption(x, g, brain=brain)
        noise = None
        if self.target == "noise":
            if r.target is None:
                raise ValueError("a noise-predicting method needs a corruption that returns "
                                 "its noise (CorruptionResult.target)")
            noise = r.target
        region = r.mask if self.loss_region == "box" else None
        return Batch(r.corrupted, r.clean, r.level.to(self.device).long(), noise, region,
                     self.loss)

    def shard(self, seed: int, step: int, index: int, stream: int = TRAIN_STREAM) -> Batch:
        """Shard ``index`` of step ``step`` of the run with seed ``seed``."""
        s = shard_seed(seed, step, index, stream)
        x, brain = self._draw(s)
        return self.corrupt(x, s ^ 0x5DEECE66D, brain)

    def micro_batch(self, seed: int, step: int, shards: Sequence[int],
                    stream: int = TRAIN_STREAM) -> Batch:
        """The concatenation of the given shards of step ``step``."""
        parts = [self.shard(seed, step, i, stream) for i in shards]
        if len(parts) == 1:
            return parts[0]
        noise = [p.noise for p in parts]
        region = [p.region for p in parts]
        return Batch(torch.cat([p.corrupted for p in parts]), torch.cat([p.clean for p in parts]),
                     torch.cat([p.level for p in parts]),
                     None if noise[0] is None else torch.cat(noise),  # type: ignore[arg-type]
                     None if region[0] is None else torch.cat(region),  # type: ignore[arg-type]
                     parts[0].loss)
