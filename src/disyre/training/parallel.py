"""Several trainings at once, each in a process of its own with its share of the CPU cores.

On some CPUs the network of the demo and of a benchmark is small enough that one training does
not keep every core busy: two trainings side by side, one thread each, then get more steps
done per second than the same two one after the other with every thread each (1.29x on a
2-core Xeon with AMX, 1.00x on a 2-core EPYC with AVX512-BF16: docs/demo.md, "Training side
by side"). :func:`disyre.runtime.decide_train_jobs` decides how many run at once from the
device, the CPU's flags and the core count; :func:`train_many` runs them.

Example:
    >>> jobs = [TrainJob(cfg, vols, val, "runs/a"), TrainJob(cfg2, vols, val, "runs/b")]
    ... # doctest: +SKIP
    >>> results = train_many(jobs, workers=2, threads_each=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disyre.config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """The arguments of one :func:`disyre.training.train` call."""

    cfg: RunConfig
    train_volumes: Sequence[np.ndarray]
    val_volumes: Sequence[np.ndarray] | None
    out_dir: str | Path
    codebook: Sequence[float] | None = None
    overwrite: bool = False
    resume: bool = False
    data_info: dict[str, Any] | None = None
    train_masks: Sequence[np.ndarray] | None = None
    val_masks: Sequence[np.ndarray] | None = None


@dataclass
class TrainDone:
    """What a finished job reports back: its step, newest checkpoint and wall time."""

    out_dir: Path
    step: int
    checkpoint: Path | None
    wall_s: float


def _run(job: TrainJob, threads: int | None, progress: bool) -> TrainDone:
    import torch

    from disyre.training.loop import train

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    res = train(job.cfg, job.train_volumes, job.val_volumes, job.out_dir, resume=job.resume,
                overwrite=job.overwrite, codebook=job.codebook, progress=progress,
                data_info=job.data_info, train_masks=job.train_masks,
                val_masks=job.val_masks)
    return TrainDone(out_dir=Path(job.out_dir), step=res.step, checkpoint=res.checkpoint,
                     wall_s=time.perf_counter() - t0)


def train_many(jobs: Sequence[TrainJob], *, workers: int, threads_each: int | None = None,
               progress: bool = True) -> list[TrainDone]:
    """Run ``jobs`` with ``workers`` at once (1: in this process, one after the other).

    Args:
        jobs: The trainings.
        workers: How many run at once; each in a fresh process (``spawn``: no state of this
            process's thread pools is inherited) when more than one.
        threads_each: torch threads of each training (``None``: torch's default).
        progress: Progress bars (only when one job runs at a time; side by side, each job
            logs when it ends).

    Returns:
        One :class:`TrainDone` per job, in order. A failing job raises its exception here,
        after the jobs already running have ended.
    """
    if workers <= 1 or len(jobs) <= 1:
        from disyre.runtime import num_threads

        with num_threads(threads_each):
            return [_run(j, None, progress) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    out: list[TrainDone] = []
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as ex:
        futs = [ex.submit(_run, j, threads_each, False) for j in jobs]
        for j, f in zip(jobs, futs, strict=True):
            done = f.result()
            log.info("trained %s: %d steps in %.0f s", j.out_dir, done.step, done.wall_s)
            out.append(done)
    return out
