"""The demo's training budget: DISYRE's pixel AP against training time, for candidate recipes.

Each candidate is the demo's run config (:meth:`disyre.demo.run.DemoSettings.run_config`) with
a few settings changed (learning rate, warm-up, steps, patches per step, patch size). It is
trained once on the demo cache's healthy training scans, keeping a checkpoint every
``--eval-every`` steps; each kept checkpoint maps the lesioned test scans and its pooled pixel
AP (brain voxels, the demo's post-processing) is recorded. An intermediate checkpoint of a run
whose cosine schedule ends later is not the same model as a shorter run: it is a lower bound
of what that many steps give; the recipe the demo adopts is rerun at its own length
(``--candidate`` with ``steps=...``).

Training seconds per step are measured apart (``--seconds-per-step``, or the runs' own wall
time when nothing else ran): the AP does not depend on the machine's load, the seconds do.

Usage::

    python -m benchmarks.experiments.demo_budget --cache demo_out/cache --out budget \\
        --candidate lr=1e-4 --candidate lr=3e-4 --candidate lr=1e-3 \\
        --candidate lr=3e-4,slices=2 --eval-every 325 --steps 1300 --threads 1 --jobs 2
    python -m benchmarks.experiments.demo_budget --out budget --plot docs/img/demo_budget.png

Each candidate is ``key=value`` pairs joined by commas; keys: ``lr``, ``warmup``, ``steps``,
``volumes`` (volumes per step), ``slices`` (slices per volume), ``patch``, ``levels``
(``0/25/50/75``), ``name``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.args import at_least, new_file

log = logging.getLogger("demo_budget")

KEYS = ("lr", "warmup", "steps", "volumes", "slices", "patch", "levels", "name")


@dataclass
class Candidate:
    """One training recipe of the demo (``None``: the demo's own value)."""

    name: str
    lr: float | None = None
    warmup: int | None = None
    steps: int | None = None
    volumes: int | None = None
    slices: int | None = None
    patch: int | None = None
    levels: list[int] | None = None

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """``"lr=3e-4,slices=2"`` -> a candidate named after its settings.

        Example:
            >>> Candidate.parse("lr=3e-4,slices=2")
            Candidate(name='lr=3e-4,slices=2', lr=0.0003, warmup=None, steps=None, volumes=None, slices=2, patch=None, levels=None)
        """  # noqa: E501
        kw: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = part.partition("=")
            if not sep or key not in KEYS:
                raise ValueError(f"candidate {text!r}: {part!r} is not key=value with a key "
                                 f"in {', '.join(KEYS)}")
            try:
                if key == "lr":
                    kw[key] = float(val)
                elif key == "levels":
                    kw[key] = [int(v) for v in val.split("/")]
                elif key == "name":
                    kw[key] = val
                else:
                    kw[key] = int(val)
            except ValueError as e:
                raise ValueError(f"candidate {text!r}: bad value for {key}: {val!r}") from e
            if key != "name" and key != "levels" and kw[key] <= 0:
                raise ValueError(f"candidate {text!r}: {key} must be > 0")
        return cls(**{"name": text or "demo", **kw})

    def run_config(self, steps: int, eval_every: int, threads: int | None) -> Any:
        """The demo's run config with this candidate's settings."""
        from disyre.demo.run import DemoSettings

        s = DemoSettings()
        for attr, field in (("steps", "steps"), ("volumes", "n_volumes"),
                            ("slices", "n_slices"), ("patch", "patch"), ("levels", "levels")):
            if getattr(self, attr) is not None:
                setattr(s, field, getattr(self, attr))
        if self.steps is None:
            s.steps = steps
        cfg = s.run_config()
        if self.lr is not None:
            cfg.train.lr = self.lr
        if self.warmup is not None:
            cfg.train.warmup_steps = self.warmup
        cfg.train.ckpt_every = eval_every
        cfg.train.keep_last = 0
        cfg.train.num_threads = threads
        cfg.validate()
        return cfg


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in name)


def train_candidate(cand: Candidate, cache_dir: str, out: str, steps: int, eval_every: int,
                    threads: int | None) -> dict[str, Any]:
    """Train one candidate into ``out/<slug>/run``; returns its wall time and steps."""
    from disyre.data.cache import VolumeCache
    from disyre.training import train
    from disyre.training.prepare import prepare_run

    cfg = cand.run_config(steps, eval_every, threads)
    cache = VolumeCache.open(cache_dir)
    tr = [e for e in cache.entries if e.split == "train"]
    va = [e for e in cache.entries if e.split == "val"]
    vols, masks = [e.image() for e in tr], [e.mask() for e in tr]
    codebook = prepare_run(cfg, vols, source=cache_dir, train_masks=masks, fit=True)
    run = Path(out) / _slug(cand.name) / "run"
    t0 = time.perf_counter()
    res = train(cfg, vols, [e.image() for e in va], run, resume=run.is_dir(), codebook=codebook,
                progress=False, data_info=cache.describe("train"), train_masks=masks,
                val_masks=[e.mask() for e in va])
    return {"name": cand.name, "run": str(run), "steps": res.step,
            "wall_s": time.perf_counter() - t0, "threads": threads,
            "patches_per_step": cfg.sampler.n_volumes * cfg.sampler.n_slices,
            "patch": cfg.sampler.patch_size, "lr": cfg.train.lr,
            "warmup": cfg.train.warmup_steps, "total_steps": cfg.train.steps,
            "levels": list(cfg.inference.levels)}


def checkpoint_ap(ckpt: Path, cache_dir: str, levels: list[int] | None = None,
                  device: str = "auto") -> dict[str, float]:
    """Pooled pixel AP of one checkpoint on the cache's lesioned test scans."""
    from disyre.data.cache import VolumeCache
    from disyre.evaluation.metrics import PixelAccumulator
    from disyre.inference import Detector

    cache = VolumeCache.open(cache_dir)
    entries = [e for e in cache.entries if e.split == "test" and e.files.get("lesion")]
    overrides = {"levels": levels} if levels else {}
    det = Detector.from_checkpoint(ckpt, device=device, **overrides)
    acc = PixelAccumulator()
    t0 = time.perf_counter()
    for e in entries:
        amap = det.map_preprocessed(np.array(e.image()), np.array(e.mask()))
        acc.update(amap, e.lesion(), e.mask())
    detect_s = time.perf_counter() - t0
    m = acc.compute()
    return {"ap": m.ap, "best_dice": m.best_dice, "detect_s": detect_s,
            "n_scans": len(entries)}


def _ckpt_steps(run: Path) -> list[tuple[int, Path]]:
    out = []
    for p in sorted((run / "checkpoints").glob("step_*")):
        if p.is_dir():
            out.append((int(p.name.split("_")[1]), p))
    return out


def run(cands: list[Candidate], cache_dir: str, out: str, *, steps: int, eval_every: int,
        threads: int | None, jobs: int) -> dict[str, Any]:
    """Train every candidate (``jobs`` at once) and evaluate each kept checkpoint."""
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    results_path = outp / "budget.json"
    doc: dict[str, Any] = (json.loads(results_path.read_text()) if results_path.is_file()
                           else {"candidates": {}})
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if jobs == 1:
        trained = [train_candidate(c, cache_dir, out, steps, eval_every, threads)
                   for c in cands]
    else:  # fresh processes: a fork would inherit this process's thread pools
        with ProcessPoolExecutor(max_workers=jobs,
                                 mp_context=multiprocessing.get_context("spawn")) as ex:
            futs = [ex.submit(train_candidate, c, cache_dir, out, steps, eval_every, threads)
                    for c in cands]
            trained = [f.result() for f in futs]
    from disyre.io_utils import atomic_write_json

    for c, tr in zip(cands, trained, strict=True):
        entry = doc["candidates"].setdefault(c.name, {})
        entry.update(train=tr)
        points = entry.setdefault("points", {})
        for step, ck in _ckpt_steps(Path(tr["run"])):
            if str(step) in points:
                continue
            points[str(step)] = checkpoint_ap(ck, cache_dir, c.levels)
            log.info("%s step %d: AP %.4f", c.name, step, points[str(step)]["ap"])
            atomic_write_json(results_path, doc)
    atomic_write_json(results_path, doc)
    return doc


def table(doc: dict[str, Any], sps: dict[str, float]) -> str:
    """Markdown table of every candidate's points."""
    lines = ["| candidate | patches/step | lr | step | train s (est.) | pixel AP | best Dice |",
             "|---|---|---|---|---|---|---|"]
    for name, e in doc["candidates"].items():
        tr = e["train"]
        s = sps.get(name, tr["wall_s"] / max(tr["steps"], 1))
        for step, p in sorted(e["points"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {name} | {tr['patches_per_step']} | {tr['lr']:g} | {step} | "
                         f"{int(step) * s:.0f} | {p['ap']:.3f} | {p['best_dice']:.3f} |")
    return "\n".join(lines)


def plot(doc: dict[str, Any], sps: dict[str, float], path: Path) -> None:
    """AP against estimated training seconds, one line per candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, e in doc["candidates"].items():
        tr = e["train"]
        s = sps.get(name, tr["wall_s"] / max(tr["steps"], 1))
        pts = sorted((int(k), v["ap"]) for k, v in e["points"].items())
        ax.plot([k * s for k, _ in pts], [a for _, a in pts], marker="o", label=name)
    ax.axhline(0.55, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training seconds (2-core CPU, estimated from s/step)")
    ax.set_ylabel("pixel AP, 21 lesioned test scans")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="the demo's cache folder (demo_out/cache)")
    ap.add_argument("--out", required=True, help="results folder (reused: finished points "
                    "are kept, unfinished runs resume)")
    ap.add_argument("--candidate", action="append", default=[],
                    help="key=value[,key=value...] (repeat)")
    ap.add_argument("--steps", type=at_least(1), default=1300,
                    help="training steps (default 1300)")
    ap.add_argument("--eval-every", type=at_least(1), default=325,
                    help="evaluate every N steps")
    ap.add_argument("--threads", type=at_least(1), default=None,
                    help="torch threads per training")
    ap.add_argument("--jobs", type=at_least(1), default=1, help="trainings at once")
    ap.add_argument("--seconds-per-step", action="append", default=[],
                    help="NAME=SECONDS measured apart (the plot's time axis)")
    ap.add_argument("--plot", type=new_file, help="write the AP-vs-seconds figure here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cands = [Candidate.parse(c) for c in args.candidate]
        sps = {}
        for item in args.seconds_per_step:
            k, sep, v = item.rpartition("=")
            if not sep:
                raise ValueError(f"--seconds-per-step {item!r}: expected NAME=SECONDS")
            sps[k] = float(v)
    except ValueError as e:
        ap.error(str(e))
    if cands and not (args.cache and Path(args.cache, "index.json").is_file()):
        ap.error(f"--cache {args.cache}: not a disyre cache folder (no index.json)")
    if cands:
        doc = run(cands, args.cache, args.out, steps=args.steps, eval_every=args.eval_every,
                  threads=args.threads, jobs=args.jobs)
    else:
        path = Path(args.out) / "budget.json"
        if not path.is_file():
            ap.error(f"{path}: no results yet (give --candidate and --cache)")
        doc = json.loads(path.read_text())
    print(table(doc, sps))
    if args.plot:
        plot(doc, sps, args.plot)
        print(f"figure: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
