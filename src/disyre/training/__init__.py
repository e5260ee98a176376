"""Training of the restoration network: loop, checkpoints, resume, distributed data parallel.

Example:
    >>> from disyre.training import train, load_model   # doctest: +SKIP
    >>> result = train(cfg, train_volumes, val_volumes, "runs/t2")  # doctest: +SKIP
    >>> model, cfg = load_model("runs/t2", device="cpu")  # doctest: +SKIP
"""

from disyre.training.batches import (
    Batch,
    BatchSource,
    auto_grad_accum,
    micro_batch_shards,
    shard_seed,
)
from disyre.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_model,
    save_checkpoint,
)
from disyre.training.loop import (
    TrainResult,
    evaluate,
    lr_lambda,
    make_optimizer,
    train,
    train_step,
)

__all__ = [
    "Batch",
    "BatchSource",
    "CheckpointError",
    "TrainResult",
    "auto_grad_accum",
    "evaluate",
    "latest_checkpoint",
    "load_model",
    "lr_lambda",
    "make_optimizer",
    "micro_batch_shards",
    "save_checkpoint",
    "shard_seed",
    "train",
    "train_step",
]
